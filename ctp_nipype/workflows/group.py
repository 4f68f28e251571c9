"""The BIDS App's group level: every scan's statistics gathered into group tables and a group page."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..bids import derivative_name, parse_derivative_name
from ..io import copy_atomic, write_table_tsv


class GroupLevelError(ValueError):
    """The participant level has not produced what the group level needs."""


def _participant(path):
    return path.name.split("_")[0][len("sub-"):]


def find_scan_outputs(output_dir, pattern, participant_labels=None):
    """Per-scan derivative files matching ``pattern`` under ``sub-*/``, filtered by participant."""
    wanted = {str(p)[len("sub-"):] if str(p).startswith("sub-") else str(p) for p in participant_labels or []}
    files = sorted(Path(output_dir).glob(f"sub-*/**/{pattern}"))
    return [f for f in files if not wanted or _participant(f) in wanted]


def lesion_table(lesion_files):
    """Rows (scan, method, volumes) from the per-method lesion JSONs."""
    rows = []
    for path in lesion_files:
        payload = json.loads(Path(path).read_text())
        entities = parse_derivative_name(path)
        row = {"scan": entities["prefix"], "method": entities["desc"]}
        for key in ("CoreVolume", "HypoperfusedVolume", "MismatchVolume", "MismatchRatio", "AffectedHemisphere"):
            value = payload.get(key)
            value = value if not isinstance(value, dict) else value.get("value")
            row[key] = round(value, 3) if isinstance(value, float) else value
        rows.append(row)
    return rows


def run_group_level(output_dir, participant_labels=None, methods=None):
    """Write ``<output_dir>/group/``: the group statistics (Table 2 layout), their page and a lesion table.

    Returns the written paths.
    """
    from ..interfaces.stats import GroupStats

    output_dir = Path(output_dir)
    stats = find_scan_outputs(output_dir, "*" + derivative_name("", "stats", desc="regions", extension=".tsv"),
                              participant_labels)
    if not stats:
        raise GroupLevelError(
            f"No per-scan statistics (*_desc-regions_stats.tsv) under {output_dir}; run the participant level first."
        )
    group_dir = output_dir / "group"
    written = []
    with tempfile.TemporaryDirectory(prefix="ctp_group_") as tmp:
        result = GroupStats(in_files=[str(p) for p in stats]).run(cwd=tmp)
        for name in ("out_tsv", "out_pairs_tsv", "out_html"):
            source = Path(getattr(result.outputs, name))
            written.append(copy_atomic(source, group_dir / source.name))
            side = source.with_suffix(".json")
            if side.exists():
                written.append(copy_atomic(side, group_dir / side.name))
    lesions = find_scan_outputs(output_dir, "*_lesion.json", participant_labels)
    rows = lesion_table(lesions)
    if methods:
        rows = [r for r in rows if r["method"] in methods]
    if rows:
        written.append(write_table_tsv(group_dir / derivative_name("group", "volumes", desc="lesions", extension=".tsv"), rows))
    return written
