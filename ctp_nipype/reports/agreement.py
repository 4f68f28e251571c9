"""The agreement page of ``ctp-compare``: tables, Bland-Altman and scatter plots of lesion volumes.

Built from the rows :mod:`ctp_nipype.perfusion.agreement` returns, with the
report helpers of :mod:`.html` and :mod:`.figures`.
"""

from __future__ import annotations

import numpy as np

from .figures import METHOD_COLOURS, _pyplot, to_png
from .html import escape, page, png_img, table

#: the volumes plotted: (measure, column stem, title)
PLOTTED_VOLUMES = (("core", "core_ml", "Core (rCBF < 30%)"), ("hypoperfused", "hypoperfused_ml", "Tmax > 6 s"))


def volume_figure(method, cases):
    """Bland-Altman (difference against mean) and scatter (ours against reference) of core and
    hypoperfused volumes over the cases of one method; PNG bytes.

    Parameters
    ----------
    method : str
    cases : list of dict
        Per-case rows with ``core_ml_ours``, ``core_ml_reference``, ``hypoperfused_ml_ours``, ...
    """
    from ..perfusion.agreement import bland_altman

    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(9, 8))
    colour = METHOD_COLOURS.get(method, "tab:purple")
    for row, (measure, stem, title) in enumerate(PLOTTED_VOLUMES):
        ours = np.array([c[f"{stem}_ours"] for c in cases], dtype=float)
        ref = np.array([c[f"{stem}_reference"] for c in cases], dtype=float)
        ba = bland_altman(ours, ref)
        ax = axes[row, 0]
        ax.scatter((ours + ref) / 2, ours - ref, s=14, color=colour)
        for value, style in ((ba["bias"], "-"), (ba["loa_low"], "--"), (ba["loa_high"], "--")):
            if np.isfinite(value):
                ax.axhline(value, color="k", linestyle=style, linewidth=0.8)
        ax.set_xlabel("mean of ours and reference (ml)")
        ax.set_ylabel("ours - reference (ml)")
        ax.set_title(f"{title}: bias {ba['bias']:.3g} ml, LoA {ba['loa_low']:.3g} to {ba['loa_high']:.3g}", fontsize=9)
        ax = axes[row, 1]
        ax.scatter(ref, ours, s=14, color=colour)
        top = float(np.nanmax(np.concatenate([ours, ref, [1.0]])))
        ax.plot([0, top], [0, top], color="k", linewidth=0.8)
        ax.set_xlabel("reference (ml)")
        ax.set_ylabel(f"{method} (ml)")
        ax.set_title(f"{title}, n = {ba['n']}", fontsize=9)
    fig.suptitle(f"{method}: lesion volumes against the reference")
    fig.tight_layout()
    return to_png(fig)


def voxel_density_figure(method, histograms):
    """Voxelwise joint histograms (log counts) of ours against the reference, one panel per map; PNG bytes.

    Parameters
    ----------
    method : str
    histograms : dict
        ``{map: counts}`` summed over the cases (:func:`ctp_nipype.perfusion.agreement.joint_histogram`).
    """
    from ..perfusion.agreement import HISTOGRAM_RANGES
    from ..perfusion.constants import UNITS

    plt = _pyplot()
    names = [n for n in HISTOGRAM_RANGES if n in histograms]
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(3.2 * max(len(names), 1), 3.3), squeeze=False)
    for ax, name in zip(axes[0], names):
        low, high = HISTOGRAM_RANGES[name]
        counts = np.asarray(histograms[name], dtype=float)
        shown = np.log10(np.where(counts > 0, counts, np.nan))
        ax.imshow(shown, origin="lower", extent=(low, high, low, high), aspect="auto", cmap="viridis")
        ax.plot([low, high], [low, high], color="k", linestyle="--", linewidth=0.8)
        units = UNITS.get(name, "")
        our = "bad" if (method == "transformer" and name == "tmax") else name
        ax.set_xlabel(f"{method} {our} ({units})")
        ax.set_ylabel(f"reference {name} ({units})")
        ax.set_title(f"{name}: {int(counts.sum())} voxels", fontsize=9)
    fig.suptitle(f"{method}: voxels of every case (log10 count)", fontsize=10)
    fig.tight_layout()
    return to_png(fig)


SUMMARY_COLUMNS = ("method", "measure", "n", "icc", "icc_low", "icc_high", "bias", "loa_low", "loa_high",
                   "dice_mean", "dice_median")
KAPPA_COLUMNS = ("method", "profile", "n", "agreement", "kappa", "kappa_low", "kappa_high",
                 "n_positive_ours", "n_positive_reference")
MAP_COLUMNS = ("method", "map", "our_map", "n", "pearson_mean", "pearson_median", "spearman_mean", "spearman_median")
CASE_COLUMNS = ("scan", "method", "core_ml_ours", "core_ml_reference", "dice_core", "hypoperfused_ml_ours",
                "hypoperfused_ml_reference", "dice_hypoperfused", "defuse3_ours", "defuse3_reference",
                "extend_ours", "extend_reference", "lesion_ml", "dice_lesion_core_ours", "dice_lesion_core_reference")


def agreement_report_html(volume_rows, kappa_rows, map_rows, case_rows, threshold_rows, left_out, reference_dir,
                          statistics_note, histograms=None):
    """The page: summary tables, per-method figures, the threshold sweep, every case, and the cases left out.

    Parameters
    ----------
    volume_rows, kappa_rows, map_rows : list of dict
        Across-scan rows (with a ``method`` key) of :func:`~ctp_nipype.perfusion.agreement.volume_agreement`,
        :func:`~ctp_nipype.perfusion.agreement.call_agreement` and :func:`~ctp_nipype.perfusion.agreement.map_agreement`.
    case_rows : list of dict
        Per scan and method (the cases TSV's rows).
    threshold_rows : list of dict
        Across-scan mean Dice and volume difference per method, region and threshold.
    left_out : dict
        ``{scan: reason}``.
    reference_dir : str
    statistics_note : str
        Which library computed which statistic.
    histograms : dict, optional
        ``{method: {map: counts}}``: the voxelwise joint histograms summed over the cases.
    """
    methods = list(dict.fromkeys(r["method"] for r in case_rows))
    sections = [
        ("volumes", "Lesion volumes across scans",
         table(volume_rows, SUMMARY_COLUMNS, text_columns=("method", "measure"))
         + f'<p class="note">{escape(statistics_note)}</p>'),
        ("calls", "Target-mismatch calls (DEFUSE 3, EXTEND)",
         table(kappa_rows, KAPPA_COLUMNS, text_columns=("method", "profile"))),
        ("maps", "Voxelwise correlation of the maps",
         table(map_rows, MAP_COLUMNS, text_columns=("method", "map", "our_map"))
         + '<p class="note">Per scan over perfused tissue (our brain mask without CSF and vessels, without the '
           "voxels the reference left out); mean and median across scans.</p>"),
    ]
    figures = "".join(
        png_img(volume_figure(m, [c for c in case_rows if c["method"] == m]), f"{m} volumes") for m in methods
    )
    sections.append(("figures", "Bland-Altman and scatter plots", figures or "<p>No case to plot.</p>"))
    densities = "".join(png_img(voxel_density_figure(m, h), f"{m} voxels") for m, h in (histograms or {}).items() if h)
    if densities:
        sections.append(("voxels", "Voxelwise agreement", densities
                         + '<p class="note">Rows: the reference\'s value; columns: ours; values beyond the axes are '
                           "counted in the edge bins; the line is identity.</p>"))
    sections.append(("thresholds", "Threshold sweep",
                     table(threshold_rows, ("method", "region", "threshold", "n", "dice_mean", "volume_difference_mean_ml",
                                            "icc"), text_columns=("method", "region"))
                     + '<p class="note">core: threshold is the fraction of the unaffected hemisphere\'s mean CBF '
                       "(within Tmax &gt; 6 s); hypoperfused: Tmax threshold in s.</p>"))
    sections.append(("cases", "Every case", table(case_rows, CASE_COLUMNS, text_columns=("scan", "method"))))
    if left_out:
        items = "".join(f"<li><b>{escape(scan)}</b>: {escape(reason)}</li>" for scan, reason in left_out.items())
        body = f'<div class="warning">{len(left_out)} case(s) left out.</div><ul>{items}</ul>'
    else:
        body = "<p>None.</p>"
    sections.append(("left-out", "Cases left out", body))
    subtitle = f'<p class="note">Reference: {escape(reference_dir)}; methods: {escape(", ".join(methods) or "none")}.</p>'
    return page("Agreement with the reference maps", sections, subtitle)
