"""Methods on the generalisation suite (:mod:`ctp_nipype.sims.generalisation`): one table per axis.

Per cell (an axis and one of its levels) and method: the median CBF ratio (estimate / truth) with its
quartiles, and the median error of the delay (the network's BAD, the SVD family's Tmax; signed and
absolute), over the cell's curves with a true CBF of at least ``min_cbf`` (ratios of near-zero flows say
nothing). Every method sees the same curves in the same run.
"""

from __future__ import annotations

import numpy as np

from .evaluation import run_methods

#: the columns of a row, in order: (key, header)
SUITE_COLUMNS = (
    ("n", "n"),
    ("cbf_ratio_median", "CBF ratio median"),
    ("cbf_ratio_iqr", "CBF ratio IQR"),
    ("delay_error_median", "delay error median (s)"),
    ("delay_abs_error_median", "|delay error| median (s)"),
)


#: issue 28's delay target holds where the delay is at most this (s) ...
DELAY_TARGET_MAX_DELAY = 10.0
#: ... and the dispersion's T_A at most this (s)
DELAY_TARGET_MAX_T_A = 3.0


def cell_metrics(sim, cbf_est, delay_est, min_cbf=1.0):
    """The row's numbers for one method on one cell's curves ``sim`` (module docstring).

    ``delay_abs_error_median_target`` is the median absolute delay error over the curves with a delay
    of at most 10 s and a T_A of at most 3 s (NaN when the cell has none), the range of issue 28's target.
    """
    cbf_true, cbf_est = np.asarray(sim.cbf, float), np.asarray(cbf_est, float)
    keep = cbf_true >= min_cbf
    ratio = cbf_est[keep] / cbf_true[keep]
    error = np.asarray(delay_est, float) - np.asarray(sim.delay, float)
    in_range = (np.asarray(sim.delay) <= DELAY_TARGET_MAX_DELAY) & (np.asarray(sim.t_a) <= DELAY_TARGET_MAX_T_A)
    q25, q50, q75 = np.percentile(ratio, [25, 50, 75]) if ratio.size else (np.nan,) * 3
    return {"n": int(keep.sum()), "cbf_ratio_median": float(q50), "cbf_ratio_q25": float(q25),
            "cbf_ratio_q75": float(q75), "delay_error_median": float(np.median(error)),
            "delay_abs_error_median": float(np.median(np.abs(error))),
            "delay_abs_error_median_target": float(np.median(np.abs(error[in_range]))) if in_range.any()
            else float("nan")}


def evaluate_suite(cells, methods, options=None, progress=None, min_cbf=1.0):
    """Run ``methods`` (names of :data:`~.evaluation.METHODS`) on every cell; one row per cell and method.

    Each row: ``axis``, ``level`` (the printed level), ``method`` and :func:`cell_metrics`.
    """
    rows = []
    for cell in cells:
        sim = cell.sim
        results = run_methods(list(methods), sim.global_aif, sim.tissue, sim.frame_times, options)
        for method in methods:
            rows.append({"axis": cell.axis, "level": cell.label, "method": method,
                         **cell_metrics(sim, results[method]["cbf"], results[method]["delay"], min_cbf)})
        if progress is not None:
            progress(f"{cell.axis} = {cell.label}: {sim.n_curves} curves done")
    return rows


def _format(row, key):
    if key == "cbf_ratio_iqr":
        return f"{row['cbf_ratio_q25']:.2f}-{row['cbf_ratio_q75']:.2f}"
    value = row[key]
    return str(value) if isinstance(value, int) else f"{value:.2f}"


def suite_markdown(rows):
    """One markdown table per axis: a row per level, the methods' columns side by side."""
    methods = list(dict.fromkeys(row["method"] for row in rows))
    out = []
    for axis in dict.fromkeys(row["axis"] for row in rows):
        axis_rows = [row for row in rows if row["axis"] == axis]
        header = ["level"] + [f"{m}: CBF ratio median (IQR)" for m in methods] + \
                 [f"{m}: delay error median (abs.) (s)" for m in methods]
        out.append(f"### {axis}\n")
        out.append("| " + " | ".join(header) + " |")
        out.append("|---|" + "---:|" * (len(header) - 1))
        for level in dict.fromkeys(row["level"] for row in axis_rows):
            by_method = {row["method"]: row for row in axis_rows if row["level"] == level}
            cells = [f"{by_method[m]['cbf_ratio_median']:.2f} ({_format(by_method[m], 'cbf_ratio_iqr')})"
                     for m in methods]
            cells += [f"{by_method[m]['delay_error_median']:+.2f} ({by_method[m]['delay_abs_error_median']:.2f})"
                      for m in methods]
            out.append(f"| {level} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def plot_suite(rows, path):
    """A figure: one panel per axis, the median CBF ratio with its quartiles per level, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_names = list(dict.fromkeys(row["axis"] for row in rows))
    methods = list(dict.fromkeys(row["method"] for row in rows))
    columns = 3
    lines = -(-len(axes_names) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(4.6 * columns, 3.6 * lines), constrained_layout=True,
                                squeeze=False)
    for panel, axis in zip(axes.ravel(), axes_names):
        levels = list(dict.fromkeys(row["level"] for row in rows if row["axis"] == axis))
        for offset, method in enumerate(methods):
            picked = [next(r for r in rows if r["axis"] == axis and r["level"] == level and r["method"] == method)
                      for level in levels]
            x = np.arange(len(levels)) + (offset - (len(methods) - 1) / 2) * 0.08
            median = np.array([r["cbf_ratio_median"] for r in picked])
            spread = np.array([[r["cbf_ratio_median"] - r["cbf_ratio_q25"], r["cbf_ratio_q75"] - r["cbf_ratio_median"]]
                               for r in picked]).T
            panel.errorbar(x, median, yerr=spread, marker="o", capsize=2, label=method)
        panel.axhspan(0.85, 1.15, color="0.9", zorder=0)
        panel.axhline(1.0, color="0.5", lw=0.8)
        panel.set_xticks(range(len(levels)), levels, rotation=30 if max(map(len, levels)) > 5 else 0,
                         ha="right" if max(map(len, levels)) > 5 else "center", fontsize=8)
        panel.set_title(axis)
        panel.set_ylabel("CBF estimate / truth")
        panel.grid(alpha=0.3)
    for panel in axes.ravel()[len(axes_names):]:
        panel.axis("off")
    axes.ravel()[0].legend(fontsize=8)
    figure.suptitle("Generalisation suite: median CBF ratio and quartiles (band 0.85-1.15)")
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
