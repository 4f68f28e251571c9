"""Triage: peak times (Tmax, TTP), relative maps, threshold volumes, DEFUSE 3 / EXTEND flags, summary figure."""

from __future__ import annotations

import json
from fractions import Fraction

import nibabel as nb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctp_nipype.interfaces.stats import LesionVolumes
from ctp_nipype.interfaces.triage import TimeToPeak, TriageSummary
from ctp_nipype.io import write_curves_tsv, write_nifti
from ctp_nipype.perfusion import stats, triage
from ctp_nipype.perfusion.prepare import prepare_curves
from ctp_nipype.perfusion.svd import SVDModel
from ctp_nipype.sims.phantom import PhantomLabel, make_phantom
from ctp_nipype.sims.simulate import gamma_variate_aif
from ctp_nipype.validation import label_mask

from helpers import svd_maps, write_phantom_inputs

VOXEL_ML = 4 * 4 * 5 / 1000.0  # small phantom


# ----------------------------------------------------------------------------------------------
# peak times


@settings(max_examples=60, deadline=None)
@given(vertex=st.floats(1.0, 8.0), dt=st.sampled_from([0.5, 1.0, 1.6, 2.0]), height=st.floats(1.0, 500.0))
def test_parabola_recovers_the_vertex_of_a_sampled_parabola_exactly(vertex, dt, height):
    """Three samples of a parabola determine it: the refined peak is its vertex; the sampled one the nearest sample."""
    t = np.arange(12) * dt
    vertex = vertex * dt
    curve = height * (1.0 - ((t - vertex) / (4 * dt)) ** 2)
    nearest = t[np.argmax(curve)]
    assert triage.peak_time(curve, dt) == pytest.approx(nearest)
    assert abs(nearest - vertex) <= dt / 2 + 1e-9
    assert triage.peak_time(curve, dt, "parabola") == pytest.approx(vertex, abs=1e-9 * dt)


def test_peak_on_the_first_or_last_sample_keeps_the_sampled_time():
    """No neighbour on one side: no refinement. Two equal maxima: the vertex lies half-way (the first's + dt/2)."""
    curves = np.array([[5.0, 4, 3, 2, 1], [1.0, 2, 3, 4, 5], [0.0, 3, 3, 1, 0]])
    np.testing.assert_array_equal(triage.peak_time(curves, 2.0, "parabola"), [0.0, 8.0, 3.0])
    with pytest.raises(ValueError, match="peak interpolation"):
        triage.peak_time(curves, 1.0, "spline")


def test_time_to_peak_of_gamma_variate_curves_within_a_tenth_of_a_frame_with_the_parabola():
    """TTP of gamma-variate tissue curves, whose peak is at t0 + alpha * beta, on 1 s and 2 s frames."""
    t0 = np.linspace(3.0, 9.0, 25)  # peaks between whole frames
    for dt in (1.0, 2.0):
        times = 1.0 + np.arange(0, 70, dt)  # the clock starts at 1 s: TTP is on the frames' clock
        curves = np.stack([gamma_variate_aif(times, t0=s, alpha=3.0, beta=2.5, peak=40.0) for s in t0])
        truth = t0 + 3.0 * 2.5
        sampled = triage.time_to_peak(curves, times)
        refined = triage.time_to_peak(curves, times, interpolation="parabola")
        assert np.max(np.abs(sampled - truth)) <= dt / 2 + 1e-6
        assert np.max(np.abs(refined - truth)) < 0.1 * dt
        assert np.mean(np.abs(refined - truth)) < 0.5 * np.mean(np.abs(sampled - truth))


def test_time_to_peak_leaves_voxels_outside_the_mask_at_zero_and_refuses_a_non_uniform_grid():
    times = np.arange(20.0)
    curves = np.broadcast_to(np.exp(-((times - 7.0) ** 2) / 8), (3, 2, 20))
    mask = np.array([[True, False]] * 3)
    ttp = triage.time_to_peak(curves, times, mask, chunk_size=2)
    np.testing.assert_array_equal(ttp, np.where(mask, 7.0, 0.0))
    with pytest.raises(ValueError, match="uniformly spaced"):
        triage.time_to_peak(curves, np.r_[times[:10], 10 + 2 * np.arange(10.0)])


def test_svd_tmax_reads_the_residue_with_the_chosen_interpolation(clean_small_phantom):
    """SVDModel's Tmax is peak_time of its own residue, sampled by default, parabola on request."""
    ph = clean_small_phantom
    curves = prepare_curves(ph.hu, ph.frame_times, ph.aif)
    lesion = label_mask(ph, PhantomLabel.CORE, PhantomLabel.PENUMBRA)
    fits = {p: SVDModel(curves.aif, curves.frame_times, method="osvd", peak_interpolation=p).fit(curves.tissue[lesion])
            for p in triage.PEAK_INTERPOLATIONS}
    assert fits["sampled"].params["TmaxPeakInterpolation"] == "sampled"
    np.testing.assert_allclose(fits["sampled"].tmax, np.argmax(fits["sampled"].residue, axis=1) * 1.0)
    np.testing.assert_allclose(fits["parabola"].tmax, triage.peak_time(fits["parabola"].residue, 1.0, "parabola"),
                               rtol=1e-6)
    assert np.max(np.abs(fits["parabola"].tmax - fits["sampled"].tmax)) <= 0.5 + 1e-6
    assert np.any(fits["parabola"].tmax != fits["sampled"].tmax)
    with pytest.raises(ValueError, match="peak interpolation"):
        SVDModel(curves.aif, curves.frame_times, peak_interpolation="cubic")


# ----------------------------------------------------------------------------------------------
# volumes and flags


def block_scan(core_shape=(4, 5, 2), shell=2, core_rcbf=0.2, shell_rcbf=0.6, core_tmax=12.0, shell_tmax=7.0):
    """A 40 x 20 x 6 brain: healthy CBF 50 and Tmax 1 s; on the right a core block inside a shell."""
    shape = (40, 20, 6)
    cbf = np.full(shape, 50.0)
    tmax = np.full(shape, 1.0)
    core = np.zeros(shape, bool)
    x0, y0, z0 = 28, 8, 2
    core[x0:x0 + core_shape[0], y0:y0 + core_shape[1], z0:z0 + core_shape[2]] = True
    lesion = np.zeros(shape, bool)
    lesion[x0 - shell:x0 + core_shape[0] + shell, y0 - shell:y0 + core_shape[1] + shell,
           max(z0 - 1, 0):z0 + core_shape[2] + 1] = True
    cbf[lesion], tmax[lesion] = 50.0 * shell_rcbf, shell_tmax
    cbf[core], tmax[core] = 50.0 * core_rcbf, core_tmax
    return cbf, tmax, core, lesion


def test_a_block_of_known_size_gives_the_exact_volumes_and_rcbf_is_one_in_healthy_tissue():
    cbf, tmax, core, lesion = block_scan()
    brain = np.ones(cbf.shape, bool)
    voxel_ml = 0.125
    result = stats.lesion_measures(cbf, tmax, brain, np.eye(4), voxel_ml, cbv=cbf / 10.0)
    volumes = result.triage
    n_core, n_lesion = int(core.sum()), int(lesion.sum())
    assert result.affected_hemisphere == "right" and result.reference_cbf == 50.0
    np.testing.assert_array_equal(result.core, core)
    np.testing.assert_array_equal(result.hypoperfused, lesion)
    assert volumes.core_volume_ml == n_core * voxel_ml == 40 * 0.125
    assert volumes.delay_volumes_ml == {4.0: n_lesion * voxel_ml, 6.0: n_lesion * voxel_ml, 8.0: n_core * voxel_ml,
                                        10.0: n_core * voxel_ml}
    assert volumes.mismatch_volume_ml == (n_lesion - n_core) * voxel_ml
    assert volumes.mismatch_ratio == n_lesion / n_core
    assert volumes.hypoperfusion_intensity_ratio == n_core / n_lesion
    healthy = ~lesion
    np.testing.assert_array_equal(result.relative_cbf[healthy], 1.0)
    np.testing.assert_array_equal(result.relative_cbv[healthy], 1.0)
    np.testing.assert_allclose(result.relative_cbf[core], 0.2)
    np.testing.assert_allclose(result.relative_cbv[lesion & ~core], 0.6)
    assert result.reference_cbv == pytest.approx(5.0)
    summary = result.summary()
    assert summary["DelayAbove8sVolume"] == n_core * voxel_ml
    assert summary["ReferenceCBV"] == pytest.approx(5.0) and summary["Units"]["ReferenceCBV"] == "ml/100g"
    assert "unaffected hemisphere" in summary["ReferenceRegion"]


def test_rcbf_is_one_on_average_in_the_contralateral_tissue_of_the_phantom():
    """With the phantom's true CBF the reference is the contralateral tissue's mean: rCBF averages 1 there."""
    ph = make_phantom("small", seed=2, noise_sd_hu=0)
    csf, vessels = label_mask(ph, PhantomLabel.CSF), label_mask(ph, PhantomLabel.ARTERY, PhantomLabel.VEIN)
    tmax_like = ph.delay + ph.dispersion
    reference = stats.contralateral_reference(ph.cbf, tmax_like, ph.brain_mask, ph.affine, csf, vessels)
    result = stats.lesion_measures(ph.cbf, tmax_like, ph.brain_mask, ph.affine, VOXEL_ML, csf=csf, vessels=vessels,
                                   cbv=ph.cbv)
    assert result.relative_cbf[reference.unaffected].mean() == pytest.approx(1.0, abs=1e-12)
    assert result.relative_cbv[reference.unaffected].mean() == pytest.approx(1.0, abs=1e-12)
    assert result.reference_cbf == reference.reference_cbf
    assert np.all(result.relative_cbf[csf | vessels] == 0)


def test_phantom_volumes_and_flags_against_its_truth(clean_small_phantom):
    """True maps: core is label 6, every delay volume up to 8 s is the lesion (Tmax-like 9 s), none above 10 s."""
    ph = clean_small_phantom
    csf, vessels = label_mask(ph, PhantomLabel.CSF), label_mask(ph, PhantomLabel.ARTERY, PhantomLabel.VEIN)
    result = stats.lesion_measures(ph.cbf, ph.delay + ph.dispersion, ph.brain_mask, ph.affine, VOXEL_ML, csf=csf,
                                   vessels=vessels)
    core_ml = label_mask(ph, PhantomLabel.CORE).sum() * VOXEL_ML
    lesion_ml = label_mask(ph, PhantomLabel.CORE, PhantomLabel.PENUMBRA).sum() * VOXEL_ML
    volumes = result.triage
    assert volumes.core_volume_ml == pytest.approx(core_ml)
    for threshold in (4.0, 6.0, 8.0):
        assert volumes.delay_volumes_ml[threshold] == pytest.approx(lesion_ml)
    assert volumes.delay_volumes_ml[10.0] == 0.0 and volumes.hypoperfusion_intensity_ratio == 0.0
    expected = {name: c.met(core_ml, lesion_ml / core_ml, lesion_ml - core_ml)
                for name, c in triage.TARGET_MISMATCH.items()}
    assert volumes.target_mismatch == expected


def test_osvd_phantom_triage_volumes_near_the_truth_and_flags_equal_the_truth(tmp_path):
    """oSVD maps of the phantom (true AIF, 1 HU) through LesionVolumes: core and Tmax > 6 s within 20% of the
    labels, the same DEFUSE 3 / EXTEND verdicts as the truth, rCBF/rCBV maps with their reference in the sidecar."""
    ph = make_phantom("small", seed=3, noise_sd_hu=1.0)
    maps = svd_maps(ph, ("osvd",))
    map_files, masks = write_phantom_inputs(tmp_path, ph, maps)
    pick = {name: next(f for f in map_files if f.endswith(f"_{name}.nii.gz")) for name in ("cbf", "cbv", "tmax")}
    out = LesionVolumes(cbf_file=pick["cbf"], cbv_file=pick["cbv"], delay_file=pick["tmax"], brain_mask=masks["brain"],
                        csf_mask=masks["csf"], vessel_mask=masks["vessel"]).run(cwd=str(tmp_path)).outputs
    summary = json.loads(open(out.out_json).read())
    core_ml = label_mask(ph, PhantomLabel.CORE).sum() * VOXEL_ML
    lesion_ml = label_mask(ph, PhantomLabel.CORE, PhantomLabel.PENUMBRA).sum() * VOXEL_ML
    assert summary["CoreVolume"] == pytest.approx(core_ml, rel=0.2)
    assert summary["DelayAbove6sVolume"] == pytest.approx(lesion_ml, rel=0.2)
    assert summary["DelayAbove4sVolume"] >= summary["DelayAbove6sVolume"] >= summary["DelayAbove8sVolume"]
    for name, criteria in triage.TARGET_MISMATCH.items():
        assert summary[name] == criteria.met(core_ml, lesion_ml / core_ml, lesion_ml - core_ml)
        assert summary["TargetMismatchCriteria"][name] == criteria.text()
    assert out.rcbf.endswith("sub-01_desc-osvd_rcbf.nii.gz") and out.rcbv.endswith("sub-01_desc-osvd_rcbv.nii.gz")
    for path, key in ((out.rcbf, "ReferenceCBF"), (out.rcbv, "ReferenceCBV")):
        sidecar = json.loads(open(path.replace(".nii.gz", ".json")).read())
        assert sidecar["Units"] == "1" and sidecar["ReferenceValue"] == pytest.approx(summary[key])
        assert sidecar["AffectedHemisphere"] == ph.parameters["lesion"]["hemisphere"]
    rcbf = np.asarray(nb.load(out.rcbf).dataobj)
    core_mask = np.asarray(nb.load(out.core_mask).dataobj) > 0
    assert np.all(rcbf[core_mask] < 0.3)  # the written rCBF map reproduces the core threshold


@settings(max_examples=200, deadline=None)
@given(n_core=st.integers(0, 1200), n_extra=st.integers(0, 1200),
       voxel_ml=st.sampled_from([0.0625, 0.125, 0.25, 0.5, 1.0]))
def test_flags_follow_the_criteria_in_exact_arithmetic(n_core, n_extra, voxel_ml):
    """Whatever the volumes, the flags are the trials' criteria evaluated on exact fractions."""
    n = n_core + n_extra
    cbf = np.r_[np.full(n_core, 5.0), np.full(n_extra, 40.0), np.full(10, 50.0)]
    tmax = np.r_[np.full(n, 8.0), np.zeros(10)]
    out = triage.triage_volumes(cbf, tmax, np.ones(cbf.size, bool), 50.0, voxel_ml)
    core, mismatch = Fraction(n_core) * Fraction(voxel_ml), Fraction(n_extra) * Fraction(voxel_ml)
    ratio = Fraction(n, n_core) if n_core else None
    defuse3 = core < 70 and (ratio is None or ratio >= Fraction(9, 5)) and mismatch >= 15
    extend = core < 70 and (ratio is None or ratio > Fraction(6, 5)) and mismatch > 10
    assert out.target_mismatch == {"DEFUSE3": defuse3, "EXTEND": extend}
    assert out.core_volume_ml == float(core) and out.mismatch_volume_ml == float(mismatch)


@pytest.mark.parametrize("core_ml, hypo_ml, defuse3, extend", [
    (20.0, 36.0, True, True),     # ratio exactly 1.8, mismatch 16 ml
    (20.0, 35.0, False, True),    # ratio 1.75
    (18.75, 33.75, True, True),   # mismatch exactly 15 ml, ratio exactly 1.8
    (50.0, 60.0, False, False),   # ratio exactly 1.2, mismatch exactly 10 ml: EXTEND needs more than both
    (50.0, 60.5, False, True),    # ratio 1.21, mismatch 10.5
    (70.0, 200.0, False, False),  # core exactly 70 ml
    (69.5, 200.0, True, True),
    (0.0, 15.0, True, True),      # no core: the ratio is infinite
    (0.0, 10.0, False, False),
])
def test_flags_flip_exactly_at_the_criteria_boundaries(core_ml, hypo_ml, defuse3, extend):
    voxel_ml = 0.25  # every volume above is a whole number of voxels
    n_core, n_hypo = int(core_ml / voxel_ml), int(hypo_ml / voxel_ml)
    cbf = np.r_[np.full(n_core, 5.0), np.full(n_hypo - n_core, 40.0), [50.0]]
    tmax = np.r_[np.full(n_hypo, 7.0), [0.0]]
    out = triage.triage_volumes(cbf, tmax, np.ones(cbf.size, bool), 50.0, voxel_ml)
    assert (out.core_volume_ml, out.hypoperfused_volume_ml) == (core_ml, hypo_ml)
    assert out.target_mismatch == {"DEFUSE3": defuse3, "EXTEND": extend}


def test_thresholding_refuses_a_non_positive_reference_and_mismatched_shapes():
    with pytest.raises(ValueError, match="reference"):
        triage.triage_volumes(np.ones(3), np.ones(3), np.ones(3, bool), 0.0, 1.0)
    with pytest.raises(ValueError, match="same shape"):
        triage.triage_volumes(np.ones(3), np.ones(4), np.ones(3, bool), 1.0, 1.0)


# ----------------------------------------------------------------------------------------------
# interfaces: TTP and the summary figure


def test_time_to_peak_interface_on_the_phantom(tmp_path):
    """Noise-free phantom: TTP is each voxel's concentration peak on the frames' clock; one map, no desc."""
    ph = make_phantom("small", seed=1, noise_sd_hu=0)
    scan = write_nifti(tmp_path / "sub-01_ctp.nii.gz", ph.hu, ph.affine, sidecar={"FrameTimesStart": ph.frame_times.tolist()})
    aif = write_curves_tsv(tmp_path / "aif.tsv", {"time": ph.frame_times, "aif": ph.aif})
    brain = write_nifti(tmp_path / "brain.nii.gz", ph.brain_mask.astype(np.uint8), ph.affine, dtype=np.uint8)
    out = TimeToPeak(in_file=str(scan), aif_file=str(aif), mask_file=str(brain),
                     peak_interpolation="parabola").run(cwd=str(tmp_path)).outputs
    assert out.ttp.endswith("sub-01_ttp.nii.gz")
    sidecar = json.loads(open(out.ttp.replace(".nii.gz", ".json")).read())
    assert sidecar["Units"] == "s" and sidecar["PeakInterpolation"] == "parabola"
    ttp = np.asarray(nb.load(out.ttp).dataobj)
    grey, lesion = label_mask(ph, PhantomLabel.GREY_MATTER), label_mask(ph, PhantomLabel.PENUMBRA)
    expected = triage.time_to_peak(ph.hu - ph.hu[..., :1], ph.frame_times, interpolation="parabola")
    np.testing.assert_allclose(ttp[grey], expected[grey], atol=1e-4)
    # the delayed, dispersed lesion peaks later than grey matter (6 s delay plus dispersion)
    assert np.median(ttp[lesion]) - np.median(ttp[grey]) > 6.0
    assert np.all(ttp[~ph.brain_mask] == 0)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), order=st.sampled_from("CF"), uniform=st.booleans(),
       interpolation=st.sampled_from(triage.PEAK_INTERPOLATIONS), max_bytes=st.sampled_from([1, 700, 5000, 1 << 30]),
       given_baseline=st.booleans())
def test_series_time_to_peak_chunk_by_chunk_is_bitwise_the_whole_series_map(seed, order, uniform, interpolation,
                                                                           max_bytes, given_baseline):
    """Chunks of one slice or more, either memory layout, a non-uniform grid (resampled), a detected or given
    baseline: the map of the prepared whole series, to the last bit; chunks without a mask voxel stay 0."""
    rng = np.random.default_rng(seed)
    times = np.arange(16.0) * 1.5 if uniform else np.r_[np.arange(8.0), 8.0 + 2.0 * np.arange(8.0)]
    aif = 40.0 + 300.0 * np.exp(-((times - 6.0) ** 2) / 4.0)
    shape = (5, 4, 6, times.size)
    peaks = rng.uniform(5.0, 15.0, shape[:3] + (1,))
    series = np.asarray(35.0 + 30.0 * np.exp(-((times - peaks) ** 2) / 6.0) + rng.normal(0, 2.0, shape),
                        np.float32, order=order)
    mask = rng.random(shape[:3]) < 0.7
    mask[:, :, 2] = False  # a slice (a chunk when chunks are one slice) without a voxel
    n_base = 3 if given_baseline else None
    whole = prepare_curves(series, times, aif, n_baseline_frames=n_base)
    expected = triage.time_to_peak(whole.tissue, whole.frame_times, mask, interpolation)
    ttp, prepared = triage.series_time_to_peak(series, times, aif, mask, n_base, interpolation, max_bytes=max_bytes)
    assert ttp.dtype == np.float32 and ttp.shape == shape[:3]
    np.testing.assert_array_equal(ttp, expected)
    assert prepared.describe() == whole.describe() and prepared.baseline_detected == (n_base is None)
    np.testing.assert_array_equal(prepared.aif, whole.aif)


def test_time_to_peak_interface_reads_the_series_lazily_and_writes_the_whole_series_map(tmp_path):
    """On the pipeline's uncompressed series the interface reads nibabel's proxy chunk by chunk; the map is
    bitwise the one of the series read whole (a gzipped copy, read whole)."""
    ph = make_phantom("small", seed=2, noise_sd_hu=2.0)
    sidecar = {"FrameTimesStart": ph.frame_times.tolist()}
    aif = write_curves_tsv(tmp_path / "aif.tsv", {"time": ph.frame_times, "aif": ph.aif})
    brain = write_nifti(tmp_path / "brain.nii.gz", ph.brain_mask.astype(np.uint8), ph.affine, dtype=np.uint8)
    maps = []
    for name in ("sub-01_ctp.nii", "sub-02_ctp.nii.gz"):
        scan = write_nifti(tmp_path / name, ph.hu, ph.affine, sidecar=sidecar)
        out = TimeToPeak(in_file=str(scan), aif_file=str(aif), mask_file=str(brain)).run(cwd=str(tmp_path)).outputs
        maps.append(np.asarray(nb.load(out.ttp).dataobj))
    curves = prepare_curves(ph.hu.astype(np.float32), ph.frame_times, ph.aif)
    expected = triage.time_to_peak(curves.tissue, curves.frame_times, ph.brain_mask)
    np.testing.assert_array_equal(maps[0], expected)
    np.testing.assert_array_equal(maps[1], expected)


def coloured_pixels(png_path):
    import matplotlib.image as mpimg

    rgb = mpimg.imread(png_path)[..., :3]
    red = (rgb[..., 0] > 0.8) & (rgb[..., 1] < 0.25) & (rgb[..., 2] < 0.25)
    green = (rgb[..., 1] > 0.5) & (rgb[..., 0] < 0.35) & (rgb[..., 2] < 0.45)
    return rgb.shape, int(red.sum()), int(green.sum())


def test_summary_figure_is_written_with_the_overlays_and_volumes(clean_small_phantom, tmp_path):
    ph = clean_small_phantom
    maps = {("osvd", "cbf"): ph.cbf, ("osvd", "tmax"): ph.delay + ph.dispersion + 2.0 * label_mask(ph, PhantomLabel.CORE)}
    map_files, masks = write_phantom_inputs(tmp_path, ph, maps)
    scan = write_nifti(tmp_path / "sub-01_ctp.nii.gz", ph.hu, ph.affine, sidecar={"FrameTimesStart": ph.frame_times.tolist()})
    cbf, tmax = (next(f for f in map_files if f.endswith(f"_{n}.nii.gz")) for n in ("cbf", "tmax"))
    lesion = LesionVolumes(cbf_file=cbf, delay_file=tmax, brain_mask=masks["brain"], csf_mask=masks["csf"],
                           vessel_mask=masks["vessel"]).run(cwd=str(tmp_path)).outputs
    work = tmp_path / "summary"
    work.mkdir()
    out = TriageSummary(in_file=str(scan), brain_mask=masks["brain"], lesion_files=[lesion.out_json],
                        delay_files=[tmax]).run(cwd=str(work)).outputs
    assert len(out.out_files) == 1 and out.out_files[0].endswith("sub-01_desc-osvd_summary.png")
    shape, red, green = coloured_pixels(out.out_files[0])
    assert shape[0] >= 400 and shape[1] >= 900
    # core (red) and hypoperfusion (green) drawn on every one of the 4 slices, and in the legend
    assert red > 100 and green > 400
    # without a lesion there is no red and no green on the slices: only the legend's patches remain
    quiet = {("osvd", "cbf"): np.where(ph.brain_mask, 50.0, 0.0), ("osvd", "tmax"): np.zeros(ph.cbf.shape)}
    folder = tmp_path / "quiet"
    folder.mkdir()
    files, quiet_masks = write_phantom_inputs(folder, ph, quiet)
    q_cbf, q_tmax = (next(f for f in files if f.endswith(f"_{n}.nii.gz")) for n in ("cbf", "tmax"))
    q_lesion = LesionVolumes(cbf_file=q_cbf, delay_file=q_tmax, brain_mask=quiet_masks["brain"]).run(cwd=str(folder))
    q_work = folder / "summary"
    q_work.mkdir()
    q_out = TriageSummary(in_file=str(scan), brain_mask=quiet_masks["brain"], lesion_files=[q_lesion.outputs.out_json],
                          delay_files=[q_tmax]).run(cwd=str(q_work)).outputs
    _, q_red, q_green = coloured_pixels(q_out.out_files[0])
    assert q_red < red / 4 and q_green < green / 4
