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

#: The longest frame interval (s) and scan (s, first to last frame) accepted unless the user allows
#: long frames (``--allow-long-frames``): a CT perfusion series samples a first pass of 20-40 s every
#: 1-3 s for 40-90 s; anything past these limits is far more likely a unit mix-up or a corrupt time.
MAX_FRAME_INTERVAL_S = 10.0
MAX_DURATION_S = 600.0
#: what a series in milliseconds looks like once divided by 1000: a plausible step and duration in seconds
_MS_STEP_RANGE_S = (0.1, MAX_FRAME_INTERVAL_S)
#: how each timing source is fixed when it holds milliseconds
_MS_FIXES = {
    "sidecar FrameTimesStart": "divide every value of the sidecar's FrameTimesStart by 1000",
    "sidecar RepetitionTime": "write the sidecar's RepetitionTime in seconds ({step_s:g})",
    "NIfTI pixdim[4] with its xyzt time unit": (
        "set the NIfTI's time unit to msec (nibabel: img.header.set_xyzt_units(t='msec')) or pixdim[4] to "
        "{step_s:g}, or add a sidecar with \"RepetitionTime\": {step_s:g}"
    ),
    "an explicit frame interval (command line --frame-interval)": "give --frame-interval {step_s:g}",
    "curve time column": "divide the 'time' column by 1000 (the curve itself is fine)",
}
#: the option that lifts the limits
ALLOW_LONG_FRAMES = "--allow-long-frames"


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


def check_timing_units(frame_times, name, source=None, allow_long_frames=False):
    """Refuse frame times that are not plausible seconds: milliseconds, a corrupt time, an over-long scan.

    The rules (seconds everywhere; each error names the frame or value and the fix):

    * times whose steps, divided by 1000, are a plausible frame interval (0.1-10 s) and
      whose span, divided by 1000, is at most 10 minutes are milliseconds: refused, with
      the fix for their ``source`` (never converted silently: a factor of 1000 in time is
      a factor of 1000 in CBF);
    * one step above :data:`MAX_FRAME_INTERVAL_S` among ordinary ones is a corrupt time:
      refused, naming the frame;
    * a step above :data:`MAX_FRAME_INTERVAL_S` (10 s) or a span above :data:`MAX_DURATION_S`
      (10 minutes) is refused unless ``allow_long_frames`` (``--allow-long-frames``).

    ``allow_long_frames`` lifts every rule: the user vouches that the times are seconds.
    Returns the times (float array).

    >>> check_timing_units([0, 1.2, 2.4], "FrameTimesStart")
    array([0. , 1.2, 2.4])
    >>> check_timing_units([0, 1200, 2400], "FrameTimesStart", "sidecar FrameTimesStart")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctp_nipype.perfusion.timing.TimingError: FrameTimesStart look like milliseconds...
    """
    times = np.asarray(frame_times, dtype=float)
    if allow_long_frames or times.size < 2:
        return times
    steps = np.diff(times)
    median_step = float(np.median(steps))
    duration = float(times[-1] - times[0])
    fix = _MS_FIXES.get(source, "give the times in seconds")
    if median_step > MAX_FRAME_INTERVAL_S and _MS_STEP_RANGE_S[0] <= median_step / 1000 <= _MS_STEP_RANGE_S[1] \
            and duration / 1000 <= MAX_DURATION_S:
        raise TimingError(
            f"{name} look like milliseconds, not seconds: a step of {median_step:g} would be {median_step:g} s per "
            f"frame ({duration / 60:.0f} minutes in all), {median_step / 1000:g} s if they are milliseconds. "
            f"Times are seconds here: {fix.format(step_s=round(median_step / 1000, 6))}."
        )
    long_steps = np.flatnonzero(steps > MAX_FRAME_INTERVAL_S)
    if long_steps.size and median_step <= MAX_FRAME_INTERVAL_S:
        k = int(long_steps[0]) + 1
        raise TimingError(
            f"{name}: frame {k} at {times[k]:g} s follows frame {k - 1} at {times[k - 1]:g} s, a step of "
            f"{steps[k - 1]:g} s where the others are about {median_step:g} s: a corrupt frame time? Fix the "
            f"time of frame {k} (frames count from 0), or give {ALLOW_LONG_FRAMES} if the gap is real."
        )
    if long_steps.size or duration > MAX_DURATION_S:
        raise TimingError(
            f"{name} give {median_step:g} s per frame and {duration:g} s in all, more than a CT perfusion series "
            f"({MAX_FRAME_INTERVAL_S:g} s per frame, {MAX_DURATION_S / 60:g} minutes); check the time unit "
            f"(seconds), or give {ALLOW_LONG_FRAMES} if the timing is right."
        )
    return times


def check_explicit_interval(timing, frame_interval, rtol=5e-3):
    """An explicit ``--frame-interval`` must agree with the file's timing, which wins (first match).

    A contradicting value is an error, not silently ignored: the user believes the frames are
    ``frame_interval`` apart and the file says otherwise.
    """
    if frame_interval is None or timing.source == TIMING_SOURCES[3]:
        return
    steps = np.diff(timing.frame_times)
    if steps.size and timing.is_uniform and np.isclose(steps.mean(), float(frame_interval), rtol=rtol):
        return
    described = (f"{steps.mean():g} s per frame" if timing.is_uniform
                 else f"non-uniform steps of {steps.min():g}-{steps.max():g} s")
    raise TimingError(
        f"--frame-interval {float(frame_interval):g} contradicts the scan's own timing ({timing.source}: {described}), "
        "which is what would be used. Remove --frame-interval, or correct the file's timing if it is the wrong one."
    )


def frame_times_from_sources(
    n_frames,
    sidecar=None,
    pixdim4=None,
    time_unit=None,
    frame_interval=None,
    allow_long_frames=False,
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
        Explicit frame interval in seconds: the timing when no other source exists, and an
        error (:func:`check_explicit_interval`) when it contradicts the source that wins.
    allow_long_frames : bool
        Accept frame intervals above 10 s and scans above 10 minutes
        (:func:`check_timing_units`, whose rules apply to every source).

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
    timing = _first_timing_source(n_frames, sidecar or {}, pixdim4, time_unit, frame_interval)
    names = {TIMING_SOURCES[0]: "Sidecar FrameTimesStart", TIMING_SOURCES[1]: "Sidecar RepetitionTime frame times",
             TIMING_SOURCES[2]: "NIfTI pixdim[4] frame times", TIMING_SOURCES[3]: "--frame-interval frame times"}
    check_timing_units(timing.frame_times, names[timing.source], timing.source, allow_long_frames)
    check_explicit_interval(timing, frame_interval)
    return timing


def _first_timing_source(n_frames, sidecar, pixdim4, time_unit, frame_interval):
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
    dtype = np.result_type(data.dtype, np.float32)
    if np.asarray(times).size == 1:
        return np.repeat(data.astype(dtype, copy=False), np.asarray(new_times).size, axis=-1)
    left, right, weight = interpolation_weights(times, new_times)
    out = data[..., left] * (1 - weight).astype(dtype) + data[..., right] * weight.astype(dtype)
    return out.astype(dtype, copy=False)


def frames_on_grid(frames, times, new_times):
    """Yield the frames of a series on ``new_times``, from an iterator of its frames on ``times`` (two or more, in order).

    :func:`interpolate_in_time` one frame at a time: holds two input frames, never the series, and gives
    the same values bit for bit (float32 frames stay float32).

    >>> frames = iter([np.array([0.0]), np.array([10.0]), np.array([30.0])])
    >>> [f.tolist() for f in frames_on_grid(frames, [0.0, 1.0, 3.0], [0.0, 1.0, 2.0, 3.0])]
    [[0.0], [10.0], [20.0], [30.0]]
    """
    held = {}  # input frame index -> frame
    source = enumerate(frames)
    for left, right, weight in zip(*interpolation_weights(times, new_times)):
        while right not in held:
            index, frame = next(source)
            held[index] = np.asarray(frame)
        for index in [i for i in held if i < left]:
            del held[index]
        dtype = np.result_type(held[left].dtype, np.float32)
        if weight == 0.0 and held[left].dtype == dtype:  # on an input frame (every frame of a uniform series)
            yield held[left]  # itself: the weighted sum would give its values (finite ones) at two passes' cost
        else:
            yield held[left] * dtype.type(1 - weight) + held[right] * dtype.type(weight)


def interpolation_weights(times, new_times):
    """``(left, right, weight)``: each new time's value is ``(1 - weight) * value[left] + weight * value[right]``.

    The weights of :func:`interpolate_in_time` (times outside ``[times[0], times[-1]]`` take the nearest
    end's value), for applying them to one frame at a time; ``left`` and ``right`` never decrease.

    >>> left, right, weight = interpolation_weights([0.0, 1.0, 3.0], [0.0, 2.0, 4.0])
    >>> left.tolist(), right.tolist(), weight.tolist()
    ([0, 1, 1], [1, 2, 2], [0.0, 0.5, 1.0])
    """
    times = np.asarray(times, dtype=float)
    new_times = np.asarray(new_times, dtype=float)
    right = np.clip(np.searchsorted(times, new_times, side="right"), 1, times.size - 1)
    left = right - 1
    weight = np.clip((new_times - times[left]) / (times[right] - times[left]), 0.0, 1.0)
    return left, right, weight


#: the share of its peak enhancement above which an AIF's last frame means the scan ended too early
TRUNCATION_FRACTION = 0.5


def aif_truncation_warning(aif, frame_times, n_baseline=None, fraction=TRUNCATION_FRACTION):
    """A warning (str) when the scan ends before the AIF's first pass is over, else ``None``.

    Truncated: the AIF's peak enhancement lies in its last two frames (it was still rising when
    the scan ended), or its last frame still holds more than ``fraction`` of the peak enhancement
    (the wash-out was cut). Deconvolution then misses part of the bolus: CBV is underestimated and
    CBF, MTT and Tmax are biased. Enhancement is measured above the mean of the first
    ``n_baseline`` frames (default: the first frame).

    >>> t = np.arange(30.0)
    >>> aif_truncation_warning(np.exp(-0.5 * ((t - 10) / 3) ** 2), t) is None
    True
    >>> aif_truncation_warning(np.exp(-0.5 * ((t - 40) / 3) ** 2), t)  # doctest: +ELLIPSIS
    'The scan ends while the AIF still rises ...'
    """
    aif = np.asarray(aif, dtype=float)
    times = np.asarray(frame_times, dtype=float)
    if aif.size < 3:
        return None
    baseline = float(np.mean(aif[: max(1, int(n_baseline or 1))]))
    enhancement = aif - baseline
    peak = int(np.argmax(enhancement))
    height = float(enhancement[peak])
    if not height > 0:
        return None
    last = float(enhancement[-1]) / height
    if peak >= aif.size - 2:
        return (
            f"The scan ends while the AIF still rises (its highest value is in the last frames, at {times[peak]:g} s "
            f"of {times[-1]:g} s): the bolus was cut off, so CBV is underestimated and CBF, MTT and Tmax are biased. "
            "A longer acquisition is needed for reliable maps."
        )
    if last > fraction:
        return (
            f"The scan ends before the AIF's first pass is over (the last frame, at {times[-1]:g} s, still holds "
            f"{last:.0%} of the peak enhancement reached at {times[peak]:g} s): the bolus was cut off, so CBV is "
            "underestimated and CBF, MTT and Tmax are biased."
        )
    return None
