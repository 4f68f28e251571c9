"""Brain, CSF and vessel masks on the digital phantom and on simple shapes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctp_nipype.perfusion.aif import estimate_baseline_frames
from ctp_nipype.perfusion.masks import brain_mask, csf_mask, fit_enhancement, largest_component, time_average, vessel_mask
from ctp_nipype.sims.phantom import PhantomLabel, make_phantom

from helpers import nifti_proxy


@settings(max_examples=20, deadline=None)
@given(baseline=st.floats(-20, 60), amplitude=st.floats(-50, 500), noise_seed=st.integers(0, 100))
def test_fit_enhancement_recovers_baseline_and_area(baseline, amplitude, noise_seed):
    times = np.arange(40.0)
    shape = np.clip(times - 5, 0, None) ** 2 * np.exp(-np.clip(times - 5, 0, None) / 3)
    hu = np.empty((3, 1, 1, 40))
    hu[0, 0, 0] = 30 + 10 * shape  # the brain's typical curve
    hu[1, 0, 0] = baseline + amplitude * shape / np.trapezoid(shape, times)
    hu[2, 0, 0] = 20 + np.random.default_rng(noise_seed).normal(0, 0.01, 40)
    b, e = fit_enhancement(hu, times, np.ones((3, 1, 1), bool), 4)
    assert b[1, 0, 0] == pytest.approx(baseline, abs=1e-2)
    assert e[1, 0, 0] == pytest.approx(amplitude, abs=0.5)


def test_largest_component_keeps_the_big_one():
    mask = np.zeros((10, 10, 2), bool)
    mask[:2, :2] = True
    mask[5:, 5:] = True
    assert largest_component(mask).sum() == 50


@pytest.mark.parametrize("size", ["small", "demo"])
def test_phantom_acceptance(size):
    """Issue 5: brain Dice >= 0.95; CSF and vessels found and excluded from tissue."""
    ph = make_phantom(size, seed=0)
    brain = brain_mask(time_average(ph.hu))
    truth = ph.brain_mask
    assert 2 * (brain & truth).sum() / (brain.sum() + truth.sum()) >= 0.95
    n_base = estimate_baseline_frames(ph.hu, brain)
    assert 3 <= n_base <= 7  # bolus arrives at 4-6 s
    csf = csf_mask(ph.hu, ph.frame_times, brain, n_base)
    vessels = vessel_mask(ph.hu, ph.frame_times, brain, n_base, exclude=csf)
    labels = ph.labels
    # nearly pure CSF (noise-free baseline <= 15 HU); the phantom's CSF label also holds
    # voxels mixed with tissue or skull (up to ~380 HU), which no HU rule can call CSF
    pure_csf = (labels == PhantomLabel.CSF) & (ph.baseline_hu <= 15)
    assert (csf & pure_csf).sum() >= 0.7 * pure_csf.sum()
    for tissue in (PhantomLabel.GREY_MATTER, PhantomLabel.WHITE_MATTER, PhantomLabel.CORE):
        assert (csf & (labels == tissue)).sum() <= 0.01 * (labels == tissue).sum()
        assert (vessels & (labels == tissue)).sum() <= 0.01 * (labels == tissue).sum()
    for vessel in (PhantomLabel.ARTERY, PhantomLabel.VEIN):
        assert vessels[labels == vessel].mean() >= 0.9


# ---------------------------------------------------------------------------------------------- chunk by chunk


def _bolus_series(seed, shape):
    """A series (x, y, z, T) of noisy voxels with a bolus of random height and arrival in each."""
    rng = np.random.default_rng(seed)
    t = np.arange(shape[3], dtype=float)
    arrival = rng.uniform(3, 6, shape[:3])[..., None]
    rise = np.clip(t - arrival, 0, None)
    bolus = rise ** 2 * np.exp(-rise / 2.5)
    height = rng.uniform(0.5, 30, shape[:3])[..., None]
    return (rng.uniform(-20, 80, shape[:3])[..., None] + height * bolus
            + rng.normal(0, 8, shape)).astype(np.float32)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), nx=st.integers(1, 6), nz=st.integers(1, 5), n_frames=st.integers(2, 12),
       censor=st.booleans())
def test_time_average_chunk_by_chunk_is_that_of_the_whole_array(seed, nx, nz, n_frames, censor):
    series = np.random.default_rng(seed).normal(30, 40, (nx, 3, nz, n_frames)).astype(np.float32)
    censored = (np.arange(n_frames) % 3 == 1) if censor else None
    whole = time_average(series, censored, max_bytes=1 << 30)
    with tempfile.TemporaryDirectory() as folder:
        for layout in (series, np.asfortranarray(series), nifti_proxy(Path(folder), series)):
            assert np.array_equal(time_average(layout, censored, max_bytes=1), whole)
    # the formula, on the whole array at once
    kept = series if censored is None else series[..., ~censored]
    assert np.allclose(whole, kept.astype(np.float64).mean(axis=-1), rtol=1e-6, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), nx=st.integers(2, 7), nz=st.integers(1, 4), censor=st.booleans())
def test_fit_enhancement_chunk_by_chunk_is_that_of_the_whole_array(seed, nx, nz, censor):
    """Chunks of one slice give what one chunk of the whole array gives, bit for bit, in C or NIfTI layout and
    read lazily from a NIfTI;
    and that equals the regression done on all brain voxels at once (the brain's mean curve is summed slice by
    slice, so it may differ from a sum in another order in its last bits)."""
    hu = _bolus_series(seed, (nx, 4, nz, 20))
    brain = np.random.default_rng(seed + 1).random(hu.shape[:3]) < 0.7
    brain.flat[0] = True
    times = np.arange(20.0)
    censored = (np.arange(20) == 9) if censor else None
    whole = fit_enhancement(hu, times, brain, 3, censored, max_bytes=1 << 30)
    with tempfile.TemporaryDirectory() as folder:
        for layout in (hu, np.asfortranarray(hu), nifti_proxy(Path(folder), hu)):
            chunked = fit_enhancement(layout, times, brain, 3, censored, max_bytes=1)
            assert all(np.array_equal(c, w) for c, w in zip(chunked, whole))
    # the regression written out on the whole array
    from ctp_nipype.perfusion.concentration import to_concentration
    from ctp_nipype.perfusion.motion import bridge_frames

    voxels = hu[brain] if censored is None else bridge_frames(hu[brain], censored)
    kept = np.ones(20, bool) if censored is None else ~censored
    template = to_concentration(voxels.mean(axis=0, dtype=np.float64), 3)
    template = template / np.trapezoid(template, times)
    design = np.stack([np.ones(20), template], axis=1)
    expected = np.linalg.lstsq(design[kept], hu[brain][:, kept].astype(np.float64).T, rcond=None)[0]
    scale = np.abs(expected).max() + 1
    assert np.allclose(whole[0][brain], expected[0], atol=1e-4 * scale)
    assert np.allclose(whole[1][brain], expected[1], atol=1e-4 * scale)


def test_masks_of_a_lazily_read_nifti_are_those_of_the_array(tmp_path):
    """The phantom's masks from nibabel's proxy of its NIfTI in chunks of one slice equal the in-memory ones."""
    ph = make_phantom("small", seed=0)
    proxy = nifti_proxy(tmp_path, ph.hu)
    brain = brain_mask(time_average(ph.hu))
    assert np.array_equal(brain_mask(time_average(proxy, max_bytes=1)), brain)
    n_base = estimate_baseline_frames(ph.hu, brain)
    assert estimate_baseline_frames(proxy, brain, max_bytes=1) == n_base
    csf = csf_mask(ph.hu, ph.frame_times, brain, n_base)
    assert np.array_equal(csf_mask(proxy, ph.frame_times, brain, n_base, max_bytes=1), csf)
    vessels = vessel_mask(ph.hu, ph.frame_times, brain, n_base, exclude=csf)
    assert np.array_equal(vessel_mask(proxy, ph.frame_times, brain, n_base, exclude=csf, max_bytes=1), vessels)
