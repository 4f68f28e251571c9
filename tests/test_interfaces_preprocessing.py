"""The preprocessing interfaces end to end on files: the small digital phantom and broken inputs."""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from ctp_nipype.interfaces.preprocessing import (
    BrainMask,
    CSFMask,
    GuidedFilter,
    LoadCTP,
    MotionCorrection,
    SelectAIFVOF,
    VesselMask,
)
from ctp_nipype.io import InputError, sidecar_path, write_curves_tsv
from ctp_nipype.perfusion.filtering import guided_filter
from ctp_nipype.perfusion.timing import resample_to_uniform
from ctp_nipype.sims.phantom import PhantomLabel, make_phantom


def _save(path, data, affine=np.eye(4), sidecar=None):
    img = nb.Nifti1Image(np.asarray(data, np.float32), affine)
    nb.save(img, str(path))
    if sidecar is not None:
        json_path = str(path).replace(".nii.gz", ".json")
        with open(json_path, "w") as handle:
            json.dump(sidecar, handle)
    return str(path)


@pytest.fixture(scope="module")
def phantom_file(tmp_path_factory):
    ph = make_phantom("small", seed=0, non_uniform_timing=True)
    root = tmp_path_factory.mktemp("data")
    path = _save(root / "sub-01_ctp.nii.gz", ph.hu, ph.affine, {"FrameTimesStart": ph.frame_times.tolist()})
    return ph, path


def _run(interface, tmp_path, name):
    workdir = tmp_path / name
    workdir.mkdir()
    return interface.run(cwd=str(workdir)).outputs


def test_pipeline_on_phantom(phantom_file, tmp_path):
    ph, path = phantom_file
    loaded = _run(LoadCTP(in_file=path), tmp_path, "load")
    assert loaded.resampled
    sidecar = json.loads(open(loaded.out_json).read())
    assert sidecar["ResampledToUniformGrid"] is True
    assert sidecar["OriginalFrameTimes"] == pytest.approx(ph.frame_times.tolist())
    assert sidecar["HeadMotionCheck"]["HeadMoved"] is False and not loaded.head_moved
    img = nb.load(loaded.out_file)
    assert img.get_data_dtype() == np.float32
    # 1 s then 2 s frames -> uniform frames of 1 s from the first to the last
    n_uniform = int(ph.frame_times[-1] - ph.frame_times[0]) + 1
    assert img.shape[3] == n_uniform and loaded.frame_interval == pytest.approx(1.0)
    # streamed a frame at a time, the series is the whole-array resampling bit for bit
    expected, _ = resample_to_uniform(np.asarray(ph.hu, np.float32), ph.frame_times)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), expected)
    assert loaded.out_file.endswith("_ctp.nii")  # uncompressed: the later steps read it by slices
    with open(loaded.frame_times_file) as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [float(r["time"]) for r in rows] == pytest.approx(ph.frame_times[0] + np.arange(n_uniform))

    brain = _run(BrainMask(in_file=loaded.out_file), tmp_path, "brain")
    brain_mask = nb.load(brain.out_file).get_fdata() > 0
    truth = ph.brain_mask
    assert 2 * (brain_mask & truth).sum() / (brain_mask.sum() + truth.sum()) >= 0.95
    csf = _run(CSFMask(in_file=loaded.out_file, brain_mask=brain.out_file), tmp_path, "csf")
    vessels = _run(
        VesselMask(in_file=loaded.out_file, brain_mask=brain.out_file, csf_mask=csf.out_file), tmp_path, "vessels"
    )
    vessel_mask = nb.load(vessels.out_file).get_fdata() > 0
    assert vessel_mask[ph.labels == PhantomLabel.ARTERY].all()

    selected = _run(
        SelectAIFVOF(in_file=loaded.out_file, brain_mask=brain.out_file, exclude_mask=csf.out_file), tmp_path, "aif"
    )
    with open(selected.out_file) as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        assert reader.fieldnames == ["time", "aif", "vof", "aif_corrected"]
        table = list(reader)
    assert len(table) == n_uniform
    aif = np.array([float(r["aif"]) for r in table])
    assert aif[:3].mean() == pytest.approx(24.0, abs=8)  # baseline included, like a user TSV
    assert 1.6 < selected.scale < 2.4  # artery voxels hold 50% blood
    assert open(selected.out_png, "rb").read(4) == b"\x89PNG"
    chosen = nb.load(selected.voxels_file).get_fdata()
    assert np.all(ph.labels[chosen == 1] == PhantomLabel.ARTERY)

    filtered = _run(GuidedFilter(in_file=loaded.out_file), tmp_path, "gf")
    assert nb.load(filtered.out_file).shape == img.shape
    # the default radius is 1.88 mm: 1 voxel on this 4 mm phantom; a radius in voxels replaces it
    sidecar = json.loads(sidecar_path(filtered.out_file).read_text())["GuidedFilter"]
    assert (sidecar["RadiusVoxels"], sidecar["RadiusMm"], sidecar["VoxelSizeMm"][:2]) == (1, 1.88, [4.0, 4.0])
    expected = guided_filter(nb.load(loaded.out_file).get_fdata(), radius=1)
    assert np.allclose(nb.load(filtered.out_file).get_fdata(), expected, atol=1e-3)
    # within the brain's box, filtering only there gives the whole-image values bit for bit
    in_brain = _run(GuidedFilter(in_file=loaded.out_file, mask_file=brain.out_file), tmp_path, "gf_brain")
    np.testing.assert_array_equal(np.asanyarray(nb.load(in_brain.out_file).dataobj)[brain_mask],
                                  np.asanyarray(nb.load(filtered.out_file).dataobj)[brain_mask])
    wide = _run(GuidedFilter(in_file=loaded.out_file, radius=2), tmp_path, "gf2")
    sidecar = json.loads(sidecar_path(wide.out_file).read_text())["GuidedFilter"]
    assert (sidecar["RadiusVoxels"], sidecar["RadiusMm"]) == (2, None)


def test_user_masks_and_curves_override(phantom_file, tmp_path):
    ph, path = phantom_file
    loaded = _run(LoadCTP(in_file=path), tmp_path, "load")
    user_brain = _save(tmp_path / "brain.nii.gz", ph.brain_mask, ph.affine)
    brain = _run(BrainMask(in_file=loaded.out_file, in_mask=user_brain), tmp_path, "brain")
    assert np.array_equal(nb.load(brain.out_file).get_fdata() > 0, ph.brain_mask)
    artery = _save(tmp_path / "artery.nii.gz", ph.labels == PhantomLabel.ARTERY, ph.affine)
    # the user's VOF on the original, non-uniform grid: interpolated onto the series' grid
    vof_tsv = write_curves_tsv(tmp_path / "vof.tsv", {"time": ph.frame_times, "vof": ph.vof})
    out = _run(
        SelectAIFVOF(in_file=loaded.out_file, brain_mask=brain.out_file, aif_mask=artery, vof_file=str(vof_tsv)),
        tmp_path,
        "aif",
    )
    sidecar = json.loads(open(out.out_json).read())
    assert sidecar["AIFSource"] == "user mask" and sidecar["VOFSource"] == "user TSV"
    assert out.scale == pytest.approx(2.0, rel=0.1)
    # an AIF that is already corrected: --no-partial-volume-correction keeps it as it is
    kept = _run(
        SelectAIFVOF(in_file=loaded.out_file, brain_mask=brain.out_file, aif_mask=artery, vof_file=str(vof_tsv),
                     correct_partial_volume=False),
        tmp_path,
        "aif_kept",
    )
    with open(kept.out_file) as handle:
        table = list(csv.DictReader(handle, delimiter="\t"))
    assert [float(r["aif_corrected"]) for r in table] == [float(r["aif"]) for r in table]
    assert kept.scale == 1.0
    assert json.loads(open(kept.out_json).read())["PartialVolumeCorrection"]["Applied"] is False


def _write_scan(tmp_path, data, sidecar={"RepetitionTime": 1.0}):
    return _save(tmp_path / "scan_ctp.nii.gz", data, np.eye(4), sidecar)


@pytest.mark.parametrize(
    "data, sidecar, message",
    [
        (np.zeros((4, 4, 4)), {"RepetitionTime": 1.0}, "4D"),
        (np.zeros((4, 4, 1, 5)), {"RepetitionTime": 1.0}, "at least 10"),
        (np.full((4, 4, 1, 12), np.nan), {"RepetitionTime": 1.0}, "NaN"),
        (np.full((4, 4, 1, 12), 1e6), {"RepetitionTime": 1.0}, "plausible HU"),
        (np.full((4, 4, 1, 12), 1050.0), {"RepetitionTime": 1.0}, "Hounsfield"),
        (np.zeros((4, 4, 1, 12)), {"FrameTimesStart": [0, 1, 2, 3, 4, 4, 6, 7, 8, 9, 10, 11]}, "strictly increasing"),
        (np.zeros((4, 4, 1, 12)), {}, "No frame timing"),
    ],
)
def test_load_errors_are_specific(tmp_path, data, sidecar, message):
    path = _write_scan(tmp_path, data, sidecar)
    nb.Nifti1Image(np.asarray(data, np.float32), np.eye(4)).to_filename(path)
    with pytest.raises(Exception) as info:
        LoadCTP(in_file=path).run(cwd=str(tmp_path))
    assert message in str(info.value)


def test_user_mask_on_other_grid_is_rejected(phantom_file, tmp_path):
    ph, path = phantom_file
    wrong = _save(tmp_path / "mask.nii.gz", np.ones((5, 5, 5)), ph.affine)
    with pytest.raises(Exception, match="resample the mask"):
        BrainMask(in_file=path, in_mask=wrong).run(cwd=str(tmp_path))


def test_motion_correction_interface_writes_parameters(tmp_path):
    from ctp_nipype.perfusion.motion import PARAMETER_NAMES

    ph = make_phantom("small", seed=3, noise_sd_hu=2.0)
    short = ph.hu[..., :12]
    path = _save(tmp_path / "m_ctp.nii.gz", short, ph.affine, {"RepetitionTime": 1.0})
    out = _run(MotionCorrection(in_file=path, n_baseline_frames=4), tmp_path, "mc")
    with open(out.motion_file) as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        assert reader.fieldnames == ["time", *PARAMETER_NAMES, "framewise_displacement_mm", "displacement_mm",
                                     "censored"]
        rows = list(reader)
    assert len(rows) == 12
    assert out.n_censored_frames == 0 and all(r["censored"] == "0" for r in rows)
    # no motion injected: every frame within 0.3 mm / 0.3 degrees of rest
    values = np.array([[float(r[n]) for n in PARAMETER_NAMES] for r in rows])
    assert np.abs(values).max() < 0.3
    assert isinstance(InputError("x"), ValueError)


def test_motion_correction_streams_the_pipeline_series_and_writes_what_correct_motion_returns(tmp_path):
    """On the pipeline's uncompressed series (LoadCTP's output) the interface reads frame by frame and writes
    each corrected frame as it comes: the file holds exactly the frames of ``correct_motion`` on the series in
    memory, with the series' grid, and its sidecar the motion entry."""
    from ctp_nipype.perfusion.motion import correct_motion

    ph = make_phantom("small", seed=4, motion=True)
    moved = np.flatnonzero(np.any(ph.motion_parameters != 0, axis=1))
    series = ph.hu[..., np.r_[0:7, moved]].astype(np.float32)
    path = _save(tmp_path / "sub-01_ctp.nii.gz", series, ph.affine, {"RepetitionTime": 1.0})
    loaded = _run(LoadCTP(in_file=path), tmp_path, "load")
    assert loaded.out_file.endswith(".nii")
    out = _run(MotionCorrection(in_file=loaded.out_file, n_baseline_frames=7), tmp_path, "mc")
    expected = correct_motion(nb.load(loaded.out_file).get_fdata(dtype=np.float32),
                              nb.load(loaded.out_file).header.get_zooms()[:3], 7)
    written = nb.load(out.out_file)
    np.testing.assert_array_equal(written.get_fdata(dtype=np.float32), expected.corrected)
    np.testing.assert_allclose(written.affine, nb.load(loaded.out_file).affine)
    assert written.header.get_zooms() == nb.load(loaded.out_file).header.get_zooms()
    entry = json.loads(open(sidecar_path(out.out_file)).read())["MotionCorrection"]
    assert entry["CensoredFrames"] == np.flatnonzero(expected.censored).tolist() != []
    assert entry["ReferenceFrames"] == 7 and out.n_censored_frames == len(entry["CensoredFrames"])
    # a user's uncompressed float32 file, read lazily: a NaN is refused with the file's name, before registering
    series[10, 10, 1, 3] = np.nan
    bad = tmp_path / "bad_ctp.nii"
    nb.Nifti1Image(series, ph.affine).to_filename(bad)
    with pytest.raises(InputError, match=r"The CTP scan \S*bad_ctp.nii contains 1 NaN or infinite values"):
        MotionCorrection(in_file=str(bad), n_baseline_frames=7, frame_interval=1.0).run(cwd=str(tmp_path))


def test_load_warns_of_head_motion_and_the_run_summary_repeats_it(tmp_path):
    """A scan whose head moves: LoadCTP says so (warning, sidecar, output), and so do the AIF sidecar and the
    command line's summary as long as the motion was not corrected."""
    from ctp_nipype.cli._run import summarise_outputs

    ph = make_phantom("small", seed=4, motion=True)
    path = _save(tmp_path / "sub-01_ctp.nii.gz", ph.hu, ph.affine, {"RepetitionTime": 1.0})
    with pytest.warns(UserWarning, match="Head motion: the skull's surface moves by up to"):
        loaded = _run(LoadCTP(in_file=path), tmp_path, "load")
    assert loaded.head_moved
    check = json.loads(open(loaded.out_json).read())["HeadMotionCheck"]
    assert check["MovedFrames"] == [27, 28, 29, 30, 31]
    brain = _run(BrainMask(in_file=loaded.out_file), tmp_path, "brain")
    select = _run(SelectAIFVOF(in_file=loaded.out_file, brain_mask=brain.out_file), tmp_path, "select")
    assert "Head motion" in json.loads(open(select.out_json).read())["HeadMotionWarning"]
    lines = summarise_outputs(tmp_path / "select", since=0)
    assert any(line.startswith("warning: sub-01_desc-global_aif.json: Head motion") for line in lines)
    # after motion correction the warning is gone from the curves' sidecar
    corrected = _run(MotionCorrection(in_file=loaded.out_file, n_baseline_frames=7), tmp_path, "mc")
    select = _run(SelectAIFVOF(in_file=corrected.out_file, brain_mask=brain.out_file, motion_file=corrected.motion_file),
                  tmp_path, "select_mc")
    sidecar = json.loads(open(select.out_json).read())
    assert "HeadMotionWarning" not in sidecar and sidecar["CensoredFrames"] == [27, 28, 29, 30, 31]
    # motion after the first pass: the AIF's peak was measured, nothing to warn of
    assert sidecar["AIFFirstPassCensoring"] == {"PeakCensored": False, "CensoredShareOfFirstPass": 0.0,
                                                "CensoredFirstPassFrames": []}


def test_an_aif_peak_lost_to_motion_is_reported(tmp_path):
    """When the frames of the arterial first pass are censored for head motion, the AIF's peak is repaired from
    a gamma-variate fit, not measured (on the moving phantom with its excursion in frames 9-13, seed 7, the
    repair put the peak two frames late and grey-matter CBF at 1.55 of the truth; benchmarks/
    motion_selection.py --motion-start 9). The run says so: a warning, the AIF sidecar's
    AIFFirstPassCensoring, the command line's summary and the report. Here a still phantom with frames 9-13
    flagged in the motion TSV, so that only the censoring counts."""
    from ctp_nipype.cli._run import summarise_outputs
    from ctp_nipype.interfaces.report import ScanReport
    from ctp_nipype.io import write_curves_tsv

    ph = make_phantom("small", seed=7)
    path = _save(tmp_path / "sub-01_ctp.nii.gz", ph.hu, ph.affine, {"RepetitionTime": 1.0})
    censored = np.zeros(ph.frame_times.size, int)
    censored[9:14] = 1
    motion_file = write_curves_tsv(tmp_path / "motion.tsv", {"time": ph.frame_times, "censored": censored})
    brain = _run(BrainMask(in_file=path), tmp_path, "brain")
    with pytest.warns(UserWarning, match="The AIF's peak lies in frames left out for head motion"):
        select = _run(SelectAIFVOF(in_file=path, brain_mask=brain.out_file, motion_file=str(motion_file)),
                      tmp_path, "select")
    censoring = json.loads(open(select.out_json).read())["AIFFirstPassCensoring"]
    assert censoring["PeakCensored"]
    assert 3 <= len(censoring["CensoredFirstPassFrames"]) and set(censoring["CensoredFirstPassFrames"]) <= set(range(9, 14))
    assert 0.5 < censoring["CensoredShareOfFirstPass"] < 1.0
    lines = summarise_outputs(tmp_path / "select", since=0)
    assert any("The AIF's peak lies in frames left out for head motion" in line for line in lines)
    report = _run(ScanReport(in_file=path, curves_file=select.out_file), tmp_path, "report")
    assert "The AIF's peak lies in frames left out" in html.unescape(open(report.out_report).read())


def test_head_motion_check_does_not_depend_on_the_chunks():
    """bone_surface_displacement reads the series chunk by chunk of slices: one slice at a time gives the same."""
    from ctp_nipype.perfusion.motion import bone_surface_displacement

    moving = make_phantom("small", seed=3, motion=True)
    whole = bone_surface_displacement(moving.hu, moving.voxel_size_mm)
    by_slice = bone_surface_displacement(moving.hu, moving.voxel_size_mm, max_bytes=1)
    np.testing.assert_array_equal(whole, by_slice)
    assert whole.max() > 0.5  # the phantom's head moves


def test_load_refuses_a_non_finite_frame_and_publishes_nothing(tmp_path):
    data = np.full((6, 6, 2, 12), -1000.0, np.float32)
    data[2:4, 2:4, :, 3:8] += 50.0
    data[1, 1, 0, 7] = np.nan
    path = _save(tmp_path / "nan_ctp.nii.gz", data, sidecar={"FrameTimesStart": list(range(12))})
    work = tmp_path / "load"
    work.mkdir()
    with pytest.raises(InputError, match="contains 1 NaN or infinite"):
        LoadCTP(in_file=path).run(cwd=str(work))
    assert not list(work.glob("*_ctp.nii"))
