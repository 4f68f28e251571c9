"""From a HU series and a HU arterial curve to concentrations on a uniform grid.

The steps every deconvolution method shares: resample a non-uniform series
(and its AIF) to a uniform grid, find the pre-bolus frames from the AIF, and
subtract the baseline from both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .concentration import detect_bolus_arrival, to_concentration
from .timing import check_frame_times, is_uniform, resample_to_uniform


@dataclass
class PreparedCurves:
    """Concentrations ready for deconvolution.

    Attributes
    ----------
    tissue : ndarray, shape (..., N)
        Tissue concentration (HU change), float32.
    aif : ndarray, shape (N,)
        Arterial concentration (HU change).
    frame_times : ndarray, shape (N,)
        Uniform frame times in seconds.
    n_baseline_frames : int
        Frames averaged into the baseline.
    baseline_detected : bool
        Whether the baseline length came from the AIF's bolus arrival.
    resampled : bool
        Whether the series was interpolated onto a uniform grid.
    """

    tissue: np.ndarray
    aif: np.ndarray
    frame_times: np.ndarray
    n_baseline_frames: int
    baseline_detected: bool
    resampled: bool

    def describe(self):
        """Provenance for sidecars."""
        return {
            "BaselineFrames": self.n_baseline_frames,
            "BaselineFramesDetected": self.baseline_detected,
            "ResampledToUniformGrid": self.resampled,
            "FrameInterval": float(self.frame_times[1] - self.frame_times[0]),
            "NumberOfFrames": int(self.frame_times.size),
        }


def prepare_curves(hu, frame_times, aif_hu, n_baseline_frames=None, frame_interval=None):
    """Resample to a uniform grid if needed and convert HU to concentration.

    Parameters
    ----------
    hu : ndarray, shape (..., T)
        Tissue attenuation in HU, time last.
    frame_times : array_like, shape (T,)
        Frame times in seconds (may be non-uniform).
    aif_hu : array_like, shape (T,)
        Arterial curve in HU, baseline included, on the same frames.
    n_baseline_frames : int, optional
        Pre-bolus frames; default detected from the AIF (on the uniform grid).
    frame_interval : float, optional
        Step of the uniform grid when resampling (default the smallest step).

    Returns
    -------
    PreparedCurves

    Examples
    --------
    >>> t = np.array([0.0, 1, 2, 3, 5, 7, 9, 11])
    >>> aif = np.array([40.0, 40, 40, 300, 200, 100, 60, 45])
    >>> out = prepare_curves(np.zeros((2, 8)) + 30, t, aif)
    >>> out.resampled, out.frame_times.size, out.n_baseline_frames
    (True, 12, 2)
    """
    hu = np.asarray(hu)
    aif_hu = np.asarray(aif_hu, dtype=float)
    times = check_frame_times(frame_times, hu.shape[-1])
    if aif_hu.shape != times.shape:
        raise ValueError(f"The AIF has {aif_hu.size} values but the series has {times.size} frames.")
    resampled = not is_uniform(times)
    if resampled:
        hu, new_times = resample_to_uniform(hu, times, frame_interval)
        aif_hu, _ = resample_to_uniform(aif_hu, times, frame_interval)
        times = new_times
    detected = n_baseline_frames is None
    n_base = detect_bolus_arrival(aif_hu) if detected else int(n_baseline_frames)
    return PreparedCurves(
        tissue=to_concentration(hu.astype(np.float32, copy=False), n_base),
        aif=to_concentration(aif_hu, n_base),
        frame_times=times,
        n_baseline_frames=n_base,
        baseline_detected=detected,
        resampled=resampled,
    )
