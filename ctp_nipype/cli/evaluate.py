"""``ctp-evaluate OUT_DIR``: perfusion methods on the paper's six simulated test sets (Table 1).

Writes into OUT_DIR:

* ``evaluation.md``: the summary table in the paper's form, per set and overall;
* ``evaluation.tsv``: the same numbers, machine-readable;
* ``evaluation_levels.tsv``: the metrics per level of each set's variable;
* ``figure4_cbf_rmse.png`` and ``figure5_delay_rmse.png``: CBF and delay RMSE
  against noise, delay, dispersion, frame interval, AIF type and residue
  shape, one panel each (the paper's figures 4-5);
* ``evaluation.json``: the run's settings.

With ``--suite generalisation`` it runs the generalisation suite instead
(:mod:`ctp_nipype.sims.generalisation`: residue shapes, AIF families, frame
intervals, windows, delays, dispersion and noise that the training draws and the
paper's sets do not cover) and writes ``generalisation.md`` (a table per axis,
every method side by side), ``generalisation.tsv`` and ``generalisation.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..io import generated_by, prepare_output_dir, write_json, write_table_tsv
from ..perfusion.evaluation import METHODS, SVD_METHODS, evaluate, level_rows, markdown_table, summary_rows
from ..sims.testsets import N_CURVES, TEST_SETS, make_test_set
from ._errors import user_facing

#: the generalisation suite's TSV: one line per cell and method
SUITE_TSV_COLUMNS = ("axis", "level", "method", "n", "cbf_ratio_median", "cbf_ratio_q25", "cbf_ratio_q75",
                     "delay_error_median", "delay_abs_error_median")

#: the network's method, registered in perfusion.evaluation.METHODS by importing ctp_nipype.nn.inference
NETWORK_METHOD = "transformer"
#: curves per cell of the generalisation suite by default (48 cells)
SUITE_CURVES_PER_CELL = 500
FIGURES = {"cbf_rmse": "figure4_cbf_rmse.png", "delay_rmse": "figure5_delay_rmse.png"}
FIGURE_TITLES = {"cbf_rmse": "CBF RMSE (ml/100 g/min)", "delay_rmse": "delay RMSE (s): Tmax (SVD), BAD (network)"}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="ctp-evaluate",
        description="Run perfusion methods over the six simulated test sets of Zeng et al. 2025 (Table 1) "
        "and write the paper's table and figures 4-5.",
    )
    parser.add_argument("out_dir", type=Path, help="output folder (created if missing)")
    parser.add_argument(
        "--methods", nargs="+", default=list(SVD_METHODS), metavar="METHOD",
        help=f"methods to run, of {', '.join(sorted(set(METHODS) | {NETWORK_METHOD}))} "
        f"(default: {' '.join(SVD_METHODS)})",
    )
    parser.add_argument(
        "--sets", nargs="+", type=int, default=sorted(TEST_SETS), metavar="K",
        help="test sets to run, 1-6 (default: all)",
    )
    parser.add_argument("--suite", choices=("paper", "generalisation"), default="paper",
                        help="the paper's six test sets (default) or the generalisation suite")
    parser.add_argument("--n-curves", type=int, default=None,
                        help=f"curves per set (default {N_CURVES}) or, with --suite generalisation, per cell "
                             f"(default {SUITE_CURVES_PER_CELL})")
    parser.add_argument("--seed", type=int, help="base seed: set k uses seed + k (default: each set's fixed seed)")
    parser.add_argument("--weights", type=Path, help="network weights (.safetensors) for the transformer")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu",
                        help="torch device for the transformer (default cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def plot_figures(rows, out_dir, methods):
    """Figures 4-5: one panel per set, RMSE against the set's variable, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for metric, name in FIGURES.items():
        figure, axes = plt.subplots(2, 3, figsize=(13, 7.5), constrained_layout=True)
        for axis, number in zip(axes.ravel(), sorted(TEST_SETS)):
            spec = TEST_SETS[number]
            axis.set_title(spec.title)
            axis.set_xlabel(f"{spec.label}" + (f" ({spec.unit})" if spec.unit else ""))
            axis.set_ylabel(FIGURE_TITLES[metric].split(":")[0])
            set_rows = [r for r in rows if r["set"] == number]
            if not set_rows:
                axis.text(0.5, 0.5, "not run", ha="center", va="center", transform=axis.transAxes)
                continue
            for method in methods:
                points = [(r["level"], r[metric]) for r in set_rows if r["method"] == method]
                if isinstance(points[0][0], str):
                    positions = range(len(points))
                    axis.set_xticks(list(positions), [p[0] for p in points])
                else:
                    positions = [p[0] for p in points]
                axis.plot(list(positions), [p[1] for p in points], marker="o", label=method)
            axis.grid(alpha=0.3)
        with_lines = [axis for axis in axes.ravel() if axis.get_lines()]
        if with_lines:
            with_lines[0].legend()
        figure.suptitle(FIGURE_TITLES[metric])
        path = Path(out_dir) / name
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
    return paths


def run_generalisation_suite(args):
    """``--suite generalisation``: every method on the suite's cells; tables per axis and a figure."""
    from ..perfusion.generalisation import evaluate_suite, plot_suite, suite_markdown
    from ..sims.generalisation import AXES, make_suite

    n_per_cell = SUITE_CURVES_PER_CELL if args.n_curves is None else args.n_curves
    if n_per_cell < 1:
        raise ValueError(f"--n-curves must be at least 1 per cell of the suite, got {n_per_cell}.")
    out_dir = prepare_output_dir(args.out_dir)
    say = (lambda line: None) if args.quiet else (lambda line: print(f"ctp-evaluate: {line}", flush=True))
    start = time.perf_counter()
    cells = make_suite(n_per_cell, seed=2028 if args.seed is None else args.seed)
    say(f"simulated {len(cells)} cells of {n_per_cell} curves in {time.perf_counter() - start:.1f} s")
    options = {"transformer": {"weights": args.weights, "device": args.device}} if "transformer" in args.methods else {}
    rows = evaluate_suite(cells, args.methods, options, progress=say)
    table = suite_markdown(rows)
    (out_dir / "generalisation.md").write_text(
        "# Generalisation suite\n\n"
        f"{n_per_cell} curves per cell; CBF ratio = estimate / truth over curves with a true CBF of at least 1 "
        "ml/100 g/min; delay error = BAD (network) or Tmax (SVD family) minus the true delay.\n\n" + table + "\n",
        encoding="utf-8")
    write_table_tsv(out_dir / "generalisation.tsv", rows, columns=SUITE_TSV_COLUMNS, missing="")
    plot_suite(rows, out_dir / "generalisation.png")
    elapsed = time.perf_counter() - start
    write_json(out_dir / "generalisation.json", {
        "GeneratedBy": generated_by("ctp-evaluate"), "Suite": "generalisation",
        "Methods": args.methods, "Axes": list(AXES), "CurvesPerCell": n_per_cell, "Seed": args.seed,
        "ElapsedSeconds": round(elapsed, 1),
    })
    say(f"done in {elapsed:.1f} s; wrote generalisation.md, .tsv and .png in {out_dir}")
    if not args.quiet:
        print(table)
    return 0


@user_facing("ctp-evaluate")
def main(argv=None):
    args = build_parser().parse_args(argv)
    if NETWORK_METHOD in args.methods:
        try:
            from ..nn.inference import transformer_method  # noqa: F401 - registers the network's method
        except ImportError as error:
            raise ValueError(f"--methods {NETWORK_METHOD} needs torch, which cannot be imported here: {error}; "
                             "install torch or leave the network out.") from error
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}; choose from {', '.join(sorted(METHODS))}.")
    if "transformer" in args.methods:  # a bad weights file or device is refused here, not after the simulation
        from .parser import check_device, check_weights

        check_device(args.device)
        check_weights(args.weights)
    if args.suite == "generalisation":
        return run_generalisation_suite(args)
    args.n_curves = N_CURVES if args.n_curves is None else args.n_curves
    bad_sets = [k for k in args.sets if k not in TEST_SETS]
    if bad_sets:
        raise ValueError(f"Unknown test set(s) {bad_sets}; Table 1 has sets 1-6.")
    if args.n_curves < 11:
        raise ValueError(f"--n-curves must be at least 11 (one curve per level of every set), got {args.n_curves}.")
    out_dir = prepare_output_dir(args.out_dir)
    say = (lambda line: None) if args.quiet else (lambda line: print(f"ctp-evaluate: {line}", flush=True))

    start = time.perf_counter()
    sets = {}
    for number in args.sets:
        sets[number] = make_test_set(number, args.n_curves, None if args.seed is None else args.seed + number)
    say(f"simulated {len(sets)} set(s) of {args.n_curves} curves in {time.perf_counter() - start:.1f} s")
    options = {}
    if "transformer" in args.methods:
        options["transformer"] = {"weights": args.weights, "device": args.device}
    result = evaluate(sets, args.methods, options, progress=say)

    rows = summary_rows(result)
    levels = level_rows(result)
    (out_dir / "evaluation.md").write_text(
        "# Simulated test sets (Zeng et al. 2025, Table 1)\n\n"
        f"{args.n_curves} curves per set; delay RMSE is Tmax for the SVD family and BAD for the network, "
        "against the true delay.\n\n" + markdown_table(rows) + "\n", encoding="utf-8")
    write_table_tsv(out_dir / "evaluation.tsv", rows, missing="")
    write_table_tsv(out_dir / "evaluation_levels.tsv", levels, missing="")
    figures = plot_figures(levels, out_dir, args.methods)
    elapsed = time.perf_counter() - start
    write_json(out_dir / "evaluation.json", {
        "GeneratedBy": generated_by("ctp-evaluate"),
        "Methods": args.methods, "Sets": args.sets, "CurvesPerSet": args.n_curves, "Seed": args.seed,
        "ElapsedSeconds": round(elapsed, 1),
    })
    say(f"done in {elapsed:.1f} s; wrote {', '.join(p.name for p in figures)} and the tables in {out_dir}")
    if not args.quiet:
        print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
