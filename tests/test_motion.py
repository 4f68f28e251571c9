"""Rigid motion correction: framewise displacement and recovery of injected motion."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctp_nipype.perfusion.motion import apply_rigid, framewise_displacement, register_series
from ctp_nipype.perfusion.phantom import make_phantom


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-3, 3), min_size=6, max_size=6))
def test_framewise_displacement_of_one_step(step):
    parameters = np.zeros((2, 6))
    parameters[1] = step
    expected = np.abs(step[:3]).sum() + 50.0 * np.radians(np.abs(step[3:])).sum()
    assert framewise_displacement(parameters)[1] == pytest.approx(expected)


def test_apply_rigid_round_trip():
    rng = np.random.default_rng(0)
    volume = np.pad(rng.normal(0, 1, (16, 16, 8)), 4).astype(np.float32)
    moved = apply_rigid(volume, [1.0, 0.0, 0.0, 0.0, 0.0, 0.0], (1.0, 1.0, 1.0), inverse=True, fill_value=0.0)
    assert np.allclose(moved[5:20, :, :], volume[4:19, :, :], atol=1e-4)  # +1 mm along x


@pytest.mark.parametrize("n_threads", [1, 2, 4])
def test_recovers_phantom_motion(n_threads):
    """Issue 5: injected motion recovered within 0.5 mm / 0.5 degrees (demo phantom, moved frames only).

    Run with several ITK thread counts: an optimizer stopped by its iteration
    limit gave answers that changed with the number of threads (1.4 degrees on
    two threads), so the result must not depend on the machine's cores.
    """
    import SimpleITK as sitk

    ph = make_phantom("demo", seed=0, motion=True)
    moved = np.flatnonzero(np.any(ph.motion_parameters != 0, axis=1))
    frames = np.r_[np.arange(4), moved[0] - 1, moved, moved[-1] + 1]
    default_threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n_threads)
    try:
        result = register_series(ph.hu[..., frames], ph.voxel_size_mm, 4)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(default_threads)
    error = np.abs(result.parameters - ph.motion_parameters[frames])
    assert error[:, :3].max() < 0.5
    assert error[:, 3:].max() < 0.5
