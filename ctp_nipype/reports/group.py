"""The group page: methods compared across scans, in the layout of Table 2 of Zeng et al. (2025)."""

from __future__ import annotations

import math

from ..perfusion.stats import MAP_ORDER, table2_layout
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


def group_report_html(summary, pairs, scans=(), statistic="mean", reference="ssvd"):
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
    sections = [("table2", "Methods by region (Table 2 layout)",
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
