"""The learning curve of a ``ctp-train`` run: validation metrics against curves seen, as markdown and PNG.

    python benchmarks/learning_curve.py RUN_DIR [--png docs/learning_curve.png]

Reads ``RUN_DIR/log.tsv`` (written by :func:`ctp_nipype.nn.training.train`) and prints one row per validation
(step, minutes, curves seen, validation CBF RMSE, BAD RMSE, CBF ratio, local-AIF r). The validation set is
the run's fixed-seed set drawn from the training ranges (CBF 0-200 ml/100 g/min), so its RMSEs are larger than
on the paper's test sets (CBV 4%, CBF 10-70).

It also prints the weighted loss terms of eq. 2 relative to the BAD term (BAD : local AIF : tissue :
smoothness, the paper aims at 1:1:7:1), averaged over the logged steps of early and late windows of the run.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def read_validation_rows(run_dir):
    with open(Path(run_dir) / "log.tsv", newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle, delimiter="\t") if row.get("val_cbf_rmse")]
    return [{key: float(value) for key, value in row.items() if value} for row in rows]


TERMS = ("loss_bad", "loss_local_aif", "loss_tissue", "loss_smooth", "loss_residue")


def read_loss_rows(run_dir):
    with open(Path(run_dir) / "log.tsv", newline="", encoding="utf-8") as handle:
        return [{key: float(value) for key, value in row.items() if value} for row in csv.DictReader(handle, delimiter="\t")]


def term_ratios(loss_rows, first_step, last_step):
    """Mean of each weighted loss term over logged steps in ``[first_step, last_step]``, divided by the BAD term's."""
    window = [r for r in loss_rows if first_step <= r["step"] <= last_step and "loss_bad" in r]
    if not window:
        return None
    means = {k: sum(r.get(k, 0.0) for r in window) / len(window) for k in TERMS}
    return {k: v / means["loss_bad"] for k, v in means.items()} | {"n_rows": len(window)}


def ratio_lines(loss_rows):
    last = max(r["step"] for r in loss_rows)
    lines = ["", "| steps | BAD | local AIF | tissue | smoothness | (residue) |", "|---|---:|---:|---:|---:|---:|"]
    for first, stop in ((1000, 2000), (max(1, last - 999), last)):
        ratios = term_ratios(loss_rows, first, stop)
        if ratios:
            lines.append(f"| {first:.0f}-{stop:.0f} | " + " | ".join(f"{ratios[k]:.2f}" for k in TERMS) + " |")
    return "\n".join(lines)


def markdown(rows):
    lines = [
        "| step | minutes | curves seen | val CBF RMSE | val BAD RMSE (s) | val CBF ratio | val local-AIF r |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['step']:.0f} | {r['elapsed_s'] / 60:.1f} | {r['curves_seen']:,.0f} | {r['val_cbf_rmse']:.2f} "
            f"| {r['val_bad_rmse']:.2f} | {r['val_cbf_ratio']:.3f} | {r['val_local_aif_r']:.3f} |"
        )
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [r["curves_seen"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), constrained_layout=True)
    for ax, key, label in zip(
        axes,
        ("val_cbf_rmse", "val_bad_rmse", "val_local_aif_r"),
        ("validation CBF RMSE (ml/100 g/min)", "validation BAD RMSE (s)", "validation local-AIF Pearson r"),
    ):
        ax.plot(curves, [r[key] for r in rows], marker="o", ms=3)
        ax.set_xscale("log")
        ax.set_xlabel("training curves seen")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--png", help="also write the curve as a PNG")
    args = parser.parse_args(argv)
    rows = read_validation_rows(args.run_dir)
    if not rows:
        parser.error(f"{args.run_dir}/log.tsv has no validation rows yet")
    print(markdown(rows))
    print(ratio_lines(read_loss_rows(args.run_dir)))
    if args.png:
        plot(rows, args.png)
        print(f"\nwrote {args.png}")


if __name__ == "__main__":
    main()
