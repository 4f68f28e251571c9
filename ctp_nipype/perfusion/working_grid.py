"""A coarser in-plane working grid for deconvolution: bin a scan's voxels in blocks, and copy results back.

Clinical CT perfusion comes as 512 x 512 pixels of 0.4-0.5 mm; the paper's patient data were resampled to
256 x 256 (about 1 mm) before deconvolution. :func:`bin_in_plane` averages each block of ``fx x fy``
in-plane voxels over the brain voxels it holds (so that skull and air at the brain's edge never leak into
a brain curve), and :func:`expand_in_plane` copies each block's result back onto the brain voxels of the
scan's grid. A constant image stays exactly constant both ways; the noise of a block's mean falls as
``1 / sqrt(brain voxels in it)``.
"""

from __future__ import annotations

import numpy as np


def bin_factors(voxel_mm, working_mm):
    """In-plane block size ``(fx, fy)`` in voxels that brings ``voxel_mm`` closest to ``working_mm``, at least 1.

    >>> bin_factors((0.47, 0.47, 5.0), 0.94)
    (2, 2)
    >>> bin_factors((1.9, 1.9, 5.0), 1.0)
    (1, 1)
    """
    working_mm = float(working_mm)
    if not working_mm > 0 or not np.isfinite(working_mm):
        raise ValueError(f"The working voxel size must be a positive number of mm, got {working_mm}.")
    sizes = [float(v) for v in voxel_mm[:2]]
    if not all(v > 0 and np.isfinite(v) for v in sizes):
        raise ValueError(f"The scan's in-plane voxel size {sizes} mm is not positive; fix the NIfTI header.")
    return tuple(max(1, int(round(working_mm / v))) for v in sizes)


def binned_shape(shape, factors):
    """In-plane shape after binning (a partial block at the edge counts as one)."""
    return (-(-shape[0] // factors[0]), -(-shape[1] // factors[1])) + tuple(shape[2:])


def _block_sums(values, factors):
    """Sums over in-plane blocks of an (x, y, ...) array, zero-padding partial blocks."""
    fx, fy = factors
    nx, ny = binned_shape(values.shape, factors)[:2]
    pad = [(0, nx * fx - values.shape[0]), (0, ny * fy - values.shape[1])] + [(0, 0)] * (values.ndim - 2)
    if any(p[1] for p in pad):
        values = np.pad(values, pad)
    return values.reshape((nx, fx, ny, fy) + values.shape[2:]).sum(axis=(1, 3))


def bin_in_plane(values, mask, factors):
    """Mean of each in-plane block over its mask voxels.

    Parameters
    ----------
    values : ndarray, shape (x, y, z) or (x, y, z, t)
    mask : ndarray of bool, shape (x, y, z)
        Voxels that count (the brain); a block holding none of them is 0 and outside the binned mask.
    factors : (int, int)
        Block size in voxels along x and y.

    Returns
    -------
    binned : ndarray, float32, shape binned_shape(values.shape, factors)
    binned_mask : ndarray of bool, the blocks holding at least one mask voxel

    Examples
    --------
    >>> v = np.full((4, 4, 1), 7.0); m = np.ones((4, 4, 1), bool)
    >>> b, bm = bin_in_plane(v, m, (2, 2))
    >>> b[..., 0].tolist(), bool(bm.all())
    ([[7.0, 7.0], [7.0, 7.0]], True)
    """
    values = np.asarray(values)
    mask = np.asarray(mask, dtype=bool)
    if values.shape[:3] != mask.shape:
        raise ValueError(f"The mask has shape {mask.shape} but the values' spatial shape is {values.shape[:3]}.")
    counts = _block_sums(mask.astype(np.float64), factors)
    weighted = values * mask.reshape(mask.shape + (1,) * (values.ndim - 3))
    sums = _block_sums(weighted.astype(np.float64), factors)
    binned_mask = counts > 0
    counts = counts.reshape(counts.shape + (1,) * (values.ndim - 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        binned = np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), 0.0)
    return binned.astype(np.float32), binned_mask


def expand_in_plane(binned, mask, factors):
    """Each block's value on the mask voxels of the scan's grid (0 elsewhere); the inverse of :func:`bin_in_plane`.

    ``binned`` is (bx, by, z) or (bx, by, z, t); ``mask`` is the scan-grid mask (x, y, z).
    """
    binned = np.asarray(binned)
    mask = np.asarray(mask, dtype=bool)
    fx, fy = factors
    full = np.repeat(np.repeat(binned, fx, axis=0), fy, axis=1)[: mask.shape[0], : mask.shape[1]]
    return (full * mask.reshape(mask.shape + (1,) * (binned.ndim - 3))).astype(np.float32, copy=False)


def binned_affine(affine, factors, first_slice=0):
    """Voxel-to-world affine of the binned grid of slices ``first_slice`` onwards (block centres)."""
    fx, fy = factors
    to_fine = np.array([[fx, 0, 0, (fx - 1) / 2], [0, fy, 0, (fy - 1) / 2], [0, 0, 1, first_slice], [0, 0, 0, 1]],
                       dtype=float)
    return np.asarray(affine, float) @ to_fine
