"""Automatic selection of the arterial input (AIF) and venous output (VOF) functions.

The steps, all vectorised over voxels:

1. A provisional baseline: the number of pre-bolus frames from the earliest
   enhancement in the brain (:func:`estimate_baseline_frames`).
2. Features of every voxel's concentration curve (:func:`curve_features`):
   peak height, time to peak, arrival (10% of the peak, sub-frame), full
   width at half maximum and area.
3. Arterial voxels (:func:`select_arterial_voxels`): among the voxels with the
   highest peaks, those that combine early arrival, high peak and a narrow
   bolus; the best few are averaged.
4. Venous voxels (:func:`select_venous_voxels`): among the voxels with the
   largest areas, those that arrive late (after the AIF), typically the
   superior sagittal sinus.
5. Partial-volume correction (de la Rosa et al. 2021, as in Zeng et al. 2025):
   an artery is thinner than a voxel, so the measured AIF is too low; the
   large sinus is not. Tracer conservation makes the first-pass areas of the
   two equal, so the AIF's concentration is multiplied by
   ``area(VOF first pass) / area(AIF first pass)``
   (:func:`partial_volume_scale`). Recirculation is removed from both areas by
   fitting a gamma variate to each first pass (:func:`fit_gamma_variate`,
   one vectorised least-squares problem for all curves) and taking the fit's
   analytic area.

Curves leave this module in HU with their baseline included, like a user's
AIF TSV (the conventions): ``aif_corrected = baseline + scale * (aif - baseline)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, sparse
from scipy.ndimage import uniform_filter1d

from .chunks import CHUNK_BYTES, iter_masked_curves, masked_curves
from .concentration import ConcentrationError, detect_bolus_arrival, to_concentration
from .convolution import trapezoid_integral
from .gamma_variate import gamma_variate_aif, gamma_variate_area
from .motion import bridge_frames
from .timing import aif_truncation_warning, check_frame_times, is_uniform

#: fraction of the peak that marks a curve's arrival
ARRIVAL_FRACTION = 0.1
#: a first pass ends where the falling curve drops below this fraction of its peak
FIRST_PASS_CUTOFF = 0.3
#: with censored frames, at most this many vessel candidates are ranked on gamma-variate repaired curves
MAX_REPAIRED_CANDIDATES = 2000


class SelectionError(ValueError):
    """No arterial or venous voxels could be found."""


def _uniform_step(frame_times):
    times = check_frame_times(frame_times)
    if times.size < 2 or not is_uniform(times):
        raise ValueError(
            "AIF/VOF selection needs a uniformly sampled series; resample it first "
            "(ctp_nipype.perfusion.timing.resample_to_uniform, or the LoadCTP interface)."
        )
    return times, float(times[1] - times[0])


def estimate_baseline_frames(hu, mask=None, fraction=0.01, min_voxels=10, censored_frames=None,
                             max_bytes=CHUNK_BYTES):
    """Number of pre-bolus frames from the scan's most strongly varying voxels.

    The voxels with the largest temporal standard deviation (the top
    ``fraction``, at least ``min_voxels``) are the large vessels; the bolus
    arrival (:func:`ctp_nipype.perfusion.concentration.detect_bolus_arrival`)
    of their mean curve, in which the noise has averaged out, is a
    provisional baseline length for selecting the AIF. Once the AIF is
    chosen, the conventions' baseline comes from its own arrival.

    Parameters
    ----------
    hu : array-like, shape (..., T)
        Series in HU, time last. A 4D series may be nibabel's proxy: it is read in chunks of slices
        (:mod:`.chunks`), and only the spread of every voxel and the chosen voxels' curves are held.
    mask : ndarray of bool, shape (...), optional
        Voxels to consider (the brain); default all.
    fraction : float
        Fraction of the voxels averaged.
    min_voxels : int
        At least this many voxels are averaged.
    censored_frames : array_like of bool, shape (T,), optional
        Frames to leave out (displaced by head motion, :func:`.motion.censor_frames`): they are
        bridged by linear interpolation first, so that voxels by the skull, whose values jump in
        those frames, do not pass for the most enhancing ones.
    max_bytes : int
        Bytes of float32 per chunk of a 4D series.

    Returns
    -------
    int

    Examples
    --------
    >>> hu = np.full((50, 12), 30.0)
    >>> hu[0] += [0, 0, 0, 0, 0, 100, 300, 200, 100, 50, 20, 10]
    >>> estimate_baseline_frames(hu, min_voxels=1)
    4
    """
    if len(hu.shape) == 4:  # a series, maybe nibabel's proxy: the spread chunk by chunk, then the chosen curves
        search = np.ones(hu.shape[:3], bool) if mask is None else np.asarray(mask, bool)
        n_voxels = int(search.sum())
        spread = np.empty(n_voxels, np.float32)
        for rows, voxels in iter_masked_curves(hu, search, max_bytes):
            spread[rows] = _bridged(voxels, censored_frames).std(axis=-1)

        def curves_of(rows):
            return _bridged(_rows_of(hu, search, rows, max_bytes), censored_frames)
    else:
        voxels = np.asarray(hu)
        voxels = _bridged(voxels[mask] if mask is not None else voxels.reshape(-1, voxels.shape[-1]), censored_frames)
        n_voxels = voxels.shape[0]
        spread = voxels.std(axis=-1)

        def curves_of(rows):
            return voxels[rows]
    if n_voxels == 0:
        raise SelectionError("The mask is empty: no voxels to estimate the bolus arrival from.")
    n = int(min(n_voxels, max(np.ceil(fraction * n_voxels), min_voxels)))
    chosen = curves_of(np.argsort(spread)[::-1][:n])
    curve = chosen.mean(axis=0, dtype=np.float64)
    try:
        return detect_bolus_arrival(curve)
    except ConcentrationError as err:
        raise SelectionError(
            f"No bolus found in the brain's most enhancing voxels ({err}) Check that the series is a "
            "contrast-enhanced perfusion scan, or give the number of baseline frames."
        ) from None


def _bridged(voxels, censored_frames):
    """``voxels`` with their censored frames bridged (:func:`.motion.bridge_frames`); as they are without."""
    return voxels if censored_frames is None else bridge_frames(voxels, censored_frames)


def _rows_of(series, mask, rows, max_bytes=CHUNK_BYTES):
    """The curves ``series[mask][rows]`` (float32, in the order of ``rows``, distinct), reading only chunks."""
    rows = np.asarray(rows, dtype=np.int64)
    chosen = np.zeros(mask.shape, bool)
    chosen.flat[np.flatnonzero(mask)[rows]] = True  # series[chosen] is in ascending row order
    return masked_curves(series, chosen, max_bytes)[np.argsort(np.argsort(rows))]


@dataclass
class CurveFeatures:
    """Per-voxel features of concentration curves (one value per curve).

    Attributes
    ----------
    peak : ndarray
        Maximum of the (temporally smoothed) curve, HU above baseline.
    time_to_peak : ndarray
        Time of the maximum, s.
    arrival : ndarray
        Time the rising curve crosses ``ARRIVAL_FRACTION`` of its peak, s (sub-frame).
    fwhm : ndarray
        Full width at half maximum of the first pass, s (sub-frame).
    area : ndarray
        Trapezoidal area of the curve, HU s.
    peak_hu : ndarray or None
        ``peak`` plus the curve's baseline: the maximum in HU.
    mean_hu : ndarray or None
        Time-averaged HU (baseline plus area over duration).

    The selection ranks voxels on ``peak_hu`` and ``mean_hu`` where given:
    unlike ``peak`` and ``area`` they do not depend on the few pre-bolus
    frames, so picking the highest does not pick voxels whose baseline
    frames happen to be noisy-low (a bias of several HU in the AIF's
    baseline, and so of its area, with 5 baseline frames and 8 HU noise).
    """

    peak: np.ndarray
    time_to_peak: np.ndarray
    arrival: np.ndarray
    fwhm: np.ndarray
    area: np.ndarray
    peak_hu: np.ndarray | None = None
    mean_hu: np.ndarray | None = None

    @property
    def peak_rank_value(self):
        return self.peak if self.peak_hu is None else self.peak_hu

    @property
    def area_rank_value(self):
        return self.area if self.mean_hu is None else self.mean_hu


def _rising_crossing(curves, level, times):
    """Sub-frame time at which each curve first reaches ``level`` (linear interpolation)."""
    index = np.argmax(curves >= level[:, None], axis=1)
    before = np.clip(index - 1, 0, None)
    rows = np.arange(curves.shape[0])
    c0, c1 = curves[rows, before], curves[rows, index]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.clip(np.where(c1 > c0, (level - c0) / (c1 - c0), 0.0), 0.0, 1.0)
    return np.where(index == 0, times[0], times[before] + frac * (times[index] - times[before]))


def _falling_crossing(curves, level, times, peak_index):
    """Sub-frame time at which each curve first drops below ``level`` after its peak (end of series if never)."""
    n_frames = curves.shape[1]
    below = (curves < level[:, None]) & (np.arange(n_frames) > peak_index[:, None])
    never = ~below.any(axis=1)
    index = np.argmax(below, axis=1)
    before = np.clip(index - 1, 0, None)
    rows = np.arange(curves.shape[0])
    c0, c1 = curves[rows, before], curves[rows, index]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.clip(np.where(c0 > c1, (c0 - level) / (c0 - c1), 0.0), 0.0, 1.0)
    crossing = times[before] + frac * (times[index] - times[before])
    return np.where(never, times[-1], crossing)


def curve_features(concentration, frame_times, smooth_frames=3, baseline=None):
    """Peak, time to peak, arrival, width and area of many concentration curves at once.

    Parameters
    ----------
    concentration : ndarray, shape (n, T)
        Curves above baseline (HU), one per row.
    frame_times : array_like, shape (T,)
        Uniform frame times in seconds.
    smooth_frames : int
        Width of a moving average along time applied before the peak, arrival
        and width are read (1: none); it keeps noise from creating peaks. The
        area is computed on the unsmoothed curve.
    baseline : ndarray, shape (n,), optional
        The curves' baselines in HU, to report ``peak_hu`` and ``mean_hu``.

    Returns
    -------
    CurveFeatures

    Examples
    --------
    >>> t = np.arange(20.0)
    >>> c = np.where((t >= 5) & (t <= 9), 100.0, 0.0)[None]
    >>> f = curve_features(c, t, smooth_frames=1)
    >>> float(f.peak[0]), float(f.arrival[0]), float(f.fwhm[0]), float(f.area[0])
    (100.0, 4.1, 5.0, 500.0)
    """
    times, dt = _uniform_step(frame_times)
    curves = np.asarray(concentration, dtype=np.float32)
    if curves.ndim != 2 or curves.shape[1] != times.size:
        raise ValueError(f"Expected curves of shape (n, {times.size}), got {curves.shape}.")
    smooth = uniform_filter1d(curves, int(smooth_frames), axis=1, mode="nearest") if smooth_frames > 1 else curves
    peak_index = np.argmax(smooth, axis=1)
    peak = smooth[np.arange(curves.shape[0]), peak_index]
    positive_peak = np.maximum(peak, 1e-6)
    arrival = _rising_crossing(smooth, ARRIVAL_FRACTION * positive_peak, times)
    half_rise = _rising_crossing(smooth, 0.5 * positive_peak, times)
    half_fall = _falling_crossing(smooth, 0.5 * positive_peak, times, peak_index)
    offset = None if baseline is None else np.asarray(baseline, dtype=np.float32)
    return CurveFeatures(
        peak=peak,
        time_to_peak=times[peak_index],
        arrival=arrival,
        fwhm=half_fall - half_rise,
        area=trapezoid_integral(curves, dt, axis=1),
        peak_hu=None if offset is None else peak + offset,
        mean_hu=None if offset is None else curves.mean(axis=1) + offset,
    )


def _normalised_rank(values):
    """Rank of each value in [0, 1], 0 for the smallest (ties broken by position)."""
    order = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    return order / max(values.size - 1, 1)


def _top_candidates(values, fraction, minimum, min_relative, n_reference):
    """Indices of the ``max(fraction * n, minimum)`` largest values, keeping only those
    at least ``min_relative`` times the ``n_reference``-th largest value (a maximum
    that a single noisy voxel cannot set)."""
    order = np.argsort(values)[::-1]
    n = int(min(values.size, max(int(np.ceil(fraction * values.size)), minimum)))
    reference = values[order[min(n_reference, values.size) - 1]]
    top = order[:n]
    return top[values[top] >= min_relative * reference]


def select_arterial_voxels(
    features, n_voxels=5, candidate_fraction=0.01, min_relative_peak=0.5, max_arrival_spread=2.0
):
    """Indices of the voxels whose curves look most arterial.

    Candidates are the ``candidate_fraction`` of voxels with the highest peaks
    (at least ``10 * n_voxels``) whose peak reaches ``min_relative_peak``
    times the ``n_voxels``-th highest peak: vessels, not tissue whose noise
    would otherwise win on early arrival and narrow width. Candidates that
    arrive more than ``max_arrival_spread`` seconds after the earliest tenth
    of them (veins, delayed arteries) are dropped. Each remaining candidate is ranked (0 best, 1 worst)
    on early arrival, high peak and narrow FWHM; the three ranks are summed
    and the ``n_voxels`` best chosen.

    Parameters
    ----------
    features : CurveFeatures
    n_voxels : int
        Number of voxels averaged into the AIF.
    candidate_fraction : float
        Fraction of voxels with the highest peaks that are considered.
    min_relative_peak : float
        Candidates peak at least this fraction of the ``n_voxels``-th highest peak.
    max_arrival_spread : float
        Seconds after the 10th percentile of the candidates' arrivals beyond which a candidate is dropped.

    Returns
    -------
    ndarray of int
        Indices into the feature arrays, best first.

    Examples
    --------
    >>> f = CurveFeatures(peak=np.array([10., 400, 390, 300]), time_to_peak=np.zeros(4),
    ...                   arrival=np.array([9., 8, 8, 14]), fwhm=np.array([9., 4, 4, 8]), area=np.zeros(4))
    >>> select_arterial_voxels(f, n_voxels=2, candidate_fraction=1.0).tolist()
    [1, 2]
    """
    if n_voxels < 1:
        raise ValueError(f"n_voxels must be at least 1, got {n_voxels}.")
    candidates = _top_candidates(features.peak, candidate_fraction, 10 * n_voxels, min_relative_peak, n_voxels)
    candidates = candidates[features.peak[candidates] > 0]
    if candidates.size == 0:
        raise SelectionError("No enhancing voxel found to serve as AIF; is there a bolus in the scan?")
    early = np.percentile(features.arrival[candidates], 10)
    candidates = candidates[features.arrival[candidates] <= early + max_arrival_spread]
    score = (
        _normalised_rank(features.arrival[candidates])
        + _normalised_rank(-features.peak_rank_value[candidates])
        + _normalised_rank(features.fwhm[candidates])
    )
    return candidates[np.argsort(score, kind="stable")[:n_voxels]]


def select_venous_voxels(
    features, n_voxels=5, candidate_fraction=0.01, after=None, exclude=None, min_relative_area=0.5
):
    """Indices of the voxels whose curves look most venous (late and large).

    Candidates are the ``candidate_fraction`` of voxels with the largest areas
    (at least ``10 * n_voxels``), at least ``min_relative_area`` times the
    ``n_voxels``-th largest area, that arrive after ``after`` seconds (the
    AIF's arrival plus a transit time) and are not in ``exclude`` (the AIF's
    voxels). They are ranked on large area and late arrival, and the
    ``n_voxels`` best chosen.

    Returns
    -------
    ndarray of int
        Indices into the feature arrays, best first.

    Examples
    --------
    >>> f = CurveFeatures(peak=np.ones(4), time_to_peak=np.zeros(4),
    ...                   arrival=np.array([8., 14, 13, 15]), fwhm=np.ones(4), area=np.array([2000., 2400, 2300, 50]))
    >>> select_venous_voxels(f, n_voxels=1, candidate_fraction=1.0, after=10.0).tolist()
    [1]
    """
    if n_voxels < 1:
        raise ValueError(f"n_voxels must be at least 1, got {n_voxels}.")
    candidates = _top_candidates(features.area, candidate_fraction, 10 * n_voxels, min_relative_area, n_voxels)
    keep = features.area[candidates] > 0
    if after is not None:
        keep &= features.arrival[candidates] >= after
    if exclude is not None:
        keep &= ~np.isin(candidates, exclude)
    candidates = candidates[keep]
    if candidates.size == 0:
        raise SelectionError(
            "No venous voxel found: no voxel with a large area arrives after the AIF. Give a VOF "
            "(TSV or mask) or lower the minimum artery-to-vein delay."
        )
    score = _normalised_rank(-features.area_rank_value[candidates]) + _normalised_rank(-features.arrival[candidates])
    return candidates[np.argsort(score, kind="stable")[:n_voxels]]


@dataclass
class GammaVariateFit:
    """Gamma variates fitted to the first passes of curves (one row per curve).

    ``t0`` (s), ``alpha``, ``beta`` (s) and ``peak`` (HU) parametrise
    :func:`.gamma_variate.gamma_variate_aif`; ``area`` is the
    analytic first-pass area in HU s; ``first_pass_end`` the time (s) up to
    which samples were fitted.
    """

    t0: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    peak: np.ndarray
    area: np.ndarray
    first_pass_end: np.ndarray

    def row(self, index):
        """The fit of one curve, as a one-row :class:`GammaVariateFit`."""
        return GammaVariateFit(*(np.atleast_1d(getattr(self, name)[index]) for name in
                                 ("t0", "alpha", "beta", "peak", "area", "first_pass_end")))

    def curves(self, frame_times):
        """The fitted curves on ``frame_times``, shape (n, T)."""
        out = gamma_variate_aif(np.asarray(frame_times, float), self.t0, self.alpha, self.beta, self.peak)
        return np.reshape(out, (self.t0.size, -1))


def fit_gamma_variate(concentration, frame_times, cutoff=FIRST_PASS_CUTOFF, censored_frames=None):
    """Fit a gamma variate to the first pass of each curve (recirculation excluded).

    The samples fitted run from the start of the series to the first frame
    after the peak at which the curve falls below ``cutoff`` times its peak;
    later samples (recirculation) get zero weight. All curves form one
    least-squares problem with a block-diagonal Jacobian
    (``scipy.optimize.least_squares``, 'trf', ``jac_sparsity``), so fitting many
    curves costs about as many model evaluations as fitting one.

    Parameters
    ----------
    concentration : ndarray, shape (n, T) or (T,)
        Curves above baseline (HU).
    frame_times : array_like, shape (T,)
        Frame times in seconds.
    cutoff : float
        Fraction of the peak that ends the first pass.
    censored_frames : array_like of bool, shape (T,), optional
        Frames left out of the fit (zero weight), e.g. frames displaced by head motion. Give the curves
        bridged over them (:func:`.motion.bridge_frames`): the first guesses are read from the curves.

    Returns
    -------
    GammaVariateFit

    Examples
    --------
    >>> t = np.arange(0, 60.0)
    >>> first = gamma_variate_aif(t, t0=6.0, alpha=3.0, beta=1.5, peak=400)
    >>> recirculation = gamma_variate_aif(t, t0=20.0, alpha=3.0, beta=3.0, peak=60)
    >>> fit = fit_gamma_variate(first + recirculation, t)
    >>> round(float(fit.area[0] / gamma_variate_area(400, 3.0, 1.5)), 2)
    1.0
    """
    times = check_frame_times(frame_times)
    curves = np.atleast_2d(np.asarray(concentration, dtype=float))
    n, n_frames = curves.shape
    if n_frames != times.size:
        raise ValueError(f"Curves have {n_frames} samples but there are {times.size} frame times.")
    peak_index = np.argmax(curves, axis=1)
    peak = curves[np.arange(n), peak_index]
    if np.any(peak <= 0):
        raise SelectionError("A curve given to the gamma-variate fit never rises above its baseline.")
    end_time = _falling_crossing(curves, cutoff * peak, times, peak_index)
    weight = (times[None, :] <= end_time[:, None] + 1e-9).astype(float)
    if censored_frames is not None:
        weight *= ~np.asarray(censored_frames, dtype=bool)[None, :]
    arrival = _rising_crossing(curves, ARRIVAL_FRACTION * peak, times)
    step = float(np.median(np.diff(times)))
    time_to_peak = times[peak_index]

    # initial guess and bounds, parameters (t0, alpha, beta, peak) per curve
    lower_t0 = times[0] - 5 * step
    t0 = np.clip(arrival - step, lower_t0 + 1e-3, time_to_peak - 0.05 * step)
    alpha = np.full(n, 3.0)
    beta = np.maximum((time_to_peak - t0) / alpha, 0.1 * step)
    x0 = np.stack([t0, alpha, beta, peak], axis=1)
    lower = np.stack([np.full(n, lower_t0), np.full(n, 0.2), np.full(n, 0.02 * step), np.zeros(n)], axis=1)
    upper = np.stack([time_to_peak, np.full(n, 50.0), np.full(n, 50.0 * step), 3.0 * peak], axis=1)
    x0 = np.clip(x0, lower + 1e-6, upper - 1e-6)
    scale = np.maximum(peak, 1e-6)[:, None]

    def residuals(flat):
        p = flat.reshape(n, 4)
        model = np.reshape(gamma_variate_aif(times, p[:, 0], p[:, 1], p[:, 2], p[:, 3]), (n, n_frames))
        return ((model - curves) * weight / scale).ravel()

    sparsity = sparse.kron(sparse.eye(n), np.ones((n_frames, 4)))
    result = optimize.least_squares(
        residuals,
        x0.ravel(),
        bounds=(lower.ravel(), upper.ravel()),
        jac_sparsity=sparsity,
        method="trf",
        x_scale="jac",
    )
    p = result.x.reshape(n, 4)
    return GammaVariateFit(
        t0=p[:, 0],
        alpha=p[:, 1],
        beta=p[:, 2],
        peak=p[:, 3],
        area=gamma_variate_area(p[:, 3], p[:, 1], p[:, 2]),
        first_pass_end=end_time,
    )


def partial_volume_scale(
    aif_concentration, vof_concentration, frame_times, allow_downscaling=False, censored_frames=None
):
    """Factor that gives the AIF the VOF's first-pass area (de la Rosa et al. 2021).

    Both first passes are fitted with gamma variates (:func:`fit_gamma_variate`)
    and the ratio of their analytic areas returned. Partial volume only ever
    lowers the measured AIF, so a ratio below 1 (the VOF is itself partial-volume
    affected) is clipped to 1 unless ``allow_downscaling``.

    Returns
    -------
    scale : float
        Multiply the AIF's concentration by this.
    fits : GammaVariateFit
        Row 0 the AIF, row 1 the VOF.

    Examples
    --------
    >>> t = np.arange(0, 60.0)
    >>> true_aif = gamma_variate_aif(t, t0=6.0, alpha=3.0, beta=1.5, peak=400)
    >>> vof = gamma_variate_aif(t, t0=10.0, alpha=3.0, beta=2.5, peak=400 * 1.5 / 2.5)
    >>> scale, _ = partial_volume_scale(0.6 * true_aif, vof, t)
    >>> round(scale, 3)
    1.667
    """
    fits = fit_gamma_variate(np.stack([aif_concentration, vof_concentration]), frame_times,
                             censored_frames=censored_frames)
    scale = float(fits.area[1] / fits.area[0])
    if not allow_downscaling:
        scale = max(scale, 1.0)
    return scale, fits


@dataclass
class VascularFunctions:
    """The selected AIF and VOF, all curves in HU with baseline included.

    Attributes
    ----------
    frame_times : ndarray (T,), s
    aif, vof, aif_corrected : ndarray (T,), HU
    aif_voxels, vof_voxels : ndarray (n, 3) of int
        Array indices of the averaged voxels.
    scale : float
        Partial-volume factor applied to the AIF's concentration.
    n_baseline_frames : int
        Pre-bolus frames of the chosen AIF (its bolus arrival).
    fits : GammaVariateFit or None
        First-pass fits (row 0 AIF, row 1 VOF).
    """

    frame_times: np.ndarray
    aif: np.ndarray
    vof: np.ndarray
    aif_corrected: np.ndarray
    aif_voxels: np.ndarray
    vof_voxels: np.ndarray
    scale: float
    n_baseline_frames: int
    fits: GammaVariateFit | None = None
    details: dict = field(default_factory=dict)

    def columns(self):
        """The conventions' TSV columns: time, aif, vof, aif_corrected."""
        return {"time": self.frame_times, "aif": self.aif, "vof": self.vof, "aif_corrected": self.aif_corrected}


def repair_censored_frames(curve_hu, frame_times, censored_frames, n_baseline_frames=None, fit=None):
    """Vascular curves (HU) whose censored frames are replaced by what their other frames say they were.

    Censored frames inside the first pass take the value of a gamma variate
    fitted to the first pass without them (:func:`fit_gamma_variate`), so that a
    peak lost to head motion is restored rather than cut off by a straight line;
    censored frames outside it (recirculation, baseline) are bridged linearly
    (:func:`.motion.bridge_frames`). Kept frames are returned unchanged. A curve
    set with no bolus to fit keeps the linear bridge.

    Parameters
    ----------
    curve_hu : array_like, shape (T,) or (n, T)
        AIF, VOF or candidate curves in HU, baseline included.
    frame_times : array_like, shape (T,)
        Uniform frame times in seconds.
    censored_frames : array_like of bool, shape (T,)
        The frames to replace.
    n_baseline_frames : int, optional
        Pre-bolus frames (default: the bridged curve's bolus arrival; required for several curves).
    fit : GammaVariateFit, optional
        The first-pass fit of these curves (bridged, censored frames without weight) when the caller has it.

    Returns
    -------
    ndarray, the shape of ``curve_hu``

    Examples
    --------
    A bolus whose three peak frames were corrupted comes back close to its peak:

    >>> t = np.arange(40.0)
    >>> true = 40 + gamma_variate_aif(t, t0=5.0, alpha=3.0, beta=1.5, peak=300)
    >>> measured = true.copy(); measured[8:11] = 60.0
    >>> censored = np.zeros(40, bool); censored[8:11] = True
    >>> repaired = repair_censored_frames(measured, t, censored)
    >>> bool(np.abs(repaired - true).max() < 3.0), bool(np.abs(measured - true).max() > 200)
    (True, True)
    """
    single = np.ndim(curve_hu) == 1
    curves = np.atleast_2d(np.asarray(curve_hu, dtype=float))
    censored = np.asarray(censored_frames, dtype=bool)
    times = check_frame_times(frame_times)
    if not censored.any():
        return curves[0].copy() if single else curves.copy()
    if n_baseline_frames is None and not single:
        raise ValueError("Give n_baseline_frames to repair several curves at once.")
    bridged = bridge_frames(curves, censored).astype(float)
    out = np.where(censored[None, :], bridged, curves)
    try:
        if n_baseline_frames is None:
            n_baseline_frames = detect_bolus_arrival(bridged[0])
        concentration = to_concentration(bridged, int(n_baseline_frames))
        if fit is None:
            fit = fit_gamma_variate(concentration, times, censored_frames=censored)
    except (ConcentrationError, SelectionError):  # no bolus to fit: the bridge is all there is
        return out[0] if single else out
    first_pass = (censored[None, :] & (times[None, :] <= fit.first_pass_end[:, None] + 1e-9)
                  & (times[None, :] >= fit.t0[:, None]))
    out[first_pass] = (bridged - concentration + fit.curves(times))[first_pass]
    return out[0] if single else out


def correct_aif(
    aif_hu, vof_hu, frame_times, n_baseline_frames=None, allow_downscaling=False, censored_frames=None,
    repair_aif=True,
):
    """Partial-volume corrected AIF in HU (baseline included) and the scale applied.

    The baseline of each curve is the mean of its pre-bolus frames (default:
    the AIF's bolus arrival, :func:`detect_bolus_arrival`); the AIF's
    concentration is multiplied by :func:`partial_volume_scale` and its
    baseline added back. ``censored_frames`` (boolean per frame, optional) are
    left out of the first-pass fits (the curves bridged over them for the
    arrival and the first guesses), and the AIF returned has them repaired
    (:func:`repair_censored_frames`) unless ``repair_aif`` is False (a user's
    AIF, not measured on the censored series).

    Returns
    -------
    aif_corrected : ndarray (T,)
    scale : float
    fits : GammaVariateFit
    n_baseline_frames : int
    """
    aif_hu = np.asarray(aif_hu, dtype=float)
    vof_hu = np.asarray(vof_hu, dtype=float)
    fit_aif, fit_vof = aif_hu, vof_hu
    if censored_frames is not None:
        fit_aif = bridge_frames(aif_hu, censored_frames).astype(float)
        fit_vof = bridge_frames(vof_hu, censored_frames).astype(float)
    n_base = detect_bolus_arrival(fit_aif) if n_baseline_frames is None else int(n_baseline_frames)
    scale, fits = partial_volume_scale(
        to_concentration(fit_aif, n_base), to_concentration(fit_vof, n_base), frame_times, allow_downscaling,
        censored_frames,
    )
    if censored_frames is not None and repair_aif:
        aif_hu = repair_censored_frames(aif_hu, frame_times, censored_frames, n_base, fit=fits.row(0))
    aif_c = to_concentration(aif_hu, n_base)
    return aif_hu - aif_c + scale * aif_c, scale, fits, n_base


def uncorrected_aif(aif_hu, frame_times, censored_frames=None, repair_aif=True):
    """The AIF used as it is (no partial-volume correction) and its pre-bolus frames.

    With ``censored_frames`` the bolus arrival is read from the curve bridged
    over them, and the curve has them repaired (:func:`repair_censored_frames`)
    unless ``repair_aif`` is False (a user's AIF).

    Returns
    -------
    aif : ndarray (T,)
    n_baseline_frames : int
    """
    aif_hu = np.asarray(aif_hu, dtype=float)
    if censored_frames is None:
        return aif_hu.copy(), detect_bolus_arrival(aif_hu)
    n_base = detect_bolus_arrival(bridge_frames(aif_hu, censored_frames).astype(float))
    if repair_aif:
        aif_hu = repair_censored_frames(aif_hu, frame_times, censored_frames, n_base)
    return aif_hu, n_base


@dataclass
class CensoredFirstPass:
    """How much of an AIF's first pass was repaired rather than measured (:func:`censored_first_pass`).

    ``peak_censored``: the curve's maximum lies in a censored frame, so its height and time come from the
    gamma-variate repair; ``censored_share``: share of the first pass's enhancement (HU s above baseline, from
    arrival to the fall below ``FIRST_PASS_CUTOFF`` of the peak) in censored frames; ``censored_first_pass_frames``:
    the censored frames inside that first pass.
    """

    peak_censored: bool
    censored_share: float
    censored_first_pass_frames: list


def censored_first_pass(aif_hu, censored_frames, n_baseline_frames, cutoff=FIRST_PASS_CUTOFF):
    """How much of a (repaired) AIF's first pass lies in censored frames.

    When head motion displaces the frames of the arterial first pass, the AIF's
    peak, which sets every method's CBF scale, is what the gamma-variate repair
    (:func:`repair_censored_frames`) says it was, not what was measured. This
    says how much of the first pass that is, so that a run can warn.

    Parameters
    ----------
    aif_hu : array_like, shape (T,)
        The AIF in HU, baseline included, as deconvolved (repaired).
    censored_frames : array_like of bool, shape (T,)
    n_baseline_frames : int
        Pre-bolus frames (the baseline is their mean).
    cutoff : float
        Fraction of the peak below which the falling curve has left its first pass.

    Returns
    -------
    CensoredFirstPass

    Examples
    --------
    >>> t = np.arange(40.0)
    >>> aif = 40 + gamma_variate_aif(t, t0=5.0, alpha=3.0, beta=1.5, peak=300)
    >>> censored = np.zeros(40, bool); censored[8:11] = True
    >>> found = censored_first_pass(aif, censored, 5)
    >>> found.peak_censored, round(found.censored_share, 2), found.censored_first_pass_frames
    (True, 0.47, [8, 9, 10])
    >>> censored_first_pass(aif, np.roll(censored, 20), 5).censored_share
    0.0
    """
    concentration = to_concentration(np.asarray(aif_hu, dtype=float), int(n_baseline_frames))
    censored = np.asarray(censored_frames, dtype=bool)
    if censored.shape != concentration.shape:
        raise ValueError(f"censored_frames has shape {censored.shape}, the AIF {concentration.shape}.")
    peak_index = int(np.argmax(concentration))
    peak = concentration[peak_index]
    if not peak > 0:
        raise SelectionError("The AIF never rises above its baseline.")
    # the first pass as fit_gamma_variate (and so the repair) bounds it, in frame units
    frames = np.arange(concentration.size, dtype=float)
    end = _falling_crossing(concentration[None], np.array([cutoff * peak]), frames, np.array([peak_index]))[0]
    first_pass = (frames >= int(n_baseline_frames)) & (frames <= end)
    enhancement = np.clip(concentration, 0, None) * first_pass
    return CensoredFirstPass(
        peak_censored=bool(censored[peak_index]),
        censored_share=float(enhancement[censored].sum() / enhancement.sum()),
        censored_first_pass_frames=np.flatnonzero(censored & first_pass).tolist(),
    )


def _rank_on_repaired_curves(features, bridged_curves, times, censored, n_base, n_aif_voxels):
    """Give the likely vessels whose first pass a censored frame cuts the features of repaired curves (in place).

    A linear bridge over an arterial peak halves it, below the veins' peaks, and the artery drops out of the
    candidates. The pool is the top 5% of the voxels by bridged peak (at least ``20 * n_aif_voxels``, at most
    :data:`MAX_REPAIRED_CANDIDATES`: one fit of 2,000 noisy synthetic curves took 13.5 s); of those, the
    ones with a censored frame between their arrival and two widths after their peak are repaired
    (:func:`repair_censored_frames`) and their features recomputed. ``bridged_curves(rows)`` gives the HU
    curves (bridged over the censored frames) of the voxels at those rows of the features.
    """
    n_voxels = features.peak.size
    n_pool = min(n_voxels, max(min(int(np.ceil(0.05 * n_voxels)), MAX_REPAIRED_CANDIDATES), 20 * n_aif_voxels))
    pool = np.argsort(features.peak)[::-1][:n_pool]
    step = float(times[1] - times[0])
    cut = times[censored][None, :]
    first_pass = ((cut >= features.arrival[pool, None] - step)
                  & (cut <= features.time_to_peak[pool, None] + 2 * features.fwhm[pool, None]))
    index = pool[first_pass.any(axis=1)]
    if index.size == 0:
        return
    curves_hu = bridged_curves(index)
    baseline = curves_hu[:, :n_base].mean(axis=1)
    repaired = repair_censored_frames(curves_hu, times, censored, n_base)
    repaired_features = curve_features(repaired - baseline[:, None], times, baseline=baseline)
    for name in _FEATURE_NAMES:
        getattr(features, name)[index] = getattr(repaired_features, name)


def select_vascular_functions(
    hu,
    frame_times,
    brain_mask,
    exclude_mask=None,
    n_aif_voxels=5,
    n_vof_voxels=5,
    candidate_fraction=0.01,
    min_vein_delay=2.0,
    n_baseline_frames=None,
    correct_partial_volume=True,
    allow_downscaling=False,
    require_vof=True,
    censored_frames=None,
    max_bytes=CHUNK_BYTES,
):
    """Automatic AIF and VOF from a 4D series, with the partial-volume correction.

    Parameters
    ----------
    hu : array-like, shape (x, y, z, T)
        Series in HU on a uniform time grid: an array or nibabel's proxy, read in chunks of slices
        (:mod:`.chunks`; ``max_bytes`` of float32 each). Only the features of the searched voxels and
        the curves of the candidates are held, never the whole series.
    frame_times : array_like, shape (T,)
        Frame times in seconds.
    brain_mask : ndarray of bool, shape (x, y, z)
        Where to search.
    exclude_mask : ndarray of bool, optional
        Voxels never chosen (e.g. CSF).
    n_aif_voxels, n_vof_voxels : int
        Voxels averaged into each curve.
    candidate_fraction : float
        Fraction of the brain's voxels (highest peak / largest area) that are candidates.
    min_vein_delay : float
        The VOF's voxels arrive at least this many seconds after the AIF's.
    n_baseline_frames : int, optional
        Pre-bolus frames for the selection (default :func:`estimate_baseline_frames`).
    correct_partial_volume : bool
        Rescale the AIF to the VOF's first-pass area (otherwise ``aif_corrected`` equals ``aif``).
    allow_downscaling : bool
        Apply a partial-volume factor below 1.
    require_vof : bool
        When False and no venous voxel qualifies (a slab without a sinus), return
        ``vof = None`` and the uncorrected AIF instead of raising; the reason is in
        ``details['VOFNotFound']``.
    censored_frames : array_like of bool, shape (T,), optional
        Frames displaced by head motion (:func:`.motion.censor_frames`). They are
        bridged by linear interpolation for the baseline and the curve features that
        rank the voxels, and left out of the first-pass fits; ``aif`` and ``vof`` are
        the chosen voxels' measured curves, ``aif_corrected`` has the censored frames
        repaired (:func:`repair_censored_frames`).

    Returns
    -------
    VascularFunctions
    """
    times, _ = _uniform_step(frame_times)
    if len(hu.shape) != 4 or hu.shape[3] != times.size:
        raise ValueError(f"Expected a 4D series with {times.size} frames, got shape {tuple(hu.shape)}.")
    search = np.asarray(brain_mask, bool).copy()
    if exclude_mask is not None:
        search &= ~np.asarray(exclude_mask, bool)
    if search.sum() < n_aif_voxels + n_vof_voxels:
        raise SelectionError(
            f"The search region has {int(search.sum())} voxels, fewer than the {n_aif_voxels + n_vof_voxels} "
            "needed; check the brain mask."
        )
    if censored_frames is not None:
        censored_frames = np.asarray(censored_frames, dtype=bool)
    if n_baseline_frames is None:
        n_base = estimate_baseline_frames(hu, search, censored_frames=censored_frames, max_bytes=max_bytes)
    else:
        n_base = int(n_baseline_frames)
    features = _series_features(hu, search, times, n_base, censored_frames, max_bytes)
    details = {"SelectionBaselineFrames": n_base}
    if censored_frames is not None:
        details["CensoredFrames"] = np.flatnonzero(censored_frames).tolist()
        _rank_on_repaired_curves(
            features, lambda rows: bridge_frames(_rows_of(hu, search, rows, max_bytes), censored_frames),
            times, censored_frames, n_base, n_aif_voxels,
        )

    aif_index = select_arterial_voxels(features, n_aif_voxels, candidate_fraction)
    aif_arrival = float(np.median(features.arrival[aif_index]))
    details["AIFArrival"] = aif_arrival
    no_vof = None
    try:
        vof_index = select_venous_voxels(
            features, n_vof_voxels, candidate_fraction, after=aif_arrival + min_vein_delay, exclude=aif_index
        )
    except SelectionError as err:
        if require_vof:
            raise
        vof_index, no_vof = aif_index[:0], err
    chosen_hu = _rows_of(hu, search, np.concatenate([aif_index, vof_index]), max_bytes)  # one read for both
    aif_hu, vof_hu = chosen_hu[: aif_index.size], chosen_hu[aif_index.size :]
    aif = aif_hu.astype(float).mean(axis=0)
    aif_arrival_frames = detect_bolus_arrival(_bridged(aif_hu, censored_frames).astype(float).mean(axis=0))
    aif_voxels = _voxel_indices(search, aif_index)

    def repaired(curve):
        if censored_frames is None:
            return curve.copy()
        return repair_censored_frames(curve, times, censored_frames, aif_arrival_frames)
    if no_vof is not None:
        return VascularFunctions(
            frame_times=times, aif=aif, vof=None, aif_corrected=repaired(aif), aif_voxels=aif_voxels,
            vof_voxels=None, scale=1.0, n_baseline_frames=aif_arrival_frames, fits=None,
            details={**details, "VOFNotFound": str(no_vof)},
        )
    vof = vof_hu.astype(float).mean(axis=0)
    if correct_partial_volume:
        aif_corrected, scale, fits, n_base_aif = correct_aif(
            aif, vof, times, None, allow_downscaling, censored_frames
        )
    else:
        aif_corrected, scale, fits, n_base_aif = repaired(aif), 1.0, None, aif_arrival_frames
    return VascularFunctions(
        frame_times=times,
        aif=aif,
        vof=vof,
        aif_corrected=aif_corrected,
        aif_voxels=aif_voxels,
        vof_voxels=_voxel_indices(search, vof_index),
        scale=scale,
        n_baseline_frames=n_base_aif,
        fits=fits,
        details={
            **details,
            "VOFArrival": float(np.median(features.arrival[vof_index])),
            "AIFPeakHU": float(np.max(aif - aif[:n_base_aif].mean())),
            "VOFPeakHU": float(np.max(vof - vof[:n_base_aif].mean())),
        },
    )


#: the fields of :class:`CurveFeatures`
_FEATURE_NAMES = ("peak", "time_to_peak", "arrival", "fwhm", "area", "peak_hu", "mean_hu")


def _series_features(hu, search, times, n_baseline_frames, censored_frames=None, max_bytes=CHUNK_BYTES):
    """:func:`curve_features` of the voxels in ``search`` (in ``hu[search]``'s order) above the mean of their
    first ``n_baseline_frames`` frames, their censored frames bridged, read chunk by chunk."""
    n_voxels = int(np.count_nonzero(search))
    columns = {}
    for rows, voxels in iter_masked_curves(hu, search, max_bytes):
        ranked = _bridged(voxels, censored_frames)
        baseline = ranked[:, :n_baseline_frames].mean(axis=1)
        found = curve_features(ranked - baseline[:, None], times, baseline=baseline)
        for name in _FEATURE_NAMES:
            value = getattr(found, name)
            columns.setdefault(name, np.empty(n_voxels, value.dtype))[rows] = value
    return CurveFeatures(**columns)


def _voxel_indices(mask, rows):
    """Array indices (n, 3) of the voxels ``mask[...][rows]`` (rows in ``np.argwhere(mask)``'s order)."""
    return np.stack(np.unravel_index(np.flatnonzero(mask)[np.asarray(rows, dtype=np.int64)], mask.shape), axis=1)


# ----------------------------------------------------------------------------- the global AIF of a scan

#: what the user reads when the AIF's peak fell in frames censored for head motion (measured on the small
#: phantom with the motion moved into the first pass, benchmarks/studies/motion_selection.py --motion-start 9)
AIF_PEAK_CENSORED_WARNING = (
    "The AIF's peak lies in frames left out for head motion ({frames}): {share:.0%} of its first pass was "
    "repaired by a gamma-variate fit, not measured, and every method's CBF scales with it. Check the AIF figure; "
    "on the moving phantom such a repair gave grey-matter CBF within 5% of the truth in 7 of 8 cases and 1.55 "
    "times it in the eighth. If the fit looks wrong, give the AIF yourself (ctp-perfusion --aif) or exclude the scan."
)

#: how the partial-volume correction is described in the sidecar
PARTIAL_VOLUME_METHOD = (
    "AIF concentration scaled so that its first-pass area (gamma-variate fit, recirculation excluded) equals "
    "the VOF's (de la Rosa et al. 2021)"
)


@dataclass
class VascularChoice(VascularFunctions):
    """The global AIF and VOF of a scan as :func:`choose_vascular_functions` chose them (HU, baseline included).

    The attributes of :class:`VascularFunctions` (``vof`` NaN throughout when
    no VOF was found; ``aif_voxels``/``vof_voxels`` None for a user's curve;
    ``details`` the automatic selection's, empty when none ran), and:

    Attributes
    ----------
    sources : dict
        ``{'aif': ..., 'vof': ...}``, each ``'user TSV'``, ``'user mask'`` or ``'automatic'``.
    partial_volume : dict
        The sidecar's ``PartialVolumeCorrection``: applied or why not, the scale and the first-pass fits.
    first_pass_censoring : dict or None
        How much of the AIF's first pass lies in censored frames (an automatic or mask AIF with censoring).
    censored_frames : ndarray of bool or None
    truncation_warning : str or None
        :func:`.timing.aif_truncation_warning` of the measured AIF (the scan ends inside its first pass).
    warnings : list of str
        What the user must be told (no VOF, the AIF's peak repaired, the AIF cut off).
    """

    sources: dict = field(default_factory=dict)
    partial_volume: dict = field(default_factory=dict)
    first_pass_censoring: dict | None = None
    censored_frames: np.ndarray | None = None
    truncation_warning: str | None = None
    warnings: list = field(default_factory=list)

    def sidecar(self):
        """The science part of the ``desc-global_aif`` sidecar."""
        out = {
            "Units": {"time": "s", "aif": "HU", "vof": "HU", "aif_corrected": "HU"},
            "AIFSource": self.sources["aif"],
            "VOFSource": self.sources["vof"],
            "AIFVoxels": None if self.aif_voxels is None else np.asarray(self.aif_voxels).tolist(),
            "VOFVoxels": None if self.vof_voxels is None else np.asarray(self.vof_voxels).tolist(),
            "PartialVolumeCorrection": self.partial_volume,
            "BaselineFrames": int(self.n_baseline_frames),
        }
        if self.censored_frames is not None:
            out["CensoredFrames"] = np.flatnonzero(self.censored_frames).tolist()
        if self.first_pass_censoring is not None:
            out["AIFFirstPassCensoring"] = self.first_pass_censoring
        if self.truncation_warning is not None:
            out["AIFTruncationWarning"] = self.truncation_warning
        if self.details:
            out["Selection"] = self.details
        return out

    def label_image(self, shape):
        """3D labels of the chosen voxels (1 AIF, 2 VOF; uint8), or None when no curve came from voxels."""
        if self.aif_voxels is None and self.vof_voxels is None:
            return None
        labels = np.zeros(shape, np.uint8)
        for value, voxels in ((2, self.vof_voxels), (1, self.aif_voxels)):
            if voxels is not None:
                labels[tuple(np.asarray(voxels).T)] = value
        return labels


def _fit_summary(fits):
    return {
        name: {"t0": float(fits.t0[i]), "alpha": float(fits.alpha[i]), "beta": float(fits.beta[i]),
               "peak_hu": float(fits.peak[i]), "area_hu_s": float(fits.area[i])}
        for i, name in enumerate(("aif", "vof"))
    }


def choose_vascular_functions(
    hu,
    frame_times,
    brain_mask,
    exclude_mask=None,
    aif_curve=None,
    vof_curve=None,
    aif_mask=None,
    vof_mask=None,
    n_aif_voxels=5,
    n_vof_voxels=5,
    min_vein_delay=2.0,
    correct_partial_volume=True,
    allow_downscaling=False,
    censored_frames=None,
    max_bytes=CHUNK_BYTES,
):
    """The global AIF and VOF of a scan: the user's curves or masks where given, else the automatic choice.

    The decisions of the ``SelectAIFVOF`` interface, in one place:

    * each of the AIF and the VOF comes from the user's curve (a TSV, on the
      scan's grid) if given, else from the mean of the user's mask, else from
      :func:`select_vascular_functions` (run only when one is missing; a slab
      without a venous voxel gives no VOF, with a warning);
    * the partial-volume correction (:func:`correct_aif`) applies when asked
      and a VOF exists, otherwise the AIF is used as it is (:func:`uncorrected_aif`);
    * with ``censored_frames`` the AIF's censored frames are repaired, except
      in a user's curve, which was not measured on the censored series; an
      AIF whose peak lies in censored frames gets a warning
      (:data:`AIF_PEAK_CENSORED_WARNING`, :func:`censored_first_pass`);
    * a scan that ends inside the AIF's first pass gets a warning
      (:func:`.timing.aif_truncation_warning`).

    Parameters
    ----------
    hu : array-like (x, y, z, T)
        The series in HU on a uniform grid (an array or nibabel's proxy, read in chunks of ``max_bytes``).
    frame_times : array_like (T,)
    brain_mask, exclude_mask : ndarray of bool (x, y, z)
        Where to search, and voxels never chosen.
    aif_curve, vof_curve : ndarray (T,), optional
        The user's curves in HU (baseline included) on the scan's grid.
    aif_mask, vof_mask : ndarray of bool (x, y, z), optional
        The user's voxels, averaged into the curve (a curve wins over a mask).
    n_aif_voxels, n_vof_voxels, min_vein_delay, allow_downscaling :
        As :func:`select_vascular_functions`.
    correct_partial_volume : bool
    censored_frames : ndarray of bool (T,), optional

    Returns
    -------
    VascularChoice
    """
    times = check_frame_times(frame_times)
    chosen = {}
    for name, curve, mask in (("aif", aif_curve, aif_mask), ("vof", vof_curve, vof_mask)):
        if curve is not None:
            chosen[name] = (np.asarray(curve, dtype=float), None, "user TSV")
        elif mask is not None:
            mask = np.asarray(mask, dtype=bool)
            chosen[name] = (masked_curves(hu, mask, max_bytes).astype(float).mean(axis=0), np.argwhere(mask), "user mask")
    auto = None
    if len(chosen) < 2:
        auto = select_vascular_functions(
            hu, times, brain_mask, exclude_mask=exclude_mask, n_aif_voxels=n_aif_voxels, n_vof_voxels=n_vof_voxels,
            min_vein_delay=min_vein_delay, correct_partial_volume=False, require_vof=False,
            censored_frames=censored_frames, max_bytes=max_bytes,
        )
    curves, voxels, sources = {}, {}, {}
    for name in ("aif", "vof"):
        if name in chosen:
            curves[name], voxels[name], sources[name] = chosen[name]
        else:
            curves[name], voxels[name], sources[name] = getattr(auto, name), getattr(auto, f"{name}_voxels"), "automatic"
    messages = []
    no_vof_reason = None
    if curves["vof"] is None:
        no_vof_reason = auto.details.get("VOFNotFound", "no VOF")
        messages.append(f"partial-volume correction not applied: {no_vof_reason}")
        curves["vof"] = np.full(times.size, np.nan)
    repair_aif = sources["aif"] != "user TSV"
    applied = bool(correct_partial_volume) and no_vof_reason is None
    if applied:
        corrected, scale, fits, n_base = correct_aif(
            curves["aif"], curves["vof"], times, allow_downscaling=allow_downscaling,
            censored_frames=censored_frames, repair_aif=repair_aif,
        )
        fit_summary = _fit_summary(fits)
    else:
        scale, fits, fit_summary = 1.0, None, None
        corrected, n_base = uncorrected_aif(curves["aif"], times, censored_frames=censored_frames, repair_aif=repair_aif)

    truncation = aif_truncation_warning(curves["aif"], times, n_base)
    if truncation:
        messages.append(truncation)

    first_pass_censoring = None
    if censored_frames is not None and repair_aif:
        found = censored_first_pass(corrected, censored_frames, n_base)
        first_pass_censoring = {
            "PeakCensored": found.peak_censored,
            "CensoredShareOfFirstPass": round(found.censored_share, 3),
            "CensoredFirstPassFrames": found.censored_first_pass_frames,
        }
        if found.peak_censored:
            first_pass_censoring["Warning"] = AIF_PEAK_CENSORED_WARNING.format(
                share=found.censored_share, frames=found.censored_first_pass_frames)
            messages.append(first_pass_censoring["Warning"])
    return VascularChoice(
        frame_times=times,
        aif=curves["aif"],
        vof=curves["vof"],
        aif_corrected=corrected,
        aif_voxels=voxels["aif"],
        vof_voxels=voxels["vof"],
        scale=float(scale),
        n_baseline_frames=int(n_base),
        fits=fits,
        details={} if auto is None else auto.details,
        sources=sources,
        partial_volume={
            "Applied": applied,
            "NotAppliedBecause": no_vof_reason,
            "Method": PARTIAL_VOLUME_METHOD,
            "Scale": float(scale),
            "AllowDownscaling": bool(allow_downscaling),
            "FirstPassFits": fit_summary,
        },
        first_pass_censoring=first_pass_censoring,
        censored_frames=None if censored_frames is None else np.asarray(censored_frames, dtype=bool),
        truncation_warning=truncation,
        warnings=messages,
    )
