"""BAD (network) against Tmax (oSVD) as the delay that triage thresholds, on the small phantom.

    python benchmarks/studies/triage_delay.py [--seeds 0 1 2 3] [--noise-hu 1] [--delays 6 8]

The phantom's lesion (core and penumbra) has its local AIF delayed by ``--delays`` seconds and dispersed with
T_A = 3 s. For each seed and lesion delay, with the true AIF and no filter: the median in the lesion of oSVD's
Tmax and of the network's BAD (shipped weights), the true delay and the true Tmax (delay + the peak of the
dispersion kernel (x) residue, ``benchmarks/studies/tmax_peak.py``), the volume above 6 s by each against the lesion's
volume, and the DEFUSE 3 / EXTEND verdicts of each method against the truth's (core = label 6, hypoperfused =
the lesion). Every number goes through :func:`ctp_nipype.perfusion.stats.lesion_measures`, the pipeline's path.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from ctp_nipype.nn.inference import estimate_curves
from ctp_nipype.perfusion import stats
from ctp_nipype.perfusion.prepare import prepare_curves
from ctp_nipype.perfusion.svd import SVDModel
from ctp_nipype.perfusion.triage import TARGET_MISMATCH
from ctp_nipype.sims.phantom import DEFAULT_TISSUE, PhantomLabel, make_phantom
from ctp_nipype.validation import true_tmax


def flags(result):
    return "/".join("Y" if result.triage.target_mismatch[name] else "n" for name in TARGET_MISMATCH)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--noise-hu", type=float, default=1.0)
    parser.add_argument("--delays", type=float, nargs="+", default=[6.0, 8.0])
    args = parser.parse_args(argv)
    start = time.perf_counter()
    voxel_ml = 4 * 4 * 5 / 1000.0
    print(f"Small phantom, {args.noise_hu:g} HU, true AIF, no filter; flags DEFUSE 3/EXTEND (Y met, n not)")
    print("| lesion delay (s) | seed | true Tmax (s) | oSVD Tmax median (s) | network BAD median (s) "
          "| lesion (ml) | Tmax > 6 s (ml) | BAD > 6 s (ml) | truth flags | oSVD flags | network flags |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for delay in args.delays:
        tissue = {label: replace(DEFAULT_TISSUE[label], delay_s=delay)
                  for label in (PhantomLabel.CORE, PhantomLabel.PENUMBRA)}
        for seed in args.seeds:
            ph = make_phantom("small", seed=seed, noise_sd_hu=args.noise_hu, tissue=tissue)
            lesion = np.isin(ph.labels, [PhantomLabel.CORE, PhantomLabel.PENUMBRA])
            core = ph.labels == PhantomLabel.CORE
            csf = ph.labels == PhantomLabel.CSF
            vessels = np.isin(ph.labels, [PhantomLabel.ARTERY, PhantomLabel.VEIN])
            brain = ph.brain_mask
            truth_tmax = np.zeros(brain.shape)
            for inside in (core, lesion & ~core):
                truth_tmax[inside] = true_tmax(ph.delay[inside][:1], ph.dispersion[inside][:1], ph.mtt[inside][:1],
                                               ph.parameters["residue_shape"])[0]
            curves = prepare_curves(ph.hu, ph.frame_times, ph.aif)
            fit = SVDModel(curves.aif, curves.frame_times, method="osvd").fit(curves.tissue, brain)
            out = estimate_curves(curves.aif, curves.tissue[brain], curves.frame_times, device="cpu")
            cbf_net, bad = np.zeros(brain.shape), np.zeros(brain.shape)
            cbf_net[brain], bad[brain] = out["cbf"], out["bad"]
            common = dict(csf=csf, vessels=vessels)
            svd = stats.lesion_measures(fit.cbf, fit.tmax, brain, ph.affine, voxel_ml, **common)
            net = stats.lesion_measures(cbf_net, bad, brain, ph.affine, voxel_ml, delay_name="bad", **common)
            # the truth: true CBF, a delay map that is the lesion's true Tmax
            true = stats.lesion_measures(ph.cbf, truth_tmax, brain, ph.affine, voxel_ml, **common)
            print(f"| {delay:g} | {seed} | {truth_tmax[lesion].mean():.2f} | {np.median(fit.tmax[lesion]):.2f} "
                  f"| {np.median(bad[lesion]):.2f} | {lesion.sum() * voxel_ml:.1f} "
                  f"| {svd.hypoperfused_volume_ml:.1f} | {net.hypoperfused_volume_ml:.1f} "
                  f"| {flags(true)} | {flags(svd)} | {flags(net)} |")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
