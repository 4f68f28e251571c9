"""ISLES 2018 and ISLES 2024 to BIDS (ctp_nipype.datasets.isles, ctp-convert isles2018|isles2024), on phantoms
written in each dataset's own layout and naming (ctp_nipype.sims.isles)."""

from __future__ import annotations

import json
import shutil

import nibabel as nb
import numpy as np
import pytest

from ctp_nipype.bids import collect_scans
from ctp_nipype.cli.convert_datasets import main as convert
from ctp_nipype.datasets.isles import DatasetError, convert_dataset, find_cases
from ctp_nipype.io import load_ctp
from ctp_nipype.sims.isles import (
    make_isles_phantom,
    truth_reference_maps,
    write_isles2018_case,
    write_isles2024_case,
)
from ctp_nipype.sims.phantom import PhantomLabel


@pytest.fixture(scope="module")
def phantom():
    return make_isles_phantom(seed=1, noise_sd_hu=2.0)


def _data(path):
    return np.asarray(nb.load(str(path)).dataobj)


def test_isles2018_case_to_bids(tmp_path, phantom):
    write_isles2018_case(tmp_path / "TRAINING", 1, phantom)
    write_isles2018_case(tmp_path / "TRAINING", 12, phantom, lesion=False)
    assert convert(["isles2018", str(tmp_path / "TRAINING"), str(tmp_path / "bids")]) == 0
    bids = tmp_path / "bids"
    scans = collect_scans(bids)  # pybids finds them
    assert [(s.subject, s.session) for s in scans] == [("case001", None), ("case012", None)]
    scan = load_ctp(scans[0].path)  # the package's own loader reads the timing written
    np.testing.assert_array_equal(scan.frame_times, np.arange(60.0))
    np.testing.assert_array_equal(scan.data, np.round(phantom.hu))
    side = json.loads((bids / "sub-case001" / "sub-case001_ctp.json").read_text())
    assert side["FrameTimingSource"].startswith("the dataset documents 1 s frames")
    assert side["SourceCase"] == "case_1" and side["Units"] == "HU"
    ref = bids / "derivatives" / "reference"
    assert json.loads((ref / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    truth = truth_reference_maps(phantom)
    for name, units in (("cbf", "ml/100g/min"), ("cbv", "ml/100g"), ("mtt", "s"), ("tmax", "s")):
        path = ref / "sub-case001" / "perf" / f"sub-case001_desc-reference_{name}.nii.gz"
        np.testing.assert_allclose(_data(path), truth[name], rtol=1e-6)
        sidecar = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
        assert sidecar["Units"] == units and sidecar["Software"].startswith("RAPID")
    lesion = ref / "sub-case001" / "perf" / "sub-case001_label-infarct_desc-reference_mask.nii.gz"
    assert np.array_equal(_data(lesion) > 0, phantom.labels == PhantomLabel.CORE)
    assert "diffusion" in json.loads(lesion.with_name(lesion.name.replace(".nii.gz", ".json")).read_text())["Description"]
    assert not list((ref / "sub-case012").glob("*/*_mask.nii.gz"))  # a test case has no OT


def test_isles2018_training_and_testing_under_one_folder(tmp_path, phantom):
    write_isles2018_case(tmp_path / "ISLES2018" / "TRAINING", 1, phantom)
    write_isles2018_case(tmp_path / "ISLES2018" / "TESTING", 1, phantom, lesion=False)
    cases = find_cases("isles2018", tmp_path / "ISLES2018")
    assert [(c.subject, c.lesion is not None) for c in cases] == [("train001", True), ("test001", False)]


def test_isles2018_missing_file_names_the_case_before_writing(tmp_path, phantom):
    write_isles2018_case(tmp_path / "TRAINING", 1, phantom)
    case2 = write_isles2018_case(tmp_path / "TRAINING", 2, phantom)
    shutil.rmtree(next(case2.glob("SMIR.Brain.XX.O.CT_Tmax.*")))
    with pytest.raises(DatasetError, match=r"ISLES 2018 case_2 .*missing SMIR\.Brain\.XX\.O\.CT_Tmax"):
        convert_dataset("isles2018", tmp_path / "TRAINING", tmp_path / "bids")
    assert not (tmp_path / "bids").exists()  # nothing written
    assert convert(["isles2018", str(tmp_path / "TRAINING"), str(tmp_path / "bids")]) == 2


def test_isles2018_pwi_with_a_singleton_fourth_axis_is_read_as_4d(tmp_path, phantom):
    case = write_isles2018_case(tmp_path / "TRAINING", 1, phantom)
    pwi = next(case.glob("SMIR.Brain.XX.O.CT_4DPWI.*/*.nii"))
    img = nb.load(str(pwi), mmap=False)
    five = nb.Nifti1Image(np.asanyarray(img.dataobj).copy()[:, :, :, None, :], img.affine)
    five.header.set_zooms(img.header.get_zooms()[:3] + (1.0, 1.0))
    pwi.unlink()  # not overwritten in place: nibabel may map the old file
    nb.save(five, str(pwi))
    convert_dataset("isles2018", tmp_path / "TRAINING", tmp_path / "bids")
    scan = load_ctp(tmp_path / "bids" / "sub-case001" / "sub-case001_ctp.nii.gz")
    assert scan.data.shape == phantom.hu.shape


def test_isles2024_native_and_ncct_spaces(tmp_path, phantom):
    write_isles2024_case(tmp_path / "train", 3, phantom)
    convert_dataset("isles2024", tmp_path / "train", tmp_path / "native")
    convert_dataset("isles2024", tmp_path / "train", tmp_path / "ncct", space="ncct")
    for root in ("native", "ncct"):
        (scan,) = collect_scans(tmp_path / root)
        assert (scan.subject, scan.session) == ("stroke0003", "01")
        np.testing.assert_array_equal(load_ctp(scan.path).frame_times, np.arange(60.0))
        side = json.loads(scan.path.with_name("sub-stroke0003_ses-01_ctp.json").read_text())
        assert side["FrameTimingSource"] == "NIfTI pixdim[4] with its xyzt time unit"
        assert side["Space"].startswith("native" if root == "native" else "NCCT")
    native = load_ctp(tmp_path / "native" / "sub-stroke0003" / "ses-01" / "sub-stroke0003_ses-01_ctp.nii.gz")
    ncct = load_ctp(tmp_path / "ncct" / "sub-stroke0003" / "ses-01" / "sub-stroke0003_ses-01_ctp.nii.gz")
    np.testing.assert_array_equal(ncct.data, native.data[::-1])  # the NCCT space stores x reversed
    world = ncct.affine @ [0, 0, 0, 1]
    np.testing.assert_allclose(world, native.affine @ [native.data.shape[0] - 1, 0, 0, 1])
    perf = tmp_path / "native" / "derivatives" / "reference" / "sub-stroke0003" / "ses-01" / "perf"
    tmax = _data(perf / "sub-stroke0003_ses-01_desc-reference_tmax.nii.gz")
    assert tmax.min() == -30.0  # icobrain's fill value, left as shipped
    side = json.loads((perf / "sub-stroke0003_ses-01_desc-reference_tmax.json").read_text())
    assert side["Software"].startswith("icobrain")
    lesion = json.loads((perf / "sub-stroke0003_ses-01_label-infarct_desc-reference_mask.json").read_text())
    assert lesion["Space"] == "NCCT" and "follow-up" in lesion["Description"]


def test_isles2024_sidecar_timing_wins_and_old_spelling_is_read(tmp_path, phantom):
    write_isles2024_case(tmp_path / "train", 1, phantom)
    (tmp_path / "train" / "raw_data").rename(tmp_path / "train" / "rawdata")
    raw = tmp_path / "train" / "rawdata" / "sub-stroke0001" / "ses-01"
    times = (np.arange(60) * 1.5).tolist()
    (raw / "sub-stroke0001_ses-01_ctp.json").write_text(json.dumps({"FrameTimesStart": times, "Manufacturer": "X"}))
    convert_dataset("isles2024", tmp_path / "train", tmp_path / "bids")
    side = json.loads((tmp_path / "bids" / "sub-stroke0001" / "ses-01" / "sub-stroke0001_ses-01_ctp.json").read_text())
    assert side["FrameTimesStart"] == times and side["Manufacturer"] == "X"
    assert side["FrameTimingSource"] == "sidecar FrameTimesStart"


def test_isles2024_missing_raw_map_is_named_with_the_way_out(tmp_path, phantom):
    write_isles2024_case(tmp_path / "train", 2, phantom)
    (tmp_path / "train" / "raw_data" / "sub-stroke0002" / "ses-01" / "perfusion-maps" /
     "sub-stroke0002_ses-01_cbv.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"sub-stroke0002: missing .*_cbv\.nii\.gz \(or convert with --space ncct\)"):
        find_cases("isles2024", tmp_path / "train")
    assert len(find_cases("isles2024", tmp_path / "train", space="ncct")) == 1


def test_convert_refuses_a_bids_folder_inside_the_source(tmp_path, phantom):
    write_isles2018_case(tmp_path / "TRAINING", 1, phantom)
    assert convert(["isles2018", str(tmp_path / "TRAINING"), str(tmp_path / "TRAINING" / "bids")]) == 2
    assert convert(["isles2018", str(tmp_path / "nothing"), str(tmp_path / "bids")]) == 2


def test_isles2024_bad_sidecar_timing_names_the_case_before_writing(tmp_path, phantom):
    write_isles2024_case(tmp_path / "train", 1, phantom)
    write_isles2024_case(tmp_path / "train", 2, phantom)
    raw = tmp_path / "train" / "raw_data" / "sub-stroke0002" / "ses-01"
    (raw / "sub-stroke0002_ses-01_ctp.json").write_text(json.dumps({"FrameTimesStart": [0, 1, 2]}))
    with pytest.raises(DatasetError, match=r"isles2024 sub-stroke0002: .*FrameTimesStart.*sub-stroke0002_ses-01_ctp\.json"):
        convert_dataset("isles2024", tmp_path / "train", tmp_path / "bids")
    assert not (tmp_path / "bids").exists()
