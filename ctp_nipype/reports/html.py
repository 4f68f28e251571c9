"""HTML building blocks of the reports: a page with inline CSS, sections, tables, embedded PNGs.

Everything a page needs is inside the file (no script, no stylesheet, no
image loaded from elsewhere), so a report can be mailed or opened offline.
"""

from __future__ import annotations

import base64
import html
import math

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 0 1.5em 3em; color: #222; }
h1 { border-bottom: 2px solid #446; padding-bottom: .3em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccd; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ccd; padding: 2px 8px; text-align: right; }
th { background: #eef; }
td.text, th.text { text-align: left; }
.warning { background: #fff3cd; border-left: 4px solid #e0a800; padding: .4em .8em; margin: .3em 0; }
.note { color: #555; font-size: 0.9em; }
img.figure { max-width: 100%; height: auto; display: block; margin: .5em 0; }
"""


def escape(text):
    """HTML-escaped text.

    >>> escape("a < b & c")
    'a &lt; b &amp; c'
    """
    return html.escape(str(text), quote=True)


def png_img(png_bytes, alt):
    """An ``<img>`` with the PNG embedded as a base64 data URI.

    >>> png_img(b"\\x89PNG", "x")
    '<img class="figure" alt="x" src="data:image/png;base64,iVBORw=="/>'
    """
    if not png_bytes:
        raise ValueError(f"The figure {alt!r} is empty; no PNG bytes to embed.")
    encoded = base64.b64encode(png_bytes).decode("ascii")
    return f'<img class="figure" alt="{escape(alt)}" src="data:image/png;base64,{encoded}"/>'


def format_cell(value, digits=3):
    """A table cell's text: numbers with ``digits`` significant digits, ``n/a`` for missing.

    >>> format_cell(35.1642), format_cell(None), format_cell(float("nan")), format_cell(12), format_cell("gm")
    ('35.2', 'n/a', 'n/a', '12', 'gm')
    """
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else "n/a"
    return str(value)


def table(rows, columns, headers=None, text_columns=()):
    """An HTML table of dict rows.

    Parameters
    ----------
    rows : list of dict
    columns : sequence of str
        Keys shown, in order.
    headers : sequence of str, optional
        Header texts (default the keys).
    text_columns : sequence of str
        Left-aligned columns.

    >>> table([{"a": 1.23456, "b": "x"}], ["a", "b"], text_columns=["b"])
    '<table><tr><th>a</th><th class="text">b</th></tr><tr><td>1.23</td><td class="text">x</td></tr></table>'
    """
    headers = list(columns) if headers is None else list(headers)
    text_columns = set(text_columns)

    def cls(name):
        return ' class="text"' if name in text_columns else ""

    head = "".join(f"<th{cls(c)}>{escape(h)}</th>" for c, h in zip(columns, headers))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(c)}>{escape(format_cell(row.get(c)))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def section(anchor, title, body):
    """A ``<section>`` with an ``<h2>`` and an id for the page's navigation."""
    return f'<section id="{escape(anchor)}"><h2>{escape(title)}</h2>\n{body}\n</section>'


def page(title, sections, subtitle=""):
    """A complete HTML document: title, navigation to the sections, the sections.

    Parameters
    ----------
    title : str
    sections : list of (anchor, title, body html)
    subtitle : str, optional
        HTML shown under the title.
    """
    nav = " ".join(f'<a href="#{escape(a)}">{escape(t)}</a>' for a, t, _ in sections)
    parts = "\n".join(section(a, t, b) for a, t, b in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>"
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n"
        f"<body><h1>{escape(title)}</h1>{subtitle}<nav>{nav}</nav>\n{parts}\n</body></html>\n"
    )
