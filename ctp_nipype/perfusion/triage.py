"""Stroke triage on arrays: peak times, relative maps, threshold volumes and target-mismatch flags.

Plain numpy (no files, no nipype); :class:`ctp_nipype.interfaces.stats.LesionVolumes`
and :class:`ctp_nipype.interfaces.stats.TimeToPeak` wrap it.

* :func:`peak_time`: the time of a curve's maximum, as the sampled maximum
  or refined between samples by a parabola through the peak sample and its
  two neighbours. One code path for Tmax (the residue's peak, SVD family)
  and TTP (the tissue concentration's peak).
* :func:`relative_map`: a map over the contralateral reference (rCBF, rCBV),
  the reference being the mean of the unaffected hemisphere's tissue that
  :func:`ctp_nipype.perfusion.stats.contralateral_reference` finds (the same
  one the core threshold uses).
* :func:`triage_volumes`: the one thresholding path of the lesion masks and
  the triage volumes: core (rCBF below 30% of the reference), delay (Tmax,
  or BAD for the network) above 4, 6, 8 and 10 s, mismatch volume and ratio,
  hypoperfusion intensity ratio (delay > 10 s over delay > 6 s) and the
  target-mismatch flags of :data:`TARGET_MISMATCH`.

**BAD against Tmax.** The network's BAD is the bolus arrival delay alone;
SVD's Tmax (the peak of the residue deconvolved by the *global* AIF) adds to
the delay the shift that dispersion of the bolus on its way puts on the
peak. The thresholds (4-10 s, DEFUSE 3's and EXTEND's 6 s) were calibrated on
Tmax; they are applied to BAD unchanged (no conversion factor is invented),
so BAD > 6 s is a stricter rule than Tmax > 6 s: where the bolus is both
delayed and dispersed, the network's delay volumes are smaller. Outputs say
which map was thresholded (``DelayMap``: ``tmax`` or ``bad``), and the
reports write "BAD > 6 s", never "Tmax > 6 s", for the network.
docs/validation.md gives the measured difference on the phantom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .chunks import CHUNK_BYTES, read_slices, slice_chunks
from .prepare import prepare_curves

#: ischemic core: rCBF (CBF over the contralateral reference) below this fraction
CORE_RELATIVE_CBF = 0.30
#: delay thresholds whose volumes are reported, seconds (Tmax; BAD for the network)
DELAY_THRESHOLDS_S = (4.0, 6.0, 8.0, 10.0)
#: hypoperfused tissue (the mismatch's and the trials' Tmax > 6 s), seconds
HYPOPERFUSION_THRESHOLD_S = 6.0
#: the hypoperfusion intensity ratio is the volume above this delay over the hypoperfused volume
SEVERE_DELAY_THRESHOLD_S = 10.0
#: ways of reading a peak's time: the sampled maximum, or a parabola through it and its neighbours
PEAK_INTERPOLATIONS = ("sampled", "parabola")
#: the default (docs/validation.md says why)
DEFAULT_PEAK_INTERPOLATION = "sampled"


# ----------------------------------------------------------------------------------------------
# peak times


def peak_time(curves, dt, interpolation=DEFAULT_PEAK_INTERPOLATION, start_s=0.0):
    """Time of each curve's maximum, seconds.

    Parameters
    ----------
    curves : ndarray, shape (..., N)
        Curves on a uniform grid, time last (a residue for Tmax, a tissue
        concentration for TTP).
    dt : float
        Sampling interval, s.
    interpolation : {'sampled', 'parabola'}
        ``'sampled'``: the time of the largest sample (a multiple of ``dt``);
        ``'parabola'``: the vertex of the parabola through the largest sample
        and its two neighbours, ``i + (y[i-1] - y[i+1]) / (2 (y[i-1] - 2 y[i] + y[i+1]))``,
        kept within half a sample of ``i``; a peak on the first or last sample
        keeps the sampled time.
    start_s : float
        Time of the first sample (0 for a residue; the first frame's time for TTP).

    Returns
    -------
    ndarray, shape (...), float64

    Examples
    --------
    A parabola sampled every second with its vertex at 2.3 s:

    >>> t = np.arange(6.0)
    >>> y = 10 - (t - 2.3) ** 2
    >>> float(peak_time(y, 1.0)), round(float(peak_time(y, 1.0, "parabola")), 10)
    (2.0, 2.3)
    """
    if interpolation not in PEAK_INTERPOLATIONS:
        raise ValueError(f"Unknown peak interpolation {interpolation!r}; choose one of {', '.join(PEAK_INTERPOLATIONS)}.")
    curves = np.asarray(curves)
    n = curves.shape[-1]
    index = np.argmax(curves, axis=-1)
    position = index.astype(np.float64)
    if interpolation == "parabola" and n >= 3:
        inner = np.clip(index, 1, n - 2)[..., None]
        before, at, after = (np.take_along_axis(curves, inner + k, axis=-1)[..., 0].astype(np.float64)
                             for k in (-1, 0, 1))
        curvature = before - 2.0 * at + after
        refine = (index > 0) & (index < n - 1) & (curvature < 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            offset = np.where(refine, 0.5 * (before - after) / np.where(refine, curvature, -1.0), 0.0)
        position = position + np.clip(offset, -0.5, 0.5)
    return float(start_s) + position * float(dt)


def time_to_peak(tissue, frame_times, mask=None, interpolation=DEFAULT_PEAK_INTERPOLATION, chunk_size=65536):
    """Time to peak (TTP) of tissue concentration curves, seconds on the frames' clock.

    The time of each voxel's maximum concentration (:func:`peak_time`, the
    same reading as Tmax's), counted from the scan's time zero: the first
    frame's time plus the peak's offset, so with ``FrameTimesStart`` starting
    at 0 it is the time from the start of the acquisition.

    Parameters
    ----------
    tissue : ndarray, shape (..., N)
        Tissue concentration on a uniform grid (``prepare_curves(...).tissue``).
    frame_times : array_like, shape (N,)
        Uniform frame times, s.
    mask : ndarray of bool, shape (...), optional
        Voxels to compute (others 0); default all.
    interpolation : {'sampled', 'parabola'}
    chunk_size : int
        Voxels per step (bounds the temporaries).

    Returns
    -------
    ndarray, shape (...), float32

    Examples
    --------
    Two narrow Gaussian peaks (at 6 and 8.25 s) sampled every second from 2 s: the parabola
    moves the second from 8 s towards 8.25 s (a Gaussian this narrow is no parabola over 3 samples):

    >>> t = 2.0 + np.arange(10.0)
    >>> curves = np.stack([np.exp(-(t - 6.0) ** 2), np.exp(-(t - 8.25) ** 2)])
    >>> time_to_peak(curves, t).tolist(), np.round(time_to_peak(curves, t, interpolation="parabola"), 2).tolist()
    ([6.0, 8.0], [6.0, 8.16])
    """
    tissue = np.asarray(tissue)
    times = np.asarray(frame_times, dtype=np.float64)
    if times.ndim != 1 or times.size != tissue.shape[-1] or times.size < 2:
        raise ValueError(f"{times.size} frame times for curves of {tissue.shape[-1]} samples; give one time per frame.")
    steps = np.diff(times)
    if not np.allclose(steps, steps[0], rtol=1e-6, atol=1e-9) or steps[0] <= 0:
        raise ValueError("Time to peak needs uniformly spaced, increasing frame times; resample the curves first.")
    spatial = tissue.shape[:-1]
    flat = tissue.reshape(-1, tissue.shape[-1])
    index = np.flatnonzero(np.ones(spatial, bool) if mask is None else np.asarray(mask, bool).ravel())
    out = np.zeros(flat.shape[0], np.float32)
    for start in range(0, index.size, int(chunk_size)):
        rows = index[start:start + int(chunk_size)]
        out[rows] = peak_time(flat[rows], float(steps[0]), interpolation, start_s=float(times[0]))
    return out.reshape(spatial)


def series_time_to_peak(series, frame_times, aif_hu, mask=None, n_baseline_frames=None,
                        interpolation=DEFAULT_PEAK_INTERPOLATION, max_bytes=CHUNK_BYTES):
    """Time to peak (s) of a whole 4D HU series, read chunk by chunk of slices: the map, and the curves' preparation.

    Each chunk's voxels in ``mask`` go through
    :func:`ctp_nipype.perfusion.prepare.prepare_curves` (uniform grid, the
    baseline of ``n_baseline_frames`` frames, default detected once from the
    AIF) and :func:`time_to_peak`: every step works voxel by voxel, so the map
    is bitwise the one of ``time_to_peak(prepare_curves(series, ...).tissue, ...)``
    whatever ``max_bytes`` (tested). Memory: one chunk
    (:data:`~ctp_nipype.perfusion.chunks.CHUNK_BYTES`) and the 3D map; chunks
    without a voxel of the mask are not read.

    Parameters
    ----------
    series : array-like, shape (x, y, z, T)
        HU; a numpy array or nibabel's lazy proxy (:mod:`ctp_nipype.perfusion.chunks`).
    frame_times : array_like, shape (T,)
        Seconds (resampled to a uniform grid when not uniform, as for the deconvolution).
    aif_hu : array_like, shape (T,)
        The arterial curve, HU, baseline included.
    mask : ndarray of bool, shape (x, y, z), optional
        Voxels to compute (others 0); default all.
    n_baseline_frames : int, optional
    interpolation : {'sampled', 'parabola'}
    max_bytes : int
        The most bytes of float32 of one chunk of slices.

    Returns
    -------
    ttp : ndarray, shape (x, y, z), float32
    prepared : PreparedCurves
        The AIF's preparation (``tissue`` holds no voxel): grid, baseline frames, provenance (``describe()``).

    Examples
    --------
    >>> t = np.arange(12.0)
    >>> aif = 40 + 300 * np.exp(-((t - 5) ** 2) / 2)
    >>> series = np.zeros((1, 1, 3, 12)) + 40 + np.exp(-((t - [[[6], [7], [8]]]) ** 2))
    >>> ttp, prepared = series_time_to_peak(series, t, aif, max_bytes=1)
    >>> ttp.ravel().tolist(), prepared.n_baseline_frames
    ([6.0, 7.0, 8.0], 2)
    """
    shape = tuple(int(s) for s in series.shape)
    if len(shape) != 4:
        raise ValueError(f"Time to peak of a series needs a 4D (x, y, z, t) series, got shape {shape}.")
    mask = np.ones(shape[:3], bool) if mask is None else np.asarray(mask, bool)
    if mask.shape != shape[:3]:
        raise ValueError(f"The mask {mask.shape} and the series {shape[:3]} must have the same spatial shape.")
    # the AIF's preparation (and the baseline detected once, on the uniform grid) before any voxel is read
    head = prepare_curves(np.zeros((0, shape[3]), np.float32), frame_times, aif_hu, n_baseline_frames)
    ttp = np.zeros(shape[:3], np.float32)
    for z0, z1 in slice_chunks(shape, max_bytes):
        inside = mask[:, :, z0:z1]
        if not inside.any():
            continue
        chunk = read_slices(series, z0, z1)
        # the voxels in the chunk's memory order (x fastest for a NIfTI's): 7x faster than chunk[inside]
        order = "F" if chunk.flags.f_contiguous else "C"
        rows = np.flatnonzero(inside.ravel(order=order))
        curves = prepare_curves(chunk.reshape(-1, shape[3], order=order)[rows], frame_times, aif_hu,
                                head.n_baseline_frames)
        block = np.zeros(inside.shape, np.float32, order=order)
        block.reshape(-1, order=order)[rows] = time_to_peak(curves.tissue, curves.frame_times,
                                                            interpolation=interpolation)
        ttp[:, :, z0:z1] = block
    return ttp, head


# ----------------------------------------------------------------------------------------------
# relative maps


def relative_map(values, reference, mask=None):
    """A map divided by its contralateral reference value (1 = the reference), 0 outside ``mask``.

    >>> relative_map(np.array([20.0, 40.0, 10.0]), 40.0, np.array([True, True, False])).tolist()
    [0.5, 1.0, 0.0]
    """
    reference = float(reference)
    if not (math.isfinite(reference) and reference > 0):
        raise ValueError(
            f"The contralateral reference is {reference}; it must be a positive number (is the unaffected "
            "hemisphere's tissue perfused in this map?)."
        )
    relative = np.asarray(values, dtype=np.float64) / reference
    return relative if mask is None else np.where(np.asarray(mask, bool), relative, 0.0)


# ----------------------------------------------------------------------------------------------
# target mismatch


@dataclass(frozen=True)
class TargetMismatchCriteria:
    """A trial's target-mismatch profile: small core, enough mismatch ratio and volume.

    Attributes
    ----------
    name : str
    max_core_ml : float
        The core must be strictly below this volume, ml.
    min_ratio : float
        Mismatch ratio (hypoperfused / core volume) bound.
    ratio_inclusive : bool
        ``ratio >= min_ratio`` when True, ``ratio > min_ratio`` when False.
    min_mismatch_ml : float
        Mismatch volume (hypoperfused - core) bound, ml.
    mismatch_inclusive : bool
        ``>=`` when True, ``>`` when False.
    """

    name: str
    max_core_ml: float
    min_ratio: float
    ratio_inclusive: bool
    min_mismatch_ml: float
    mismatch_inclusive: bool

    def met(self, core_ml, mismatch_ratio, mismatch_ml):
        """Whether a scan meets the profile (a ratio of ``inf``, no core, passes the ratio criterion).

        >>> DEFUSE3.met(10.0, 1.8, 15.0), DEFUSE3.met(70.0, 3.0, 100.0), EXTEND.met(10.0, 1.2, 20.0)
        (True, False, False)
        """
        ratio_ok = mismatch_ratio >= self.min_ratio if self.ratio_inclusive else mismatch_ratio > self.min_ratio
        volume_ok = mismatch_ml >= self.min_mismatch_ml if self.mismatch_inclusive else mismatch_ml > self.min_mismatch_ml
        return bool(core_ml < self.max_core_ml and ratio_ok and volume_ok)

    def text(self, delay_name="Tmax", hypoperfusion_threshold_s=HYPOPERFUSION_THRESHOLD_S):
        """The criteria spelt out (the mismatch's delay map and threshold named).

        >>> DEFUSE3.text()
        'core < 70 ml, mismatch ratio >= 1.8, mismatch volume >= 15 ml (mismatch: Tmax > 6 s minus core)'
        """
        return (f"core < {self.max_core_ml:g} ml, mismatch ratio {'>=' if self.ratio_inclusive else '>'} "
                f"{self.min_ratio:g}, mismatch volume {'>=' if self.mismatch_inclusive else '>'} "
                f"{self.min_mismatch_ml:g} ml (mismatch: {delay_name} > {hypoperfusion_threshold_s:g} s minus core)")


#: DEFUSE 3 (Albers et al., NEJM 2018): core < 70 ml, ratio >= 1.8, mismatch >= 15 ml
DEFUSE3 = TargetMismatchCriteria("DEFUSE3", 70.0, 1.8, True, 15.0, True)
#: EXTEND (Ma et al., NEJM 2019): core < 70 ml, ratio > 1.2, mismatch > 10 ml
EXTEND = TargetMismatchCriteria("EXTEND", 70.0, 1.2, False, 10.0, False)
#: the flags reported, by key
TARGET_MISMATCH = {criteria.name: criteria for criteria in (DEFUSE3, EXTEND)}


def delay_label(delay_name):
    """How a delay map is written for readers: ``'Tmax'`` or ``'BAD'``.

    >>> delay_label("tmax"), delay_label("bad")
    ('Tmax', 'BAD')
    """
    return "BAD" if str(delay_name).lower() == "bad" else "Tmax"


def volume_key(threshold_s):
    """JSON key of the volume above a delay threshold.

    >>> volume_key(6.0), volume_key(4.5)
    ('DelayAbove6sVolume', 'DelayAbove4.5sVolume')
    """
    return f"DelayAbove{float(threshold_s):g}sVolume"


# ----------------------------------------------------------------------------------------------
# triage volumes


@dataclass
class TriageVolumes:
    """Core, delay volumes, mismatch and target-mismatch flags of one method's maps.

    Attributes
    ----------
    core, hypoperfused : ndarray of bool
        rCBF below the core fraction (and, with ``core_within_hypoperfused``,
        hypoperfused); delay above the hypoperfusion threshold.
    relative_cbf : ndarray
        CBF over the reference (1 = the reference), 0 outside the tissue.
    core_volume_ml, hypoperfused_volume_ml : float
    delay_volumes_ml : dict
        ``{threshold in s: volume in ml of tissue with delay > threshold}``.
    mismatch_volume_ml : float
        Hypoperfused minus core volume.
    mismatch_ratio : float
        Hypoperfused over core volume (voxel counts, so exact; ``inf`` without core).
    hypoperfusion_intensity_ratio : float
        Volume with delay > 10 s over the volume with delay > 6 s (NaN when the latter is 0).
    target_mismatch : dict
        ``{'DEFUSE3': bool, 'EXTEND': bool}``.
    parameters : dict
        Thresholds and choices, for the JSON sidecar.
    """

    core: np.ndarray
    hypoperfused: np.ndarray
    relative_cbf: np.ndarray
    core_volume_ml: float
    hypoperfused_volume_ml: float
    delay_volumes_ml: dict
    mismatch_volume_ml: float
    mismatch_ratio: float
    hypoperfusion_intensity_ratio: float
    target_mismatch: dict
    parameters: dict = field(default_factory=dict)

    def summary(self):
        """JSON-ready dict: volumes (ml), ratios, flags with their criteria, thresholds."""
        delay_name = self.parameters.get("DelayMap", "tmax")
        out = {
            "CoreVolume": self.core_volume_ml,
            "HypoperfusedVolume": self.hypoperfused_volume_ml,
            "MismatchVolume": self.mismatch_volume_ml,
            "MismatchRatio": _finite_or_none(self.mismatch_ratio),
            **{volume_key(t): v for t, v in self.delay_volumes_ml.items()},
            "HypoperfusionIntensityRatio": _finite_or_none(self.hypoperfusion_intensity_ratio),
            **{name: flag for name, flag in self.target_mismatch.items()},
            "TargetMismatchCriteria": {
                name: TARGET_MISMATCH[name].text(delay_label(delay_name),
                                                 self.parameters.get("DelayThreshold", HYPOPERFUSION_THRESHOLD_S))
                for name in self.target_mismatch},
        }
        units = {"CoreVolume": "ml", "HypoperfusedVolume": "ml", "MismatchVolume": "ml", "MismatchRatio": "1",
                 **{volume_key(t): "ml" for t in self.delay_volumes_ml}, "HypoperfusionIntensityRatio": "1"}
        out["Units"] = units
        out.update(self.parameters)
        return out


def _finite_or_none(value):
    return float(value) if math.isfinite(value) else None


def as_maps(cbf, delay, mask, delay_name="tmax", mask_name="brain mask"):
    """CBF and delay as float64 arrays and the mask as bool, checked to share one shape (else a one-line error).

    >>> as_maps(np.ones(2), np.ones(3), np.ones(2))
    Traceback (most recent call last):
    ...
    ValueError: CBF (2,), tmax (3,) and brain mask (2,) must have the same shape.
    """
    cbf = np.asarray(cbf, dtype=np.float64)
    delay = np.asarray(delay, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if cbf.shape != mask.shape or delay.shape != mask.shape:
        raise ValueError(f"CBF {cbf.shape}, {delay_name} {delay.shape} and {mask_name} {mask.shape} must have the same shape.")
    return cbf, delay, mask


def triage_volumes(
    cbf,
    delay,
    tissue,
    reference_cbf,
    voxel_volume_ml,
    core_relative_cbf=CORE_RELATIVE_CBF,
    delay_thresholds_s=DELAY_THRESHOLDS_S,
    hypoperfusion_threshold_s=HYPOPERFUSION_THRESHOLD_S,
    severe_threshold_s=SEVERE_DELAY_THRESHOLD_S,
    core_within_hypoperfused=True,
    delay_name="tmax",
):
    """The triage measures of one method's maps: the one thresholding path of masks and volumes.

    * core = tissue with ``cbf / reference_cbf < core_relative_cbf`` (and,
      with ``core_within_hypoperfused``, delay above ``hypoperfusion_threshold_s``,
      so that low-flow tissue with normal arrival, such as leftover CSF, is not core);
    * hypoperfused = tissue with ``delay > hypoperfusion_threshold_s``;
    * the volume of tissue with ``delay >`` each of ``delay_thresholds_s``;
    * mismatch volume = hypoperfused - core volume; mismatch ratio = hypoperfused / core;
    * hypoperfusion intensity ratio = volume(delay > ``severe_threshold_s``) / hypoperfused volume;
    * the flags of :data:`TARGET_MISMATCH` (DEFUSE 3, EXTEND).

    Parameters
    ----------
    cbf : ndarray, shape (x, y, z)
        CBF, ml/100 g/min (any units: only its ratio to ``reference_cbf`` is used).
    delay : ndarray, shape (x, y, z)
        Tmax (SVD) or BAD (network), s.
    tissue : ndarray of bool
        Voxels counted (the brain minus CSF and vessels); non-finite voxels are left out.
    reference_cbf : float
        The contralateral reference CBF
        (:func:`ctp_nipype.perfusion.stats.contralateral_reference`), same units as ``cbf``.
    voxel_volume_ml : float
    core_relative_cbf : float
        Core threshold as a fraction of the reference (0.30).
    delay_thresholds_s : sequence of float
        Delays whose volumes are reported (4, 6, 8, 10 s).
    hypoperfusion_threshold_s, severe_threshold_s : float
        The hypoperfused mask's threshold (6 s) and the numerator's of the
        hypoperfusion intensity ratio (10 s); both are reported among the volumes.
    core_within_hypoperfused : bool
    delay_name : {'tmax', 'bad'}
        Which map ``delay`` is (recorded, and written in the criteria's text).

    Returns
    -------
    TriageVolumes

    Examples
    --------
    Ten voxels of 1 ml: two core voxels (rCBF 0.2) delayed 12 s, three more delayed 7 s:

    >>> cbf = np.array([10, 10, 40, 40, 40, 50, 50, 50, 50, 50.0])
    >>> tmax = np.array([12, 12, 7, 7, 7, 0, 0, 0, 0, 0.0])
    >>> out = triage_volumes(cbf, tmax, np.ones(10, bool), 50.0, 1.0)
    >>> out.core_volume_ml, out.hypoperfused_volume_ml, out.mismatch_volume_ml, out.mismatch_ratio
    (2.0, 5.0, 3.0, 2.5)
    >>> out.delay_volumes_ml, out.hypoperfusion_intensity_ratio, out.target_mismatch
    ({4.0: 5.0, 6.0: 5.0, 8.0: 2.0, 10.0: 2.0}, 0.4, {'DEFUSE3': False, 'EXTEND': False})
    """
    cbf, delay, tissue = as_maps(cbf, delay, tissue, delay_name, "tissue mask")
    if not 0 < core_relative_cbf < 1:
        raise ValueError(f"core_relative_cbf is a fraction in (0, 1), got {core_relative_cbf}.")
    if not (math.isfinite(voxel_volume_ml) and voxel_volume_ml > 0):
        raise ValueError(f"voxel_volume_ml must be a positive number of ml, got {voxel_volume_ml}.")
    thresholds = sorted({float(t) for t in delay_thresholds_s}
                        | {float(hypoperfusion_threshold_s), float(severe_threshold_s)})
    tissue = tissue & np.isfinite(cbf) & np.isfinite(delay)
    relative = relative_map(cbf, reference_cbf, tissue)
    hypoperfused = tissue & (delay > hypoperfusion_threshold_s)
    core = tissue & (relative < core_relative_cbf)
    if core_within_hypoperfused:
        core &= hypoperfused
    counts = {t: int(np.count_nonzero(tissue & (delay > t))) for t in thresholds}
    n_core, n_hypo = int(np.count_nonzero(core)), int(np.count_nonzero(hypoperfused))
    core_ml, hypo_ml = n_core * voxel_volume_ml, n_hypo * voxel_volume_ml
    mismatch_ml = (n_hypo - n_core) * voxel_volume_ml
    ratio = n_hypo / n_core if n_core else math.inf
    hir = counts[float(severe_threshold_s)] / n_hypo if n_hypo else math.nan
    flags = {name: criteria.met(core_ml, ratio, mismatch_ml) for name, criteria in TARGET_MISMATCH.items()}
    return TriageVolumes(
        core=core,
        hypoperfused=hypoperfused,
        relative_cbf=relative,
        core_volume_ml=float(core_ml),
        hypoperfused_volume_ml=float(hypo_ml),
        delay_volumes_ml={t: float(n * voxel_volume_ml) for t, n in counts.items()},
        mismatch_volume_ml=float(mismatch_ml),
        mismatch_ratio=float(ratio),
        hypoperfusion_intensity_ratio=float(hir),
        target_mismatch=flags,
        parameters={
            "CoreRelativeCBFThreshold": float(core_relative_cbf),
            "DelayThreshold": float(hypoperfusion_threshold_s),
            "DelayThresholds": thresholds,
            "SevereDelayThreshold": float(severe_threshold_s),
            "DelayMap": delay_name,
            "CoreWithinHypoperfused": bool(core_within_hypoperfused),
        },
    )
