"""What a longer CPU run buys: the `cpu` recipe trained with its time budget scaled, scored on the test sets.

    python benchmarks/studies/budget_curve.py RUNS_DIR [--budgets 5.5 11 22 44] [--train] [--threads 2]
        [--extra MINUTES:RUN_DIR:EVAL_DIR[:RAW_EVAL_DIR] ...] [--png docs/budget_curve.png]

For each budget B (minutes, shared between the recipe's two stages in proportion to their own 75 + 35 minutes,
as ``ctp-train --time-budget-minutes`` does), ``--train`` runs

    ctp-train --recipe cpu --out RUNS_DIR/bB --threads T --time-budget-minutes B
    ctp-evaluate RUNS_DIR/eval_B_best_ema --methods transformer --weights RUNS_DIR/bB/best_ema.safetensors
    ctp-evaluate RUNS_DIR/eval_B_best --methods transformer --weights RUNS_DIR/bB/best.safetensors

(skipping what already exists, resuming an unfinished run), one after the other so that every run has the
machine's cores to itself. ``--extra`` adds runs made elsewhere (e.g. the shipped weights' full 110-minute run
and its ``ctp-evaluate`` folders for ``best_ema`` and, optionally, ``best``; EVAL_DIR's table must hold the
transformer row, and may hold oSVD's).

Prints, per budget: steps and curves seen (from the runs' logs), and the mean over the six test sets of the
CBF RMSE, the BAD RMSE and the CBF ratio, for the moving average of the weights (what the recipe ships,
``best_ema``) and the raw best weights (``best``). Then a fit of the shipped-rule CBF RMSE against curves seen,
``RMSE(n) = a + b n^-c``, with its asymptote ``a`` (what no amount of the same training reaches below) and its
value at 50 million curves (the paper's 100 epochs of 500,000): the answer to "what a longer run buys".
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import numpy as np

from ctp_nipype.nn.logs import read_loss_rows

PAPER_CURVES = 100 * 500_000
#: the paper's network on its six test sets (mean CBF RMSE in ml/100 g/min, mean BAD RMSE in s): the targets
PAPER_CBF_RMSE, PAPER_BAD_RMSE = 4.95, 0.51
WEIGHTS = ("best_ema", "best")


def mean_row(eval_dir, method="transformer"):
    """The 'mean of sets' row of a ``ctp-evaluate`` folder for ``method``, or None."""
    table = Path(eval_dir) / "evaluation.tsv"
    if not table.exists():
        return None
    with open(table, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if row["set"] == "mean of sets" and row["method"] == method:
                return {key: float(row[key]) for key in ("cbf_rmse", "delay_rmse", "cbf_ratio_mean", "cbf_ratio_sd")}
    return None


def run_length(run_dir):
    """(steps, curves seen) over all stages of a ``ctp-train`` run, from its logs."""
    last = read_loss_rows(run_dir)[-1]
    return int(last["step"]), int(last["curves_seen"])


def train_and_evaluate(runs_dir, budget, threads):
    """Train (or resume) the cpu recipe at ``budget`` minutes and evaluate both weights; skips what exists."""
    bin_dir = Path(sys.executable).parent
    run = runs_dir / f"b{budget:g}"
    if not (run / "best_ema.safetensors").exists():
        command = [str(bin_dir / "ctp-train"), "--recipe", "cpu", "--out", str(run), "--threads", str(threads),
                   "--time-budget-minutes", f"{budget:g}", "--no-progress"]
        if run.exists():
            command.append("--resume")
        subprocess.run(command, check=True)
    for weights in WEIGHTS:
        eval_dir = runs_dir / f"eval_{budget:g}_{weights}"
        if mean_row(eval_dir) is None:
            subprocess.run([str(bin_dir / "ctp-evaluate"), str(eval_dir), "--methods", "transformer",
                            "--weights", str(run / f"{weights}.safetensors"), "--quiet"], check=True)


def saturating_fit(curves, rmse):
    """Least-squares ``a + b n^-c`` (n in millions of curves); returns (a, b, c) or None if it does not converge."""
    from scipy.optimize import curve_fit

    n = np.asarray(curves, float) / 1e6
    y = np.asarray(rmse, float)
    if n.size < 4:
        return None
    try:
        params, _ = curve_fit(lambda x, a, b, c: a + b * x ** (-c), n, y, p0=(y.min() * 0.9, 1.0, 0.5),
                              bounds=([0.0, 0.0, 0.01], [np.inf, np.inf, 5.0]), maxfev=20000)
    except RuntimeError:
        return None
    return tuple(float(p) for p in params)


def plot(path, curves, cbf, bad, fit, levels, osvd):
    """Test-set CBF and BAD RMSE against curves seen, with the targets and the fit (log x axis)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(curves, cbf, "o-", label="cpu recipe, time budget scaled (EMA weights)")
    for (label, level), style in zip(levels.items(), ("k:", "r:")):
        left.axhline(level, color=style[0], ls=style[1:], label=f"target: {label}, {level:.2f}")
    if osvd is not None:
        left.axhline(osvd["cbf_rmse"], color="r", ls="--", label="oSVD")
    if fit is not None:
        a, b, c = fit
        grid = np.geomspace(curves.min(), PAPER_CURVES, 100)
        left.plot(grid, a + b * (grid / 1e6) ** (-c), "C0--", lw=1, label="fit a + b n^-c")
    right.plot(curves, bad, "o-", color="C1")
    right.axhline(PAPER_BAD_RMSE, color="k", ls=":", label=f"target: the paper's network, {PAPER_BAD_RMSE} s")
    for axis, label in ((left, "CBF RMSE (ml/100 g/min)"), (right, "BAD RMSE (s)")):
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xlabel("training curves seen")
        axis.set_ylabel(label + ", mean of the six test sets")
        axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("--budgets", nargs="+", type=float, default=[5.5, 11, 22, 44])
    parser.add_argument("--train", action="store_true", help="train and evaluate what is missing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--extra", nargs="*", default=[], metavar="MINUTES:RUN_DIR:EVAL_DIR[:RAW_EVAL_DIR]")
    parser.add_argument("--png", type=Path)
    args = parser.parse_args(argv)

    rows = []  # (budget, run_dir, {weights: eval_dir})
    for budget in args.budgets:
        if args.train:
            train_and_evaluate(args.runs_dir, budget, args.threads)
        rows.append((budget, args.runs_dir / f"b{budget:g}",
                     {w: args.runs_dir / f"eval_{budget:g}_{w}" for w in WEIGHTS}))
    osvd = None
    for extra in args.extra:
        minutes, run, eval_dir, *raw = extra.split(":")
        rows.append((float(minutes), Path(run), dict(zip(WEIGHTS, map(Path, [eval_dir, *raw[:1]])))))
        osvd = osvd or mean_row(eval_dir, "osvd")

    print("| budget (min) | steps | curves seen | CBF RMSE | BAD RMSE (s) | CBF ratio |")
    print("|---:|---:|---:|---:|---:|---:|")
    points = []
    for budget, run, evals in sorted(rows, key=lambda r: r[0]):
        found = [mean_row(evals[w]) if w in evals else None for w in WEIGHTS]
        if found[0] is None or not run.exists():
            print(f"| {budget:g} | (not run or not evaluated: {run}) | | | | |")
            continue
        steps, curves = run_length(run)
        cells = ["/".join(f"{r[key]:.2f}" if r else "-" for r in found)
                 for key in ("cbf_rmse", "delay_rmse", "cbf_ratio_mean")]
        print(f"| {budget:g} | {steps:,} | {curves:,} | " + " | ".join(cells) + " |")
        points.append((curves, found[0]["cbf_rmse"], found[0]["delay_rmse"]))
    print("(each cell: the moving average of the weights, best_ema, the shipped rule / the raw best weights)")
    if osvd is not None:
        print(f"\noSVD on the same test sets: CBF RMSE {osvd['cbf_rmse']:.2f} (0.7x = {0.7 * osvd['cbf_rmse']:.2f})")
    if not points:
        return 0
    curves, cbf, bad = (np.array(v) for v in zip(*points))
    fit = saturating_fit(curves, cbf)
    levels = {"the paper's network": PAPER_CBF_RMSE}
    if osvd is not None:
        levels["0.7x oSVD"] = 0.7 * osvd["cbf_rmse"]
    if fit is None:
        print("\nfit a + b n^-c: too few points or no convergence")
    else:
        a, b, c = fit
        print(f"\nfit of the CBF RMSE (best_ema) against curves seen n (millions): {a:.2f} + {b:.2f} n^-{c:.2f}; "
              f"asymptote {a:.2f}, at the paper's {PAPER_CURVES / 1e6:.0f} million curves "
              f"{a + b * (PAPER_CURVES / 1e6) ** (-c):.2f}")
        for label, level in levels.items():
            if level > a:
                print(f"the fit reaches {label} ({level:.2f}) at {((level - a) / b) ** (-1.0 / c):.2f} million curves")
            else:
                print(f"the fit never reaches {label} ({level:.2f}): its asymptote is above it")
    if args.png:
        plot(args.png, curves, cbf, bad, fit, levels, osvd)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
