"""The BIDS App's group level: every scan's statistics gathered into group tables and a group page."""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

from ..io import copy_atomic, write_json
from ..perfusion.triage import DELAY_THRESHOLDS_S, TARGET_MISMATCH, volume_key


class GroupLevelError(ValueError):
    """The participant level has not produced what the group level needs."""


def _participant(path):
    return path.name.split("_")[0][len("sub-"):]


def find_scan_outputs(output_dir, pattern, participant_labels=None):
    """Per-scan derivative files matching ``pattern`` under ``sub-*/``, filtered by participant."""
    wanted = {str(p)[len("sub-"):] if str(p).startswith("sub-") else str(p) for p in participant_labels or []}
    files = sorted(Path(output_dir).glob(f"sub-*/**/{pattern}"))
    return [f for f in files if not wanted or _participant(f) in wanted]


#: columns of the group lesion table taken from each lesion JSON, in order (DelayMap says tmax or bad)
LESION_COLUMNS = ("CoreVolume", "HypoperfusedVolume", "MismatchVolume", "MismatchRatio",
                  *(volume_key(t) for t in DELAY_THRESHOLDS_S), "HypoperfusionIntensityRatio", "DEFUSE3", "EXTEND",
                  "DelayMap", "AffectedHemisphere", "ReferenceCBF")


def lesion_table(lesion_files):
    """Rows (scan, method, volumes, ratios, DEFUSE 3 / EXTEND flags) from the per-method lesion JSONs."""
    rows = []
    for path in lesion_files:
        payload = json.loads(Path(path).read_text())
        scan = Path(path).name.split("_desc-")[0]
        method = Path(path).name.split("_desc-")[1].split("_")[0]
        row = {"scan": scan, "method": method}
        for key in LESION_COLUMNS:
            value = payload.get(key)
            value = value if not isinstance(value, dict) else value.get("value")
            row[key] = round(value, 3) if isinstance(value, float) else (
                "n/a" if value is None else str(value).lower() if isinstance(value, bool) else value)
        rows.append(row)
    return rows


def lesion_table_sidecar():
    """Column descriptions of the group lesion table (units, the criteria of the flags)."""
    out = {
        "CoreVolume": {"Description": "ischemic core: CBF < 30% of the unaffected hemisphere's mean, hypoperfused",
                       "Units": "ml"},
        "HypoperfusedVolume": {"Description": "delay (DelayMap) > 6 s", "Units": "ml"},
        "MismatchVolume": {"Description": "HypoperfusedVolume - CoreVolume", "Units": "ml"},
        "MismatchRatio": {"Description": "HypoperfusedVolume / CoreVolume (n/a without core)", "Units": "1"},
        **{volume_key(t): {"Description": f"delay (DelayMap) > {t:g} s", "Units": "ml"} for t in DELAY_THRESHOLDS_S},
        "HypoperfusionIntensityRatio": {"Description": "volume with delay > 10 s / volume with delay > 6 s",
                                        "Units": "1"},
        "DelayMap": {"Description": "the delay map thresholded: tmax (SVD) or bad (network; BAD has no dispersion, "
                                    "so BAD > 6 s is stricter than Tmax > 6 s)"},
        "AffectedHemisphere": {"Description": "left or right (world RAS+ coordinates)"},
        "ReferenceCBF": {"Description": "mean CBF of the unaffected hemisphere's tissue", "Units": "ml/100g/min"},
    }
    for name, criteria in TARGET_MISMATCH.items():
        out[name] = {"Description": f"target mismatch: {criteria.text()}", "Levels": {"true": "met", "false": "not met"}}
    return out


def run_group_level(output_dir, participant_labels=None, methods=None):
    """Write ``<output_dir>/group/``: the group statistics (Table 2 layout), their page and a lesion table.

    Returns the written paths.
    """
    from ..interfaces.stats import GroupStats

    output_dir = Path(output_dir)
    stats = find_scan_outputs(output_dir, "*_desc-regions_stats.tsv", participant_labels)
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
        path = group_dir / "group_desc-lesions_volumes.tsv"
        with tempfile.NamedTemporaryFile("w", dir=group_dir, delete=False, suffix=".tmp", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        Path(handle.name).replace(path)
        written.append(path)
        written.append(write_json(path.with_suffix(".json"), lesion_table_sidecar()))
    return written
