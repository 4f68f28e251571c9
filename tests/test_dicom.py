"""DICOM in and out: the phantom written as DICOM in vendor-like layouts, read back; bad input; DICOM for PACS."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nb
import numpy as np
import pydicom
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctp_nipype.dicom import DicomInputError, read_dicom_ctp
from ctp_nipype.perfusion.timing import interpolate_in_time
from ctp_nipype.sims.dicom_phantom import make_shuttle_phantom, write_dicom_series, write_static_series
from ctp_nipype.sims.phantom import make_phantom

#: few frames, 1.5 s then 3 s (non-uniform), last frame past 55 s
FRAME_TIMES = np.concatenate([np.arange(0.0, 30.0, 1.5), np.arange(30.0, 58.0, 3.0)])
UNIFORM_TIMES = np.arange(0.0, 60.0, 2.0)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom("small", seed=3, noise_sd_hu=0, frame_times=FRAME_TIMES)


def quantised(hu, slope=1.0, intercept=-1024.0):
    """What a reader gets back from the writer's integers (float64 arithmetic, as the writer's)."""
    return np.round((np.asarray(hu, dtype=np.float64) - intercept) / slope) * slope + intercept


def canonical(ctp):
    """The read series in RAS+ order (the phantom's), data and affine."""
    img = nb.as_closest_canonical(nb.Nifti1Image(ctp.data, ctp.affine))
    return np.asarray(img.dataobj), img.affine


def folder_state(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in Path(folder).rglob("*"))


# ----------------------------------------------------------------------------------------------
# layouts


@pytest.mark.parametrize(
    "layout, time_tag, slope, intercept",
    [
        ("single", "AcquisitionTime", 1.0, -1024.0),
        ("single", "ContentTime", 0.5, -1000.0),
        ("enhanced", "AcquisitionTime", 1.0, -1024.0),
    ],
)
def test_layout_round_trip(tmp_path, phantom, layout, time_tag, slope, intercept):
    """Data (HU after rescale), affine and the non-uniform 1.5 s / 3 s timing come back exactly."""
    write_dicom_series(phantom.hu, phantom.affine, tmp_path / "dcm", frame_times=FRAME_TIMES, layout=layout,
                       time_tag=time_tag, rescale_slope=slope, rescale_intercept=intercept)
    ctp = read_dicom_ctp(tmp_path / "dcm")
    data, affine = canonical(ctp)
    np.testing.assert_array_equal(data, quantised(phantom.hu, slope, intercept).astype(np.float32))
    np.testing.assert_allclose(affine, phantom.affine, atol=1e-6)
    np.testing.assert_allclose(ctp.frame_times, FRAME_TIMES, atol=1e-6)
    assert ctp.sidecar["ResampledInTime"] is False and ctp.sidecar["ShuttleMode"] is False
    assert ctp.sidecar["FrameTimesStart"] == pytest.approx(list(FRAME_TIMES), abs=1e-6)
    for key, value in {"KVP": 80.0, "XRayTubeCurrent": 200.0, "Exposure": 100.0, "SliceThickness": 5.0,
                       "ConvolutionKernel": "H20f", "Manufacturer": "ctp_nipype"}.items():
        assert ctp.sidecar[key] == value, key
    expected_tag = "FrameAcquisitionDateTime" if layout == "enhanced" else time_tag
    assert expected_tag in ctp.sidecar["TimingSource"]


def test_small_per_slice_offsets_kept_as_slice_timing(tmp_path, phantom):
    """Slices read out 0.1 s apart within each frame (well under a quarter of the 1.5 s frame step): one frame,
    data untouched, the offsets in SliceTiming."""
    slice_times = FRAME_TIMES[None, :] + 0.1 * np.arange(4)[:, None]
    write_dicom_series(phantom.hu, phantom.affine, tmp_path / "dcm", slice_times=slice_times,
                       time_tag="AcquisitionDateTime")
    ctp = read_dicom_ctp(tmp_path / "dcm")
    data, _ = canonical(ctp)
    np.testing.assert_array_equal(data, quantised(phantom.hu).astype(np.float32))
    np.testing.assert_allclose(ctp.frame_times, FRAME_TIMES, atol=1e-6)
    assert ctp.sidecar["ResampledInTime"] is False
    assert ctp.sidecar["SliceTiming"] == pytest.approx([0.0, 0.1, 0.2, 0.3], abs=1e-6)


def test_dcm2niix_agrees_on_the_voxel_grid(tmp_path, phantom):
    """An independent reader (dcm2niix) puts the same voxels at the same places."""
    # the test extra installs dcm2niix beside this interpreter (a venv's bin/), which `make test` does not put on PATH
    dcm2niix = shutil.which("dcm2niix") or shutil.which("dcm2niix", path=str(Path(sys.executable).parent))
    if dcm2niix is None:
        pytest.skip("dcm2niix is neither on PATH nor beside this Python (pip install dcm2niix)")
    write_dicom_series(phantom.hu, phantom.affine, tmp_path / "dcm", frame_times=FRAME_TIMES)
    ours = nb.as_closest_canonical(nb.Nifti1Image(*(lambda c: (c.data, c.affine))(read_dicom_ctp(tmp_path / "dcm"))))
    (tmp_path / "nii").mkdir()
    subprocess.run([dcm2niix, "-z", "y", "-f", "scan", "-o", str(tmp_path / "nii"), str(tmp_path / "dcm")],
                   check=True, capture_output=True)
    theirs = nb.as_closest_canonical(nb.load(tmp_path / "nii" / "scan.nii.gz"))
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(theirs.affine, ours.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(theirs.get_fdata(), dtype=np.float32), np.asarray(ours.dataobj))


def test_shuttle_mode_put_on_the_first_positions_grid(tmp_path):
    """Two table positions sampled alternately (offset 1 s): detected, and the second position's slices are
    interpolated onto the first position's frame times."""
    hu, slice_times, reference = make_shuttle_phantom(UNIFORM_TIMES, size="small", seed=3, noise_sd_hu=0)
    write_dicom_series(hu, reference.affine, tmp_path / "dcm", slice_times=slice_times,
                       time_tag="AcquisitionDateTime")
    ctp = read_dicom_ctp(tmp_path / "dcm")
    data, _ = canonical(ctp)
    stored = quantised(hu)
    second = slice_times[:, 0] > 0
    assert second.sum() == 2
    expected = stored.copy()
    expected[:, :, second] = interpolate_in_time(stored[:, :, second], slice_times[second][0], UNIFORM_TIMES)
    np.testing.assert_allclose(data, expected, atol=1e-3)
    np.testing.assert_allclose(ctp.frame_times, UNIFORM_TIMES, atol=1e-6)
    details = ctp.sidecar["ShuttleModeDetails"]
    assert ctp.sidecar["ShuttleMode"] is True and ctp.sidecar["ResampledInTime"] is True
    assert details["TablePositions"] == 2 and details["TimeOffsetsSeconds"] == pytest.approx([0.0, 1.0])
    assert "shuttle" in ctp.sidecar["TimeResampling"]
    # where the 1 s offset matters (the bolus: raw error above 2 HU), the resampled slices are much closer to the
    # truth on the common grid than the raw ones
    truth = reference.hu[:, :, second].astype(float)
    raw_error = np.abs(stored[:, :, second] - truth)
    moving = raw_error > 2.0
    assert moving.sum() > 1000
    assert np.abs(data[:, :, second] - truth)[moving].mean() < 0.5 * raw_error[moving].mean()


def test_missing_frame_filled_in_time(tmp_path, phantom):
    write_dicom_series(phantom.hu, phantom.affine, tmp_path / "dcm", frame_times=FRAME_TIMES, drop=[(2, 5)])
    ctp = read_dicom_ctp(tmp_path / "dcm")
    data, _ = canonical(ctp)
    stored = quantised(phantom.hu)
    keep = np.ones(FRAME_TIMES.size, bool)
    keep[5] = False
    np.testing.assert_array_equal(data[:, :, 2, keep], stored[:, :, 2, keep].astype(np.float32))
    np.testing.assert_allclose(data[:, :, 2, 5], (stored[:, :, 2, 4] + stored[:, :, 2, 6]) / 2, atol=1e-3)
    np.testing.assert_array_equal(data[:, :, [0, 1, 3]], stored[:, :, [0, 1, 3]].astype(np.float32))
    assert ctp.sidecar["MissingFrames"] == [{"Slice": 2, "Count": 1}]
    np.testing.assert_allclose(ctp.frame_times, FRAME_TIMES, atol=1e-6)


def test_gantry_tilt_resampled_exactly_for_a_linear_field(tmp_path):
    """A sheared (tilted) grid resampled onto an orthogonal one: linear interpolation is exact on a linear field."""
    shape, tilt = (16, 20, 6), np.radians(15.0)
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    affine[1, 2] = 5.0 * np.tan(tilt)  # each slice shifted along y: the slices are sheared
    affine[:3, 3] = [-15.0, -20.0, 0.0]
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    field = 100.0 + 0.5 * world[..., 0] + 0.8 * world[..., 1] + 1.2 * world[..., 2]
    frames = np.stack([field + 10.0 * t for t in range(10)], axis=-1)
    write_dicom_series(frames, affine, tmp_path / "dcm", frame_times=np.arange(10.0), rescale_slope=0.01,
                       rescale_intercept=0.0)
    ctp = read_dicom_ctp(tmp_path / "dcm")
    assert ctp.sidecar["GantryTiltDegrees"] == pytest.approx(15.0, abs=0.01)
    out_ijk = np.stack(np.meshgrid(*[np.arange(n) for n in ctp.data.shape[:3]], indexing="ij"), axis=-1)
    out_world = nb.affines.apply_affine(ctp.affine, out_ijk)
    source_ijk = nb.affines.apply_affine(np.linalg.inv(affine), out_world)
    inside = np.all((source_ijk > -1e-6) & (source_ijk < np.array(shape) - 1 + 1e-6), axis=-1)
    assert inside.sum() > 0.5 * np.prod(shape)
    expected = 100.0 + out_world @ np.array([0.5, 0.8, 1.2])
    for t in (0, 9):
        np.testing.assert_allclose(ctp.data[..., t][inside], (expected + 10.0 * t)[inside], atol=0.02)
    # the output grid is orthogonal
    columns = ctp.affine[:3, :3] / np.linalg.norm(ctp.affine[:3, :3], axis=0)
    np.testing.assert_allclose(columns.T @ columns, np.eye(3), atol=1e-9)


# ----------------------------------------------------------------------------------------------
# series discovery


def test_perfusion_series_found_among_others(tmp_path, phantom):
    study = {"StudyInstanceUID": "1.2.3.4", "FrameOfReferenceUID": "1.2.3.5"}
    write_dicom_series(phantom.hu, phantom.affine, tmp_path / "dcm" / "ctp", frame_times=FRAME_TIMES, study=study)
    write_static_series(phantom.hu[..., 0], phantom.affine, tmp_path / "dcm" / "ncct", "Head non-contrast", 2, study)
    write_static_series(phantom.hu[..., 12], phantom.affine, tmp_path / "dcm" / "cta", "CTA head", 3, study)
    ctp = read_dicom_ctp(tmp_path / "dcm")
    assert ctp.data.shape[3] == FRAME_TIMES.size
    assert "2 other series" in ctp.note and "Head non-contrast" in ctp.note and "CTA head" in ctp.note


def test_one_series_per_time_point_merged(tmp_path, phantom):
    """Every time point exported as its own series (with a non-contrast head beside them): merged by time."""
    study = {"StudyInstanceUID": "1.2.3.4", "FrameOfReferenceUID": "1.2.3.5"}
    for t, time in enumerate(FRAME_TIMES):
        write_dicom_series(phantom.hu[..., t:t + 1], phantom.affine, tmp_path / "dcm" / f"t{t:02d}",
                           frame_times=[time], study=study, series_number=100 + t)
    write_static_series(phantom.hu[..., 0] + 5, phantom.affine, tmp_path / "dcm" / "ncct", "Head", 2,
                        {"StudyInstanceUID": "1.2.3.4", "FrameOfReferenceUID": "1.2.3.9"})
    ctp = read_dicom_ctp(tmp_path / "dcm")
    data, _ = canonical(ctp)
    np.testing.assert_array_equal(data, quantised(phantom.hu).astype(np.float32))
    np.testing.assert_allclose(ctp.frame_times, FRAME_TIMES, atol=1e-6)
    assert f"{FRAME_TIMES.size} series of one time point" in ctp.sidecar["MergedSeries"]
    assert "1 other series" in ctp.note and "'Head'" in ctp.note


def test_several_perfusion_series_listed_and_chosen(tmp_path, phantom):
    study = {"StudyInstanceUID": "1.2.3.4", "FrameOfReferenceUID": "1.2.3.5"}
    write_dicom_series(phantom.hu, phantom.affine, tmp_path / "a", frame_times=FRAME_TIMES, study=study,
                       series_number=5)
    write_dicom_series(phantom.hu + 1, phantom.affine, tmp_path / "b", frame_times=FRAME_TIMES, study=study,
                       series_number=6, description="CTP second bolus")
    both = tmp_path / "both"
    shutil.copytree(tmp_path / "a", both / "a")
    shutil.copytree(tmp_path / "b", both / "b")
    with pytest.raises(DicomInputError, match="2 series with 10 or more time points.*--series-uid") as info:
        read_dicom_ctp(both)
    uid = str(pydicom.dcmread(next((tmp_path / "b").glob("*.dcm"))).SeriesInstanceUID)
    assert uid in str(info.value)
    chosen = read_dicom_ctp(both, series_uid=uid)
    data, _ = canonical(chosen)
    np.testing.assert_array_equal(data, quantised(phantom.hu + 1).astype(np.float32))


# ----------------------------------------------------------------------------------------------
# bad input: one line from ctp-convert, naming the file or series and what to do; the input untouched


def _dicom(tmp_path, phantom, **kwargs):
    folder = tmp_path / "dcm"
    write_dicom_series(phantom.hu, phantom.affine, folder, frame_times=FRAME_TIMES, **kwargs)
    return folder


def _no_dicom(tmp_path, phantom):
    folder = tmp_path / "dcm"
    folder.mkdir()
    (folder / "notes.txt").write_text("not DICOM")
    return folder


def _no_pixels(tmp_path, phantom):
    folder = _dicom(tmp_path, phantom)
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        del ds.PixelData
        ds.save_as(path)
    return folder


def _mixed_geometry(tmp_path, phantom):
    folder = _dicom(tmp_path, phantom)
    path = sorted(folder.glob("*.dcm"))[7]
    ds = pydicom.dcmread(path)
    ds.PixelSpacing = [2.0, 2.0]
    ds.save_as(path)
    return folder


def _one_time_point(tmp_path, phantom):
    folder = tmp_path / "dcm"
    write_static_series(phantom.hu[..., 0], phantom.affine, folder, "Head", 2, None)
    return folder


def _undecodable(tmp_path, phantom):
    from pydicom.encaps import encapsulate

    folder = _dicom(tmp_path, phantom)
    path = sorted(folder.glob("*.dcm"))[3]
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(64)])  # a JPEG 2000 codestream's first markers
    ds["PixelData"].VR = "OB"
    # JPEG 2000 Part 2 multi-component (lossless): no decoder plugin of pydicom reads it
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.92"
    ds.save_as(path)
    return folder


def _duplicate(tmp_path, phantom):
    folder = _dicom(tmp_path, phantom)
    shutil.copyfile(sorted(folder.glob("*.dcm"))[2], folder / "copy_of_image.dcm")
    return folder


def _no_times(tmp_path, phantom):
    return _dicom(tmp_path, phantom, time_tag=None)


BAD_INPUTS = {
    "no DICOM": (_no_dicom, "No DICOM file found in"),
    "no pixel data": (_no_pixels, "no pixel data"),
    "mixed geometries": (_mixed_geometry, "mixes 2 geometries.*IM00008.dcm.*separate the reconstructions"),
    "one temporal position": (_one_time_point, "one temporal position.*not a perfusion series"),
    "undecodable transfer syntax": (_undecodable, "IM00004.dcm.*1.2.840.10008.1.2.4.92.*decompress"),
    "duplicated instances": (_duplicate, "(copy_of_image.dcm.*IM00003.dcm|IM00003.dcm.*copy_of_image.dcm).*remove one"),
    "missing timing tags": (_no_times, "IM0000.\\.dcm.*no acquisition time.*Re-export"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_one_line_and_input_untouched(tmp_path, phantom, capsys, case):
    from ctp_nipype.cli.convert import main

    build, pattern = BAD_INPUTS[case]
    folder = build(tmp_path, phantom)
    before = folder_state(folder)
    code = main([str(folder), str(tmp_path / "bids"), "--participant-label", "01"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("ctp-convert: error: "), err
    assert __import__("re").search(pattern, err), err
    assert folder_state(folder) == before
    assert not (tmp_path / "bids" / "sub-01").exists()


def test_output_inside_the_dicom_folder_refused(tmp_path, phantom, capsys):
    from ctp_nipype.cli.convert import main

    folder = _dicom(tmp_path, phantom)
    before = folder_state(folder)
    assert main([str(folder), str(folder / "bids"), "--participant-label", "01"]) == 2
    assert "inside the input DICOM folder" in capsys.readouterr().err
    assert folder_state(folder) == before


# ----------------------------------------------------------------------------------------------
# ctp-convert into BIDS


def test_convert_into_bids(tmp_path, phantom, capsys):
    from ctp_nipype.bids import collect_scans
    from ctp_nipype.cli.convert import main
    from ctp_nipype.dicom.convert import source_for_scan

    folder = _dicom(tmp_path, phantom)
    bids = tmp_path / "bids"
    assert main(["dicom", str(folder), str(bids), "--participant-label", "07", "--session-label", "01",
                 "--keep-source"]) == 0
    scan = bids / "sub-07" / "ses-01" / "sub-07_ses-01_ctp.nii.gz"
    img = nb.load(scan)
    sidecar = json.loads(scan.with_name("sub-07_ses-01_ctp.json").read_text())
    assert sidecar["FrameTimesStart"] == pytest.approx(list(FRAME_TIMES), abs=1e-6)
    assert sidecar["SourceDICOM"] == "bids::sourcedata/sub-07/ses-01/ctp"
    assert json.loads((bids / "dataset_description.json").read_text())["DatasetType"] == "raw"
    np.testing.assert_array_equal(np.asarray(nb.as_closest_canonical(img).dataobj),
                                  quantised(phantom.hu).astype(np.float32))
    # nothing that identifies the patient reaches the NIfTI or its sidecar
    ds = pydicom.dcmread(next(folder.glob("*.dcm")))
    text = scan.with_name("sub-07_ses-01_ctp.json").read_text() + img.header["descrip"].tobytes().decode(errors="ignore")
    for tag in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "SeriesInstanceUID",
                "AccessionNumber", "SeriesDescription"):
        assert str(ds.get(tag)) not in text, tag
    assert len(list((bids / "sourcedata" / "sub-07" / "ses-01" / "ctp").glob("*.dcm"))) == len(list(folder.glob("*")))
    assert source_for_scan(bids, scan) == bids / "sourcedata" / "sub-07" / "ses-01" / "ctp"
    scans = collect_scans(bids)
    assert [s.prefix for s in scans] == ["sub-07_ses-01"]
    # converting again needs --overwrite
    assert main([str(folder), str(bids), "--participant-label", "07", "--session-label", "01"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_layout_registry_dispatch(tmp_path, monkeypatch, capsys):
    """A first positional naming a registered layout runs that layout; a folder means dicom."""
    import sys
    import types

    from ctp_nipype.cli import convert

    calls = []

    class Fake:
        name = "fake"
        summary = "a test layout"

        def add_arguments(self, parser):
            parser.add_argument("src")
            parser.add_argument("dst")

        def run(self, args):
            calls.append((args.src, args.dst))
            return 0

    module = types.ModuleType("fake_layout_module")
    module.LAYOUT = Fake()
    monkeypatch.setitem(sys.modules, "fake_layout_module", module)
    monkeypatch.setitem(convert.LAYOUTS, "fake", "fake_layout_module:LAYOUT")
    assert convert.main(["fake", "in", "out"]) == 0
    assert calls == [("in", "out")]
    assert convert.main(["--help"]) == 0
    assert "fake" in capsys.readouterr().out
    assert convert.split_layout([str(tmp_path), "out"])[0] == "dicom"


# ----------------------------------------------------------------------------------------------
# maps through DICOM equal the NIfTI path's; DICOM out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """ctp-perfusion (sSVD) on the phantom as NIfTI and as a DICOM folder, then --dicom-out."""
    from ctp_nipype.cli.perfusion import main
    from ctp_nipype.io import write_nifti

    root = tmp_path_factory.mktemp("runs")
    ph = make_phantom("small", seed=4, noise_sd_hu=0, frame_times=UNIFORM_TIMES)
    hu = quantised(ph.hu)
    header = nb.Nifti1Header()
    header.set_data_shape(hu.shape)
    header.set_xyzt_units("mm", "sec")
    header.set_zooms(ph.voxel_size_mm + (2.0,))
    write_nifti(root / "nifti" / "scan_ctp.nii.gz", hu, ph.affine, header,
                sidecar={"FrameTimesStart": ph.frame_times.tolist()})
    write_dicom_series(ph.hu, ph.affine, root / "CTP", frame_times=ph.frame_times)
    options = ["--method", "ssvd", "--no-guided-filter", "--nprocs", "1"]
    assert main([str(root / "nifti" / "scan_ctp.nii.gz"), str(root / "out_nifti")] + options) == 0
    before = folder_state(root / "CTP")
    assert main([str(root / "CTP"), str(root / "out_dicom"), "--dicom-out", str(root / "pacs")] + options) == 0
    assert folder_state(root / "CTP") == before
    return root


def test_maps_through_dicom_equal_the_nifti_path(runs):
    for name in ("cbf", "cbv", "mtt", "tmax"):
        a = nb.as_closest_canonical(nb.load(runs / "out_nifti" / f"scan_desc-ssvd_{name}.nii.gz"))
        b = nb.as_closest_canonical(nb.load(runs / "out_dicom" / f"CTP_desc-ssvd_{name}.nii.gz"))
        np.testing.assert_allclose(b.affine, a.affine, atol=1e-5)
        np.testing.assert_allclose(b.get_fdata(), a.get_fdata(), rtol=1e-4, atol=1e-4, err_msg=name)
    side = json.loads((runs / "out_dicom" / "CTP_desc-ssvd_cbf.json").read_text())
    assert side["Units"] == "ml/100g/min"


def _frame_voxels(frame_position, orientation, spacing, shape, affine):
    """Voxel indices of a frame's pixels (rows, cols, 3) on a NIfTI grid, from the frame's own DICOM geometry."""
    rows, cols = shape
    jj, ii = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    lps = (np.asarray(frame_position)[None, None] + np.asarray(orientation[:3])[None, None] * (ii * spacing[1])[..., None]
           + np.asarray(orientation[3:])[None, None] * (jj * spacing[0])[..., None])
    ras = lps * np.array([-1.0, -1.0, 1.0])
    voxels = nb.affines.apply_affine(np.linalg.inv(affine), ras)
    np.testing.assert_allclose(voxels, np.round(voxels), atol=1e-3)
    return np.round(voxels).astype(int)


def test_dicom_out_round_trip(runs):
    import highdicom as hd

    pacs = runs / "pacs"
    source = pydicom.dcmread(next((runs / "CTP").glob("*.dcm")))
    files = sorted(p.name for p in pacs.glob("*.dcm"))
    # the maps (with the triage's rCBF and rCBV), their montages, the triage summary and the masks' SEG
    assert files == ["PM_ssvd_cbf.dcm", "PM_ssvd_cbv.dcm", "PM_ssvd_mtt.dcm", "PM_ssvd_rcbf.dcm", "PM_ssvd_rcbv.dcm",
                     "PM_ssvd_tmax.dcm", "SC_cbf_montage.dcm", "SC_cbv_montage.dcm", "SC_mtt_montage.dcm",
                     "SC_rcbf_montage.dcm", "SC_rcbv_montage.dcm", "SC_ssvd_summary.dcm", "SC_tmax_montage.dcm",
                     "SEG_ssvd.dcm"]
    for name in files:
        ds = pydicom.dcmread(pacs / name)
        assert ds.StudyInstanceUID == source.StudyInstanceUID, name
        assert ds.PatientID == source.PatientID and ds.PatientName == source.PatientName, name
        if not name.startswith("SC"):
            assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID, name
    # parametric maps: float values equal the NIfTI map at the voxel each pixel lies on, units in the RWVM
    for name, unit in (("cbf", "mL/(100.g)/min"), ("tmax", "s"), ("rcbf", "{ratio}")):
        pm = pydicom.dcmread(pacs / f"PM_ssvd_{name}.dcm")
        img = nb.load(runs / "out_dicom" / f"CTP_desc-ssvd_{name}.nii.gz")
        values = np.asarray(img.dataobj)
        mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
        assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == unit
        pixels = pm.pixel_array
        orientation = [float(v) for v in pm.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
                       .ImageOrientationPatient]
        spacing = [float(v) for v in pm.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing]
        assert pixels.dtype == np.float32 and pixels.shape[0] == values.shape[2]
        for k, frame in enumerate(pm.PerFrameFunctionalGroupsSequence):
            position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
            vox = _frame_voxels(position, orientation, spacing, pixels.shape[1:], img.affine)
            np.testing.assert_array_equal(pixels[k], values[vox[..., 0], vox[..., 1], vox[..., 2]])
    # the SEG's segments equal the masks
    seg = hd.seg.segread(pacs / "SEG_ssvd.dcm")
    labels = {seg.get_segment_description(n).SegmentLabel: n for n in seg.segment_numbers}
    assert set(labels) == {"Ischemic core", "Hypoperfused tissue"}
    raw = pydicom.dcmread(pacs / "SEG_ssvd.dcm")
    seg_pixels = raw.pixel_array  # (frames, rows, cols)
    orientation = [float(v) for v in raw.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
                   .ImageOrientationPatient]
    spacing = [float(v) for v in raw.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing]
    for label, number in (("core", labels["Ischemic core"]), ("hypoperfused", labels["Hypoperfused tissue"])):
        img = nb.load(runs / "out_dicom" / f"CTP_label-{label}_desc-ssvd_mask.nii.gz")
        mask = np.asarray(img.dataobj) > 0
        rebuilt = np.zeros_like(mask)
        for i, frame in enumerate(raw.PerFrameFunctionalGroupsSequence):
            if int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber) != number:
                continue
            position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
            vox = _frame_voxels(position, orientation, spacing, seg_pixels.shape[1:], img.affine)
            rebuilt[vox[..., 0], vox[..., 1], vox[..., 2]] = seg_pixels[i] > 0
        np.testing.assert_array_equal(rebuilt, mask, err_msg=label)
        assert mask.any() or label == "core"
    # the montages: RGB Secondary Captures in the source's study
    sc = pydicom.dcmread(pacs / "SC_cbf_montage.dcm")
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and sc.pixel_array.ndim == 3 and sc.pixel_array.shape[2] == 3


def test_summary_figure_sent_as_secondary_capture(runs, tmp_path):
    """The triage summary figure, where it exists, goes out pixel for pixel."""
    from matplotlib import image as mpimg

    from ctp_nipype.dicom.write import export_dicom

    results = tmp_path / "results"
    shutil.copytree(runs / "out_dicom", results)
    picture = np.zeros((30, 40, 3), np.uint8)
    picture[5:25, 10:30] = (200, 30, 30)
    mpimg.imsave(results / "CTP_desc-ssvd_summary.png", picture)
    written = export_dicom(results, "CTP", runs / "CTP", tmp_path / "pacs", methods=["ssvd"])
    assert tmp_path / "pacs" / "SC_ssvd_summary.dcm" in written
    np.testing.assert_array_equal(pydicom.dcmread(tmp_path / "pacs" / "SC_ssvd_summary.dcm").pixel_array, picture)


def test_dicom_out_valid_for_dciodvfy(runs):
    """Debian's dicom3tools validator finds no error in any object (apt-get install dicom3tools)."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    for path in sorted((runs / "pacs").glob("*.dcm")):
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
        assert not errors, f"{path.name}: {errors}"


def test_dicom_out_needs_a_source_for_a_nifti_input(runs, tmp_path, capsys):
    from ctp_nipype.cli.perfusion import main

    code = main([str(runs / "nifti" / "scan_ctp.nii.gz"), str(tmp_path / "out"), "--method", "ssvd",
                 "--dicom-out", str(tmp_path / "pacs")])
    err = capsys.readouterr().err
    assert code == 2 and "--dicom-source" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_time_resampling_carried_to_the_maps(tmp_path):
    """A series whose slices were put on one time grid says so in every SVD map's sidecar (and so the report)."""
    from ctp_nipype.io import load_ctp, timing_provenance, write_nifti

    hu, slice_times, reference = make_shuttle_phantom(UNIFORM_TIMES, size="small", seed=3, noise_sd_hu=0)
    write_dicom_series(hu, reference.affine, tmp_path / "dcm", slice_times=slice_times)
    from ctp_nipype.dicom.convert import dicom_to_nifti

    dicom_to_nifti(tmp_path / "dcm", tmp_path / "scan_ctp.nii.gz")
    provenance = timing_provenance(load_ctp(tmp_path / "scan_ctp.nii.gz"))
    assert provenance["ShuttleMode"] is True and "shuttle (jog) mode" in provenance["TimeResampling"]
    write_nifti(tmp_path / "plain_ctp.nii.gz", reference.hu, reference.affine,
                sidecar={"FrameTimesStart": UNIFORM_TIMES.tolist()})
    assert "ShuttleMode" not in timing_provenance(load_ctp(tmp_path / "plain_ctp.nii.gz"))


def test_bids_app_dicom_out_needs_the_source_before_running(tmp_path, phantom, capsys):
    """Without a kept source series, --dicom-out fails in one line before any step runs."""
    from ctp_nipype.cli.bids_app import main as bids_app
    from ctp_nipype.cli.convert import main as convert

    assert convert([str(_dicom(tmp_path, phantom)), str(tmp_path / "bids"), "--participant-label", "01"]) == 0
    capsys.readouterr()
    code = bids_app([str(tmp_path / "bids"), str(tmp_path / "derivatives"), "participant", "--methods", "ssvd",
                     "-w", str(tmp_path / "work"), "--dicom-out", str(tmp_path / "pacs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--keep-source" in err, err
    assert not (tmp_path / "derivatives").exists() and not (tmp_path / "work").exists()


@given(st.floats(min_value=0.0, max_value=86399.999999, allow_nan=False))
def test_dicom_time_round_trip(seconds):
    """A time of day written as DICOM TM (microseconds) reads back to the microsecond."""
    from ctp_nipype.dicom.read import _parse_time

    seconds = round(seconds, 6)
    whole = int(seconds)
    micro = int(round((seconds - whole) * 1e6))
    if micro == 1_000_000:
        whole, micro = whole + 1, 0
    text = f"{whole // 3600:02d}{whole % 3600 // 60:02d}{whole % 60:02d}.{micro:06d}"
    assert abs(_parse_time(text) - (whole + micro / 1e6)) < 1e-6


def test_dicom_source_of_another_scan_refused_before_running(runs, tmp_path, capsys):
    from ctp_nipype.cli.perfusion import main

    ph = make_phantom("small", seed=4, noise_sd_hu=0, frame_times=UNIFORM_TIMES)
    elsewhere = ph.affine.copy()
    elsewhere[2, 3] += 300.0  # another scan, 30 cm away
    write_static_series(ph.hu[..., 0], elsewhere, tmp_path / "other", "Head", 2, None)
    code = main([str(runs / "nifti" / "scan_ctp.nii.gz"), str(tmp_path / "out"), "--method", "ssvd",
                 "--dicom-out", str(tmp_path / "pacs"), "--dicom-source", str(tmp_path / "other")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "does not lie on the grid" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_shuttle_mode_said_in_the_maps_and_the_report(tmp_path):
    """ctp-perfusion on a shuttle-mode DICOM series: the maps' sidecars and the report's warnings say how the
    slices were put on one time grid."""
    from ctp_nipype.cli.perfusion import main

    hu, slice_times, reference = make_shuttle_phantom(UNIFORM_TIMES, size="small", seed=3, noise_sd_hu=0)
    write_dicom_series(hu, reference.affine, tmp_path / "shuttle", slice_times=slice_times)
    assert main([str(tmp_path / "shuttle"), str(tmp_path / "out"), "--method", "ssvd", "--no-guided-filter",
                 "--nprocs", "1"]) == 0
    sidecar = json.loads((tmp_path / "out" / "shuttle_desc-ssvd_cbf.json").read_text())
    assert sidecar["ShuttleMode"] is True and "2 table positions" in sidecar["TimeResampling"]
    report = (tmp_path / "out" / "shuttle_desc-perfusion_report.html").read_text()
    assert "Slices put on one time grid when converted from DICOM: shuttle (jog) mode" in report
