"""perfusion/timing.py: the timing sources in order, bad frame times, resampling to a uniform grid."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ctp_nipype.perfusion import (
    frame_times_from_sources,
    resample_to_uniform,
)
from ctp_nipype.perfusion.timing import TIMING_SOURCES, TimingError


def test_timing_sources_in_order():
    both = {"FrameTimesStart": [0, 1, 3], "RepetitionTime": 2.0}
    assert frame_times_from_sources(3, sidecar=both).source == TIMING_SOURCES[0]
    assert frame_times_from_sources(3, sidecar={"RepetitionTime": 2.0}, pixdim4=1.0, time_unit="sec").source == (
        TIMING_SOURCES[1]
    )
    timing = frame_times_from_sources(3, pixdim4=1500.0, time_unit="msec", frame_interval=1.5)
    assert timing.source == TIMING_SOURCES[2]
    np.testing.assert_allclose(timing.frame_times, [0, 1.5, 3.0])
    # an explicit interval that contradicts the source that wins is an error, not silently ignored
    with pytest.raises(TimingError, match="contradicts"):
        frame_times_from_sources(3, pixdim4=1500.0, time_unit="msec", frame_interval=9.0)
    # pixdim without a time unit does not count
    timing = frame_times_from_sources(3, pixdim4=1.0, time_unit="unknown", frame_interval=2.0)
    assert timing.source == TIMING_SOURCES[3]
    np.testing.assert_allclose(timing.frame_times, [0, 2, 4])


def test_missing_timing_names_all_four_sources():
    with pytest.raises(TimingError) as err:
        frame_times_from_sources(3)
    for source in ("FrameTimesStart", "RepetitionTime", "pixdim[4]", "--frame-interval"):
        assert source in str(err.value)


@pytest.mark.parametrize(
    "times,message",
    [([0, 2, 1], "strictly increasing"), ([0, 1], "has 2 values"), ([-1, 0, 1], "negative"), ([0, np.nan, 2], "NaN")],
)
def test_bad_frame_times(times, message):
    with pytest.raises(TimingError, match=message):
        frame_times_from_sources(3, sidecar={"FrameTimesStart": times})


@settings(max_examples=40, deadline=None)
@given(
    steps=arrays(float, st.integers(3, 30), elements=st.floats(0.5, 3.0)),
    slope=st.floats(-50, 50),
    offset=st.floats(-100, 100),
)
def test_resampling_is_exact_for_linear_signals(steps, slope, offset):
    times = np.concatenate([[0.0], np.cumsum(steps)])
    data = offset + slope * times
    volume = np.stack([data, 2 * data])  # two "voxels"
    out, new_times = resample_to_uniform(volume, times)
    np.testing.assert_allclose(out[0], offset + slope * new_times, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(out[1], 2 * out[0], rtol=1e-9, atol=1e-6)
    assert np.allclose(np.diff(new_times), new_times[1] - new_times[0])
    assert new_times[-1] <= times[-1] + 1e-9


def test_resampling_keeps_frames_of_a_uniform_series():
    data = np.random.default_rng(0).normal(size=(2, 3, 10)).astype(np.float32)
    out, times = resample_to_uniform(data, np.arange(10) * 1.5)
    np.testing.assert_allclose(out, data, rtol=1e-6)
    assert out.dtype == np.float32
