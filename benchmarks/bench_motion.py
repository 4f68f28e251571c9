"""Motion correction at clinical size: seconds per frame, accuracy against the phantom's true motion, memory.

On the moving clinical phantom of ``bench_clinical.py`` (512 x 512 x 24 x 40, 0.47 x 0.47 x 5 mm, 1.5 s
frames, ``phantom_file(24, 40, cache, motion=True)``; its true motion is ``phantom_motion(seed, 40)``):

1. reads the series (seconds);
2. runs ``correct_motion`` on all frames, in place, as the ``MotionCorrection`` interface does: its wall
   time, the seconds of each frame (registration and full-resolution resampling), the largest translation
   and rotation errors against the truth, and the process's peak resident memory;
3. side by side, on the same pair of frames (the reference frame 0 and the frame the head moved most), the
   package's ``register_series`` and the one of an older commit (``--old-rev``, read with ``git show``)
   in turn, ``--rounds`` times: seconds per frame of each, their ratio, and each one's error;
4. with ``--demo-seeds N``, old and new on the demo phantom's moved frames (the frames of
   tests/test_motion.py), seed by seed: seconds per frame and errors against the truth;
5. with ``--interface``, the ``MotionCorrection`` interface in a fresh process (read, correct, write) on the
   series the pipeline hands it (LoadCTP's uncompressed ``.nii``, read frame by frame, each corrected frame
   written as it comes) and on the gzipped scan as a user might give it alone (read whole): wall time and
   the process tree's peak memory.

The load average is printed with every figure (this machine is shared: compare same-run ratios).

    python benchmarks/bench_motion.py                 # 24 slices, 40 frames
    python benchmarks/bench_motion.py --interface --rounds 1
    python benchmarks/bench_motion.py --demo-seeds 8 --skip-clinical --rounds 0
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

import numpy as np

from bench_clinical import phantom_file, run_command
from old_code import module_at

#: the last commit before registration moved to a binned grid, a capped sample count and ITK's thread pool
OLD_REV = "9fbb70f"


def errors(parameters, truth):
    """Largest absolute translation (mm) and rotation (degrees) error."""
    error = np.abs(np.asarray(parameters) - truth)
    return float(error[:, :3].max()), float(error[:, 3:].max())


def cpu_seconds():
    """User + system CPU seconds of this process so far (all its threads): less sensitive than wall time to
    what else runs on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load():
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def demo_comparison(n_seeds, old_rev):
    """Old and new ``register_series`` on the frames of tests/test_motion.py's demo-phantom test, seed by seed.

    The old path runs with sampling seed 1 (its own default, 0, seeded from the clock: every run differed); the new
    one with its regular sampling grid and with random points, both capped at the same number of samples."""
    from ctp_nipype.perfusion import motion
    from ctp_nipype.sims.phantom import make_phantom

    old = module_at(old_rev, "ctp_nipype/perfusion/motion.py")
    print(f"demo phantom, the test's frames (4 reference, the excursion and a frame either side); load average {load()}")
    runs = {
        "old": lambda hu, spacing: old.register_series(hu, spacing, 4, seed=1),
        "new": lambda hu, spacing: motion.register_series(hu, spacing, 4),
        "new, random points": lambda hu, spacing: motion.register_series(hu, spacing, 4, sampling_strategy="random"),
    }
    print("| seed | " + " | ".join(f"{name}: s/frame, error mm / deg" for name in runs) + " | old / new |")
    print("|---:|" + "---|" * len(runs) + "---:|")
    for seed in range(n_seeds):
        ph = make_phantom("demo", seed=seed, motion=True)
        moved = np.flatnonzero(np.any(ph.motion_parameters != 0, axis=1))
        frames = np.r_[np.arange(4), moved[0] - 1, moved, moved[-1] + 1]
        row = {}
        for name, run in runs.items():
            start = time.time()
            found = run(ph.hu[..., frames], ph.voxel_size_mm)
            row[name] = ((time.time() - start) / frames.size, *errors(found.parameters, ph.motion_parameters[frames]))
        print(f"| {seed} | " + " | ".join(f"{s:.2f} s, {t:.3f} / {r:.3f}" for s, t, r in row.values())
              + f" | {row['old'][0] / row['new'][0]:.1f}x |", flush=True)
    print(f"load average {load()}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "ctp_clinical_phantoms"))
    parser.add_argument("--old-rev", default=OLD_REV, help="commit of the old path (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=1, help="side-by-side rounds of old and new (0: none)")
    parser.add_argument("--interface", action="store_true", help="also time the MotionCorrection interface")
    parser.add_argument("--demo-seeds", type=int, default=0,
                        help="also compare old and new on the demo phantom (128 x 128 x 8, 1.875 mm) of seeds 0..N-1")
    parser.add_argument("--skip-clinical", action="store_true", help="only the demo-phantom comparison")
    args = parser.parse_args(argv)
    if args.demo_seeds:
        demo_comparison(args.demo_seeds, args.old_rev)
    if args.skip_clinical:
        return

    from ctp_nipype.io import load_ctp
    from ctp_nipype.perfusion import motion
    from ctp_nipype.sims.phantom import phantom_motion

    scan_file = phantom_file(args.slices, args.frames, args.cache, motion=True, seed=args.seed)
    truth = phantom_motion(args.seed, args.frames)
    print(f"# {scan_file.name}; ITK threads {motion.itk_threads()}; load average {load()}", flush=True)

    start = time.time()
    scan = load_ctp(scan_file)
    series, spacing = scan.data, scan.header.get_zooms()[:3]
    print(f"read {series.shape} in {time.time() - start:.1f} s, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB "
          f"(load average {load()})", flush=True)

    stamps = []
    start, cpu = time.time(), cpu_seconds()
    result = motion.correct_motion(series, spacing, in_place=True,
                                   progress=lambda frame, n: stamps.append(time.time()))
    wall, cpu = time.time() - start, cpu_seconds() - cpu
    per_frame = np.diff(stamps)
    trans, rot = errors(result.parameters, truth)
    print(f"correct_motion, {args.frames} frames: {wall:.1f} s wall, {cpu:.1f} s CPU ({wall - (stamps[-1] - stamps[0]) - per_frame.mean():.1f} s "
          f"reference and mask, then {per_frame.mean():.2f} s per frame, {per_frame.min():.2f}-{per_frame.max():.2f}); "
          f"largest error {trans:.3f} mm, {rot:.3f} degrees; censored frames "
          f"{np.flatnonzero(result.censored).tolist()} (moved {np.flatnonzero(np.any(truth != 0, axis=1)).tolist()}); "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB with the {series.nbytes / 1e9:.2f} GB "
          f"series; load average {load()}", flush=True)
    del result, series, scan

    if args.rounds:
        old = module_at(args.old_rev, "ctp_nipype/perfusion/motion.py")
        series = load_ctp(scan_file).data
        peak = int(np.argmax(np.abs(truth).sum(axis=1)))
        pair = np.stack([series[..., 0], series[..., peak]], axis=-1)
        del series
        print(f"side by side on frames 0 (reference) and {peak} (true motion {truth[peak].round(2).tolist()}):", flush=True)
        ratios = []
        for round_ in range(args.rounds):
            seconds = {}
            for name, module in (("old", old), ("new", motion)):
                start, cpu = time.time(), cpu_seconds()
                found = module.register_series(pair, spacing, 1)
                seconds[name] = (time.time() - start) / 2
                cpu = (cpu_seconds() - cpu) / 2
                trans, rot = errors(found.parameters, truth[[0, peak]])
                print(f"  round {round_} {name} ({args.old_rev if name == 'old' else 'this checkout'}): "
                      f"{seconds[name]:.2f} s per frame ({cpu:.2f} s CPU), error {trans:.3f} mm, {rot:.3f} degrees; "
                      f"load average {load()}", flush=True)
            ratios.append(seconds["old"] / seconds["new"])
        print(f"old / new seconds per frame: {', '.join(f'{r:.1f}x' for r in ratios)}", flush=True)

    if args.interface:
        from ctp_nipype.interfaces.preprocessing import LoadCTP

        with tempfile.TemporaryDirectory(prefix="bench_motion_") as tmp:
            cwd = os.getcwd()
            os.chdir(tmp)
            try:  # the series the pipeline hands on: LoadCTP's uncompressed float32 .nii (not timed)
                pipeline_series = LoadCTP(in_file=str(scan_file)).run().outputs.out_file
            finally:
                os.chdir(cwd)
            code = ("import os, sys; from ctp_nipype.interfaces.preprocessing import MotionCorrection; "
                    "os.chdir(sys.argv[2]); MotionCorrection(in_file=sys.argv[1]).run()")
            for label, in_file in (("the pipeline's .nii, streamed frame by frame", pipeline_series),
                                   ("the gzipped scan as given, read whole", str(scan_file))):
                load_before = load()
                with tempfile.TemporaryDirectory(prefix="bench_motion_run_") as run_dir:
                    wall, (resident, anonymous), _, _ = run_command([sys.executable, "-c", code, in_file, run_dir])
                print(f"MotionCorrection interface on {label} (read, correct, write): {wall:.1f} s, peak memory "
                      f"{anonymous / 1e9:.2f} GB anonymous / {resident / 1e9:.2f} GB resident; load average "
                      f"{load_before} at the start, {load()} at the end", flush=True)


if __name__ == "__main__":
    main()
