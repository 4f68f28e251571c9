"""Brain, CSF and vessel masks of a CTP series, from HU and enhancement.

* :func:`brain_mask` -- a soft-tissue HU window on the time-averaged image,
  an in-plane opening that cuts thin bridges through skull openings, the
  largest connected component (skull, scalp and bed removed) and hole filling
  (ventricles and vessels inside the brain kept).
* :func:`csf_mask` -- inside the brain, voxels of water-like baseline HU that
  do not enhance.
* :func:`vessel_mask` -- inside the brain, voxels whose area under the
  concentration curve (proportional to CBV) is many times that of the
  brain's typical tissue.

The enhancement fits take ``censored_frames``: frames displaced by head motion
(:func:`.motion.censor_frames`), in which voxels by the skull jump by hundreds
of HU even after registration, are left out of the regression.

Typical HU: air -1000, fat -100, CSF 0-15, white matter 20-30, grey matter
30-45, blood 40-60 (several hundred at the arterial bolus peak), bone > 300.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .chunks import CHUNK_BYTES, iter_frames, iter_masked_curves, iter_masked_frames, slice_chunks
from .concentration import to_concentration
from .convolution import trapezoid_integral
from .motion import bridge_frames
from .timing import check_frame_times, is_uniform

#: soft-tissue window (HU) of the time-averaged image that holds the brain and its CSF
BRAIN_WINDOW_HU = (-5.0, 100.0)
#: baseline HU range of cerebrospinal fluid
CSF_WINDOW_HU = (-10.0, 15.0)


def time_average(series, censored_frames=None, max_bytes=CHUNK_BYTES):
    """Mean over the last (time) axis, float32, over the frames not in ``censored_frames`` (boolean per frame).

    A 4D ``series`` may be any array-like (:mod:`.chunks`): it is read in chunks of slices of at most
    ``max_bytes``, and each voxel's mean is the same whatever the chunk size.

    >>> time_average(np.arange(6.0).reshape(1, 1, 1, 6)).ravel()
    array([2.5], dtype=float32)
    >>> time_average(np.arange(6.0).reshape(1, 1, 1, 6), [False] * 5 + [True]).ravel()
    array([2.], dtype=float32)
    """
    censored = np.zeros(0, int)  # the indices of the censored frames
    if censored_frames is not None:
        censored = np.flatnonzero(np.asarray(censored_frames, dtype=bool))
        if series.shape[-1] - censored.size < 1:
            raise ValueError("Every frame is censored; there is nothing to average.")
    n_frames = series.shape[-1]
    if len(series.shape) != 4:
        series = np.asarray(series, dtype=np.float32)
        return _mean_of_frames((series[..., t] for t in range(n_frames)), series.shape[:-1], censored, n_frames)
    out = np.empty(tuple(series.shape[:3]), np.float32)
    for z0, z1 in slice_chunks(series.shape, max_bytes):
        out[:, :, z0:z1] = _mean_of_frames(iter_frames(series, z0, z1), out[:, :, z0:z1].shape, censored, n_frames)
    return out


def _mean_of_frames(frames, shape, censored, n_frames):
    """:func:`time_average` of the ``n_frames`` blocks ``frames`` yields; ``censored`` the indices left out.

    The frames are summed in float64 one after the other (as numpy sums a NIfTI's layout, time slowest),
    then the censored ones subtracted: no temporary of the series' size, one frame read at a time.
    """
    total, left_out = None, []
    for index, frame in enumerate(frames):
        if total is None:  # in the frames' own layout (a NIfTI's: x fastest), or the sum strides across memory
            total = np.zeros(shape, np.float64, order="F" if frame.flags.f_contiguous else "C")
        total += frame
        if index in censored:
            left_out.append(np.array(frame))  # a few frames, kept past the reader's buffer
    for frame in left_out:
        total -= frame
    return (total / (n_frames - len(left_out))).astype(np.float32)


def _in_plane_disk(radius):
    """A 3D structuring element: a disk of ``radius`` voxels in (x, y), one slice thick."""
    r = int(radius)
    y, x = np.ogrid[-r : r + 1, -r : r + 1]
    return (x * x + y * y <= r * r)[:, :, None]


def largest_component(mask):
    """The largest 6-connected component of a 3D boolean mask (empty stays empty).

    >>> m = np.zeros((5, 5, 1), bool); m[0, 0] = m[2:5, 2:5] = True
    >>> int(largest_component(m).sum())
    9
    """
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def fill_holes(mask):
    """Fill holes slice by slice (in-plane) and then in 3D.

    Per-slice filling closes ventricles that touch the top or bottom slice of
    a thick-slice scan, which 3D filling alone cannot.
    """
    filled = np.stack([ndimage.binary_fill_holes(mask[:, :, k]) for k in range(mask.shape[2])], axis=2)
    return ndimage.binary_fill_holes(filled)


def brain_mask(mean_hu, hu_window=BRAIN_WINDOW_HU, opening_radius=2):
    """Brain (with its CSF and vessels) from the time-averaged image.

    Parameters
    ----------
    mean_hu : ndarray, shape (x, y, z)
        Time-averaged image in HU (:func:`time_average`).
    hu_window : (float, float)
        HU range of brain and CSF; skull (> 300 HU), air and fat fall outside.
    opening_radius : int
        Radius in voxels of the in-plane disk of a morphological opening that
        disconnects scalp and neck from the brain through thin bridges.

    Returns
    -------
    ndarray of bool, shape (x, y, z)

    Examples
    --------
    >>> img = np.full((40, 40, 3), -1000.0)
    >>> y, x = np.ogrid[:40, :40]
    >>> r = np.hypot(x - 20, y - 20)[:, :, None] + np.zeros((1, 1, 3))
    >>> img[r < 18] = 40.0      # scalp
    >>> img[r < 16] = 1000.0    # skull
    >>> img[r < 13] = 35.0      # brain
    >>> mask = brain_mask(img)
    >>> bool(mask[20, 20, 1]), bool(mask[20, 3, 1]), int(mask.sum()) == int((r < 13).sum())
    (True, False, True)
    """
    mean_hu = np.asarray(mean_hu, dtype=np.float32)
    if mean_hu.ndim != 3:
        raise ValueError(f"brain_mask needs a 3D image, got shape {mean_hu.shape}.")
    low, high = hu_window
    candidate = (mean_hu >= low) & (mean_hu <= high)
    if opening_radius > 0:
        candidate = ndimage.binary_opening(candidate, structure=_in_plane_disk(opening_radius))
    return fill_holes(largest_component(candidate))


def fit_enhancement(hu, frame_times, brain, n_baseline_frames, censored_frames=None, max_bytes=CHUNK_BYTES):
    """Baseline (HU) and enhancement (HU s) of every brain voxel by regression on the brain's mean curve.

    A voxel's curve is fitted as ``HU(t) = baseline + enhancement * s(t)``,
    ``s`` being the brain's mean concentration curve scaled to unit area
    (1/s), by linear least squares over all frames at once (one matrix
    product for all voxels). The enhancement is then the voxel's area under
    its concentration curve, proportional to CBV, as far as the voxel's curve
    has the brain's shape. Using every frame, not just the few pre-bolus
    ones, for the baseline makes both far less noisy than a baseline
    subtraction: with 4 baseline frames and 8 HU noise a subtracted area
    scatters by about 240 HU s, the fitted enhancement by about 70.

    Parameters
    ----------
    hu : array-like, shape (x, y, z, T)
        Series in HU: an array or nibabel's proxy, read in chunks of slices (:mod:`.chunks`) twice, for the
        brain's mean curve (:func:`brain_mean_curve`) and for the fit.
    frame_times : array_like, shape (T,)
        Uniform frame times in seconds.
    brain : ndarray of bool, shape (x, y, z)
    n_baseline_frames : int
        Pre-bolus frames used for the brain's mean curve.
    censored_frames : array_like of bool, shape (T,), optional
        Frames left out of the regression (bridged by interpolation in the brain's mean curve).
    max_bytes : int
        Bytes of float32 per chunk of the series.

    Returns
    -------
    baseline, enhancement : ndarray, shape (x, y, z), float32
        HU and HU s; 0 outside the brain.

    Examples
    --------
    >>> shape = np.array([0, 0, 0, 10, 30, 20, 10, 5, 2, 0.0])
    >>> hu = np.stack([20 + shape, 8 + 0 * shape, 30 + 2 * shape]).reshape(3, 1, 1, 10)
    >>> b, e = fit_enhancement(hu, np.arange(10.0), np.ones((3, 1, 1), bool), 3)
    >>> np.round(b.ravel(), 3).tolist(), np.round(e.ravel(), 3).tolist()
    ([20.0, 8.0, 30.0], [77.0, 0.0, 154.0])
    """
    times = check_frame_times(frame_times)
    if times.size < 3 or not is_uniform(times):
        raise ValueError("Masks need a uniformly sampled series; resample it first (resample_to_uniform).")
    brain = np.asarray(brain, bool)
    kept = slice(None)
    if censored_frames is not None:
        kept = ~np.asarray(censored_frames, dtype=bool)
    template = to_concentration(brain_mean_curve(hu, brain, censored_frames, max_bytes), n_baseline_frames)
    area = float(trapezoid_integral(template, float(times[1] - times[0])))
    if area <= 0:
        raise ValueError(
            f"The brain's mean curve does not enhance after its first {n_baseline_frames} (baseline) "
            "frames; check the brain mask, the baseline frames and that the series is a contrast-enhanced "
            "perfusion scan. A head that moves during the scan can also cause this (bone moving into the "
            "brain's edge looks like enhancement): correct the motion first (--motion-correction, or the "
            "MotionCorrection interface)."
        )
    design = np.stack([np.ones_like(template), template / area], axis=1)  # (T, 2)
    projection = np.linalg.pinv(design[kept]).T.astype(np.float32)  # (T kept, 2)
    coefficients = np.empty((int(brain.sum()), 2), np.float32)
    for rows, voxels in iter_masked_curves(hu, brain, max_bytes):  # censored frames are not in the product
        coefficients[rows] = voxels[:, kept] @ projection
    baseline = np.zeros(brain.shape, np.float32)
    enhancement = np.zeros(brain.shape, np.float32)
    baseline[brain], enhancement[brain] = coefficients[:, 0], coefficients[:, 1]
    return baseline, enhancement


def brain_mean_curve(hu, brain, censored_frames=None, max_bytes=CHUNK_BYTES):
    """Mean curve (T,), float64 HU, of the voxels in ``brain``, their ``censored_frames`` bridged
    (:func:`.motion.bridge_frames`).

    Summed in float64 slice by slice (each frame's voxels in one sum) and then over the slices in order, so
    that it does not depend on the chunk size (``max_bytes``, :mod:`.chunks`) nor on the array's layout;
    ``hu`` is any 4D array-like.

    >>> hu = np.arange(2 * 1 * 2 * 3, dtype=np.float32).reshape(2, 1, 2, 3)
    >>> brain_mean_curve(hu, np.ones((2, 1, 2), bool)).tolist()
    [4.5, 5.5, 6.5]
    """
    brain = np.asarray(brain, bool)
    if brain.shape != tuple(hu.shape[:3]):
        raise ValueError(f"The brain mask has shape {brain.shape} but the series {tuple(hu.shape)}.")
    if not brain.any():
        raise ValueError("The brain mask is empty: there is no brain curve to fit to.")
    total = np.zeros(hu.shape[3], np.float64)
    slice_size = hu.shape[0] * hu.shape[1]
    for z0, z1, where, by_frame in iter_masked_frames(hu, brain, max_bytes):
        ends = np.searchsorted(where, np.arange(z1 - z0 + 1) * slice_size)  # where runs slice by slice
        for first, last in zip(ends[:-1], ends[1:]):
            if last > first:
                voxels = np.ascontiguousarray(by_frame[:, first:last])  # (T, the slice's voxels)
                if censored_frames is not None:
                    voxels = bridge_frames(voxels.T, censored_frames).T
                total += voxels.sum(axis=1, dtype=np.float64)
    return total / int(brain.sum())


def _smooth_in_plane(volume, radius):
    if radius <= 0:
        return volume
    return ndimage.uniform_filter(volume, size=(2 * radius + 1, 2 * radius + 1, 1), mode="nearest")


def csf_mask(
    hu,
    frame_times,
    brain,
    n_baseline_frames,
    hu_window=CSF_WINDOW_HU,
    max_relative_enhancement=0.5,
    smoothing_radius=0,
    censored_frames=None,
    max_bytes=CHUNK_BYTES,
):
    """Cerebrospinal fluid: water-like baseline HU and no enhancement.

    A brain voxel is CSF when its fitted baseline (:func:`fit_enhancement`)
    lies in ``hu_window`` and its fitted enhancement is below
    ``max_relative_enhancement`` times the brain's median enhancement.
    Optionally both images are averaged over a ``(2 * smoothing_radius + 1)``
    square in-plane before thresholding.

    Parameters
    ----------
    hu : array-like, shape (x, y, z, T)
        Series in HU (an array or nibabel's proxy, read in chunks).
    frame_times : array_like, shape (T,)
        Uniform frame times in seconds.
    brain : ndarray of bool, shape (x, y, z)
    n_baseline_frames : int
        Pre-bolus frames.
    hu_window : (float, float)
        Baseline HU range of CSF.
    max_relative_enhancement : float
        Upper limit of the enhancement relative to the brain's median.
    smoothing_radius : int
        In-plane smoothing radius in voxels (0: none).
    censored_frames : array_like of bool, shape (T,), optional
        Frames left out of the fit (:func:`fit_enhancement`).
    max_bytes : int
        Bytes of float32 per chunk of the series (:func:`fit_enhancement`).

    Returns
    -------
    ndarray of bool
    """
    brain = np.asarray(brain, bool)
    baseline, enhancement = fit_enhancement(hu, frame_times, brain, n_baseline_frames, censored_frames, max_bytes)
    reference = float(np.median(enhancement[brain]))
    baseline = _smooth_in_plane(baseline, smoothing_radius)
    enhancement = _smooth_in_plane(enhancement, smoothing_radius)
    low, high = hu_window
    return brain & (baseline >= low) & (baseline <= high) & (enhancement < max_relative_enhancement * reference)


def vessel_mask(
    hu, frame_times, brain, n_baseline_frames, min_relative_cbv=5.0, exclude=None, censored_frames=None,
    max_bytes=CHUNK_BYTES,
):
    """Large vessels: enhancement (area, CBV-like) many times the brain's median.

    The fitted enhancement of :func:`fit_enhancement` is proportional to CBV
    (CBV = 100 kappa_H / rho * area / area of the AIF), so its ratio to the
    median of the brain's tissue is a relative CBV that needs no AIF. Tissue
    is about 1 (grey matter 4, white matter 2 ml/100 g); a voxel full of
    blood about 25. A voxel is a vessel above ``min_relative_cbv``.

    Parameters
    ----------
    hu : array-like, shape (x, y, z, T)
        Series in HU (an array or nibabel's proxy, read in chunks).
    frame_times : array_like, shape (T,)
        Uniform frame times in seconds.
    brain : ndarray of bool
    n_baseline_frames : int
        Pre-bolus frames.
    min_relative_cbv : float
        Threshold on the enhancement relative to the median of the brain's tissue.
    exclude : ndarray of bool, optional
        Voxels left out of the reference median (CSF).
    censored_frames : array_like of bool, shape (T,), optional
        Frames left out of the fit (:func:`fit_enhancement`).
    max_bytes : int
        Bytes of float32 per chunk of the series (:func:`fit_enhancement`).

    Returns
    -------
    ndarray of bool
    """
    brain = np.asarray(brain, bool)
    _, enhancement = fit_enhancement(hu, frame_times, brain, n_baseline_frames, censored_frames, max_bytes)
    tissue = brain if exclude is None else brain & ~np.asarray(exclude, bool)
    reference = float(np.median(enhancement[tissue])) if tissue.any() else 0.0
    if reference <= 0:
        raise ValueError(
            "The brain's median enhancement is not positive, so no relative CBV can be formed; "
            "check the brain mask and the baseline frames."
        )
    return brain & (enhancement > min_relative_cbv * reference)
