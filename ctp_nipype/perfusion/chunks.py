"""Chunks of slices: how the science functions walk a 4D series without holding it whole.

A clinical series does not fit in memory several times over (512 x 512 x 160 x 40 is 6.7 GB of float32),
so every function here that reads a whole series takes it as an *array-like* (a numpy array, a numpy
memmap, or nibabel's lazy ``img.dataobj`` of an uncompressed NIfTI: anything with ``shape`` and slicing)
and reads it in chunks of whole slices, ``series[:, :, z0:z1]``, each at most :data:`CHUNK_BYTES` of
float32. On an uncompressed NIfTI (x fastest, time slowest) a chunk of slices is one contiguous block per
frame, so reading it costs what its bytes cost; a numpy array is sliced as a view. The results do not
depend on the chunk size (tested per function).
"""

from __future__ import annotations

import numpy as np

#: the most bytes of float32 a chunk of a 4D series may hold (with its temporaries, a few times this)
CHUNK_BYTES = 256 << 20


def slice_chunks(shape, max_bytes=CHUNK_BYTES, itemsize=4):
    """Ranges ``[(z0, z1), ...]`` of whole slices covering ``shape[2]``, each at most ``max_bytes`` (one slice at least).

    >>> slice_chunks((512, 512, 24, 40), max_bytes=256 << 20)
    [(0, 6), (6, 12), (12, 18), (18, 24)]
    >>> slice_chunks((4, 4, 3, 10), max_bytes=1)
    [(0, 1), (1, 2), (2, 3)]
    """
    shape = tuple(int(s) for s in shape)
    per_slice = int(np.prod(shape[:2] + shape[3:], dtype=np.int64)) * int(itemsize)
    step = max(1, int(max_bytes) // max(per_slice, 1))
    return [(z0, min(z0 + step, shape[2])) for z0 in range(0, shape[2], step)]


def read_slices(series, z0, z1):
    """Slices ``z0:z1`` of a 3D or 4D array-like as a float32 numpy array (a view when it already is one).

    >>> read_slices(np.zeros((2, 2, 3, 4), np.float32), 1, 3).shape
    (2, 2, 2, 4)
    """
    return np.asarray(series[:, :, z0:z1], dtype=np.float32)


def iter_slices(series, max_bytes=CHUNK_BYTES):
    """Yield ``(z0, z1, chunk)`` over a 3D or 4D array-like, chunks of :func:`slice_chunks` read by :func:`read_slices`.

    >>> [(z0, z1, c.shape) for z0, z1, c in iter_slices(np.zeros((2, 2, 3, 4)), max_bytes=40)]
    [(0, 1, (2, 2, 1, 4)), (1, 2, (2, 2, 1, 4)), (2, 3, (2, 2, 1, 4))]
    """
    for z0, z1 in slice_chunks(series.shape, max_bytes):
        yield z0, z1, read_slices(series, z0, z1)


def masked_curves(series, mask, max_bytes=CHUNK_BYTES):
    """The curves (n, T) of the voxels in a 3D ``mask``, float32, in ``series[mask]``'s order, read chunk by chunk.

    Holds the chosen curves and one chunk, never the whole series.

    >>> s = np.arange(2 * 2 * 3 * 2, dtype=np.float32).reshape(2, 2, 3, 2); m = s[..., 0] % 4 == 0
    >>> bool(np.array_equal(masked_curves(s, m, max_bytes=16), s[m]))
    True
    """
    mask = np.asarray(mask, dtype=bool)
    # series[mask] orders voxels C-style (x slowest, z fastest): gather per chunk, then restore that order
    order = np.zeros(mask.shape, np.int64)
    order[mask] = np.arange(int(mask.sum()))
    parts, index = [], []
    for z0, z1, chunk in iter_slices(series, max_bytes):
        sub = mask[:, :, z0:z1]
        parts.append(chunk[sub])
        index.append(order[:, :, z0:z1][sub])
    n_frames = series.shape[3] if len(series.shape) == 4 else 0
    out = np.empty((int(mask.sum()),) + ((n_frames,) if n_frames else ()), np.float32)
    for rows, where in zip(parts, index):
        out[where] = rows
    return out
