"""The learning curve of a ``ctp-train`` run: validation metrics against curves seen, as markdown and PNG.

    python benchmarks/learning_curve.py RUN_DIR [--png docs/learning_curve.png]

Reads ``RUN_DIR/log.tsv`` (written by :func:`ctp_nipype.nn.training.train`) and prints one row per validation
(step, minutes, curves seen, validation CBF RMSE, BAD RMSE, CBF ratio, local-AIF r). The validation set is
the run's fixed-seed set drawn from the training ranges (CBF 0-200 ml/100 g/min), so its RMSEs are larger than
on the paper's test sets (CBV 4%, CBF 10-70). A run of a recipe in stages (``RUN_DIR/stage1/log.tsv``,
``RUN_DIR/stage2/log.tsv`` ...) is read stage after stage, with steps, minutes and curves counted from the
start of the first stage and a ``stage`` column; each stage validates on a set drawn from its own ranges.
A run whose recipe sets ``ema_decay`` also gets the moving average's validation CBF and BAD RMSE (two ``EMA``
columns, and dashed lines in the PNG).

It also prints the weighted loss terms of eq. 2 relative to the BAD term (BAD : local AIF : tissue :
smoothness, the paper aims at 1:1:7:1), averaged over the logged steps of early and late windows of the run.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def stage_logs(run_dir):
    """The log files of a run: ``[RUN/log.tsv]``, or each stage's of a run in stages."""
    run_dir = Path(run_dir)
    if (run_dir / "log.tsv").exists():
        return [run_dir / "log.tsv"]
    stages = sorted(run_dir.glob("stage[0-9]*/log.tsv"), key=lambda p: int(p.parent.name[len("stage"):] or 0))
    if not stages:
        raise SystemExit(f"{run_dir} holds no log.tsv (nor stage*/log.tsv): is it a ctp-train run directory?")
    return stages


def read_loss_rows(run_dir):
    """Every logged row; in a run in stages, ``stage`` is set and step, elapsed_s, curves_seen run on across stages."""
    logs = stage_logs(run_dir)
    rows, offset = [], {"step": 0.0, "elapsed_s": 0.0, "curves_seen": 0.0}
    for number, log in enumerate(logs, start=1):
        with open(log, newline="", encoding="utf-8") as handle:
            stage_rows = [{key: float(value) for key, value in row.items() if value}
                          for row in csv.DictReader(handle, delimiter="\t")]
        for row in stage_rows:
            for key in offset:
                row[key] += offset[key]
            if len(logs) > 1:
                row["stage"] = number
        if stage_rows:
            offset = {key: stage_rows[-1][key] for key in offset}
        rows.extend(stage_rows)
    return rows


def read_validation_rows(run_dir):
    return [row for row in read_loss_rows(run_dir) if "val_cbf_rmse" in row]


TERMS = ("loss_bad", "loss_local_aif", "loss_tissue", "loss_smooth", "loss_residue")


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
    staged = any("stage" in r for r in rows)
    averaged = any("ema_val_cbf_rmse" in r for r in rows)
    lines = [
        ("| stage " if staged else "")
        + "| step | minutes | curves seen | val CBF RMSE | val BAD RMSE (s) | val CBF ratio | val local-AIF r |"
        + (" EMA val CBF RMSE | EMA val BAD RMSE (s) |" if averaged else ""),
        ("|---:" if staged else "") + "|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if averaged else ""),
    ]
    for r in rows:
        lines.append(
            (f"| {r['stage']:.0f} " if staged else "")
            + f"| {r['step']:.0f} | {r['elapsed_s'] / 60:.1f} | {r['curves_seen']:,.0f} | {r['val_cbf_rmse']:.2f} "
            f"| {r['val_bad_rmse']:.2f} | {r['val_cbf_ratio']:.3f} | {r['val_local_aif_r']:.3f} |"
            + (f" {r['ema_val_cbf_rmse']:.2f} | {r['ema_val_bad_rmse']:.2f} |" if averaged else "")
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
        for stage in sorted({r.get("stage", 1) for r in rows}):
            part = [r for r in rows if r.get("stage", 1) == stage]
            line, = ax.plot([r["curves_seen"] for r in part], [r[key] for r in part], marker="o", ms=3,
                            label=f"stage {stage:.0f}" if len(curves) > len(part) else None)
            averaged = [r for r in part if f"ema_{key}" in r]
            if averaged:
                ax.plot([r["curves_seen"] for r in averaged], [r[f"ema_{key}"] for r in averaged], ls="--",
                        color=line.get_color(), label=f"stage {stage:.0f}, EMA" if len(curves) > len(part) else "EMA")
        if len({r.get("stage", 1) for r in rows}) > 1 or any("ema_val_cbf_rmse" in r for r in rows):
            ax.legend(fontsize=8)
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
        parser.error(f"{args.run_dir} has no validation rows yet")
    print(markdown(rows))
    loss_rows = read_loss_rows(args.run_dir)
    for stage in sorted({r.get("stage", 0) for r in loss_rows}):
        if stage:
            print(f"\nstage {stage:.0f}, steps counted within the stage:", end="")
        part = [r for r in loss_rows if r.get("stage", 0) == stage]
        first_step = part[0]["step"] - 1
        print(ratio_lines([{**r, "step": r["step"] - first_step} for r in part]))
    if args.png:
        plot(rows, args.png)
        print(f"\nwrote {args.png}")


if __name__ == "__main__":
    main()
