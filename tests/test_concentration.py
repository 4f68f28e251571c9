"""perfusion/concentration.py: bolus arrival, baseline and the concentration curves."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctp_nipype.perfusion import (
    detect_bolus_arrival,
    to_concentration,
)
from ctp_nipype.perfusion.concentration import ConcentrationError

from helpers import fine_grid_case


def test_bolus_arrival_and_baseline():
    aif, tissue, t = fine_grid_case()
    hu = aif + 40.0
    arrival = detect_bolus_arrival(hu)
    assert 8 <= arrival <= 11  # bolus starts at 10 s
    conc = to_concentration(np.stack([hu, tissue + 35.0]), arrival)
    np.testing.assert_allclose(conc[0], aif, atol=1e-9)
    np.testing.assert_allclose(conc[1], tissue, atol=1e-9)


def test_no_bolus_is_a_specific_error():
    with pytest.raises(ConcentrationError, match="no bolus"):
        detect_bolus_arrival(np.full(40, 35.0))


def test_baseline_frame_count_is_checked():
    with pytest.raises(ConcentrationError, match="between 1 and 3"):
        to_concentration(np.zeros(4), 4)


@settings(max_examples=60, deadline=None)
@given(n_frames=st.integers(2, 25), data=st.data(), order=st.sampled_from("CF"),
       dtype=st.sampled_from([np.float32, np.float64, np.int16]), axis=st.sampled_from([-1, 0, 1]))
def test_concentration_is_bitwise_the_mean_of_a_copy_of_the_baseline_frames(n_frames, data, order, dtype, axis):
    """Whatever the memory layout, the time axis and the number of baseline frames (pairwise sums from 8 on):
    the values of the reference formula, np.take's copy of the baseline frames averaged, to the last bit, in the
    same memory layout (SVDModel.fit reshapes it to (voxels, time): a view only in that layout)."""
    n_base = data.draw(st.integers(1, n_frames - 1))
    shape = [3, 4, 5]
    shape.insert(axis % 4 if axis >= 0 else 3, n_frames)
    seed = data.draw(st.integers(0, 2**31))
    hu = np.asarray(np.random.default_rng(seed).normal(40.0, 30.0, shape), dtype=dtype, order=order)
    work = hu.astype(np.result_type(hu.dtype, np.float32))
    reference = work - np.take(work, np.arange(n_base), axis=axis).mean(axis=axis, keepdims=True)
    out = to_concentration(hu, n_base, axis=axis)
    assert out.dtype == reference.dtype and out.shape == reference.shape and out.strides == reference.strides
    np.testing.assert_array_equal(out, reference)
