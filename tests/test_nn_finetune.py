"""Unlabelled fine-tuning (ctp-finetune) and the TransformerPerfusion interface on the digital phantom."""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pytest
import torch

from ctp_nipype.io import write_curves_tsv
from ctp_nipype.nn.finetune import ScanCurves, finetune
from ctp_nipype.nn.model import PerfusionTransformer
from ctp_nipype.nn.weights import load_model, save_weights, shipped_weights_available
from ctp_nipype.sims.phantom import make_phantom
from ctp_nipype.perfusion.prepare import prepare_curves


@pytest.fixture(scope="module")
def phantom():
    return make_phantom("small", seed=3, noise_sd_hu=8.0)


@pytest.fixture(scope="module")
def start_weights(tmp_path_factory):
    """The shipped weights when present, else a seeded untrained network (the test still checks physics)."""
    if shipped_weights_available():
        return None
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "untrained.safetensors"
    return save_weights(PerfusionTransformer(), path, {"recipe": "untrained"})


def _scan(phantom, max_voxels=1500):
    curves = prepare_curves(phantom.hu, phantom.frame_times, phantom.aif)
    tissue = curves.tissue[phantom.brain_mask]
    keep = np.random.default_rng(0).choice(tissue.shape[0], min(max_voxels, tissue.shape[0]), replace=False)
    return ScanCurves(curves.aif, tissue[keep], curves.frame_times, "phantom")


def test_finetuning_lowers_the_reconstruction_loss_and_keeps_maps_physical(phantom, start_weights):
    torch.manual_seed(0)
    model = load_model(start_weights)
    frozen_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("residue_head")}
    scan = _scan(phantom)
    result = finetune(model, [scan], steps=20, batch_size=48, learning_rate=1e-3, seed=0)
    assert result["loss_after"] < result["loss_before"]
    assert result["trainable_parameters"] == sum(p.numel() for p in model.residue_head.parameters())
    for key, value in model.state_dict().items():
        if key in frozen_before:
            assert torch.equal(value, frozen_before[key]), f"{key} changed but should be frozen"

    from ctp_nipype.nn.inference import estimate_curves
    from ctp_nipype.perfusion.maps import curve_area

    maps = estimate_curves(scan.aif, scan.tissue[:300], scan.frame_times, model=model)
    for key in ("cbf", "mtt", "bad"):
        assert np.all(np.isfinite(maps[key])) and np.all(maps[key] >= 0), key
    # CBV comes from the curves' areas (the conventions), not from the network: it is negative only where a
    # noisy tissue curve's own area is, and never where the curve enhances
    dt = float(np.diff(scan.frame_times).mean())
    tissue_area = curve_area(scan.tissue[:300], dt)
    assert np.all(np.isfinite(maps["cbv"]))
    assert np.all(maps["cbv"][tissue_area > 0] > 0)
    assert np.all(np.sign(maps["cbv"]) == np.sign(tissue_area))
    assert np.all(maps["cbf"] < 1000)  # ml/100 g/min: physiological order of magnitude
    assert np.all(maps["residue"] >= 0)
    assert np.all(np.diff(maps["residue"], axis=1) <= 0)


def test_ctp_finetune_writes_weights_and_card(phantom, start_weights, tmp_path):
    from ctp_nipype.cli.finetune import main

    scan_path = tmp_path / "sub-01_ctp.nii.gz"
    nb.save(nb.Nifti1Image(phantom.hu, phantom.affine), scan_path)
    (tmp_path / "sub-01_ctp.json").write_text(json.dumps({"FrameTimesStart": phantom.frame_times.tolist()}))
    mask_path = tmp_path / "mask.nii.gz"
    nb.save(nb.Nifti1Image(phantom.brain_mask.astype(np.uint8), phantom.affine), mask_path)
    aif_path = write_curves_tsv(tmp_path / "aif.tsv", {"time": phantom.frame_times, "aif": phantom.aif})
    out = tmp_path / "tuned"
    argv = ["--scan", str(scan_path), "--aif", str(aif_path), "--mask", str(mask_path), "--out", str(out),
            "--steps", "5", "--batch-size", "32", "--max-voxels", "500"]
    if start_weights is not None:
        argv += ["--weights", str(start_weights)]
    assert main(argv) == 0
    tuned = load_model(out / "finetuned.safetensors")
    assert tuned.card["finetune"]["steps"] == 5
    assert tuned.card["finetune"]["scans"] == ["sub-01"]
    assert "Fine-tuning" in (out / "model_card.md").read_text()


def test_transformer_interface_writes_the_conventions_maps(phantom, start_weights, tmp_path):
    from ctp_nipype.interfaces import TransformerPerfusion

    scan_path = tmp_path / "sub-02_ctp.nii.gz"
    small = phantom.hu[20:40, 20:40, :2]
    affine = phantom.affine
    nb.save(nb.Nifti1Image(small, affine), scan_path)
    (tmp_path / "sub-02_ctp.json").write_text(json.dumps({"RepetitionTime": 1.0}))
    mask = phantom.brain_mask[20:40, 20:40, :2]
    mask_path = tmp_path / "mask.nii.gz"
    nb.save(nb.Nifti1Image(mask.astype(np.uint8), affine), mask_path)
    aif_path = write_curves_tsv(tmp_path / "aif.tsv", {"aif": phantom.aif})
    node = TransformerPerfusion(in_file=str(scan_path), aif_file=str(aif_path), mask_file=str(mask_path), device="cpu")
    if start_weights is not None:
        node.inputs.weights = str(start_weights)
    (tmp_path / "work").mkdir()
    result = node.run(cwd=str(tmp_path / "work"))
    outputs = result.outputs
    for name in ("cbf", "cbv", "mtt", "bad", "residue", "localaif"):
        path = getattr(outputs, name)
        assert path.endswith(f"sub-02_desc-transformer_{name}.nii.gz"), path
        sidecar = json.loads(open(path.replace(".nii.gz", ".json")).read())
        assert sidecar["Method"] == "transformer"
    cbf = np.asanyarray(nb.load(outputs.cbf).dataobj)
    residue = np.asanyarray(nb.load(outputs.residue).dataobj)
    assert cbf.shape == mask.shape and residue.shape == mask.shape + (phantom.frame_times.size,)
    assert np.all(cbf[~mask] == 0) and np.all(cbf[mask] >= 0)
    assert json.loads(open(outputs.cbf.replace(".nii.gz", ".json")).read())["Units"] == "ml/100g/min"


def test_finetuning_reads_the_partial_volume_corrected_aif_like_inference(phantom, tmp_path):
    from ctp_nipype.io import InputError
    from ctp_nipype.nn.finetune import load_scan_curves

    scan_path = tmp_path / "sub-01_ctp.nii.gz"
    nb.save(nb.Nifti1Image(phantom.hu, phantom.affine), scan_path)
    (tmp_path / "sub-01_ctp.json").write_text(json.dumps({"FrameTimesStart": phantom.frame_times.tolist()}))
    corrected = 2.0 * phantom.aif  # the baseline (removed linearly) doubles too: the concentration is twice
    pipeline = write_curves_tsv(tmp_path / "pipeline.tsv", {"time": phantom.frame_times, "aif": phantom.aif,
                                                            "vof": phantom.aif, "aif_corrected": corrected})
    user = write_curves_tsv(tmp_path / "user.tsv", {"time": phantom.frame_times, "aif": phantom.aif})
    default = load_scan_curves(scan_path, pipeline, max_voxels=10)
    raw = load_scan_curves(scan_path, pipeline, max_voxels=10, aif_column="aif")
    np.testing.assert_allclose(default.aif, 2.0 * raw.aif, rtol=1e-5, atol=1e-3)  # the TSV keeps 4 decimals
    np.testing.assert_allclose(load_scan_curves(scan_path, user, max_voxels=10).aif, raw.aif)
    with pytest.raises(InputError, match="none of the columns 'aif_corrected', 'aif'"):
        load_scan_curves(scan_path, write_curves_tsv(tmp_path / "bad.tsv", {"time": phantom.frame_times,
                                                                              "curve": phantom.aif}))
