"""The digital brain phantom: its truth agrees with its curves, its anatomy is plausible, the CLI writes BIDS."""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pytest
from scipy import ndimage
from scipy.special import gammainc

from ctp_nipype.cli.phantom import main as phantom_main
from ctp_nipype.io import load_ctp, read_curve_tsv
from ctp_nipype.perfusion.motion import PARAMETER_NAMES, apply_rigid, rigid_transform, volume_centre_mm
from ctp_nipype.perfusion.constants import KAPPA_H, RHO
from ctp_nipype.sims.phantom import (
    DEFAULT_TISSUE,
    PERFUSED_LABELS,
    PhantomLabel,
    TissueClass,
    in_window_cbv,
    make_phantom,
)

SEED = 3


@pytest.fixture(scope="module")
def clean():
    """The small phantom without noise."""
    return make_phantom("small", seed=SEED, noise_sd_hu=0.0)


@pytest.fixture(scope="module")
def noisy():
    return make_phantom("small", seed=SEED, noise_sd_hu=8.0)


def concentration(phantom):
    return phantom.hu - phantom.baseline_hu[..., None]


def mask(phantom, label):
    return phantom.labels == label


def fwhm(curve, times):
    above = times[curve >= curve.max() / 2]
    return above[-1] - above[0]


# ------------------------------------------------------------------------------- truth vs curves


@pytest.mark.parametrize("non_uniform", [False, True])
def test_cbv_from_noise_free_curve_areas_equals_truth(non_uniform):
    phantom = make_phantom("small", seed=SEED, noise_sd_hu=0.0, non_uniform_timing=non_uniform)
    perfused = np.isin(phantom.labels, [int(v) for v in PERFUSED_LABELS])
    measured = in_window_cbv(concentration(phantom)[perfused], phantom.aif_concentration, phantom.frame_times)
    ratio = measured / phantom.cbv[perfused]
    assert np.all(np.abs(ratio - 1) < 0.01), (ratio.min(), ratio.max())
    # MTT is the central volume theorem's and CBV = CBF * MTT / 60 everywhere
    np.testing.assert_allclose(phantom.mtt[perfused], 60 * phantom.cbv[perfused] / phantom.cbf[perfused], rtol=1e-5)


def _reference_tissue_curve(phantom, cbf, mtt, delay, t_a, fine=0.01):
    """The tissue curve rebuilt independently: analytic AIF, shift, exponential VTF, gamma residue, np.convolve."""
    bolus = phantom.parameters["bolus"]
    shape = phantom.parameters["residue_shape"]
    t = np.arange(0.0, phantom.frame_times[-1] + 1.0, fine)
    x = np.clip(t - bolus["t0_s"] - delay, 0.0, None)
    tpeak = bolus["alpha"] * bolus["beta_s"]
    local = bolus["peak_hu"] * (x / tpeak) ** bolus["alpha"] * np.exp(-(x - tpeak) / bolus["beta_s"])
    if t_a > 0:
        local = np.convolve(local, np.exp(-t / t_a) / t_a * fine)[: t.size]
    residue = 1.0 - gammainc(shape, t / (mtt / shape))
    flow_residue = RHO / KAPPA_H * cbf / 6000.0 * residue
    tissue = np.convolve(local, flow_residue)[: t.size] * fine
    return np.interp(phantom.frame_times, t, tissue)


@pytest.mark.parametrize("label", PERFUSED_LABELS)
def test_tissue_curves_match_an_independent_forward_model(clean, label):
    """Catches a lost or doubled kappa_H or rho (a 27% error in CBF), a wrong delay or dispersion."""
    inside = np.argwhere(mask(clean, label))
    assert inside.size, label
    i, j, k = inside[len(inside) // 2]
    curve = concentration(clean)[i, j, k]
    reference = _reference_tissue_curve(
        clean, float(clean.cbf[i, j, k]), float(clean.mtt[i, j, k]), float(clean.delay[i, j, k]),
        float(clean.dispersion[i, j, k]),
    )
    assert np.max(np.abs(curve - reference)) < 0.01 * reference.max()


def test_artery_curve_is_the_aif_reduced_by_the_partial_volume_factor(clean):
    artery = concentration(clean)[mask(clean, PhantomLabel.ARTERY)]
    assert 2 <= artery.shape[0] <= 40  # a few voxels
    expected = clean.artery_partial_volume * clean.aif_concentration
    np.testing.assert_allclose(artery, np.broadcast_to(expected, artery.shape), atol=1e-3)
    assert clean.artery_partial_volume == 0.5
    # a realistic CT arterial peak, a few hundred HU above a pre-bolus baseline of several seconds
    assert 300 <= clean.aif_concentration.max() <= 500
    assert np.all(clean.aif_concentration[clean.frame_times < 4.0] == 0)
    # another factor is honoured exactly
    other = make_phantom("small", seed=SEED, noise_sd_hu=0.0, artery_partial_volume=0.3)
    ratio = concentration(other)[mask(other, PhantomLabel.ARTERY)].max(axis=1) / other.aif_concentration.max()
    np.testing.assert_allclose(ratio, 0.3, rtol=1e-4)


def test_vof_has_the_aif_area_and_is_delayed_and_dispersed(clean):
    times = clean.frame_times
    aif, vof = clean.aif_concentration, clean.vof_concentration
    assert np.trapezoid(vof, times) == pytest.approx(np.trapezoid(aif, times), rel=0.01)
    assert times[np.argmax(vof)] >= times[np.argmax(aif)] + 4.0
    assert fwhm(vof, times) > 1.3 * fwhm(aif, times)
    vein = concentration(clean)[mask(clean, PhantomLabel.VEIN)]
    assert vein.shape[0] > concentration(clean)[mask(clean, PhantomLabel.ARTERY)].shape[0] / 2
    np.testing.assert_allclose(vein, np.broadcast_to(vof, vein.shape), atol=1e-3)
    # the VOF correction: scaling the partial-volume arterial curve to the VOF's area gives the true AIF
    measured = concentration(clean)[mask(clean, PhantomLabel.ARTERY)].mean(axis=0)
    corrected = measured * np.trapezoid(vof, times) / np.trapezoid(measured, times)
    np.testing.assert_allclose(corrected, aif, atol=0.01 * aif.max())


def test_non_enhancing_materials_stay_flat(clean):
    flat = np.isin(
        clean.labels,
        [int(v) for v in (PhantomLabel.CSF, PhantomLabel.SKULL, PhantomLabel.SOFT_TISSUE,
                          PhantomLabel.HEAD_HOLDER, PhantomLabel.BACKGROUND)],
    )
    assert np.abs(concentration(clean)[flat]).max() < 1e-3


# ------------------------------------------------------------------------------- anatomy and values


def test_labels_present_with_plausible_volumes(clean):
    voxel_ml = np.prod(clean.voxel_size_mm) / 1000
    volume = {label: mask(clean, label).sum() * voxel_ml for label in PhantomLabel}
    assert all(volume[label] > 0 for label in PhantomLabel), volume
    tissue = sum(volume[lab] for lab in PERFUSED_LABELS)
    intracranial = tissue + volume[PhantomLabel.CSF] + volume[PhantomLabel.ARTERY] + volume[PhantomLabel.VEIN]
    slab_ml = np.prod(clean.hu.shape[:3]) * voxel_ml
    assert 0.2 * slab_ml < intracranial < 0.6 * slab_ml  # a head in a square field of view
    assert 0.05 < volume[PhantomLabel.CSF] / intracranial < 0.3
    assert 1.0 < volume[PhantomLabel.GREY_MATTER] / volume[PhantomLabel.WHITE_MATTER] < 2.5
    assert 2 < volume[PhantomLabel.CORE] < volume[PhantomLabel.PENUMBRA] < 0.3 * tissue
    assert volume[PhantomLabel.ARTERY] < 2 and volume[PhantomLabel.VEIN] < 5


def test_skull_encloses_the_brain(clean):
    brain = clean.brain_mask
    grown = ndimage.binary_dilation(brain, structure=np.ones((3, 3, 1), bool), iterations=2)
    outside = clean.labels[grown & ~brain]
    assert not np.any(outside == PhantomLabel.BACKGROUND)
    assert np.mean(outside == PhantomLabel.SKULL) > 0.5
    assert clean.baseline_hu[mask(clean, PhantomLabel.SKULL)].mean() > 700
    assert clean.baseline_hu[mask(clean, PhantomLabel.BACKGROUND)].mean() < -900


def test_lesion_in_one_hemisphere_artery_in_the_other(clean):
    x = clean.affine[0, 0] * np.arange(clean.labels.shape[0]) + clean.affine[0, 3]
    side = {label: np.sign(x[np.nonzero(mask(clean, label))[0]]) for label in
            (PhantomLabel.CORE, PhantomLabel.PENUMBRA, PhantomLabel.ARTERY)}
    lesion_side = np.sign(side[PhantomLabel.PENUMBRA].mean())
    assert np.all(side[PhantomLabel.CORE] == lesion_side)
    assert np.mean(side[PhantomLabel.PENUMBRA] == lesion_side) > 0.95
    assert np.all(side[PhantomLabel.ARTERY] == -lesion_side)
    # the core lies inside the penumbra's territory: its voxels touch the penumbra or other core voxels only
    core = mask(clean, PhantomLabel.CORE)
    lesion = core | mask(clean, PhantomLabel.PENUMBRA)
    assert ndimage.label(lesion)[1] <= 3


@pytest.mark.parametrize("label", PERFUSED_LABELS)
def test_class_values_as_specified(clean, label):
    spec = DEFAULT_TISSUE[label]
    inside = mask(clean, label)
    assert np.median(clean.cbf[inside]) == pytest.approx(spec.cbf, rel=0.1)
    assert np.median(clean.cbv[inside]) == pytest.approx(spec.cbv, rel=0.1)
    np.testing.assert_allclose(clean.mtt[inside], spec.mtt, rtol=1e-5)
    np.testing.assert_allclose(clean.delay[inside], spec.delay_s)
    np.testing.assert_allclose(clean.dispersion[inside], spec.dispersion_s)
    # a smooth variation inside the class, no more than the stated 10% SD
    if inside.sum() > 50:
        assert 0.01 < clean.cbf[inside].std() / clean.cbf[inside].mean() < 0.15


def test_issue_values():
    gm, wm = DEFAULT_TISSUE[PhantomLabel.GREY_MATTER], DEFAULT_TISSUE[PhantomLabel.WHITE_MATTER]
    core, penumbra = DEFAULT_TISSUE[PhantomLabel.CORE], DEFAULT_TISSUE[PhantomLabel.PENUMBRA]
    assert (gm.cbf, gm.cbv, wm.cbf, wm.cbv) == (60, 4, 25, 2)
    assert (core.cbf, core.cbv, penumbra.cbf, penumbra.cbv, penumbra.delay_s) == (8, 1.5, 20, 4, 6)
    assert penumbra.dispersion_s > 0


def test_truth_is_zero_outside_perfused_tissue(clean):
    outside = ~np.isin(clean.labels, [int(v) for v in PERFUSED_LABELS])
    for values in (clean.cbf, clean.cbv, clean.mtt, clean.delay):
        assert np.all(values[outside] == 0)


def test_baseline_and_noise(clean, noisy):
    tissue = np.isin(clean.labels, [int(PhantomLabel.GREY_MATTER), int(PhantomLabel.WHITE_MATTER)])
    assert 30 <= clean.baseline_hu[tissue].mean() <= 40
    # the noise stream is separate: the same seed without noise is the same phantom
    np.testing.assert_array_equal(clean.labels, noisy.labels)
    noise = noisy.hu - clean.hu
    assert noise.std() == pytest.approx(8.0, rel=0.03)
    assert abs(noise.mean()) < 0.1


def test_frame_timing(clean):
    np.testing.assert_array_equal(clean.frame_times, np.arange(60.0))
    irregular = make_phantom("small", seed=SEED, noise_sd_hu=0.0, non_uniform_timing=True)
    steps = np.diff(irregular.frame_times)
    assert set(steps.tolist()) == {1.0, 2.0}
    assert steps[0] == 1.0 and steps[-1] == 2.0
    assert irregular.hu.shape[3] == irregular.frame_times.size


def test_seed_reproducible_and_subjects_differ(clean):
    again = make_phantom("small", seed=SEED, noise_sd_hu=0.0)
    np.testing.assert_array_equal(again.hu, clean.hu)
    np.testing.assert_array_equal(again.labels, clean.labels)
    other = make_phantom("small", seed=SEED + 1, noise_sd_hu=0.0)
    assert np.count_nonzero(other.labels != clean.labels) > 20  # the lesion moved
    assert other.aif.max() != clean.aif.max()
    assert other.parameters["lesion"] != clean.parameters["lesion"]


# ------------------------------------------------------------------------------- motion


def test_motion_is_small_rigid_and_where_stated(clean):
    moving = make_phantom("small", seed=SEED, noise_sd_hu=0.0, motion=True)
    params = moving.motion_parameters
    assert params.shape == (moving.frame_times.size, 6)
    moved = np.flatnonzero(np.any(params != 0, axis=1))
    assert 3 <= moved.size <= 6
    assert np.abs(params[:, :3]).max() <= 2.0 and np.abs(params[:, 3:]).max() <= 2.0
    still = np.setdiff1d(np.arange(params.shape[0]), moved)
    np.testing.assert_array_equal(moving.hu[..., still], clean.hu[..., still])
    # the head's centre of mass (attenuation above air, which linear interpolation conserves) moves where
    # the stated transform takes it (in plane: the slices are 5 mm thick)
    frame = moved[np.argmax(np.abs(params[moved]).sum(axis=1))]
    spacing = np.asarray(clean.voxel_size_mm)
    points = np.indices(clean.labels.shape).reshape(3, -1) * spacing[:, None]  # the array axes in mm

    def head_centre(volume):
        weight = volume.reshape(-1) + 1000.0
        return points @ weight / weight.sum()

    transform = rigid_transform(params[frame], volume_centre_mm(clean.labels.shape, spacing))
    expected = np.array(transform.TransformPoint(head_centre(clean.hu[..., frame]).tolist()))
    found = head_centre(moving.hu[..., frame])
    np.testing.assert_allclose(found[:2], expected[:2], atol=0.3)
    # and the registration's convention holds: resampling through the stated parameters undoes the motion
    undone = apply_rigid(moving.hu[..., frame], params[frame], spacing, fill_value=-1000.0)
    inner = (slice(None), slice(None), slice(1, -1))
    wrong_way = apply_rigid(moving.hu[..., frame], -params[frame], spacing, fill_value=-1000.0)
    before, after, worse = (
        np.abs(volume - clean.hu[..., frame])[inner].mean() for volume in (moving.hu[..., frame], undone, wrong_way)
    )
    assert after < 0.9 * before and after < 0.6 * worse, (before, after, worse)  # 4 mm voxels: interpolation blur


def test_tissue_values_can_be_overridden():
    core = TissueClass(cbf=5.0, cbv=1.0, delay_s=8.0, dispersion_s=2.0)
    phantom = make_phantom("small", seed=SEED, noise_sd_hu=0.0, tissue={PhantomLabel.CORE: core})
    inside = mask(phantom, PhantomLabel.CORE)
    assert np.median(phantom.cbf[inside]) == pytest.approx(5.0, rel=0.1)
    np.testing.assert_allclose(phantom.mtt[inside], 12.0, rtol=1e-5)
    np.testing.assert_allclose(phantom.delay[inside], 8.0)
    measured = in_window_cbv(concentration(phantom)[inside], phantom.aif_concentration, phantom.frame_times)
    np.testing.assert_allclose(measured, phantom.cbv[inside], rtol=0.01)


# ------------------------------------------------------------------------------- errors


def test_bad_arguments_say_what_to_do():
    with pytest.raises(ValueError, match="small"):
        make_phantom("huge")
    with pytest.raises(ValueError, match="artery_partial_volume"):
        make_phantom("small", artery_partial_volume=1.5)
    with pytest.raises(ValueError, match="perfused classes"):
        make_phantom("small", tissue={PhantomLabel.CSF: TissueClass(1.0, 1.0)})
    with pytest.raises(ValueError, match="increasing"):
        make_phantom("small", frame_times=np.array([0.0, 2.0, 1.0] + list(range(3, 20))))


# ------------------------------------------------------------------------------- the command line


def test_cli_writes_the_bids_dataset_and_truth(tmp_path):
    out = tmp_path / "phantom"
    assert phantom_main([str(out), "--subjects", "2", "--seed", "7", "--size", "small", "--motion"]) == 0
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "raw" and description["GeneratedBy"]
    truth_root = out / "derivatives" / "phantom-truth"
    assert json.loads((truth_root / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    for index, seed in ((1, 7), (2, 8)):
        sub = f"sub-{index:02d}"
        scan = load_ctp(out / sub / "ses-01" / f"{sub}_ses-01_ctp.nii.gz")
        assert scan.timing.source == "sidecar FrameTimesStart"
        expected = make_phantom("small", seed=seed, motion=True)
        np.testing.assert_allclose(scan.data, expected.hu, atol=1e-3)
        np.testing.assert_array_equal(scan.frame_times, expected.frame_times)
        truth = truth_root / sub / "ses-01" / "perf"
        for name in ("cbf", "cbv", "mtt", "bad", "dispersion", "dseg"):
            path = truth / f"{sub}_ses-01_desc-truth_{name}.nii.gz"
            assert path.exists() and path.with_name(path.name.replace(".nii.gz", ".json")).exists(), path
        labels = np.asarray(nb.load(str(truth / f"{sub}_ses-01_desc-truth_dseg.nii.gz")).dataobj)
        np.testing.assert_array_equal(labels, expected.labels)
        cbv = nb.load(str(truth / f"{sub}_ses-01_desc-truth_cbv.nii.gz"))
        np.testing.assert_allclose(cbv.get_fdata(), expected.cbv, rtol=1e-6)
        assert json.loads((truth / f"{sub}_ses-01_desc-truth_cbf.json").read_text())["Units"] == "ml/100g/min"
        aif, times = read_curve_tsv(truth / f"{sub}_ses-01_desc-truth_aif.tsv", "aif", n_frames=scan.data.shape[3])
        np.testing.assert_allclose(aif, expected.aif, rtol=1e-5)
        np.testing.assert_allclose(times, expected.frame_times)
        vof, _ = read_curve_tsv(truth / f"{sub}_ses-01_desc-truth_aif.tsv", "vof")
        np.testing.assert_allclose(vof, expected.vof, rtol=1e-5)
        for column, name in enumerate(PARAMETER_NAMES):
            values, _ = read_curve_tsv(truth / f"{sub}_ses-01_desc-truth_motion.tsv", name)
            np.testing.assert_allclose(values, expected.motion_parameters[:, column], atol=1e-5)


def test_cli_reports_bad_arguments(tmp_path, capsys):
    assert phantom_main([str(tmp_path / "x"), "--subjects", "0", "--size", "small"]) == 2
    assert "subjects" in capsys.readouterr().err
