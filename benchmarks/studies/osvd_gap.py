"""Why oSVD loses far more grey-matter CBF on the phantom than on the test sets (docs/validation.md, point 2).

Question: with the true AIF and no filter, oSVD returns 0.71 of the phantom's grey-matter CBF at 2 HU of
noise and 0.60 at 8 HU (``benchmarks/studies/phantom_steps.py --tables 5``), but a mean CBF ratio of 0.84-0.93 on
the test sets from 5 to 25 dB. The test sets' curves differ from the phantom's grey matter in residue shape,
MTT and CBF, AIF, frames, delay and in how noise is defined. Which difference makes the gap?

    python benchmarks/studies/osvd_gap.py [--voxels 4000] [--seed 0] [--phantom-seed 4] [--noise-hu 0 2 8]

Every row but the first is a batch of ``--voxels`` curves from ``simulate.simulate_curves`` (no dispersion),
deconvolved by oSVD and sSVD (``svd.SVDModel``, one model per distinct AIF: the same results as the test
sets' ``evaluation.deconvolve_svd_batch``); each cell is the median over the curves of estimated / true CBF.
The columns are noise levels: sigma in HU for the rows with the phantom's noise, and for the rows with the
test sets' noise the SNR in dB that the base curves' noise-free peak has at that sigma. The last two columns
are oSVD's median oscillation index without noise and its median threshold at the highest noise.

Block A, the phantom's grey matter, then one factor at a time changed toward the test sets:

* ``phantom grey matter``: the phantom itself (``make_phantom('small', phantom_seed)``, true AIF, no filter;
  median estimate / median truth, as table 5 of ``phantom_steps.py``).
* ``base``: simulated curves like it: the phantom's AIF (gamma variate with its bolus parameters), gamma
  residue of shape 3, CBF 60 ml/100 g/min, MTT 4 s, 60 frames of 1 s, no delay; noise of sigma HU added to
  the attenuation (baseline 40 HU) and the mean of the pre-bolus frames subtracted (``prepare_curves``), as in
  the phantom.
* ``residue``: exponential residue (alpha 1), as the test sets.
* ``MTT``: MTT 8 or 12 s at the test sets' CBV of 4 ml/100 g (CBF 30 or 20), MTT 12 s at CBF 60 (CBV 12: the
  longer residue without the loss of signal), and MTT drawn as in the test sets (uniform 3.43-24 s, CBV 4;
  the factor's row in the conclusion).
* ``AIF``: the test sets' AIFs: gamma variate or Parker (half each), stretched in time and value by factors
  in [0.7, 1.3], onset 3-8 s (a pool of ``--aifs`` AIFs drawn from the simulator's ranges).
* ``frames``: the test sets' 80 frames of 1 s.
* ``delay``: the test sets' delays, uniform in [0, 25] s.
* ``noise``: the test sets' noise: added to the concentration (no baseline subtracted), sigma = peak /
  10^(SNR/20) of each curve's own noise-free peak, at the SNR the base curves have at the column's sigma.
* ``residue and MTT/CBF``: both as the test sets.

Block B, the test sets' curves (every factor above changed: the common settings of Table 1), then one factor
at a time set back to the phantom's grey matter (``- residue`` etc.).

Below the table: test set #1 itself (``make_test_set(1)``, ``deconvolve_svd_batch``) at 20 and 7 dB, and a
conclusion computed from the table: the share of the gap (test-set curves minus base, in oSVD's ratio) that
each factor's change moves alone from the base (A) and, set back, from the test-set curves (B).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from ctp_nipype.perfusion.evaluation import deconvolve_svd_batch
from ctp_nipype.sims.phantom import MATERIAL_HU, make_phantom
from ctp_nipype.perfusion.prepare import prepare_curves
from ctp_nipype.sims.simulate import AIF_PEAK_HU, GAMMA_AIF_SHAPE, TRAINING_RANGES, simulate_curves
from ctp_nipype.perfusion.svd import SVDModel
from ctp_nipype.sims.testsets import COMMON_SETTINGS, TEST_CBV, make_test_set, n_frames_for
from ctp_nipype.validation import grey_matter_svd

METHODS = ("osvd", "ssvd")
TISSUE_HU = MATERIAL_HU["grey_matter"]  # unenhanced attenuation of the simulated voxels
BLOOD_HU = MATERIAL_HU["blood"]

#: the phantom's grey matter (phantom.DEFAULT_TISSUE, make_phantom's defaults, phantom_frame_times)
PHANTOM_GM = {
    "residue_alpha": 3.0,
    "mtt": 4.0,
    "cbf": 60.0,
    "aif": "phantom",
    "n_frames": 60,
    "frame_interval": 1.0,
    "delay": 0.0,
    "noise": "hu",
}
#: the test sets' common settings (testsets.COMMON_SETTINGS, Table 1); "testsets": drawn as there
TEST_SET_CURVES = {
    "residue_alpha": COMMON_SETTINGS["alpha"],
    "mtt": "testsets",
    "cbf": "testsets",
    "aif": "testsets",
    "n_frames": n_frames_for(COMMON_SETTINGS["frame_interval"]),
    "frame_interval": COMMON_SETTINGS["frame_interval"],
    "delay": "testsets",
    "noise": "snr",
}
#: the two factors that the conclusion may find together, and their joint row
BOTH = ("MTT/CBF", "residue")
#: block A: (factor, label, change to PHANTOM_GM); a factor's row for the conclusion carries its name,
#: rows that only illustrate carry None
CHANGES_A = [
    ("residue", "residue exponential (alpha 1)", {"residue_alpha": COMMON_SETTINGS["alpha"]}),
    (None, "MTT 8 s, CBF 30 (CBV 4)", {"mtt": 8.0, "cbf": 60.0 * TEST_CBV / 8.0}),
    (None, "MTT 12 s, CBF 20 (CBV 4)", {"mtt": 12.0, "cbf": 60.0 * TEST_CBV / 12.0}),
    (None, "MTT 12 s, CBF 60 (CBV 12)", {"mtt": 12.0}),
    ("MTT/CBF", "MTT 3.43-24 s, CBV 4 (test sets)", {"mtt": "testsets", "cbf": "testsets"}),
    ("AIF", "AIF of the test sets", {"aif": "testsets"}),
    ("frames", "frames 80 x 1 s", {"n_frames": TEST_SET_CURVES["n_frames"]}),
    ("delay", "delay 0-25 s", {"delay": "testsets"}),
    ("noise", "noise as SNR on the concentration", {"noise": "snr"}),
    (BOTH, "residue and MTT/CBF both as the test sets",
     {"residue_alpha": COMMON_SETTINGS["alpha"], "mtt": "testsets", "cbf": "testsets"}),
]
#: block B: (factor, label, change to TEST_SET_CURVES), each factor set back to the phantom's grey matter
CHANGES_B = [
    ("residue", "- residue: gamma, alpha 3", {"residue_alpha": PHANTOM_GM["residue_alpha"]}),
    ("MTT/CBF", "- MTT/CBF: 4 s, 60", {"mtt": PHANTOM_GM["mtt"], "cbf": PHANTOM_GM["cbf"]}),
    ("AIF", "- AIF: the phantom's", {"aif": "phantom"}),
    ("frames", "- frames: 60 x 1 s", {"n_frames": PHANTOM_GM["n_frames"]}),
    ("delay", "- delay: 0", {"delay": 0.0}),
    ("noise", "- noise: sigma in HU, baseline subtracted", {"noise": "hu"}),
]


def phantom_bolus(seed):
    """The bolus parameters of the phantom (make_phantom draws them from the seed)."""
    return make_phantom("small", seed=seed, noise_sd_hu=0.0).parameters["bolus"]


def aif_pool(n_aifs, rng, ranges=TRAINING_RANGES):
    """``n_aifs`` AIFs drawn as the test sets draw theirs: type (half each), time and value scale, onset."""
    return {
        "aif_type": np.resize(np.array(ranges.aif_types), n_aifs)[rng.permutation(n_aifs)],
        "aif_time_scale": rng.uniform(*ranges.aif_time_scale, n_aifs),
        "aif_value_scale": rng.uniform(*ranges.aif_value_scale, n_aifs),
        "aif_onset": rng.uniform(*ranges.aif_onset, n_aifs),
    }


def curve_parameters(settings, n, draws, bolus, pool):
    """Keyword arguments of simulate_curves for ``n`` curves, and each curve's AIF group."""
    mtt = draws["mtt"][:n] if settings["mtt"] == "testsets" else np.full(n, settings["mtt"])
    kwargs = {
        "alpha": settings["residue_alpha"],
        "t_a": 0.0,
        "mtt": mtt,
        "cbf": 60.0 * TEST_CBV / mtt if settings["cbf"] == "testsets" else np.full(n, settings["cbf"]),
        "delay": draws["delay"][:n] if settings["delay"] == "testsets" else settings["delay"],
    }
    if settings["aif"] == "phantom":
        group = np.zeros(n, int)
        kwargs.update(aif_type="gamma", aif_time_scale=bolus["beta_s"] / GAMMA_AIF_SHAPE["beta"],
                      aif_value_scale=bolus["peak_hu"] / AIF_PEAK_HU, aif_onset=bolus["t0_s"])
    else:
        group = draws["aif_group"][:n]
        kwargs.update({key: values[group] for key, values in pool.items()})
    return kwargs, group


def deconvolve(sim, group, noise, sigma_hu, rng):
    """Median CBF ratio of oSVD and sSVD, oSVD's median OI and threshold; one SVDModel per AIF (not voxel)."""
    if noise == "hu":  # the phantom's way: HU noise on the attenuation, pre-bolus mean subtracted
        hu = TISSUE_HU + sim.tissue_clean.astype(np.float64)
        if sigma_hu > 0:
            hu += sigma_hu * rng.standard_normal(hu.shape)
    cbf = {m: np.zeros(sim.n_curves) for m in METHODS}
    oi, threshold = np.zeros(sim.n_curves), np.zeros(sim.n_curves)
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        if noise == "hu":
            aif_hu = BLOOD_HU + sim.global_aif[rows[0]].astype(float)
            curves = prepare_curves(hu[rows], sim.frame_times, aif_hu)
            aif, tissue = curves.aif, curves.tissue
        else:  # the test sets' way: the noisy concentration and the noise-free global AIF as they are
            aif, tissue = sim.global_aif[rows[0]].astype(float), sim.tissue[rows]
        for method in METHODS:
            fit = SVDModel(aif, sim.frame_times, method=method).fit(tissue)
            cbf[method][rows] = fit.cbf
            if method == "osvd":
                oi[rows], threshold[rows] = fit.oscillation_index, fit.threshold
    cell = {m: float(np.median(cbf[m] / sim.cbf)) for m in METHODS}
    return cell | {"oi": float(np.median(oi)), "threshold": float(np.median(threshold))}


def run_row(settings, args, noise_hu, snr_db, draws, bolus, pool):
    """One table row: a cell (see :func:`deconvolve`) per noise column."""
    kwargs, group = curve_parameters(settings, args.voxels, draws, bolus, pool)
    cells = []
    for k, (sigma, snr) in enumerate(zip(noise_hu, snr_db)):
        rng = np.random.default_rng([args.seed, k])  # the same noise stream in every row
        snr = snr if settings["noise"] == "snr" else np.inf  # "hu": noise added in deconvolve
        sim = simulate_curves(args.voxels, rng, frame_interval=settings["frame_interval"],
                              n_frames=settings["n_frames"], snr_db=snr, **kwargs)
        cells.append(deconvolve(sim, group, settings["noise"], sigma, rng))
    return cells


def phantom_row(seed, noise_hu):
    """The phantom's grey matter itself, as table 5 of phantom_steps.py."""
    return [grey_matter_svd("small", seed, sigma)[0] for sigma in noise_hu]


def testset_reference(levels_db, n_per_level):
    """Test set #1 itself: ``{level: {method: (mean, median) CBF ratio}}`` at some of its SNR levels."""
    sim = make_test_set(1, n_curves=7 * n_per_level)[0]
    out = {}
    for level in levels_db:
        keep = np.isclose(sim.snr_db, level)
        fit = deconvolve_svd_batch(sim.global_aif[keep], sim.tissue[keep], sim.frame_times, methods=METHODS,
                                   workers=1)
        ratios = {m: fit[m]["cbf"] / sim.cbf[keep] for m in METHODS}
        out[level] = {m: (float(np.mean(r)), float(np.median(r))) for m, r in ratios.items()}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=4000, help="curves per row and noise level")
    parser.add_argument("--seed", type=int, default=0, help="seed of the curves' draws and noise")
    parser.add_argument("--phantom-seed", type=int, default=4, help="phantom whose AIF and grey matter serve")
    parser.add_argument("--noise-hu", type=float, nargs="+", default=[0.0, 2.0, 8.0], help="columns, HU")
    parser.add_argument("--aifs", type=int, default=32, help="AIFs in the pool of the test sets' AIFs")
    parser.add_argument("--testset-curves", type=int, default=300, help="curves per level of test set #1")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    start = time.perf_counter()

    bolus = phantom_bolus(args.phantom_seed)
    draw_rng = np.random.default_rng([args.seed, 1000])
    pool = aif_pool(args.aifs, draw_rng)
    draws = {
        "mtt": draw_rng.uniform(*COMMON_SETTINGS["mtt"], args.voxels),
        "delay": draw_rng.uniform(*COMMON_SETTINGS["delay"], args.voxels),
        "aif_group": np.resize(np.arange(args.aifs), args.voxels)[draw_rng.permutation(args.voxels)],
    }
    noise_hu = [float(s) for s in args.noise_hu]
    # the SNR (the test sets' definition) that the base curves' noise-free peak has at each sigma
    base_kwargs, _ = curve_parameters(PHANTOM_GM, 1, draws, bolus, pool)
    base_peak = float(simulate_curves(1, 0, frame_interval=PHANTOM_GM["frame_interval"],
                                      n_frames=PHANTOM_GM["n_frames"], snr_db=np.inf,
                                      **base_kwargs).tissue_clean.max())
    snr_db = [np.inf if s == 0 else 20 * np.log10(base_peak / s) for s in noise_hu]

    def row(settings):
        return run_row(settings, args, noise_hu, snr_db, draws, bolus, pool)

    rows = [("A", None, f"phantom grey matter (small, seed {args.phantom_seed})",
             phantom_row(args.phantom_seed, noise_hu)),
            ("A", "base", "base: simulated phantom grey matter", row(PHANTOM_GM))]
    rows += [("A", factor, label, row(PHANTOM_GM | change)) for factor, label, change in CHANGES_A]
    rows.append(("B", "all", "test-set curves (all factors changed)", row(TEST_SET_CURVES)))
    rows += [("B", factor, label, row(TEST_SET_CURVES | change)) for factor, label, change in CHANGES_B]

    def level(k):
        return "noise free" if noise_hu[k] == 0 else f"{noise_hu[k]:g} HU / {snr_db[k]:.1f} dB"

    n = len(noise_hu)
    print(f"Median over curves of CBF estimate / truth ({args.voxels} curves per cell, seed {args.seed}); "
          f"base grey-matter peak {base_peak:.2f} HU.\n")
    print("| block | row | " + " | ".join(f"oSVD, {level(k)}" for k in range(n)) + " | "
          + " | ".join(f"sSVD, {level(k)}" for k in range(n))
          + f" | oSVD OI, {level(0)} | oSVD threshold, {level(n - 1)} |")
    print("|---|---|" + "---:|" * (2 * n + 2))
    for block, _, label, cells in rows:
        print(f"| {block} | {label} | " + " | ".join(f"{c['osvd']:.2f}" for c in cells) + " | "
              + " | ".join(f"{c['ssvd']:.2f}" for c in cells)
              + f" | {cells[0]['oi']:.3f} | {cells[-1]['threshold']:.3f} |", flush=True)

    reference = testset_reference((20.0, 7.0), args.testset_curves)
    print(f"\nTest set #1 itself ({args.testset_curves} curves per level, deconvolve_svd_batch), CBF ratio "
          "mean (median): " + "; ".join(
              f"{lv:g} dB oSVD {v['osvd'][0]:.2f} ({v['osvd'][1]:.2f}), sSVD {v['ssvd'][0]:.2f} "
              f"({v['ssvd'][1]:.2f})" for lv, v in reference.items()))

    # the conclusion: the share of the gap (test-set curves minus base, oSVD) that each factor's change moves
    # oSVD's ratio, alone from the base (block A) and, set back, from the test-set curves (block B)
    noisy = [k for k in range(n) if noise_hu[k] > 0]
    by_factor = {(block, factor): cells for block, factor, _, cells in rows}
    base, full = by_factor["A", "base"], by_factor["B", "all"]

    def share(block, factor):
        cells = by_factor[block, factor]
        moved = [cells[k]["osvd"] - base[k]["osvd"] if block == "A" else full[k]["osvd"] - cells[k]["osvd"]
                 for k in noisy]
        return [m / (full[k]["osvd"] - base[k]["osvd"]) for m, k in zip(moved, noisy)]

    factors = [f for f, _, _ in CHANGES_B]
    weight = {f: float(np.mean(np.abs(share("A", f) + share("B", f)))) for f in factors}
    ranked = sorted(factors, key=lambda f: -weight[f])
    main_factors = [f for f in ranked if weight[f] >= 0.5] or ranked[:1]
    minor = [f for f in ranked if f not in main_factors]

    def values(cells):
        return "/".join(f"{cells[k]['osvd']:.2f}" for k in noisy)

    def effect(f):
        direction = "raises" if np.mean(share("A", f) + share("B", f)) > 0 else "lowers"
        percent = {b: "/".join(f"{v:+.0%}" for v in share(b, f)) for b in "AB"}
        return (f"{f} {direction} it: alone {values(by_factor['A', f])} ({percent['A']} of the gap), "
                f"set back in the test-set curves {values(by_factor['B', f])} ({percent['B']})")

    together = ""
    if sorted(main_factors) == sorted(BOTH):
        together = f"; {' and '.join(BOTH)} together {values(by_factor['A', BOTH])}"
    print(f"\nConclusion: at {' and '.join(level(k) for k in noisy)} oSVD's CBF ratio is {values(base)} on "
          f"the phantom-like base and {values(full)} on the test-set curves; the factors that move it by "
          "half the gap or more (mean |share| over both blocks and the noisy columns): "
          + "; ".join(effect(f) for f in main_factors) + together + ". The others' mean |share|: "
          + ", ".join(f"{f} {weight[f]:.0%}" for f in minor) + ".")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
