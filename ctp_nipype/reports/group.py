"""The group page: methods compared across scans, in the layout of Table 2 of Zeng et al. (2025)."""

from __future__ import annotations

import math

from ..perfusion.stats import MAP_ORDER, METHOD_ORDER, table2_layout
from .html import escape, format_cell, page, table


def format_p(p):
    """A p-value as in papers: ``< 0.001`` below one in a thousand, else three decimals.

    >>> format_p(0.00002), format_p(0.0312), format_p(float("nan"))
    ('< 0.001', '0.031', 'n/a')
    """
    if p is None or not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def table2_html(summary, map_name, reference="ssvd"):
    """Rows = regions, columns = methods; each cell the group mean, its deviation from the reference and p.

    >>> summary = [{"region": "normal", "map": "cbf", "method": "ssvd", "mean": 35.16, "sd": 4.0, "n_scans": 9,
    ...             "deviation": 0.0, "deviation_percent": 0.0, "p_value": float("nan")},
    ...            {"region": "normal", "map": "cbf", "method": "transformer", "mean": 48.99, "sd": 5.0, "n_scans": 9,
    ...             "deviation": 13.83, "deviation_percent": 39.33, "p_value": 0.0001}]
    >>> "+13.8 (+39.3%), p &lt; 0.001" in table2_html(summary, "cbf")
    True
    """
    methods, rows = table2_layout(summary, map_name)
    units = next((r.get("units", "") for r in summary if r["map"] == map_name), "")
    head = "".join(f"<th>{escape(m)}</th>" for m in methods)
    body = []
    for region, cells in rows:
        tds = []
        for method in methods:
            row = cells.get(method)
            if row is None:
                tds.append("<td>n/a</td>")
                continue
            text = f"{format_cell(row['mean'], 4)} &plusmn; {format_cell(row.get('sd'), 3)} (n={row.get('n_scans')})"
            if method != reference and row.get("deviation") is not None and math.isfinite(row.get("deviation", math.nan)):
                text += (
                    f"<br/><span class=\"note\">{row['deviation']:+.3g} ({row['deviation_percent']:+.1f}%), "
                    f"p {escape(format_p(row.get('p_value')))}</span>"
                )
            tds.append(f"<td>{text}</td>")
        body.append(f"<tr><th class=\"text\">{escape(region)}</th>{''.join(tds)}</tr>")
    return (
        f"<table><tr><th class=\"text\">{escape(map_name.upper())} [{escape(units)}]</th>{head}</tr>"
        + "".join(body) + "</table>"
    )


def group_report_html(summary, pairs, scans=(), statistic="mean", reference="ssvd", lesion_rows=None):
    """The group page (self-contained HTML) from :func:`ctp_nipype.perfusion.stats.group_comparison`'s output.

    Parameters
    ----------
    summary, pairs : list of dict
    scans : sequence of str
        The scans compared (listed on the page).
    statistic : str
        The per-scan regional value compared.
    reference : str
        The reference method of the deviations.
    lesion_rows : list of dict, optional
        Rows of the lesion table (:func:`ctp_nipype.interfaces.stats.lesion_table`): a triage section first.

    Returns
    -------
    str
    """
    maps = sorted({row["map"] for row in summary}, key=lambda n: MAP_ORDER.index(n) if n in MAP_ORDER else 99)
    intro = (
        f"<p>{len(scans)} scans. Each cell: mean &plusmn; sd across scans of the per-scan regional {escape(statistic)}; "
        f"below, its deviation from {escape(reference)} (same units, and percent of {escape(reference)}'s mean on "
        "the paired scans) and the two-sided paired Wilcoxon signed-rank p-value against it.</p>"
    )
    sections = []
    if lesion_rows:
        sections.append(("triage", "Triage: core, mismatch and target-mismatch flags", triage_html(lesion_rows)))
    sections += [("table2", "Methods by region (Table 2 layout)",
                 intro + "".join(table2_html(summary, name, reference) for name in maps))]
    pair_rows = [{**row, "p": format_p(row.get("p_value"))} for row in pairs]
    sections.append((
        "pairs", "Paired Wilcoxon tests between methods",
        table(pair_rows, ["region", "map", "method_a", "method_b", "n_pairs", "mean_difference", "wilcoxon_w", "p"],
              ["region", "map", "method A", "method B", "pairs", "mean A - B", "W", "p"],
              text_columns=["region", "map", "method_a", "method_b", "p"]),
    ))
    sections.append(("scans", "Scans", "<p>" + escape(", ".join(scans) or "none") + "</p>"))
    return page("Perfusion methods compared", sections)


def triage_html(rows):
    """The group's triage table: per scan and method the volumes, ratios and flags, and per method how many
    scans meet each target-mismatch profile; the criteria spelt out.

    >>> rows = [{"scan": "sub-01", "method": "osvd", "CoreVolume": 10.0, "DelayAbove6sVolume": 40.0,
    ...          "MismatchVolume": 30.0, "MismatchRatio": 4.0, "HypoperfusionIntensityRatio": 0.3,
    ...          "DEFUSE3": "true", "EXTEND": "true", "DelayMap": "tmax"}]
    >>> html = triage_html(rows)
    >>> "DEFUSE 3 met in 1 of 1 scans" in html, "core &lt; 70 ml" in html
    (True, True)
    """
    from ..perfusion.triage import TARGET_MISMATCH, delay_label

    if not rows:
        return '<p class="note">No lesion measures were found.</p>'
    shown = [{**row, "delay": f"{delay_label(row.get('DelayMap', 'tmax'))} > 6 s"} for row in rows]
    body = table(
        shown, ["scan", "method", "CoreVolume", "delay", "DelayAbove6sVolume", "MismatchVolume", "MismatchRatio",
                "HypoperfusionIntensityRatio", "DEFUSE3", "EXTEND"],
        ["scan", "method", "core [ml]", "hypoperfusion rule", "hypoperfused [ml]", "mismatch [ml]",
         "mismatch ratio", "HIR", "DEFUSE 3", "EXTEND"],
        text_columns=["scan", "method", "delay", "DEFUSE3", "EXTEND"],
    )
    methods = sorted({row["method"] for row in rows}, key=lambda m: METHOD_ORDER.index(m) if m in METHOD_ORDER else 99)
    counts = []
    for method in methods:
        mine = [row for row in rows if row["method"] == method]
        met = "; ".join(f"{name.replace('DEFUSE3', 'DEFUSE 3')} met in "
                        f"{sum(str(row.get(name)).lower() == 'true' for row in mine)} of {len(mine)} scans"
                        for name in TARGET_MISMATCH)
        counts.append(f"<li>{escape(method)}: {escape(met)}</li>")
    criteria = "".join(f"<li>{escape(c.name.replace('DEFUSE3', 'DEFUSE 3'))}: {escape(c.text())}</li>"
                       for c in TARGET_MISMATCH.values())
    return body + f"<ul>{''.join(counts)}</ul><ul class=\"note\">{criteria}</ul>"
