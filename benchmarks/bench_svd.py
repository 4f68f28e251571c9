"""Speed and memory of the SVD family on a whole scan.

A synthetic scan of 256 x 256 x 16 voxels x 60 frames (about 1M voxels) is
deconvolved by sSVD, cSVD and oSVD; each method runs in a fresh process so
that its peak memory (ru_maxrss) is its own. The speed-up is measured against
a naive per-voxel Python loop (pseudo-inverses computed once, applied voxel
by voxel, Wu's threshold ladder per voxel for oSVD) timed on a 1,000-voxel
subset and scaled to the scan.

Targets on a 2-core machine: sSVD <= 3 s, cSVD <= 5 s, oSVD <= 20 s, peak
memory <= 3 GB.

The batched path of ``ctp-evaluate`` (every curve with its own AIF,
:func:`ctp_nipype.perfusion.evaluation.deconvolve_svd_batch`) is timed too, on
test set #1 (``--batched-curves`` curves, 80 frames), each method alone and
the three together, best of ``--repeats`` runs.

Usage: python benchmarks/bench_svd.py [--shape 256 256 16] [--frames 60] [--batched-curves 4000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

TARGETS_S = {"ssvd": 3.0, "csvd": 5.0, "osvd": 20.0}


def _scan(shape, frames):
    from ctp_nipype.perfusion.prepare import prepare_curves
    from ctp_nipype.sims.synthetic import synthetic_scan

    scan = synthetic_scan(shape=tuple(shape), n_frames=frames, noise_sd=3.0, seed=0)
    return prepare_curves(scan.hu, scan.frame_times, scan.aif_hu)


def run_one(method, shape, frames):
    """Child process: time one method on the whole scan and report JSON."""
    from ctp_nipype.perfusion.svd import SVDModel

    curves = _scan(shape, frames)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    fit = SVDModel(curves.aif, curves.frame_times, method=method).fit(curves.tissue)
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    # naive reference: the pseudo-inverses computed once (as any tool would), then a
    # Python loop over voxels, Wu's ladder per voxel for oSVD; timed on 1,000 voxels
    model = SVDModel(curves.aif, curves.frame_times, method=method)
    pinvs = [model.pseudo_inverse(t) for t in model.thresholds]
    subset = curves.tissue.reshape(-1, frames)[:1000].astype(np.float64)
    start = time.perf_counter()
    for curve in subset:
        for pinv in pinvs:  # sSVD/cSVD: one; oSVD: smallest threshold first
            residue = pinv @ curve
            peak = residue.max()
            oi = np.abs(np.diff(residue, 2)).sum() / (residue.size * peak) if peak > 0 else np.inf
            if oi <= model.oi_threshold:
                break
    naive_per_voxel = (time.perf_counter() - start) / subset.shape[0]
    n_vox = int(np.prod(shape))
    print(
        json.dumps(
            {
                "method": method,
                "voxels": n_vox,
                "wall_s": wall,
                "peak_rss_gib": peak_kib / 2**20,
                "data_rss_gib": before / 2**20,
                "naive_s_estimate": naive_per_voxel * n_vox,
                "speedup": naive_per_voxel * n_vox / wall,
                "flagged": fit.n_flagged,
            }
        )
    )


def run_batched(n_curves, repeats):
    """Seconds (best of ``repeats``) of the batched SVD path on test set #1, per method and all three together."""
    from ctp_nipype.perfusion.evaluation import SVD_METHODS, deconvolve_svd_batch
    from ctp_nipype.sims.testsets import make_test_set

    sim = make_test_set(1, n_curves=n_curves, seed=0)[0]
    out = {}
    for methods in [(m,) for m in SVD_METHODS] + [SVD_METHODS]:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            deconvolve_svd_batch(sim.global_aif, sim.tissue, sim.frame_times, methods=methods)
            times.append(time.perf_counter() - start)
        out["+".join(methods)] = min(times)
    return sim.n_curves, sim.n_frames, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[256, 256, 16])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--batched-curves", type=int, default=4000, help="curves of the batched path (0: skip it)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the batched path; the best is printed")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(args.child, args.shape, args.frames)
        return 0
    n_vox = int(np.prod(args.shape))
    print(f"SVD benchmark: {args.shape[0]}x{args.shape[1]}x{args.shape[2]} = {n_vox:,} voxels x {args.frames} frames")
    print(f"{'method':<6} {'wall [s]':>9} {'target':>7} {'voxels/s':>11} {'peak RSS [GiB]':>15} {'naive loop [s]':>15} {'speed-up':>9}")
    ok = True
    for method in ("ssvd", "csvd", "osvd"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", method, "--shape", *map(str, args.shape), "--frames", str(args.frames)],
            check=True,
            capture_output=True,
            text=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        target = TARGETS_S[method] if args.shape == [256, 256, 16] and args.frames == 60 else float("nan")
        ok &= not (r["wall_s"] > target) and r["peak_rss_gib"] <= 3.0
        print(
            f"{method:<6} {r['wall_s']:>9.2f} {target:>7.1f} {r['voxels'] / r['wall_s']:>11,.0f} "
            f"{r['peak_rss_gib']:>15.2f} {r['naive_s_estimate']:>15.0f} {r['speedup']:>8.0f}x"
        )
    print("targets met" if ok else "TARGETS MISSED")
    if args.batched_curves > 0:
        n_curves, n_frames, seconds = run_batched(args.batched_curves, args.repeats)
        print(f"\nbatched path (deconvolve_svd_batch, one AIF per curve): test set #1, {n_curves:,} curves x "
              f"{n_frames} frames, best of {args.repeats}")
        print(f"{'methods':<15} {'wall [s]':>9} {'curves/s':>10}")
        for methods, wall in seconds.items():
            print(f"{methods:<15} {wall:>9.2f} {n_curves / wall:>10,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
