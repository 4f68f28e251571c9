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

Box means use :func:`scipy.ndimage.uniform_filter` with a window of
``2 r + 1`` voxels along the spatial axes and 1 along time, so all frames are
filtered at once (in chunks of frames to bound memory).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: guided-filter defaults of Zeng et al. (2025)
RADIUS = 2
EPS = 0.01
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


def _box(array, radius, n_spatial, n_dims):
    size = [2 * radius + 1] * n_spatial + [1] * (n_dims - n_spatial)
    return ndimage.uniform_filter(array, size=size, mode="reflect")


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
        Frames filtered together (memory bound); the result does not depend on it.

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
    n_spatial = 2 if mode == "2d" else 3
    guide = normalise_window(guidance, guidance_window_hu)
    mean_guide = _box(guide, radius, n_spatial, 3)
    var_guide = _box(guide * guide, radius, n_spatial, 3) - mean_guide * mean_guide
    denominator = (var_guide + np.float32(eps))[..., None]
    guide4, mean_guide4 = guide[..., None], mean_guide[..., None]

    out = np.empty_like(frames)
    for start in range(0, frames.shape[3], max(int(chunk_frames), 1)):
        chunk = frames[..., start : start + chunk_frames]
        mean_p = _box(chunk, radius, n_spatial, 4)
        cov = _box(guide4 * chunk, radius, n_spatial, 4) - mean_guide4 * mean_p
        a = cov / denominator
        b = mean_p - a * mean_guide4
        out[..., start : start + chunk_frames] = _box(a, radius, n_spatial, 4) * guide4 + _box(b, radius, n_spatial, 4)
    return out[..., 0] if single else out
