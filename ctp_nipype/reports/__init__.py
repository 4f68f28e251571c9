"""Self-contained HTML reports: one page per scan, one page per group comparison.

* :mod:`.html` -- page assembly: inline CSS, tables, images embedded as base64 PNG (no external resource).
* :mod:`.figures` -- matplotlib (Agg) figures returned as PNG bytes: map mosaics, lesion overlays, motion,
  ROI residue and reconstructed tissue curves.
* :mod:`.scan` -- :func:`~.scan.scan_report_html`, the per-scan report from arrays and tables.
* :mod:`.group` -- :func:`~.group.group_report_html`, the methods comparison in the layout of Table 2
  of Zeng et al. (2025).

Report code draws; the numbers come from :mod:`ctp_nipype.perfusion`.
"""
