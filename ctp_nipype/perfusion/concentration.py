"""From attenuation (HU) to contrast concentration.

In CT the iodine concentration is proportional to the change in attenuation,
so the concentration time curve of a voxel is ``C(t) = HU(t) - baseline``,
the baseline being the mean of the frames before the bolus reaches the
arteries. The number of baseline frames is detected from the global AIF's
arrival (:func:`detect_bolus_arrival`) or given explicitly.
"""

from __future__ import annotations

import numpy as np


class ConcentrationError(ValueError):
    """A curve from which no baseline or bolus can be determined."""


def detect_bolus_arrival(aif, fraction=0.1, n_reference=3):
    """Index of the first frame in which the bolus has reached the artery.

    The reference level is the median of the first ``n_reference`` frames;
    arrival is the first frame whose rise above it exceeds ``fraction`` of the
    curve's peak rise, moved back by one frame (the frame before the rise
    already carries some contrast at the sampling resolution).

    Parameters
    ----------
    aif : array_like, shape (T,)
        Arterial curve in HU (baseline included) or in concentration.
    fraction : float
        Fraction of the peak rise that marks arrival.
    n_reference : int
        Number of leading frames taken as the reference level.

    Returns
    -------
    int
        Number of pre-bolus frames (at least 1).

    Raises
    ------
    ConcentrationError
        When the curve has no rise (no bolus) or the bolus is already present
        in the first frames.

    Examples
    --------
    >>> detect_bolus_arrival([100, 101, 99, 100, 150, 400, 300, 200])
    3
    """
    curve = np.asarray(aif, dtype=float)
    if curve.ndim != 1 or curve.size < n_reference + 2:
        raise ConcentrationError(
            f"The arterial curve must be 1D with at least {n_reference + 2} frames, got shape {curve.shape}."
        )
    if not np.all(np.isfinite(curve)):
        raise ConcentrationError("The arterial curve contains NaN or infinite values.")
    reference = np.median(curve[:n_reference])
    rise = curve - reference
    peak = rise.max()
    noise = np.std(curve[:n_reference]) + 1e-6
    if peak <= 5 * noise or peak <= 0:
        raise ConcentrationError(
            "The arterial curve shows no bolus (its peak does not rise clearly above the first "
            f"frames: rise {peak:.3g}, baseline spread {noise:.3g}). Check the AIF, or give the "
            "number of baseline frames explicitly."
        )
    above = np.flatnonzero(rise > fraction * peak)
    arrival = int(above[0]) - 1
    if arrival < 1:
        raise ConcentrationError(
            "The bolus is already present in the first frame of the arterial curve, so no "
            "pre-bolus baseline exists; give the number of baseline frames explicitly."
        )
    return arrival


def to_concentration(hu, n_baseline_frames, axis=-1):
    """Subtract the mean of the first ``n_baseline_frames`` frames.

    Parameters
    ----------
    hu : ndarray
        Attenuation in HU with time along ``axis``.
    n_baseline_frames : int
        Number of pre-bolus frames averaged into the baseline (>= 1).
    axis : int
        The time axis.

    Returns
    -------
    ndarray
        Concentration (change in HU), float32 or float64 like the input.

    Examples
    --------
    >>> to_concentration(np.array([10.0, 12.0, 50.0, 30.0]), 2)
    array([-1.,  1., 39., 19.])
    """
    hu = np.asarray(hu)
    n_frames = hu.shape[axis]
    n_baseline_frames = int(n_baseline_frames)
    if not 1 <= n_baseline_frames < n_frames:
        raise ConcentrationError(
            f"The number of baseline frames must be between 1 and {n_frames - 1}, got {n_baseline_frames}."
        )
    dtype = np.result_type(hu.dtype, np.float32)
    hu = hu.astype(dtype, copy=False)
    # The baseline frames copied C-contiguous, as np.take copies them (so the mean sums in the same order:
    # bitwise the same baseline, and the result has the same memory layout, which the SVD fit's reshape
    # relies on to stay a view), but only those frames: np.take first copied the whole series to C order,
    # 5-8 s on a clinical (x, y, z, t) series stored x-fastest as NIfTI is.
    frames = [slice(None)] * hu.ndim
    frames[axis] = slice(0, n_baseline_frames)
    baseline = np.ascontiguousarray(hu[tuple(frames)]).mean(axis=axis, keepdims=True)
    return hu - baseline
