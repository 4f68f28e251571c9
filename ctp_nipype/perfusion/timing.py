"""Frame timing of a CTP series: where it comes from, checks, and resampling.

Time is in seconds everywhere. A series may be sampled non-uniformly (many
scanners slow down after the first pass); the deconvolution methods need a
uniform grid, so :func:`resample_to_uniform` interpolates every voxel's curve
linearly in time onto one, vectorised over voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The timing sources, in the order of the conventions (first match wins).
TIMING_SOURCES = (
    "sidecar FrameTimesStart",
    "sidecar RepetitionTime",
    "NIfTI pixdim[4] with its xyzt time unit",
    "an explicit frame interval (command line --frame-interval)",
)

_TIME_UNIT_TO_SECONDS = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}


class TimingError(ValueError):
    """The frame times of a series are missing or invalid."""


@dataclass(frozen=True)
class FrameTiming:
    """Frame start times in seconds and where they came from."""

    frame_times: np.ndarray
    source: str

    @property
    def is_uniform(self) -> bool:
        return is_uniform(self.frame_times)


def is_uniform(frame_times, rtol=1e-3):
    """Whether the frame times are equally spaced (within ``rtol`` of the mean step).

    >>> is_uniform([0, 1, 2, 3])
    True
    >>> is_uniform([0, 1, 2, 4])
    False
    """
    steps = np.diff(np.asarray(frame_times, dtype=float))
    if steps.size == 0:
        return True
    return bool(np.allclose(steps, steps.mean(), rtol=rtol, atol=1e-6))


def check_frame_times(frame_times, n_frames=None, name="frame times"):
    """Validate frame times and return them as a float64 array.

    Raises :class:`TimingError` naming the problem when the times are not a
    finite, non-negative, strictly increasing 1D list with one value per frame.
    """
    try:
        times = np.asarray(frame_times, dtype=float)
    except (TypeError, ValueError) as err:
        raise TimingError(f"{name} must be a list of numbers in seconds: {err}") from None
    if times.ndim != 1:
        raise TimingError(f"{name} must be a flat list, got an array of shape {times.shape}.")
    if n_frames is not None and times.size != n_frames:
        raise TimingError(
            f"{name} has {times.size} values but the scan has {n_frames} frames; "
            "give one time per frame."
        )
    if not np.all(np.isfinite(times)):
        raise TimingError(f"{name} contains NaN or infinite values.")
    if np.any(times < 0):
        raise TimingError(f"{name} contains negative times (first: {times[times < 0][0]} s).")
    if times.size > 1 and np.any(np.diff(times) <= 0):
        bad = int(np.argmax(np.diff(times) <= 0))
        raise TimingError(
            f"{name} are not strictly increasing (frame {bad + 1} at {times[bad + 1]} s "
            f"follows {times[bad]} s)."
        )
    return times


def frame_times_from_sources(
    n_frames,
    sidecar=None,
    pixdim4=None,
    time_unit=None,
    frame_interval=None,
):
    """Determine the frame times from the sources of the conventions.

    First match wins: sidecar ``FrameTimesStart``; sidecar ``RepetitionTime``;
    NIfTI ``pixdim[4]`` when its xyzt time unit is set (sec, msec or usec);
    the explicit ``frame_interval`` (seconds). With none of these a
    :class:`TimingError` names all four.

    Parameters
    ----------
    n_frames : int
        Number of frames in the series.
    sidecar : dict, optional
        The JSON sidecar's contents.
    pixdim4 : float, optional
        ``header['pixdim'][4]`` of the NIfTI.
    time_unit : str, optional
        The NIfTI xyzt time unit (``'sec'``, ``'msec'``, ``'usec'`` or ``'unknown'``).
    frame_interval : float, optional
        Explicit frame interval in seconds.

    Returns
    -------
    FrameTiming

    Examples
    --------
    >>> frame_times_from_sources(3, sidecar={"RepetitionTime": 1.5}).frame_times
    array([0. , 1.5, 3. ])
    >>> frame_times_from_sources(2, pixdim4=500, time_unit="msec").source
    'NIfTI pixdim[4] with its xyzt time unit'
    """
    sidecar = sidecar or {}
    if sidecar.get("FrameTimesStart") is not None:
        times = check_frame_times(sidecar["FrameTimesStart"], n_frames, "Sidecar FrameTimesStart")
        return FrameTiming(times, TIMING_SOURCES[0])
    if sidecar.get("RepetitionTime") is not None:
        step = _positive_step(sidecar["RepetitionTime"], "Sidecar RepetitionTime")
        return FrameTiming(np.arange(n_frames) * step, TIMING_SOURCES[1])
    if pixdim4 is not None and time_unit in _TIME_UNIT_TO_SECONDS and float(pixdim4) > 0:
        step = float(pixdim4) * _TIME_UNIT_TO_SECONDS[time_unit]
        return FrameTiming(np.arange(n_frames) * step, TIMING_SOURCES[2])
    if frame_interval is not None:
        step = _positive_step(frame_interval, "The explicit frame interval")
        return FrameTiming(np.arange(n_frames) * step, TIMING_SOURCES[3])
    raise TimingError(
        "No frame timing found. Provide one of: "
        + "; ".join(f"({i + 1}) {s}" for i, s in enumerate(TIMING_SOURCES))
        + "."
    )


def _positive_step(value, name):
    try:
        step = float(value)
    except (TypeError, ValueError):
        raise TimingError(f"{name} must be a number of seconds, got {value!r}.") from None
    if not np.isfinite(step) or step <= 0:
        raise TimingError(f"{name} must be a positive number of seconds, got {value!r}.")
    return step


def uniform_grid(frame_times, frame_interval=None):
    """The uniform time grid that covers ``frame_times``.

    The step defaults to the smallest step of the input, so that the densely
    sampled first pass keeps its resolution; the grid starts at the first
    frame and does not extend past the last one.

    >>> uniform_grid([0, 1, 2, 4, 6])
    array([0., 1., 2., 3., 4., 5., 6.])
    """
    times = np.asarray(frame_times, dtype=float)
    step = float(np.min(np.diff(times))) if frame_interval is None else float(frame_interval)
    if step <= 0:
        raise TimingError(f"The frame interval must be positive, got {step} s.")
    n = int(np.floor((times[-1] - times[0]) / step + 1e-6)) + 1
    return times[0] + step * np.arange(n)


def resample_to_uniform(data, frame_times, frame_interval=None, axis=-1):
    """Linearly interpolate a series onto a uniform time grid.

    Vectorised: the interpolation weights are computed once from the times and
    applied to all voxels at once.

    Parameters
    ----------
    data : ndarray
        Array whose ``axis`` runs over frames (for example ``(x, y, z, t)``).
    frame_times : array_like
        Strictly increasing frame times in seconds, one per frame.
    frame_interval : float, optional
        Step of the new grid in seconds (default: the smallest step).
    axis : int
        The time axis of ``data``.

    Returns
    -------
    resampled : ndarray
        ``data`` on the new grid (float, same layout).
    new_times : ndarray
        The uniform grid in seconds.

    Examples
    --------
    >>> out, t = resample_to_uniform(np.array([0.0, 1.0, 3.0]), [0, 1, 3], 0.5)
    >>> t
    array([0. , 0.5, 1. , 1.5, 2. , 2.5, 3. ])
    >>> out
    array([0. , 0.5, 1. , 1.5, 2. , 2.5, 3. ])
    """
    data = np.asarray(data)
    times = check_frame_times(frame_times, data.shape[axis])
    new_times = uniform_grid(times, frame_interval)
    out = interpolate_in_time(np.moveaxis(data, axis, -1), times, new_times)
    return np.moveaxis(out, -1, axis), new_times


def interpolate_in_time(data, times, new_times):
    """Linear interpolation of ``data`` (time last) from ``times`` onto ``new_times``, all voxels at once.

    Times outside ``[times[0], times[-1]]`` take the nearest end's value.
    The result is float32 or wider (the input's float type).

    >>> interpolate_in_time(np.array([[0.0, 10.0, 30.0]]), np.array([0.0, 1.0, 3.0]), np.array([-1.0, 2.0, 4.0]))
    array([[ 0., 20., 30.]])
    """
    data = np.asarray(data)
    times = np.asarray(times, dtype=float)
    new_times = np.asarray(new_times, dtype=float)
    dtype = np.result_type(data.dtype, np.float32)
    if times.size == 1:
        return np.repeat(data.astype(dtype, copy=False), new_times.size, axis=-1)
    right = np.clip(np.searchsorted(times, new_times, side="right"), 1, times.size - 1)
    left = right - 1
    weight = np.clip((new_times - times[left]) / (times[right] - times[left]), 0.0, 1.0)
    out = data[..., left] * (1 - weight).astype(dtype) + data[..., right] * weight.astype(dtype)
    return out.astype(dtype, copy=False)
