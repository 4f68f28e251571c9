"""ctp_nipype.bids: derivative names from entities, Sources as BIDS URIs, the dataset description."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctp_nipype.bids import derivative_name, linked_dataset, parse_derivative_name, source_uris, write_dataset_description
from ctp_nipype.io import provenance, write_json


@pytest.mark.parametrize(
    "name, entities",
    [
        ("sub-01_ses-01_desc-osvd_cbf.nii.gz", dict(prefix="sub-01_ses-01", suffix="cbf", desc="osvd")),
        ("sub-01_label-core_desc-csvd_mask.nii.gz", dict(prefix="sub-01", suffix="mask", desc="csvd", label="core")),
        ("scan_desc-global_aif.tsv", dict(prefix="scan", suffix="aif", desc="global", extension=".tsv")),
        ("sub-1_acq-x_run-2_desc-perfusion_report.html",
         dict(prefix="sub-1_acq-x_run-2", suffix="report", desc="perfusion", extension=".html")),
        ("sub-01_ctp.nii.gz", dict(prefix="sub-01", suffix="ctp")),
    ],
)
def test_derivative_names_round_trip_through_their_entities(name, entities):
    assert derivative_name(**entities) == name
    parsed = parse_derivative_name(Path("/some/folder") / name)
    expected = {"label": None, "desc": None, "extension": ".nii.gz", **entities}
    assert parsed == expected


@pytest.mark.parametrize("bad", [dict(desc="o-svd"), dict(desc=""), dict(label="core_1"), dict(suffix="c bf")])
def test_an_entity_that_would_break_the_name_is_refused(bad):
    with pytest.raises(ValueError, match="alphanumeric"):
        derivative_name(**{"prefix": "sub-01", "suffix": "cbf", **bad})


def _node_output(folder, name, sources):
    """A file written by a Nipype node (its folder holds _node.pklz), with a sidecar naming its sources."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "_node.pklz").write_bytes(b"")
    path = folder / name
    path.write_bytes(b"")
    write_json(folder / name.replace(".nii.gz", ".json").replace(".tsv", ".json"), provenance(*sources))
    return path


def test_sources_become_bids_uris_and_intermediate_series_resolve_to_the_raw_scan(tmp_path):
    raw = tmp_path / "raw"
    scan = raw / "sub-01" / "ses-01" / "sub-01_ses-01_ctp.nii.gz"
    scan.parent.mkdir(parents=True)
    scan.write_bytes(b"")
    (raw / "dataset_description.json").write_text("{}")
    out = tmp_path / "out"
    write_dataset_description(out, [raw])
    assert linked_dataset(out) == raw.resolve()

    work = tmp_path / "work" / "ctp_wf"
    loaded = _node_output(work / "load", "sub-01_ses-01_ctp.nii.gz", [scan])
    filtered = _node_output(work / "guided_filter", "sub-01_ses-01_ctp.nii.gz", [loaded])
    curves = _node_output(work / "select", "sub-01_ses-01_desc-global_aif.tsv", [filtered])
    published = out / "sub-01" / "ses-01" / "perf" / "sub-01_ses-01_desc-brain_mask.nii.gz"
    published.parent.mkdir(parents=True)
    published.write_bytes(b"")
    user_file = tmp_path / "mine" / "aif.tsv"
    user_file.parent.mkdir()
    user_file.write_text("aif\n")

    uris = source_uris([filtered, curves, published, user_file, filtered, "bids:raw:x.nii.gz"], out,
                       "sub-01/ses-01/perf")
    assert uris == [
        "bids:raw:sub-01/ses-01/sub-01_ses-01_ctp.nii.gz",
        "bids::sub-01/ses-01/perf/sub-01_ses-01_desc-global_aif.tsv",
        "bids::sub-01/ses-01/perf/sub-01_ses-01_desc-brain_mask.nii.gz",
        str(user_file.resolve()),
        "bids:raw:x.nii.gz",
    ]
    assert not any(str(tmp_path / "work") in uri for uri in uris)


def test_flat_output_without_a_dataset_gets_paths_relative_to_the_output_folder(tmp_path):
    scan = tmp_path / "in" / "scan.nii.gz"
    scan.parent.mkdir()
    scan.write_bytes(b"")
    loaded = _node_output(tmp_path / "work" / "load", "scan_ctp.nii.gz", [scan])
    curves = _node_output(tmp_path / "work" / "select", "scan_desc-global_aif.tsv", [loaded])
    assert source_uris([loaded, curves], tmp_path / "out") == [str(scan.resolve()), "scan_desc-global_aif.tsv"]


def test_a_kept_dataset_description_gets_the_raw_link_added(tmp_path):
    out = tmp_path / "out"
    write_json(out / "dataset_description.json", {"Name": "earlier run", "DatasetType": "derivative"})
    write_dataset_description(out, [tmp_path / "raw"])
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["Name"] == "earlier run"
    assert description["DatasetLinks"] == {"raw": (tmp_path / "raw").resolve().as_uri()}
