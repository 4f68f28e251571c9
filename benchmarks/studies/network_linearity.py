"""Is the network's residue linear in the tissue curve, as deconvolution is? Two tables per weights file.

    python benchmarks/studies/network_linearity.py [--weights shipped RUN/best_ema.safetensors ...] [--tables 1 2 3]
                                           [--n-curves 500] [--seeds 0 1 2 3 4 5 6 7]

Deconvolution is linear: twice the tissue curve means twice the flow-scaled residue K, so at a fixed MTT and
residue shape every CBF should come out with the same ratio to the truth. A network whose input keeps the
curve's amplitude (the ``'aif_peak'`` normalisation) can learn a prior over amplitudes instead.

1. Median CBF estimate / truth on a grid of CBF (rows of one MTT) for noise-free simulated curves with a gamma
   residue of shape ``--alpha`` (3: the phantom's grey and white matter), no dispersion or delay, 1 s frames, 80
   frames and a gamma-variate AIF (``--n-curves`` per cell, the same curves for every weights file). A linear
   method has one value per row.
2. The same at 20 dB.
3. The small phantom's grey matter, noise free, with its true AIF: CBF / truth without a filter, and after the
   guided filter (radius 1 voxel, 12 mm on its 4 mm voxels) against the truth *of the filtered curves*. Voxels
   whose 3 x 3 neighbourhood holds only grey matter, white matter, CSF or non-brain (no vessel, no lesion)
   share the undelayed global AIF, so the filter, linear in the frames for a fixed guidance, turns their
   curves into ``AIF (x) filtered K`` exactly: the filtered truth is the maximum of the filtered true K. sSVD
   recovers it; the columns show what each weights file makes of the filter's mixtures.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

from ctp_nipype.nn.inference import estimate_curves
from ctp_nipype.nn.weights import SHIPPED_WEIGHTS, load_model
from ctp_nipype.perfusion.constants import KAPPA_H, RHO
from ctp_nipype.perfusion.maps import cbf_from_residue
from ctp_nipype.perfusion.filtering import guided_filter
from ctp_nipype.sims.phantom import PhantomLabel, make_phantom
from ctp_nipype.perfusion.prepare import prepare_curves
from ctp_nipype.sims.simulate import residue_function, simulate_curves
from ctp_nipype.perfusion.svd import SVDModel

CBFS = (10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0)  # ml/100 g/min
MTTS = (4.0, 6.0, 8.0, 12.0, 16.0)  # s
#: labels whose voxels share the undelayed global AIF (mixing them keeps a curve of the form AIF (x) K)
SHARED_AIF_LABELS = (PhantomLabel.BACKGROUND, PhantomLabel.GREY_MATTER, PhantomLabel.WHITE_MATTER,
                     PhantomLabel.CSF, PhantomLabel.SKULL, PhantomLabel.SOFT_TISSUE, PhantomLabel.HEAD_HOLDER)


def grid_ratios(model, alpha, snr_db, n_curves, seed=0):
    """``{(mtt, cbf): median CBF estimate / truth}`` over the grid described in the module docstring."""
    ratios = {}
    for i, mtt in enumerate(MTTS):
        for j, cbf in enumerate(CBFS):
            sim = simulate_curves(n_curves, np.random.default_rng([seed, i, j]), frame_interval=1.0, n_frames=80,
                                  cbf=cbf, mtt=mtt, alpha=alpha, t_a=0.0, delay=0.0, snr_db=snr_db,
                                  aif_type="gamma")
            maps = estimate_curves(sim.global_aif, sim.tissue, sim.frame_times, model=model)
            ratios[mtt, cbf] = float(np.median(maps["cbf"] / cbf))
    return ratios


def print_grid(models, alpha, snr_db, n_curves):
    noise = "noise free" if np.isinf(snr_db) else f"{snr_db:g} dB"
    print(f"\nMedian CBF estimate / truth, gamma residue of shape {alpha:g}, {noise} ({n_curves} curves a cell)\n")
    print("| weights | MTT (s) | " + " | ".join(f"CBF {c:g}" for c in CBFS) + " | spread |")
    print("|---|---:|" + "---:|" * (len(CBFS) + 1))
    for name, model in models:
        ratios = grid_ratios(model, alpha, snr_db, n_curves)
        for mtt in MTTS:
            row = [ratios[mtt, c] for c in CBFS]
            print(f"| {name} | {mtt:g} | " + " | ".join(f"{r:.2f}" for r in row)
                  + f" | {max(row) - min(row):.2f} |", flush=True)


def filtered_grey_matter(seed, residue_shape=3.0):
    """The small phantom's grey matter (noise free) raw and guided-filtered, with both truths (module docstring).

    Returns ``(curves_raw, curves_filtered, truth_cbf, filtered_truth_cbf)``; the curves are
    :func:`~ctp_nipype.perfusion.prepare.prepare_curves` results with the phantom's true AIF.
    """
    ph = make_phantom("small", seed=seed, noise_sd_hu=0.0, residue_shape=residue_shape)
    times = ph.frame_times - ph.frame_times[0]
    tissue = np.isin(ph.labels, (PhantomLabel.GREY_MATTER, PhantomLabel.WHITE_MATTER))
    flow_residue = np.zeros(ph.labels.shape + times.shape, np.float32)
    flow_residue[tissue] = (RHO / KAPPA_H) * ph.cbf[tissue][:, None] / 6000.0 * residue_function(
        times, ph.mtt[tissue], residue_shape)
    guidance = ph.hu.mean(axis=-1)
    filtered_hu = guided_filter(ph.hu, guidance=guidance, radius=1)
    filtered_residue = guided_filter(flow_residue, guidance=guidance, radius=1)
    other = ~np.isin(ph.labels, SHARED_AIF_LABELS)
    near_other = ndimage.binary_dilation(other, np.ones((3, 3, 1), bool))
    grey = (ph.labels == PhantomLabel.GREY_MATTER) & ~near_other
    filtered_truth = cbf_from_residue(filtered_residue[grey], KAPPA_H, RHO)
    raw = prepare_curves(ph.hu[grey], ph.frame_times, ph.aif)
    filtered = prepare_curves(filtered_hu[grey], ph.frame_times, ph.aif)
    return raw, filtered, ph.cbf[grey], filtered_truth


def print_phantom(models, seeds):
    print("\nSmall phantom, grey matter away from vessels and lesion, noise free, true AIF: median CBF / truth "
          "without a filter | after the guided filter (r = 1) against the filtered curves' truth\n")
    print("| seed | voxels | filtered truth / truth | sSVD | " + " | ".join(name for name, _ in models) + " |")
    print("|---:|---:|---:|---|" + "---|" * len(models))
    for seed in seeds:
        raw, filtered, truth, filtered_truth = filtered_grey_matter(seed)
        cells = []
        for curves, reference in ((raw, truth), (filtered, filtered_truth)):
            cbf = SVDModel(curves.aif, curves.frame_times, method="ssvd").fit(curves.tissue).cbf
            cells.append([float(np.median(cbf / reference))])
            for _, model in models:
                maps = estimate_curves(curves.aif, curves.tissue, curves.frame_times, model=model)
                cells[-1].append(float(np.median(maps["cbf"] / reference)))
        pairs = " | ".join(f"{a:.2f} / {b:.2f}" for a, b in zip(*cells))
        print(f"| {seed} | {truth.size} | {np.median(filtered_truth / truth):.2f} | {pairs} |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", default=["shipped"],
                        help="weights files ('shipped' for the package's)")
    parser.add_argument("--tables", nargs="+", type=int, default=[1, 2, 3], choices=[1, 2, 3])
    parser.add_argument("--alpha", type=float, default=3.0, help="residue shape of tables 1 and 2")
    parser.add_argument("--n-curves", type=int, default=500)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(8)))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    models = [(weights, load_model(SHIPPED_WEIGHTS if weights == "shipped" else weights))
              for weights in args.weights]
    for name, model in models:
        print(f"{name}: tissue_normalisation {model.config.tissue_normalisation!r}")
    if 1 in args.tables:
        print_grid(models, args.alpha, np.inf, args.n_curves)
    if 2 in args.tables:
        print_grid(models, args.alpha, 20.0, args.n_curves)
    if 3 in args.tables:
        print_phantom(models, args.seeds)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
