"""Edge-preserving denoising of a CTP series with the guided filter (He et al. 2013).

Every frame ``p`` is filtered with the same guidance image ``I`` (by default
the time-averaged scan, as in Zeng et al. 2025). In each window ``w_k`` of
radius ``r`` the output is a linear function of the guidance,
``q = a_k I + b_k``, with

    a_k = cov_k(I, p) / (var_k(I) + eps),    b_k = mean_k(p) - a_k mean_k(I),

and the coefficients of all windows covering a voxel are averaged:
``q = mean(a) I + mean(b)``. Where the guidance varies much more than
``sqrt(eps)`` (an edge) ``a`` is near ``cov / var`` and the edge passes
through; where it is flat ``a`` is near 0 and ``q`` is a local mean of ``p``.

**Normalisation**: ``eps`` is meant for a guidance scaled to [0, 1]. The
guidance is mapped linearly from the HU window ``guidance_window_hu`` onto
[0, 1] (values outside are clipped), so the paper's ``eps = 0.01`` means:
structures whose local standard deviation in the guidance is well above
``0.1 * (window width)`` HU keep their edges. The frames themselves need no
normalisation: the filter is linear in ``p``.

Box means use :func:`scipy.ndimage.uniform_filter` (``'reflect'`` boundary).
In ``'2d'`` mode (the default) it runs on C-contiguous ``(frames, y, x)``
blocks of one slice, about 1 MB each, so that its passes stay in the CPU
cache; on the whole ``(x, y, z, t)`` array, whose in-plane axes are strided,
the same filter is several times slower. ``'3d'`` mode filters chunks of
frames with a window of 1 along time.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .chunks import CHUNK_BYTES, read_slices, slice_chunks

#: guided-filter defaults of Zeng et al. (2025): radius 2 voxels, eps 0.01
RADIUS = 2
EPS = 0.01
#: the paper's radius in millimetres: 2 voxels of its data's mean in-plane size, 0.94 mm (ISLES 2018,
#: 0.79-1.09 mm); :func:`radius_in_voxels` turns it back into 2 voxels on such data
RADIUS_MM = 2 * 0.94
#: HU window mapped onto [0, 1] for the guidance: CSF near 0, grey matter near 0.5, enhanced vessels 1
GUIDANCE_WINDOW_HU = (0.0, 80.0)


def normalise_window(image, window):
    """Map ``window = (low, high)`` linearly onto [0, 1], clipping outside values.

    >>> normalise_window(np.array([-50.0, 0.0, 40.0, 80.0, 500.0]), (0.0, 80.0))
    array([0. , 0. , 0.5, 1. , 1. ], dtype=float32)
    """
    low, high = (float(v) for v in window)
    if not high > low:
        raise ValueError(f"The guidance window must have high > low, got {window}.")
    return np.clip((np.asarray(image, dtype=np.float32) - low) / (high - low), 0.0, 1.0).astype(np.float32)


def radius_in_voxels(radius_mm, voxel_size_mm):
    """In-plane window radius in voxels (at least 1) for a radius in millimetres.

    The guided filter's window is meant to span a fixed physical distance:
    the paper's 2 voxels were about 1.9 mm. On coarser voxels the same
    2 voxels average across grey and white matter (4 mm voxels: a 20 mm
    window), which costs grey-matter CBF (docs/validation.md).

    Parameters
    ----------
    radius_mm : float
        Radius in mm.
    voxel_size_mm : sequence of float
        Voxel size (x, y[, z]) in mm; the mean of the two in-plane sizes is used.

    Examples
    --------
    >>> radius_in_voxels(RADIUS_MM, (0.79, 0.79, 5.0)), radius_in_voxels(RADIUS_MM, (1.09, 1.09, 5.0))
    (2, 2)
    >>> radius_in_voxels(RADIUS_MM, (1.875, 1.875, 5.0)), radius_in_voxels(RADIUS_MM, (4.0, 4.0, 5.0))
    (1, 1)
    >>> radius_in_voxels(RADIUS_MM, (0.45, 0.45, 5.0))
    4
    """
    size = np.asarray(voxel_size_mm, dtype=float)[:2]
    if not radius_mm > 0 or size.size != 2 or not np.all(size > 0):
        raise ValueError(f"Need a positive radius and in-plane voxel sizes, got {radius_mm} mm and {voxel_size_mm}.")
    return max(1, int(round(float(radius_mm) / float(size.mean()))))


def _box(array, radius, axes):
    """Mean over a window ``2 radius + 1`` wide along ``axes`` (1 along the others), scipy's 'reflect' edges."""
    size = [2 * radius + 1 if axis in axes else 1 for axis in range(array.ndim)]
    return ndimage.uniform_filter(array, size=size, mode="reflect")


def _filter_block(frames, guide, mean_guide, denominator, box):
    """The guided filter's per-frame algebra on one block; ``guide``-derived arrays broadcast over frames."""
    mean_p = box(frames)
    cov = box(guide * frames)
    cov -= mean_guide * mean_p
    a = cov / denominator
    b = mean_p - a * mean_guide
    out = box(a)
    out *= guide
    out += box(b)
    return out


def guided_filter(
    series,
    guidance=None,
    radius=RADIUS,
    eps=EPS,
    mode="2d",
    guidance_window_hu=GUIDANCE_WINDOW_HU,
    chunk_frames=16,
):
    """Guided filter of every frame of a 4D series (He et al. 2013).

    Parameters
    ----------
    series : ndarray, shape (x, y, z, T) or (x, y, z)
        The frames to filter, in HU.
    guidance : ndarray, shape (x, y, z), optional
        Guidance image in HU; default the time average of ``series``.
    radius : int
        Window radius in voxels (window ``2 r + 1`` wide); paper: 2.
    eps : float
        Regularisation, relative to the guidance normalised to [0, 1]; paper: 0.01.
    mode : {'2d', '3d'}
        '2d' filters each slice in-plane (as the paper, suited to thick slices);
        '3d' uses cubic windows.
    guidance_window_hu : (float, float)
        HU window mapped onto [0, 1] for the guidance (see the module's docstring).
    chunk_frames : int
        At most this many frames are filtered together (memory bound); the result does not depend on it.

    Returns
    -------
    ndarray, float32, same shape as ``series``

    Examples
    --------
    A flat guidance makes the filter a local mean; a step in the guidance
    keeps the same step in the frame:

    >>> frame = np.zeros((8, 1, 1)); frame[4:] = 100.0
    >>> guide = np.where(np.arange(8) < 4, 0.0, 80.0)[:, None, None]
    >>> np.round(guided_filter(frame, guide, radius=1).ravel(), 1).tolist()
    [0.0, 0.0, 0.5, 1.4, 98.6, 99.5, 100.0, 100.0]
    """
    series = np.asarray(series, dtype=np.float32)
    single = series.ndim == 3
    frames = series[..., None] if single else series
    if frames.ndim != 4:
        raise ValueError(f"The series must be 3D or 4D (x, y, z[, t]), got shape {series.shape}.")
    if mode not in ("2d", "3d"):
        raise ValueError(f"mode must be '2d' or '3d', got {mode!r}.")
    if int(radius) < 1 or eps <= 0:
        raise ValueError(f"radius must be >= 1 and eps > 0, got radius={radius}, eps={eps}.")
    radius = int(radius)
    if guidance is None:
        guidance = frames.mean(axis=-1)
    guidance = np.asarray(guidance)
    if guidance.shape != frames.shape[:3]:
        raise ValueError(f"The guidance has shape {guidance.shape} but the frames have {frames.shape[:3]}.")
    guide = normalise_window(guidance, guidance_window_hu)
    chunk_frames = max(int(chunk_frames), 1)
    if mode == "2d":
        # One slice at a time, as C-contiguous (frames, y, x) blocks of about 1 MB so that the box sums
        # stay in the cache. Reading a block is a copy of whole images when the series is in NIfTI's
        # (Fortran) order, x fastest and t slowest, as nibabel loads it; other series are put in that
        # order first (one pass), and the result comes back in the order of the input.
        c_order = frames.flags.c_contiguous and not frames.flags.f_contiguous
        frames = np.asfortranarray(frames)
        out = np.empty_like(frames, order="F")
        block_frames = max(1, min(chunk_frames, (1 << 18) // max(frames.shape[0] * frames.shape[1], 1)))

        def box(array):  # window over the last two axes, (y, x)
            return _box(array, radius, (array.ndim - 2, array.ndim - 1))

        for z in range(frames.shape[2]):
            guide_z = np.ascontiguousarray(guide[:, :, z].T)  # (y, x)
            mean_guide = box(guide_z)
            denominator = box(guide_z * guide_z) - mean_guide * mean_guide + np.float32(eps)
            for start in range(0, frames.shape[3], block_frames):
                stop = start + block_frames
                block = np.ascontiguousarray(frames[:, :, z, start:stop].T)  # (frames, y, x)
                filtered = _filter_block(block, guide_z, mean_guide, denominator, box)
                out[:, :, z, start:stop] = filtered.T
        if c_order:
            out = np.ascontiguousarray(out)
        return out[..., 0] if single else out

    mean_guide = _box(guide, radius, (0, 1, 2))
    denominator = (_box(guide * guide, radius, (0, 1, 2)) - mean_guide * mean_guide + np.float32(eps))[..., None]
    out = np.empty_like(frames)
    for start in range(0, frames.shape[3], chunk_frames):
        chunk = frames[..., start : start + chunk_frames]
        out[..., start : start + chunk_frames] = _filter_block(
            chunk, guide[..., None], mean_guide[..., None], denominator, lambda x: _box(x, radius, (0, 1, 2))
        )
    return out[..., 0] if single else out


def guided_filter_chunks(
    series,
    guidance=None,
    radius=RADIUS,
    eps=EPS,
    mode="2d",
    guidance_window_hu=GUIDANCE_WINDOW_HU,
    region=None,
    max_bytes=CHUNK_BYTES,
):
    """:func:`guided_filter` of a 4D series chunk by chunk of slices: yields ``(z0, filtered chunk)``.

    For a series larger than memory (``series`` may be a lazy proxy: :mod:`ctp_nipype.perfusion.chunks`).
    In ``'2d'`` mode every slice is filtered on its own, so the chunks give exactly the whole-series
    result; ``'3d'`` windows cross slices, so that mode reads the series whole (one chunk).

    ``region`` (3D bool, e.g. the brain mask) limits the work to where the result is used: each chunk is
    filtered only within the in-plane bounding box of its region voxels widened by two radii (the reach of
    the filter's two box passes), which gives inside the region's box exactly the values of the whole-image
    filter; outside that box the frames are passed on unfiltered. A chunk without region voxels is passed on
    as it is.

    >>> rng = np.random.default_rng(0)
    >>> series = rng.normal(40, 10, (12, 10, 3, 4)).astype(np.float32)
    >>> region = np.zeros((12, 10, 3), bool); region[5:7, 4:6, 1] = True
    >>> whole = guided_filter(series, radius=1)
    >>> parts = dict(guided_filter_chunks(series, radius=1, region=region, max_bytes=1))
    >>> bool(np.array_equal(parts[1][5:7, 4:6, 0], whole[5:7, 4:6, 1])), bool(np.array_equal(parts[0], series[:, :, :1]))
    (True, True)
    """
    shape = tuple(series.shape)
    if len(shape) != 4:
        raise ValueError(f"The series must be 4D (x, y, z, t), got shape {shape}.")
    chunks = slice_chunks(shape, max_bytes) if mode == "2d" else [(0, shape[2])]
    reach = 2 * int(radius)
    for z0, z1 in chunks:
        chunk = read_slices(series, z0, z1)
        guide = None if guidance is None else np.asarray(guidance[:, :, z0:z1])
        if guide is None:
            guide = chunk.mean(axis=-1)  # the time average (the default guidance), per voxel
        if region is None:
            yield z0, guided_filter(chunk, guide, radius, eps, mode, guidance_window_hu)
            continue
        inside = np.asarray(region[:, :, z0:z1], bool)
        if not inside.any():
            yield z0, chunk
            continue
        xs, ys = np.flatnonzero(inside.any(axis=(1, 2))), np.flatnonzero(inside.any(axis=(0, 2)))
        box = (slice(max(xs[0] - reach, 0), xs[-1] + 1 + reach), slice(max(ys[0] - reach, 0), ys[-1] + 1 + reach))
        own = not isinstance(series, np.ndarray) or not np.shares_memory(chunk, series)
        out = chunk if own else chunk.copy()  # never the caller's array
        out[box] = guided_filter(chunk[box], guide[box], radius, eps, mode, guidance_window_hu)
        yield z0, out
