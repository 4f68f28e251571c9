"""The SVDDeconvolution interface and the ctp-perfusion command on a small synthetic NIfTI."""

import json

import nibabel as nb
import numpy as np
import pytest

from ctp_nipype.cli import perfusion as perfusion_cli
from ctp_nipype.interfaces import SVDDeconvolution
from ctp_nipype.io import write_curves_tsv, write_json, write_nifti
from ctp_nipype.sims.synthetic import synthetic_scan

MAPS = {"cbf": "ml/100g/min", "cbv": "ml/100g", "mtt": "s", "tmax": "s", "residue": "1/s"}


@pytest.fixture
def scan_files(tmp_path):
    scan = synthetic_scan(shape=(8, 6, 2), n_frames=50, noise_sd=0.0, seed=0)
    inputs = tmp_path / "in"
    scan_file = write_nifti(inputs / "sub-01_ses-01_ctp.nii.gz", scan.hu, scan.affine)
    write_json(inputs / "sub-01_ses-01_ctp.json", {"FrameTimesStart": scan.frame_times.tolist()})
    aif_file = write_curves_tsv(inputs / "aif.tsv", {"time": scan.frame_times, "aif": scan.aif_hu})
    mask = np.ones(scan.cbf.shape, np.uint8)
    mask[0] = 0
    mask_file = write_nifti(inputs / "mask.nii.gz", mask, scan.affine, dtype=np.uint8)
    return scan, scan_file, aif_file, mask_file


def test_interface_writes_maps_with_sidecars(scan_files, tmp_path):
    scan, scan_file, aif_file, mask_file = scan_files
    work = tmp_path / "node"
    work.mkdir()
    result = SVDDeconvolution(
        in_file=str(scan_file), aif_file=str(aif_file), mask_file=str(mask_file), method="ssvd", threshold=1e-6
    ).run(cwd=str(work))
    out = result.outputs
    for name, units in MAPS.items():
        path = getattr(out, name)
        assert path.endswith(f"sub-01_ses-01_desc-ssvd_{name}.nii.gz")
        sidecar = json.loads(open(path.replace(".nii.gz", ".json")).read())
        assert sidecar["Units"] == units
        assert sidecar["Method"] == "ssvd" and sidecar["KappaH"] == 0.73 and sidecar["TissueDensity"] == 1.04
        assert sidecar["TimingSource"] == "sidecar FrameTimesStart"
    cbf = np.asarray(nb.load(out.cbf).dataobj)
    # the synthetic scan is the method's own forward model: the constants come back exactly
    np.testing.assert_allclose(cbf[1:], scan.cbf[1:], rtol=1e-3)
    assert np.all(cbf[0] == 0)  # outside the mask
    assert nb.load(out.residue).shape == scan.hu.shape
    np.testing.assert_allclose(nb.load(out.cbf).affine, scan.affine)


def test_cli_writes_the_conventions_names(scan_files, tmp_path, capsys):
    _, scan_file, aif_file, _ = scan_files
    out_dir = tmp_path / "out"
    code = perfusion_cli.main([str(scan_file), str(out_dir), "--aif", str(aif_file), "--method", "csvd", "osvd",
                               "--peak-interpolation", "parabola"])
    printed = capsys.readouterr().out
    assert code == 0
    names = sorted(p.name for p in out_dir.iterdir())
    # triage: one TTP map, per method rCBF/rCBV and the summary figure; the peak option reaches Tmax and TTP
    assert "sub-01_ses-01_ttp.nii.gz" in names
    for method in ("csvd", "osvd"):
        for name in ("rcbf.nii.gz", "rcbv.nii.gz", "summary.png", "lesion.json"):
            assert f"sub-01_ses-01_desc-{method}_{name}" in names
        tmax_sidecar = json.loads((out_dir / f"sub-01_ses-01_desc-{method}_tmax.json").read_text())
        assert tmax_sidecar["TmaxPeakInterpolation"] == "parabola"
    assert json.loads((out_dir / "sub-01_ses-01_ttp.json").read_text())["PeakInterpolation"] == "parabola"
    for method in ("csvd", "osvd"):
        for name in MAPS:
            assert f"sub-01_ses-01_desc-{method}_{name}.nii.gz" in names
            assert f"sub-01_ses-01_desc-{method}_{name}.json" in names
    assert not [n for n in names if n.startswith(".")]  # no temporary files left
    assert "Finished in" in printed and "ctp_preproc_wf.select_vessels" in printed
    # no vein in this synthetic block: the user AIF is used uncorrected, and the user is told
    assert "partial-volume correction of the AIF not applied" in printed


def test_cli_non_uniform_timing_is_resampled_and_recorded(tmp_path):
    scan = synthetic_scan(shape=(4, 4, 1), n_frames=40, noise_sd=0.0)
    keep = np.r_[0:25, 26:40:2]  # 1 s frames, then 2 s frames
    inputs = tmp_path / "in"
    scan_file = write_nifti(inputs / "x_ctp.nii.gz", scan.hu[..., keep], scan.affine)
    write_json(inputs / "x_ctp.json", {"FrameTimesStart": scan.frame_times[keep].tolist()})
    aif_file = write_curves_tsv(inputs / "aif.tsv", {"aif": scan.aif_hu[keep]})
    mask_file = write_nifti(inputs / "mask.nii.gz", np.ones(scan.cbf.shape, np.uint8), scan.affine, dtype=np.uint8)
    args = [str(scan_file), str(tmp_path / "o"), "--aif", str(aif_file), "--method", "csvd", "--no-guided-filter",
            "--mask", str(mask_file)]
    assert perfusion_cli.main(args) == 0
    sidecar = json.loads((tmp_path / "o" / "x_desc-csvd_cbv.json").read_text())
    assert sidecar["ResampledToUniformGrid"] is True and sidecar["FrameInterval"] == 1.0
    cbv = np.asarray(nb.load(tmp_path / "o" / "x_desc-csvd_cbv.nii.gz").dataobj)
    # against the CBV of the uniformly sampled series over the same window (0-38 s)
    window = slice(0, 39)
    tissue = scan.hu[..., window] - scan.hu[..., :8].mean(-1, keepdims=True)
    aif = scan.aif_hu[window] - scan.aif_hu[:8].mean()
    expected = 100 * 0.73 / 1.04 * np.trapezoid(tissue, axis=-1) / np.trapezoid(aif)
    np.testing.assert_allclose(cbv, expected, rtol=0.01)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: (d / "aif.tsv").write_text("time\tart\n0\t1\n"), "no 'aif' column"),
        (lambda d: (d / "aif.tsv").write_text("aif\n" + "40\n" * 7), "has 7 rows but the scan has 50"),
        (lambda d: (d / "aif.tsv").write_text("aif\n" + "abc\n" * 50), "no number in column 'aif'"),
        (lambda d: (d / "sub-01_ses-01_ctp.json").unlink(), "No frame timing found"),
    ],
)
def test_cli_bad_input_gives_one_clear_line(scan_files, tmp_path, capsys, mutate, message):
    _, scan_file, aif_file, _ = scan_files
    mutate(scan_file.parent)
    code = perfusion_cli.main([str(scan_file), str(tmp_path / "o"), "--aif", str(aif_file), "--method", "ssvd"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
