"""The BIDS App's group level: every scan's statistics gathered into group tables and a group page."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..bids import derivative_name, parse_derivative_name
from ..interfaces.stats import lesion_table
from ..io import copy_atomic, write_sidecar, write_table_tsv
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
    stats = find_scan_outputs(output_dir, "*" + derivative_name("", "stats", desc="regions", extension=".tsv"),
                              participant_labels)
    if not stats:
        raise GroupLevelError(
            f"No per-scan statistics (*_desc-regions_stats.tsv) under {output_dir}; run the participant level first."
        )
    group_dir = output_dir / "group"
    written = []
    lesions = find_scan_outputs(output_dir, "*_lesion.json", participant_labels)
    if methods:
        lesions = [p for p in lesions if (parse_derivative_name(p) or {}).get("desc") in methods]
    with tempfile.TemporaryDirectory(prefix="ctp_group_") as tmp:
        result = GroupStats(in_files=[str(p) for p in stats], lesion_files=[str(p) for p in lesions]).run(cwd=tmp)
        for name in ("out_tsv", "out_pairs_tsv", "out_html"):
            source = Path(getattr(result.outputs, name))
            written.append(copy_atomic(source, group_dir / source.name))
            side = source.with_suffix(".json")
            if side.exists():
                written.append(copy_atomic(side, group_dir / side.name))
    rows = lesion_table(lesions)
    if rows:
        path = write_table_tsv(group_dir / derivative_name("group", "volumes", desc="lesions", extension=".tsv"), rows)
        written.append(path)
        written.append(write_sidecar(path, lesion_table_sidecar()))
    return written
