"""Every target of issue 28 item 3 for network weights, against oSVD (and sSVD) in the same run.

    python benchmarks/studies/network_targets.py [--weights shipped RUN/best_ema.safetensors ...]
        [--flow-scale network least_squares] [--n-curves 2000] [--n-per-cell 200] [--low-flow-curves 1000]
        [--linearity-curves 100] [--phantom small demo] [--seeds 0 1 2 3 4 5 6 7] [--threads 1]

For each weights file and flow scale (``estimate_curves(..., flow_scale=...)``: the network's residue as it
is, or its shape scaled to fit the tissue curve by least squares) it prints:

1. the paper's six test sets (``--n-curves`` per set, each set's fixed seed): mean CBF RMSE against 0.65 x
   oSVD's, the sets where the network does not beat oSVD, BAD RMSE (<= 0.9 s), mean CBF ratio (1.00 +- 0.05),
   local-AIF r (>= 0.97);
2. the generalisation suite (``--n-per-cell`` per cell, ``ctp_nipype.sims.generalisation``): the cells where
   sSVD's median CBF ratio lies in [0.7, 1.3] and the network's outside [0.85, 1.15], and the cells whose
   median |delay error| over curves with delay <= 10 s and T_A <= 3 s exceeds 1.0 s;
3. low flow under noise (``low_flow_cell``: CBF 5-20, MTT 8-16 s, grey matter's peak 4 noise sd): median CBF
   ratio (in [0.75, 1.33]) and median |delay error| (<= 2 s);
4. linearity in the curve: noise free, true AIF, gamma AIF, 1 s frames over 80 s, for MTT 3, 4, 6, 8, 12, 16 s
   and residue shapes 1, 3, 100, the largest |ratio(CBF c) - ratio(CBF 60)| over c = 5, 10, 20 (<= 0.08), the
   same curves at every CBF of a cell (a linear method shows 0.00);
5. with ``--phantom SIZE ...``: grey-matter CBF / truth through the BIDS App at 8 HU on ``--seeds``
   (``benchmarks/pipeline_noise.py``'s measure; all within 15% of the truth?). Slow: about 10 s a seed on the
   small phantom and 80 s on the demo one, per weights file.

The SVD rows do not depend on the weights; they are computed once per run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ctp_nipype.nn.inference import FLOW_SCALES, estimate_curves
from ctp_nipype.nn.model import PerfusionTransformer
from ctp_nipype.nn.weights import SHIPPED_WEIGHTS, load_model, save_weights
from ctp_nipype.perfusion.evaluation import evaluate, register_method
from ctp_nipype.perfusion.generalisation import evaluate_suite
from ctp_nipype.sims.generalisation import low_flow_cell, make_suite
from ctp_nipype.sims.simulate import simulate_curves
from ctp_nipype.sims.testsets import make_test_sets

LINEARITY_MTTS = (3.0, 4.0, 6.0, 8.0, 12.0, 16.0)
LINEARITY_SHAPES = (1.0, 3.0, 100.0)
LINEARITY_LOW_CBFS = (5.0, 10.0, 20.0)
LINEARITY_REFERENCE_CBF = 60.0


def renormalised(model, tissue_normalisation):
    """The same parameters read with another input normalisation (:mod:`ctp_nipype.nn.model`)."""
    copy = PerfusionTransformer(replace(model.config, tissue_normalisation=tissue_normalisation))
    copy.load_state_dict(model.state_dict())
    return copy.eval()


def network_method(model, flow_scale):
    """A method for :mod:`ctp_nipype.perfusion.evaluation` that runs a loaded network (no reload per group)."""

    def method(global_aif, tissue, frame_times):
        out = estimate_curves(global_aif, tissue, frame_times, model=model, flow_scale=flow_scale)
        return {"cbf": out["cbf"], "delay": out["bad"], "local_aif": out["local_aif"]}

    return method


def paper_sets(methods, n_curves):
    """Targets on the paper's six sets: returns ``{method: summary}`` and prints nothing."""
    result = evaluate(make_test_sets(n_curves=n_curves), methods)
    out = {}
    for method in methods:
        per_set = {number: result.summary(method, number) for number in result.sets}
        mean = result.mean_of_sets(method)
        out[method] = {"per_set": per_set, "mean": mean}
    return out


def linearity(model, flow_scale, n_curves):
    """``{(shape, mtt): {cbf: median ratio}}`` on noise-free curves with the true (gamma) AIF."""
    table = {}
    for i, shape in enumerate(LINEARITY_SHAPES):
        for j, mtt in enumerate(LINEARITY_MTTS):
            row = {}
            for cbf in (*LINEARITY_LOW_CBFS, LINEARITY_REFERENCE_CBF):
                # the same curves (AIF stretch and onset) at every CBF of a cell: only their height changes
                sim = simulate_curves(n_curves, np.random.default_rng([11, i, j]), frame_interval=1.0,
                                      n_frames=80, cbf=cbf, mtt=mtt, alpha=shape, t_a=0.0, delay=0.0,
                                      snr_db=np.inf, aif_type="gamma")
                maps = estimate_curves(sim.global_aif, sim.tissue, sim.frame_times, model=model,
                                       flow_scale=flow_scale)
                row[cbf] = float(np.median(maps["cbf"] / cbf))
            table[shape, mtt] = row
    return table


def phantom_ratios(weights, sizes, seeds):
    """Grey-matter CBF / truth through the BIDS App at 8 HU, per size and seed (pipeline_noise.py's measure)."""
    from ctp_nipype.validation import pipeline_grey_matter_ratios as grey_matter_ratios

    out = {}
    for size in sizes:
        for seed in seeds:
            with tempfile.TemporaryDirectory(prefix="ctp_targets_") as work:
                ratios = grey_matter_ratios(Path(work), 8.0, seed, ["transformer"], size=size,
                                            weights=None if weights == "shipped" else weights)
            out[size, seed] = float(ratios["transformer"])
    return out


def verdict(ok):
    return "yes" if ok else "NO"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", default=["shipped"], help="weights files ('shipped' for the package's)")
    parser.add_argument("--flow-scale", nargs="+", default=["network"], choices=FLOW_SCALES)
    parser.add_argument("--n-curves", type=int, default=2000, help="curves per paper test set")
    parser.add_argument("--n-per-cell", type=int, default=200, help="curves per cell of the generalisation suite")
    parser.add_argument("--low-flow-curves", type=int, default=1000)
    parser.add_argument("--linearity-curves", type=int, default=100)
    parser.add_argument("--phantom", nargs="*", default=[], choices=("small", "demo"))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(8)))
    parser.add_argument("--tissue-normalisation", choices=("aif_peak", "tissue_amplitude"),
                        help="read every weights file with this input normalisation instead of its own (e.g. the "
                             "shipped 'aif_peak' weights with 'tissue_amplitude', untrained for it)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--skip", nargs="*", default=[], choices=("paper", "suite", "lowflow", "linearity"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    networks = {}
    work = Path(tempfile.mkdtemp(prefix="ctp_targets_weights_"))
    for index, weights in enumerate(list(args.weights)):
        model = load_model(SHIPPED_WEIGHTS if weights == "shipped" else weights)
        label = f"{Path(weights).parent.name + '/' if weights != 'shipped' else ''}{Path(weights).stem}"
        if args.tissue_normalisation and args.tissue_normalisation != model.config.tissue_normalisation:
            model = renormalised(model, args.tissue_normalisation)
            label += f"[{args.tissue_normalisation}]"
            args.weights[index] = weights = str(save_weights(model, work / f"{index}.safetensors"))  # for the phantom
        for flow_scale in args.flow_scale:
            name = f"{label}:{flow_scale}"
            register_method(name, network_method(model, flow_scale))
            networks[name] = (weights, model, flow_scale)
    print(f"weights: {', '.join(networks)}; paper sets {args.n_curves} curves each, suite {args.n_per_cell} a cell, "
          f"low flow {args.low_flow_curves}, linearity {args.linearity_curves} a cell, torch threads {args.threads}")

    if "paper" not in args.skip:
        paper = paper_sets(["osvd", *networks], args.n_curves)
        osvd = paper["osvd"]
        print(f"\n1. Paper's six sets ({args.n_curves} curves each); oSVD mean CBF RMSE {osvd['mean']['cbf_rmse']:.2f}, "
              "per set " + ", ".join(f"{s['cbf_rmse']:.2f}" for s in osvd["per_set"].values()))
        print("\n| network | mean CBF RMSE (x oSVD) | <= 0.65x | sets not beating oSVD | per set | BAD RMSE (s) "
              "| CBF ratio | local-AIF r |")
        print("|---|---:|---|---|---|---:|---:|---:|")
        for name in networks:
            mean, per_set = paper[name]["mean"], paper[name]["per_set"]
            losing = [f"#{k}" for k, s in per_set.items() if s["cbf_rmse"] >= osvd["per_set"][k]["cbf_rmse"]]
            factor = mean["cbf_rmse"] / osvd["mean"]["cbf_rmse"]
            sets = ", ".join(f"{s['cbf_rmse']:.2f}" for s in per_set.values())
            print(f"| {name} | {mean['cbf_rmse']:.2f} ({factor:.2f}x) | {verdict(factor <= 0.65)} | "
                  f"{', '.join(losing) or 'none'} | {sets} | "
                  f"{mean['delay_rmse']:.2f} ({verdict(mean['delay_rmse'] <= 0.9)}) | "
                  f"{mean['cbf_ratio_mean']:.3f} ({verdict(abs(mean['cbf_ratio_mean'] - 1) <= 0.05)}) | "
                  f"{mean.get('aif_r_mean', float('nan')):.3f} ({verdict(mean.get('aif_r_mean', 0) >= 0.97)}) |",
                  flush=True)

    if "suite" not in args.skip:
        cells = make_suite(args.n_per_cell)
        rows = evaluate_suite(cells, ["ssvd", "osvd", *networks])
        reference = {(r["axis"], r["level"]): r for r in rows if r["method"] == "ssvd"}
        eligible = [key for key, r in reference.items() if 0.7 <= r["cbf_ratio_median"] <= 1.3]
        print(f"\n2. Generalisation suite ({len(cells)} cells of {args.n_per_cell}); sSVD's median CBF ratio in "
              f"[0.7, 1.3] in {len(eligible)} cells")
        print("\n| network | eligible cells in [0.85, 1.15] | cells outside (median ratio) | cells with median "
              "|delay error| > 1 s (delay <= 10 s, T_A <= 3 s) |")
        print("|---|---:|---|---|")
        for name in networks:
            mine = {(r["axis"], r["level"]): r for r in rows if r["method"] == name}
            outside = [f"{a} {l}: {mine[a, l]['cbf_ratio_median']:.2f}" for a, l in eligible
                       if not 0.85 <= mine[a, l]["cbf_ratio_median"] <= 1.15]
            late = [f"{a} {l}: {r['delay_abs_error_median_target']:.2f}" for (a, l), r in mine.items()
                    if np.isfinite(r["delay_abs_error_median_target"]) and r["delay_abs_error_median_target"] > 1.0]
            print(f"| {name} | {len(eligible) - len(outside)} of {len(eligible)} | {'; '.join(outside) or 'none'} | "
                  f"{'; '.join(late) or 'none'} |", flush=True)
        osvd_rows = {(r["axis"], r["level"]): r for r in rows if r["method"] == "osvd"}
        in_band = sum(0.85 <= osvd_rows[key]["cbf_ratio_median"] <= 1.15 for key in eligible)
        print(f"\n(oSVD in the same cells: {in_band} of {len(eligible)} in [0.85, 1.15])")

    if "lowflow" not in args.skip:
        cell = low_flow_cell(args.low_flow_curves)
        rows = evaluate_suite([cell], ["ssvd", "osvd", *networks])
        print(f"\n3. Low flow under noise ({cell.label}, {args.low_flow_curves} curves)\n")
        print("| method | median CBF ratio (IQR) | in [0.75, 1.33] | median |delay error| (s) | <= 2 s |")
        print("|---|---:|---|---:|---|")
        for row in rows:
            ratio = row["cbf_ratio_median"]
            print(f"| {row['method']} | {ratio:.2f} ({row['cbf_ratio_q25']:.2f}-{row['cbf_ratio_q75']:.2f}) | "
                  f"{verdict(0.75 <= ratio <= 1.33)} | {row['delay_abs_error_median']:.2f} | "
                  f"{verdict(row['delay_abs_error_median'] <= 2.0)} |", flush=True)

    if "linearity" not in args.skip:
        print(f"\n4. Linearity (noise free, true AIF; ratio at CBF 5 / 10 / 20 / 60; worst |difference| from CBF 60)\n")
        print("| network | shape | " + " | ".join(f"MTT {m:g}" for m in LINEARITY_MTTS) + " | worst | <= 0.08 |")
        print("|---|---:|" + "---|" * len(LINEARITY_MTTS) + "---:|---|")
        for name, (_, model, flow_scale) in networks.items():
            table = linearity(model, flow_scale, args.linearity_curves)
            for shape in LINEARITY_SHAPES:
                cells, worst = [], 0.0
                for mtt in LINEARITY_MTTS:
                    row = table[shape, mtt]
                    worst = max(worst, *(abs(row[c] - row[LINEARITY_REFERENCE_CBF]) for c in LINEARITY_LOW_CBFS))
                    cells.append(" / ".join(f"{row[c]:.2f}" for c in (*LINEARITY_LOW_CBFS, LINEARITY_REFERENCE_CBF)))
                print(f"| {name} | {shape:g} | " + " | ".join(cells) + f" | {worst:.2f} | {verdict(worst <= 0.08)} |",
                      flush=True)

    if args.phantom:
        print(f"\n5. Grey-matter CBF / truth through the BIDS App at 8 HU, seeds {args.seeds}\n")
        print("| weights | size | per seed | all within 15% |")
        print("|---|---|---|---|")
        for weights in args.weights:
            ratios = phantom_ratios(weights, args.phantom, args.seeds)
            for size in args.phantom:
                values = [ratios[size, seed] for seed in args.seeds]
                print(f"| {weights} | {size} | {' '.join(f'{v:.2f}' for v in values)} | "
                      f"{verdict(all(abs(v - 1) <= 0.15 for v in values))} |", flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
