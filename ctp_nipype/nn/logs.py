"""Reading a ``ctp-train`` run's logs: its learning curve and the balance of its loss terms.

A run writes ``RUN_DIR/log.tsv`` (:func:`ctp_nipype.nn.training.train`), or one per stage
(``RUN_DIR/stage1/log.tsv`` ...) for a recipe in stages; these functions read them stage after stage, with steps,
minutes and curves counted from the start of the first stage and a ``stage`` key. Printed by
``benchmarks/studies/learning_curve.py`` and ``benchmarks/studies/budget_curve.py``.
"""

from __future__ import annotations

from pathlib import Path

from ..io import read_table_tsv


def stage_logs(run_dir):
    """The log files of a run: ``[RUN/log.tsv]``, or each stage's of a run in stages."""
    run_dir = Path(run_dir)
    if (run_dir / "log.tsv").exists():
        return [run_dir / "log.tsv"]
    stages = sorted(run_dir.glob("stage[0-9]*/log.tsv"), key=lambda p: int(p.parent.name[len("stage"):] or 0))
    if not stages:
        raise FileNotFoundError(f"{run_dir} holds no log.tsv (nor stage*/log.tsv): is it a ctp-train run directory?")
    return stages


def read_loss_rows(run_dir):
    """Every logged row; in a run in stages, ``stage`` is set and step, elapsed_s, curves_seen run on across stages."""
    logs = stage_logs(run_dir)
    rows, offset = [], {"step": 0.0, "elapsed_s": 0.0, "curves_seen": 0.0}
    for number, log in enumerate(logs, start=1):
        stage_rows = [{key: float(value) for key, value in row.items() if value is not None}
                      for row in read_table_tsv(log)]
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
    """The logged rows that hold a validation."""
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
    """The weighted loss terms relative to the BAD term in an early and a late window, as markdown lines."""
    last = max(r["step"] for r in loss_rows)
    lines = ["", "| steps | BAD | local AIF | tissue | smoothness | (residue) |", "|---|---:|---:|---:|---:|---:|"]
    for first, stop in ((1000, 2000), (max(1, last - 999), last)):
        ratios = term_ratios(loss_rows, first, stop)
        if ratios:
            lines.append(f"| {first:.0f}-{stop:.0f} | " + " | ".join(f"{ratios[k]:.2f}" for k in TERMS) + " |")
    return "\n".join(lines)


def markdown(rows):
    """The validation rows as a markdown table (a ``stage`` column for a run in stages, EMA columns when averaged)."""
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
    """Validation CBF RMSE, BAD RMSE and local-AIF r against curves seen, one line per stage, as a PNG."""
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
