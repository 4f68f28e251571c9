"""Rigid motion correction of a CTP series (SimpleITK).

Every frame is registered rigidly (3 translations, 3 rotations) to a
reference, the mean of the pre-bolus frames, and resampled onto it:

* metric: mean squares by default. CT is calibrated (HU), so unenhanced
  anatomy keeps its values from frame to frame, and the contrast change is
  handled by the metric mask, which leaves out the voxels that enhance
  strongly during the scan (vessels: soft-tissue HU in the reference, rising
  by more than ``enhancement_hu`` later) and the air around the head. On the
  digital phantom's thick slabs mean squares recovered every parameter within
  0.35 mm / 0.35 degrees where Mattes mutual information (``metric='mattes'``,
  robust to any monotonic intensity change) drifted by degrees in the
  out-of-plane rotations; correlation is the third choice;
* each frame registered on a grid binned in-plane to about 2 mm
  (:data:`REGISTRATION_VOXEL_MM`; a clinical scan's 0.47-mm pixels against
  its 5-mm slices), multi-resolution on that grid (shrink factors 4, 2, 1
  with Gaussian smoothing), the metric sampled on a regular grid of at most
  :data:`MAX_METRIC_SAMPLES` points per level, a regular-step gradient
  descent, each frame initialised with the previous frame's result (head
  motion is continuous), and the transform found applied to the frame at
  full resolution.

Parameters are reported per frame as ``(trans_x, trans_y, trans_z)`` in mm
and ``(rot_x, rot_y, rot_z)`` in degrees, in the axes of the array (x, y, z =
the NIfTI's voxel axes, scaled to mm by the voxel size), rotations about the
centre of the volume, composed as ``R = Rz @ Ry @ Rx``:
``p -> R (p - c) + c + t``. The transform ``T`` maps a point of the reference onto
the same anatomy in the frame: a head that moved by +2 mm along x gives
``trans_x = +2``. Framewise displacement is that of Power et al. (2012): the
sum of the absolute frame-to-frame changes of the translations and of the
rotations converted to arc length on a sphere of 50 mm radius.

Registration cannot restore what moved out of a thin slab, and linear
resampling smears bone edges: after correction, voxels by the skull still
jump by hundreds of HU in the frames where the head was displaced. Those
transient jumps look like boluses, large and late, and win the automatic AIF
and VOF selection and the mask fits (on the digital phantom with motion they
took the AIF out of the artery in 4 of 8 seeds). So frames displaced from the
reference by more than a threshold (:func:`displacement_from_reference`,
:func:`censor_frames`) are left out of those steps; :func:`bridge_frames`
replaces them by linear interpolation in time for steps that need every frame.
The deconvolution still reads every frame as measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .chunks import CHUNK_BYTES, frame_extremes, iter_frames, iter_slices, read_frame, slice_chunks
from .timing import interpolate_in_time

#: column names of the motion-parameter table, units in the names
PARAMETER_NAMES = ("trans_x_mm", "trans_y_mm", "trans_z_mm", "rot_x_deg", "rot_y_deg", "rot_z_deg")
#: head radius (mm) that converts rotations to displacement (Power et al. 2012)
FD_RADIUS_MM = 50.0


def framewise_displacement(parameters, radius_mm=FD_RADIUS_MM):
    """Framewise displacement (Power et al. 2012) in mm; 0 for the first frame.

    ``FD_i = sum |d trans_i| + radius * sum |d rot_i|`` with rotations in radians.

    Parameters
    ----------
    parameters : ndarray, shape (T, 6)
        Translations in mm then rotations in degrees, per frame.
    radius_mm : float
        Radius of the sphere on which rotations become displacements.

    Examples
    --------
    >>> p = np.zeros((3, 6)); p[1, 0] = 1.0; p[2, 3] = np.degrees(0.01)
    >>> framewise_displacement(p).round(3).tolist()
    [0.0, 1.0, 1.5]
    """
    return np.concatenate([[0.0], _displacement(np.diff(_checked(parameters), axis=0), radius_mm)])


def _checked(parameters):
    parameters = np.asarray(parameters, dtype=float)
    if parameters.ndim != 2 or parameters.shape[1] != 6:
        raise ValueError(f"Motion parameters must have shape (T, 6), got {parameters.shape}.")
    return parameters


def _displacement(rows, radius_mm):
    """``sum |translations| + radius * sum |rotations in radians|`` of each row."""
    rows = np.abs(rows)
    return rows[:, :3].sum(axis=1) + radius_mm * np.radians(rows[:, 3:]).sum(axis=1)


def displacement_from_reference(parameters, radius_mm=FD_RADIUS_MM):
    """Displacement of every frame from the reference, in mm.

    The measure of :func:`framewise_displacement` applied to the parameters
    themselves instead of their frame-to-frame changes:
    ``D_i = sum |trans_i| + radius * sum |rot_i|`` (rotations in radians). A head
    that moves away and back over a few frames has a large FD only at the
    turns, but a large ``D`` in every displaced frame.

    Examples
    --------
    >>> p = np.zeros((3, 6)); p[1, 0] = 1.0; p[2, 3] = np.degrees(0.01)
    >>> displacement_from_reference(p).round(3).tolist()
    [0.0, 1.0, 0.5]
    """
    return _displacement(_checked(parameters), radius_mm)


#: frames displaced more than this from the reference (mm) are left out of AIF/VOF selection and mask fits;
#: the registration's own scatter on still frames of the phantoms is 0.10-0.34 mm, the injected excursions'
#: frames 2.2-6.7 mm (small phantom, seeds 0-7; benchmarks/studies/motion_selection.py)
MAX_DISPLACEMENT_MM = 0.5


def censor_frames(parameters, max_displacement_mm=MAX_DISPLACEMENT_MM, radius_mm=FD_RADIUS_MM):
    """Frames displaced more than ``max_displacement_mm`` from the reference (boolean, one per frame).

    Examples
    --------
    >>> p = np.zeros((4, 6)); p[2, 1] = 0.8
    >>> censor_frames(p).tolist()
    [False, False, True, False]
    """
    if not max_displacement_mm > 0:
        raise ValueError(f"max_displacement_mm must be positive, got {max_displacement_mm}.")
    return displacement_from_reference(parameters, radius_mm) > max_displacement_mm


def bridge_frames(series, censored):
    """A copy of ``series`` whose censored frames are interpolated linearly in time.

    Each censored frame becomes the linear interpolation, frame index by frame
    index, between the nearest kept frames before and after it; censored frames
    at either end take the nearest kept frame
    (:func:`ctp_nipype.perfusion.timing.interpolate_in_time`, all voxels at once).

    Parameters
    ----------
    series : ndarray, shape (..., T)
        Time last.
    censored : array_like of bool, shape (T,)
        Frames to replace; at least one frame must be kept.

    Returns
    -------
    ndarray, float32, same shape as ``series``

    Examples
    --------
    >>> curve = np.array([0.0, 1.0, 500.0, 900.0, 4.0, 5.0, 700.0])
    >>> bridge_frames(curve, [False, False, True, True, False, False, True]).tolist()
    [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 5.0]
    """
    series = np.asarray(series, dtype=np.float32)
    censored = np.asarray(censored, dtype=bool)
    n_frames = series.shape[-1]
    if censored.shape != (n_frames,):
        raise ValueError(f"Need one censoring flag per frame ({n_frames}), got shape {censored.shape}.")
    kept = np.flatnonzero(~censored)
    if kept.size == 0:
        raise ValueError("Every frame is censored; nothing is left to interpolate from.")
    if kept.size == n_frames:
        return series.copy()
    return interpolate_in_time(series[..., kept], kept, np.arange(n_frames))


#: bone is above this HU (cortical bone 1000-2000 HU; contrast-filled arteries seldom reach it)
BONE_HU = 700.0
#: a skull surface displaced by more than this (mm, mean over the surface) in some frame: the head moved.
#: Still small phantoms give 0.044-0.057 mm (8 HU noise), moving ones 0.65-1.32 mm (seeds 0-7,
#: benchmarks/studies/motion_selection.py)
HEAD_MOTION_MM = 0.25


def bone_surface_displacement(series, spacing, bone_hu=BONE_HU, min_bone_voxels=200, max_bytes=CHUNK_BYTES):
    """Mean displacement (mm) of the skull's surface in every frame, from the images alone (no registration).

    Each frame's bone (HU above ``bone_hu``) is compared with the bone present
    in most frames. A rigid shift ``d`` of a surface of area ``S`` sweeps a
    volume of about ``mean |d . n| * S``, so the voxels that changed, times the
    voxel volume, over the surface area of the bone, is the mean displacement
    of the surface along its normals. A cheap check, before any registration,
    of whether the head moved during the scan.

    Parameters
    ----------
    series : array-like, shape (x, y, z, T)
        Series in HU: an array or a lazy proxy, read in chunks of slices (:mod:`ctp_nipype.perfusion.chunks`).
    spacing : array_like (3,)
        Voxel size in mm.
    bone_hu : float
        Threshold of bone.
    min_bone_voxels : int
        With less bone than this (a skull-stripped or tightly cropped scan) there is nothing to measure.
    max_bytes : int
        The largest chunk read at once; the result does not depend on it.

    Returns
    -------
    ndarray (T,) of float, mm, or None when the scan holds too little bone

    Examples
    --------
    A cube of bone that moves by one 1-mm voxel along x in the second frame:
    its two x faces (a third of its surface) move by 1 mm.

    >>> series = np.zeros((20, 20, 20, 3), np.float32)
    >>> series[5:15, 5:15, 5:15, [0, 2]] = 1000.0
    >>> series[6:16, 5:15, 5:15, 1] = 1000.0
    >>> bone_surface_displacement(series, (1.0, 1.0, 1.0), min_bone_voxels=10).round(3).tolist()
    [0.0, 0.333, 0.0]
    """
    if len(series.shape) != 4:
        raise ValueError(f"Need a 4D series (x, y, z, T), got shape {series.shape}.")
    spacing = np.asarray(spacing, dtype=float)[:3]
    usual = np.zeros(series.shape[:3], bool)
    changed = np.zeros(series.shape[3], np.int64)
    n_frames = series.shape[3]
    for z0, z1 in slice_chunks(series.shape, max_bytes):  # the series, chunk by chunk of slices
        # each chunk's frames twice, as views where the series is a mapped NIfTI (chunks.iter_frames): the
        # frames in which a voxel is bone, then, against the bone of most frames, each frame's changed voxels
        count = np.zeros(series.shape[:2] + (z1 - z0,), np.int32)
        for frame in iter_frames(series, z0, z1):
            count += frame > bone_hu
        usual[:, :, z0:z1] = usual_chunk = 2 * count > n_frames  # bone in most frames
        for t, frame in enumerate(iter_frames(series, z0, z1)):
            changed[t] += np.count_nonzero((frame > bone_hu) != usual_chunk)
    if usual.sum() < min_bone_voxels:
        return None
    area = 0.0
    for axis in range(3):  # faces between bone and the rest, along each axis
        faces = np.count_nonzero(np.diff(usual.astype(np.int8), axis=axis))
        area += faces * np.prod(np.delete(spacing, axis))
    return changed * float(np.prod(spacing)) / area


def _to_sitk(volume, spacing):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(volume, np.float32).transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    return image


def _from_sitk(image):
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def volume_centre_mm(shape, spacing):
    """Physical centre (mm) of a volume whose first voxel sits at the origin."""
    return (np.asarray(shape[:3], float) - 1.0) / 2.0 * np.asarray(spacing, float)


def rigid_transform(parameters, centre_mm):
    """SimpleITK Euler3DTransform from ``(tx, ty, tz [mm], rx, ry, rz [deg])`` about ``centre_mm``."""
    import SimpleITK as sitk

    transform = sitk.Euler3DTransform()
    transform.SetComputeZYX(True)  # R = Rz @ Ry @ Rx
    transform.SetCenter([float(c) for c in centre_mm])
    p = np.asarray(parameters, float)
    transform.SetRotation(*np.radians(p[3:]).tolist())
    transform.SetTranslation(p[:3].tolist())
    return transform


def apply_rigid(volume, parameters, spacing, fill_value=None, order=1, inverse=False):
    """Resample ``volume`` through the rigid transform: ``out(x) = volume(T(x))``.

    With the parameters that :func:`register_series` reports for a frame this
    undoes the frame's motion. With ``inverse=True`` it computes
    ``volume(T^-1(x))``: the reference moved by ``parameters``, i.e. a frame
    for which :func:`register_series` reports ``parameters`` (how motion is
    simulated).

    Parameters
    ----------
    volume : ndarray (x, y, z)
    parameters : array_like (6,)
        Translations (mm), rotations (degrees).
    spacing : array_like (3,)
        Voxel size in mm.
    fill_value : float, optional
        Value outside the field of view (default the volume's minimum).
    order : int
        0 nearest neighbour, 1 linear.
    inverse : bool
        Resample through the inverse transform.
    """
    import SimpleITK as sitk

    volume = np.asarray(volume, np.float32)
    image = _to_sitk(volume, spacing)
    transform = rigid_transform(parameters, volume_centre_mm(volume.shape, spacing))
    if inverse:
        transform = transform.GetInverse()
    fill = float(volume.min()) if fill_value is None else float(fill_value)
    interpolator = sitk.sitkLinear if order == 1 else sitk.sitkNearestNeighbor
    return _from_sitk(sitk.Resample(image, image, transform, interpolator, fill))


class NonFiniteSeriesError(ValueError):
    """A series given to :func:`register_series` holds ``count`` NaN or infinite values (found before any
    registration)."""

    def __init__(self, count):
        super().__init__(f"the series holds {count} NaN or infinite values; motion correction needs finite HU in "
                         "every voxel and frame")
        self.count = count


@dataclass
class MotionCorrection:
    """Result of :func:`register_series`.

    Attributes
    ----------
    corrected : ndarray (x, y, z, T), float32, or None
        Every frame resampled onto the reference (None when they went to a callable ``out``).
    parameters : ndarray (T, 6)
        ``PARAMETER_NAMES``: translations in mm, rotations in degrees.
    framewise_displacement : ndarray (T,), mm
    reference : ndarray (x, y, z)
        Mean of the pre-bolus frames.
    metric_values : ndarray (T,)
        Final metric value per frame (lower is better).
    """

    corrected: np.ndarray
    parameters: np.ndarray
    framewise_displacement: np.ndarray
    reference: np.ndarray
    metric_values: np.ndarray
    #: set by :func:`correct_motion`: mm from the reference per frame, the censored frames and the settings
    displacement: np.ndarray | None = None
    censored: np.ndarray | None = None
    censoring_threshold_mm: float | None = None
    n_baseline_frames: int | None = None
    metric: str | None = None

    def columns(self, frame_times):
        """The motion TSV's columns: time, the parameters, framewise and reference displacement, censored (0/1)."""
        columns = {"time": np.asarray(frame_times, dtype=float)}
        columns.update({name: self.parameters[:, i] for i, name in enumerate(PARAMETER_NAMES)})
        columns["framewise_displacement_mm"] = self.framewise_displacement
        columns["displacement_mm"] = self.displacement
        columns["censored"] = self.censored.astype(int)
        return columns

    def sidecar(self):
        """The series sidecar's ``MotionCorrection`` entry."""
        return {
            "Method": f"rigid 3D registration (SimpleITK), multi-resolution 4-2-1 on a grid binned to about "
                      f"{REGISTRATION_VOXEL_MM:g} mm in-plane, applied at full resolution",
            "Metric": self.metric,
            "ReferenceFrames": int(self.n_baseline_frames),
            "MaxFramewiseDisplacementMM": float(self.framewise_displacement.max()),
            "MaxDisplacementFromReferenceMM": float(self.displacement.max()),
            "CensoringThresholdMM": float(self.censoring_threshold_mm),
            "CensoredFrames": np.flatnonzero(self.censored).tolist(),
        }


def registration_mask(series, reference, enhancement_hu=100.0, soft_tissue_hu=(-100.0, 150.0), air_hu=-500.0):
    """Voxels that drive the registration: the head minus strongly enhancing vessels.

    A voxel is left out when it is air (reference below ``air_hu``, after a
    2-voxel dilation of the head) or when it is soft tissue in the reference
    and rises by more than ``enhancement_hu`` in some frame (a vessel filling
    with contrast). Bone edges, where motion alone changes HU by hundreds,
    are not soft tissue in the reference and stay in.

    ``series`` is the 4D series (any array-like, read chunk by chunk) or its
    largest value over time per voxel (3D, :func:`.chunks.frame_extremes`).
    """
    from scipy import ndimage

    reference = np.asarray(reference, np.float32)
    head = ndimage.binary_dilation(reference > air_hu, iterations=2)
    soft = (reference >= soft_tissue_hu[0]) & (reference <= soft_tissue_hu[1])
    peak = series if len(series.shape) == 3 else frame_extremes(series)[0]
    rise = np.asarray(peak, np.float32) - reference
    return head & ~(soft & (rise > enhancement_hu))


#: in-plane voxel size (mm) of the grid on which frames are registered: a clinical scan's 0.47-mm pixels are
#: binned 4 x 4 (to 1.88 mm, against 5-mm slices) before registration and the transform found is applied to the
#: full-resolution frame; grids already near 2 mm (the demo phantom's 1.875 mm) are registered as they are
REGISTRATION_VOXEL_MM = 2.0
#: the metric samples at most this many points per pyramid level (a fifth of a clinical scan's masked voxels
#: would be over a million at full resolution, 37,000 on the binned grid): on the 512 x 512 x 24 x 40 moving
#: phantom 8,000 regular samples recovered every frame's motion within 0.035 mm / 0.086 degrees
MAX_METRIC_SAMPLES = 8000


def registration_bins(spacing, voxel_mm=REGISTRATION_VOXEL_MM):
    """Voxels binned together along each axis so that each side of the registration grid is about ``voxel_mm``.

    >>> registration_bins((0.47, 0.47, 5.0)), registration_bins((1.875, 1.875, 5.0))
    ((4, 4, 1), (1, 1, 1))
    """
    return tuple(max(1, int(round(voxel_mm / float(s)))) for s in spacing)


def itk_threads(n_threads=None):
    """ITK threads for the registration: ``n_threads``, else SimpleITK's global default capped by this
    process's CPUs (``os.sched_getaffinity``: a container or a batch job may hold fewer than the machine's)."""
    import os

    import SimpleITK as sitk

    if n_threads is not None:
        if int(n_threads) < 1:
            raise ValueError(f"n_threads must be at least 1, got {n_threads}.")
        return int(n_threads)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(), cpus))


def _binned(volume, spacing, bins):
    """A SimpleITK image of ``volume`` binned by ``bins`` (each voxel the mean of its bin; physical space kept)."""
    import SimpleITK as sitk

    image = _to_sitk(volume, spacing)
    return sitk.BinShrink(image, list(bins)) if max(bins) > 1 else image


def _metric_fractions(fractions, shrink_factors, grid_shape, n_masked, max_samples):
    """Per-level sampling fractions, each lowered so that the level samples about ``max_samples`` masked voxels
    at most (ITK draws ``fraction * voxels of the level`` points and keeps those inside the mask)."""
    capped = []
    for fraction, shrink in zip(fractions, shrink_factors):
        level_voxels = np.prod([max(1, n // int(shrink)) for n in grid_shape])
        masked = max(1.0, n_masked * level_voxels / np.prod(grid_shape))
        capped.append(float(min(fraction, max_samples / masked)))
    return capped


def register_series(
    series,
    spacing,
    n_baseline_frames,
    shrink_factors=(4, 2, 1),
    smoothing_sigmas_mm=(4.0, 2.0, 0.0),
    sampling_fraction=(0.5, 0.3, 0.2),
    n_iterations=300,
    histogram_bins=32,
    metric="meansquares",
    mask=None,
    seed=1,
    progress=None,
    registration_voxel_mm=REGISTRATION_VOXEL_MM,
    max_samples=MAX_METRIC_SAMPLES,
    n_threads=None,
    out=None,
    sampling_strategy="regular",
):
    """Rigidly register every frame to the mean of the pre-bolus frames.

    Each frame is registered on a grid binned in-plane to about
    ``registration_voxel_mm`` (:func:`registration_bins`; the reference, its
    mask and every frame alike, the physical space unchanged), through the
    multi-resolution pyramid on that grid, and the transform found resamples
    the frame at full resolution. Frames are handled one at a time: beside
    the series and the output, memory holds the reference, its mask and a
    few frames.

    Parameters
    ----------
    series : ndarray, shape (x, y, z, T)
        Series in HU.
    spacing : array_like (3,)
        Voxel size in mm.
    n_baseline_frames : int
        Number of pre-bolus frames averaged into the reference.
    shrink_factors, smoothing_sigmas_mm : sequences
        The multi-resolution pyramid on the registration grid, coarse to fine (sigmas in mm).
    sampling_fraction : float or sequence of float
        Fraction of the masked voxels that the metric samples, one per level
        or one for all, at most ``max_samples`` points per level. Too few
        samples make the metric noisy and the rotations imprecise (0.1 of
        random samples gave errors near 1 degree on a 48^3 test head).
    n_iterations : int
        Maximum optimizer iterations per level. The optimizer normally stops on
        its minimum step well before 300; 100 cut some frames short, and where
        it cut them then depended on the number of threads (errors of 0.2-1.4
        degrees on the demo phantom across 1-8 threads, 0.17 at 300 for all).
    histogram_bins : int
        Bins of the Mattes mutual information.
    metric : {'meansquares', 'mattes', 'correlation'}
        Similarity metric (see the module's docstring).
    mask : ndarray of bool (x, y, z), optional
        Metric mask on the reference (default :func:`registration_mask`).
    seed : int
        Seed (>= 1) of the metric's random sampling: the same seed gives the same
        result. SimpleITK reads 0 as "seed from the wall clock", which made every
        run sample other points (on the demo phantom the largest error moved
        between 0.12 and 0.21 mm from run to run, and once reached 0.77 mm).
    progress : callable, optional
        Called with ``(frame_index, n_frames)`` after each frame.
    registration_voxel_mm : float
        In-plane voxel size (mm) that the registration grid is binned to.
    max_samples : int
        Most points the metric samples per level.
    sampling_strategy : {'regular', 'random'}
        Where the samples lie: on a regular grid, each point jittered within its
        cell, or anywhere at random (both drawn from ``seed``). At 8,000 points
        the regular grid's largest errors on the demo phantom's moved frames
        (seeds 0-7) were 0.120 mm / 0.230 degrees, random points' 0.184 mm /
        0.569 degrees (``benchmarks/bench_motion.py --demo-seeds 8``).
    n_threads : int, optional
        ITK threads (default :func:`itk_threads`). ITK's thread pool is used
        during the call (SimpleITK's default threader starts new threads for
        every metric evaluation: twice the time per frame here).
    out : ndarray (x, y, z, T), float32, or callable, optional
        Where the corrected frames go (default a new array); may be ``series``
        itself when that is float32, to correct it in place. A callable is
        called with each corrected frame (x, y, z), float32, in order (e.g.
        :meth:`ctp_nipype.slabs.FrameWriter.write`) and the frames are not
        kept (``corrected`` is None): with a ``series`` read lazily
        (:mod:`.chunks`), memory then holds the reference, the masks and a
        few frames whatever the scan's size.

    Returns
    -------
    MotionCorrection
    """
    import SimpleITK as sitk

    if not hasattr(series, "shape"):
        series = np.asarray(series)
    if len(series.shape) != 4:
        raise ValueError(f"Motion correction needs a 4D series, got shape {tuple(series.shape)}.")
    n_frames = series.shape[3]
    n_base = int(n_baseline_frames)
    if not 1 <= n_base <= n_frames:
        raise ValueError(f"n_baseline_frames must be between 1 and {n_frames}, got {n_base}.")
    if len(shrink_factors) != len(smoothing_sigmas_mm):
        raise ValueError("Give one smoothing sigma per shrink factor.")
    if metric not in ("meansquares", "mattes", "correlation"):
        raise ValueError(f"metric must be 'meansquares', 'mattes' or 'correlation', got {metric!r}.")
    if sampling_strategy not in ("regular", "random"):
        raise ValueError(f"sampling_strategy must be 'regular' or 'random', got {sampling_strategy!r}.")
    if int(seed) < 1:
        raise ValueError(f"seed must be at least 1 (SimpleITK reads 0 as a seed from the clock), got {seed}.")
    if out is not None and not callable(out) and (out.shape != tuple(series.shape) or out.dtype != np.float32):
        raise ValueError(f"out must be a float32 array of the series' shape {tuple(series.shape)} or a callable, "
                         f"got {out.dtype} {out.shape}.")
    threads = itk_threads(n_threads)
    fractions = np.broadcast_to(np.asarray(sampling_fraction, float), (len(shrink_factors),)).tolist()
    reference = read_frame(series, 0).copy()
    for frame in range(1, n_base):
        reference += read_frame(series, frame)
    reference /= np.float32(n_base)
    peak, low = frame_extremes(series)  # one pass: the vessels' rise for the mask, the fill value
    if not (np.isfinite(low) and np.isfinite(peak).all()):
        n_bad = sum(int(np.count_nonzero(~np.isfinite(chunk))) for _, _, chunk in iter_slices(series))
        raise NonFiniteSeriesError(n_bad)
    if mask is None:
        mask = registration_mask(peak, reference)
    del peak
    bins = registration_bins(spacing, registration_voxel_mm)
    fixed = _binned(reference, spacing, bins)
    fixed_mask = _binned(np.asarray(mask, np.float32), spacing, bins) > 0.5  # UInt8
    n_masked = int(sitk.GetArrayViewFromImage(fixed_mask).sum())
    fractions = _metric_fractions(fractions, shrink_factors, fixed.GetSize(), n_masked, max_samples)
    centre = volume_centre_mm(series.shape, spacing)
    fill = float(low)

    parameters = np.zeros((n_frames, 6))
    metric_values = np.zeros(n_frames)
    corrected = None
    if not callable(out):
        if out is None:
            layout = "C" if isinstance(series, np.ndarray) and not series.flags.f_contiguous else "F"
            out = np.empty(tuple(series.shape), np.float32, order=layout)
        corrected = out
    previous = np.zeros(6)
    default_threader = sitk.ProcessObject.GetGlobalDefaultThreader()
    sitk.ProcessObject.SetGlobalDefaultThreader("Pool")
    try:
        resampler = sitk.ResampleImageFilter()
        resampler.SetNumberOfThreads(threads)
        resampler.SetInterpolator(sitk.sitkLinear)
        resampler.SetDefaultPixelValue(fill)
        for frame in range(n_frames):
            full = _to_sitk(read_frame(series, frame), spacing)
            moving = sitk.BinShrink(full, list(bins)) if max(bins) > 1 else full
            method = sitk.ImageRegistrationMethod()
            method.SetNumberOfThreads(threads)
            if metric == "mattes":
                method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(histogram_bins))
            elif metric == "meansquares":
                method.SetMetricAsMeanSquares()
            else:
                method.SetMetricAsCorrelation()
            method.SetMetricSamplingStrategy(method.REGULAR if sampling_strategy == "regular" else method.RANDOM)
            method.SetMetricSamplingPercentagePerLevel(fractions, int(seed))
            method.SetMetricFixedMask(fixed_mask)
            method.SetInterpolator(sitk.sitkLinear)
            method.SetOptimizerAsRegularStepGradientDescent(
                learningRate=1.0, minStep=1e-4, numberOfIterations=int(n_iterations), relaxationFactor=0.6,
                gradientMagnitudeTolerance=1e-8,
            )
            method.SetOptimizerScalesFromPhysicalShift()
            method.SetShrinkFactorsPerLevel([int(s) for s in shrink_factors])
            method.SetSmoothingSigmasPerLevel([float(s) for s in smoothing_sigmas_mm])
            method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
            method.SetInitialTransform(rigid_transform(previous, centre), inPlace=False)
            transform = method.Execute(fixed, moving)
            angles_and_shift = np.asarray(transform.GetParameters(), float)
            previous = np.concatenate([angles_and_shift[3:], np.degrees(angles_and_shift[:3])])
            parameters[frame] = previous
            metric_values[frame] = method.GetMetricValue()
            resampler.SetReferenceImage(full)
            resampler.SetTransform(transform)
            resampled = resampler.Execute(full)  # held: the array view below does not keep the image alive
            values = sitk.GetArrayViewFromImage(resampled).transpose(2, 1, 0)
            if corrected is None:
                out(values)
            else:
                corrected[..., frame] = values
            del full, moving, resampled, values
            if progress is not None:
                progress(frame, n_frames)
    finally:
        sitk.ProcessObject.SetGlobalDefaultThreader(default_threader)
    return MotionCorrection(
        corrected=corrected,
        parameters=parameters,
        framewise_displacement=framewise_displacement(parameters),
        reference=reference,
        metric_values=metric_values,
    )


def sampling_pyramid(sampling_fraction, shrink_factors=(4, 2, 1)):
    """Metric sampling fraction per pyramid level: the finest level's ``sampling_fraction``, more on coarser ones.

    Coarse levels have few voxels, so they sample 2.5 and 1.5 times the finest
    level's fraction (at most all of them).

    >>> sampling_pyramid(0.2)
    (0.5, 0.30000000000000004, 0.2)
    """
    if len(shrink_factors) != 3:
        raise ValueError(f"The pyramid has three levels (4, 2, 1), got shrink factors {shrink_factors}.")
    fraction = float(sampling_fraction)
    if not 0 < fraction <= 1:
        raise ValueError(f"The sampling fraction must lie in (0, 1], got {fraction}.")
    return (min(1.0, 2.5 * fraction), min(1.0, 1.5 * fraction), fraction)


def reference_frames(series):
    """Pre-bolus frames averaged into the registration reference: the earliest enhancement inside the brain.

    :func:`ctp_nipype.perfusion.aif.estimate_baseline_frames` over the
    :func:`ctp_nipype.perfusion.masks.brain_mask` of the time-averaged series
    (over every voxel when no brain is found).
    """
    from .aif import estimate_baseline_frames  # aif uses this module's bridge_frames
    from .masks import brain_mask, time_average

    brain = brain_mask(time_average(series))
    return estimate_baseline_frames(series, brain if brain.any() else None)


def correct_motion(
    series,
    spacing,
    n_baseline_frames=None,
    metric="meansquares",
    sampling_fraction=0.2,
    max_displacement_mm=MAX_DISPLACEMENT_MM,
    in_place=False,
    progress=None,
    out=None,
):
    """Motion correction of a series with the package's choices: reference, pyramid, censoring.

    The reference is the mean of the pre-bolus frames (``n_baseline_frames``,
    default :func:`reference_frames`), the metric samples
    :func:`sampling_pyramid` of ``sampling_fraction``, and frames displaced
    from the reference by more than ``max_displacement_mm`` are censored
    (:func:`censor_frames`). With ``in_place`` a writeable float32 ``series``
    receives the corrected frames itself (no second copy of the series in
    memory); the reference is taken before any frame is overwritten. ``out``
    (an array or a callable taking each corrected frame, as for
    :func:`register_series`) overrides ``in_place``: a lazily read ``series``
    (nibabel's proxy of an uncompressed NIfTI, :mod:`.chunks`) with a
    callable ``out`` is corrected in memory bounded by a few frames.

    Returns
    -------
    MotionCorrection
        With ``displacement``, ``censored`` and the settings set (:meth:`MotionCorrection.sidecar`,
        :meth:`MotionCorrection.columns`).
    """
    if not hasattr(series, "shape"):
        series = np.asarray(series)
    n_base = reference_frames(series) if n_baseline_frames is None else int(n_baseline_frames)
    if out is None and in_place and isinstance(series, np.ndarray) and series.dtype == np.float32 \
            and series.flags.writeable:
        out = series
    result = register_series(series, spacing, n_base, metric=metric, sampling_fraction=sampling_pyramid(sampling_fraction),
                             out=out, progress=progress)
    result.displacement = displacement_from_reference(result.parameters)
    result.censored = censor_frames(result.parameters, max_displacement_mm)
    result.censoring_threshold_mm = float(max_displacement_mm)
    result.n_baseline_frames = n_base
    result.metric = metric
    return result
