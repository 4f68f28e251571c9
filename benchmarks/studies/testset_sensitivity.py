"""How simulation choices move the SVD family's scores on the paper's test sets (docs/validation.md).

Re-scores sSVD, cSVD and oSVD on the six test sets of Table 1 with the noise
redrawn under different SNR definitions (same clean curves, same seed), and
splits the scores by AIF shape. Prints one line per (variant, subset, method):
CBF RMSE, delay (Tmax) RMSE and CBF ratio, as the mean over the six sets.

    python benchmarks/studies/testset_sensitivity.py [--n-curves 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ctp_nipype.perfusion.evaluation import SVD_METHODS, deconvolve_svd_batch, summarize
from ctp_nipype.sims.testsets import make_test_sets

#: Signal level S of SNR_dB = 20 log10(S / sigma), per clean tissue curve (n, T).
SIGNAL_LEVELS = {
    "peak (ours)": lambda clean: clean.max(axis=1),
    "rms over the window": lambda clean: np.sqrt(np.mean(clean**2, axis=1)),
    "noise-free": lambda clean: np.zeros(clean.shape[0]),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-curves", type=int, default=2000)
    parser.add_argument("--variants", nargs="+", default=list(SIGNAL_LEVELS))
    args = parser.parse_args(argv)
    sets = make_test_sets(n_curves=args.n_curves)
    print("variant | subset | method | CBF RMSE | delay RMSE | CBF ratio (mean of the six sets)")
    for variant in args.variants:
        start = time.perf_counter()
        rng = np.random.default_rng(0)
        records = {m: {} for m in SVD_METHODS}
        for number, groups in sets.items():
            parts = {m: [] for m in SVD_METHODS}
            for sim in groups:
                clean = sim.tissue_clean.astype(float)
                with np.errstate(divide="ignore"):
                    sigma = SIGNAL_LEVELS[variant](clean) / 10 ** (sim.snr_db / 20)
                tissue = clean + rng.standard_normal(clean.shape) * sigma[:, None]
                out = deconvolve_svd_batch(sim.global_aif, tissue, sim.frame_times)
                for m in SVD_METHODS:
                    parts[m].append({"cbf_true": sim.cbf, "cbf_est": out[m]["cbf"], "delay_true": sim.delay,
                                     "delay_est": out[m]["tmax"], "aif_type": sim.aif_type})
            for m in SVD_METHODS:
                records[m][number] = {k: np.concatenate([p[k] for p in parts[m]]) for k in parts[m][0]}
        for subset in ("all", "gamma", "parker"):
            for m in SVD_METHODS:
                scores = []
                for record in records[m].values():
                    keep = np.ones(record["cbf_true"].size, bool) if subset == "all" else record["aif_type"] == subset
                    scores.append(summarize({k: v[keep] for k, v in record.items() if k != "aif_type"}))
                mean = {k: np.mean([s[k] for s in scores]) for k in ("cbf_rmse", "delay_rmse", "cbf_ratio_mean",
                                                                     "cbf_ratio_sd")}
                print(f"{variant} | {subset} | {m} | {mean['cbf_rmse']:.2f} | {mean['delay_rmse']:.2f} | "
                      f"{mean['cbf_ratio_mean']:.2f} ± {mean['cbf_ratio_sd']:.2f}", flush=True)
        print(f"# {variant}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
