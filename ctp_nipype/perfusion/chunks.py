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

import os

import numpy as np

#: the most bytes a chunk may hold however much memory there is: reading 256 MB at a time already costs what
#: its bytes cost (:func:`read_slices`), so bigger chunks would only take memory
MAX_CHUNK_BYTES = 256 << 20
#: the least: below this, per-chunk costs (a pass of Python per chunk and frame) start to show
MIN_CHUNK_BYTES = 16 << 20
#: a chunk takes at most this share of the memory available when the package is imported: with its temporaries
#: (a few times the chunk) and one such chunk per process of a parallel run, the steps stay well inside it
CHUNK_MEMORY_SHARE = 1 / 32


def available_memory_bytes():
    """Memory available to new processes (``MemAvailable`` of /proc/meminfo, else free pages; 4 GiB if unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not POSIX
        return 4 << 30


def chunk_bytes(memory_bytes=None):
    """Bytes of float32 per chunk for ``memory_bytes`` of available memory (default :func:`available_memory_bytes`):
    :data:`CHUNK_MEMORY_SHARE` of it, within [:data:`MIN_CHUNK_BYTES`, :data:`MAX_CHUNK_BYTES`].

    >>> chunk_bytes(24 << 30) >> 20, chunk_bytes(2 << 30) >> 20, chunk_bytes(128 << 20) >> 20
    (256, 64, 16)
    """
    memory = available_memory_bytes() if memory_bytes is None else int(memory_bytes)
    return int(min(MAX_CHUNK_BYTES, max(MIN_CHUNK_BYTES, memory * CHUNK_MEMORY_SHARE)))


#: the most bytes of float32 a chunk of a 4D series may hold (with its temporaries, a few times this), from the
#: memory available when the package is imported (:func:`chunk_bytes`): 256 MB with 8 GB or more available
CHUNK_BYTES = chunk_bytes()


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

    nibabel's proxy of an uncompressed, unscaled float32 NIfTI is read through a memory map of the file
    (:func:`_mapped_nifti`), copied out and unmapped: a third of the time of nibabel's own slicing.

    >>> read_slices(np.zeros((2, 2, 3, 4), np.float32), 1, 3).shape
    (2, 2, 2, 4)
    """
    mapped = _mapped_nifti(series)
    if mapped is not None:
        return np.array(mapped[:, :, z0:z1], order="K")
    return np.asarray(series[:, :, z0:z1], dtype=np.float32)


def _mapped_nifti(series):
    """A read-only ``np.memmap`` of the data behind nibabel's array proxy ``series`` (:func:`_nifti_file`), else None."""
    found = _nifti_file(series)
    if found is None:
        return None
    return np.memmap(found[0], dtype=np.float32, mode="r", offset=found[1], shape=tuple(series.shape), order="F")


def _nifti_file(series):
    """``(path, offset)`` of the data when ``series`` is nibabel's proxy of an uncompressed ``.nii`` of native
    float32 with no scaling (x fastest, time slowest), else None."""
    if not getattr(series, "is_proxy", False) or getattr(series, "order", "F") != "F":
        return None
    path = getattr(series, "file_like", None)
    if not isinstance(path, str) or not path.endswith(".nii") or not os.path.isfile(path):
        return None
    if np.dtype(series.dtype) != np.dtype(np.float32) or (series.slope, series.inter) != (1.0, 0.0):
        return None
    return path, int(series.offset)


def iter_frames(series, z0, z1):
    """Yield, frame after frame, the block (x, y, z1 - z0) of slices ``z0:z1`` of a 4D array-like, float32.

    From a NIfTI behind nibabel's proxy (:func:`_nifti_file`) each block is a view into a memory map of the
    file (a block is contiguous there): read where it is used, nothing copied that is not; the chunk's pages
    count in the process's memory until the generator is done (unmapped). Measured at 512 x 512 x 6 x 40 on the
    shared 2-core machine: summing or gathering frames so took 0.5-0.7 of the CPU time of reading each block
    into a buffer, and a third of nibabel's slicing.

    >>> s = np.arange(2 * 1 * 3 * 2, dtype=np.float32).reshape(2, 1, 3, 2)
    >>> [frame[:, 0, 0].tolist() for frame in iter_frames(s, 1, 3)]
    [[2.0, 8.0], [3.0, 9.0]]
    """
    mapped = _mapped_nifti(series)
    chunk = mapped[:, :, z0:z1] if mapped is not None else read_slices(series, z0, z1)
    del mapped
    for frame in range(chunk.shape[3]):
        yield chunk[:, :, :, frame]


def read_frame(series, frame):
    """Frame ``frame`` (x, y, z) of a 4D array-like as float32: a copy out of the memory map of a NIfTI behind
    nibabel's proxy (:func:`_mapped_nifti`; a frame is one contiguous block there), a view of a float32 array.

    >>> read_frame(np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2), 1).ravel().tolist()
    [1.0, 3.0, 5.0, 7.0]
    """
    mapped = _mapped_nifti(series)
    if mapped is not None:
        return np.array(mapped[..., frame], order="F")
    return np.asarray(series[..., frame], dtype=np.float32)


def frame_extremes(series, max_bytes=CHUNK_BYTES):
    """Each voxel's largest value over time (x, y, z) and the series' smallest value, float32, chunk by chunk.

    >>> top, low = frame_extremes(np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2))
    >>> top.ravel().tolist(), float(low)
    ([1.0, 3.0, 5.0, 7.0], 0.0)
    """
    top = np.empty(tuple(series.shape[:3]), np.float32)
    low = np.float32(np.inf)
    for z0, z1 in slice_chunks(series.shape, max_bytes):
        chunk_top = top[:, :, z0:z1]
        for frame, block in enumerate(iter_frames(series, z0, z1)):
            if frame == 0:
                chunk_top[...] = block
            else:
                np.maximum(chunk_top, block, out=chunk_top)
            low = min(low, block.min())
    return top, np.float32(low)


def iter_masked_frames(series, mask, max_bytes=CHUNK_BYTES):
    """Yield ``(z0, z1, where, by_frame)`` over the chunks of slices holding voxels of the 3D ``mask``:
    ``where`` the flat indices of those voxels in the chunk's x-fastest order (``mask[:, :, z0:z1].ravel("F")``,
    so slice by slice), ``by_frame`` (T, n) float32 their values frame by frame (:func:`iter_frames`).

    >>> s = np.arange(2 * 1 * 3 * 2, dtype=np.float32).reshape(2, 1, 3, 2); m = s[..., 0] > 4
    >>> [(z0, z1, where.tolist(), by_frame.tolist()) for z0, z1, where, by_frame in iter_masked_frames(s, m)]
    [(0, 3, [1, 3, 5], [[6.0, 8.0, 10.0], [7.0, 9.0, 11.0]])]
    """
    for z0, z1 in slice_chunks(series.shape, max_bytes):
        sub = mask[:, :, z0:z1]
        if not sub.any():
            continue
        where = np.flatnonzero(sub.ravel(order="F"))
        by_frame = np.empty((series.shape[3], where.size), np.float32)
        for frame, block in enumerate(iter_frames(series, z0, z1)):
            np.take(block.ravel(order="F"), where, out=by_frame[frame], mode="clip")  # "raise" buffers out
        yield z0, z1, where, by_frame


def iter_slices(series, max_bytes=CHUNK_BYTES):
    """Yield ``(z0, z1, chunk)`` over a 3D or 4D array-like, chunks of :func:`slice_chunks` read by :func:`read_slices`.

    >>> [(z0, z1, c.shape) for z0, z1, c in iter_slices(np.zeros((2, 2, 3, 4)), max_bytes=40)]
    [(0, 1, (2, 2, 1, 4)), (1, 2, (2, 2, 1, 4)), (2, 3, (2, 2, 1, 4))]
    """
    for z0, z1 in slice_chunks(series.shape, max_bytes):
        yield z0, z1, read_slices(series, z0, z1)


def iter_masked_curves(series, mask, max_bytes=CHUNK_BYTES):
    """Yield ``(rows, curves)`` chunk by chunk: the curves (n, T) of a chunk's voxels in the 3D ``mask``
    (float32, C-contiguous) and their ``rows`` (int64) in ``series[mask]``'s order, so that
    ``out[rows] = f(curves)`` fills a per-voxel result in that order whatever the chunk size.

    Holds the chunk's curves, one frame of it and index arrays of its voxels, never a volume of indices. The
    curves are gathered frame by frame (:func:`iter_masked_frames`; a fifth of the time of ``chunk[mask]`` on
    a NIfTI's layout, which reads each curve's frames megabytes apart) and come in x-fastest voxel order.

    >>> s = np.arange(2 * 2 * 3 * 2, dtype=np.float32).reshape(2, 2, 3, 2); m = s[..., 0] % 4 == 0
    >>> [(rows.tolist(), curves[:, 0].tolist()) for rows, curves in iter_masked_curves(s, m, max_bytes=16)]
    [([0, 3], [0.0, 12.0]), ([2, 5], [8.0, 20.0]), ([1, 4], [4.0, 16.0])]
    >>> [rows.tolist() for rows, _ in iter_masked_curves(s, m, max_bytes=1 << 20)]
    [[0, 3, 2, 5, 1, 4]]
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != tuple(series.shape[:3]):
        raise ValueError(f"The mask has shape {mask.shape} but the series {tuple(series.shape)}.")
    # series[mask] orders voxels C-style (x slowest, z fastest): a voxel's row is the count of mask voxels in the
    # (x, y) lines before its own plus those before it in its line
    per_line = mask.sum(axis=2, dtype=np.int64)
    line_start = (np.cumsum(per_line.ravel()) - per_line.ravel()).reshape(per_line.shape)
    before, walked = np.zeros_like(per_line), 0  # mask voxels of each line in slices :walked

    def chunk_rows(z0, z1):
        nonlocal walked
        before[...] += mask[:, :, walked:z0].sum(axis=2, dtype=np.int64)
        walked = z0
        sub = mask[:, :, z0:z1]
        return line_start[:, :, None] + before[:, :, None] + np.cumsum(sub, axis=2, dtype=np.int64) - sub

    if len(series.shape) != 4:
        for z0, z1 in slice_chunks(series.shape, max_bytes):
            sub = mask[:, :, z0:z1]
            if sub.any():
                yield chunk_rows(z0, z1)[sub], read_slices(series, z0, z1)[sub]
        return
    for z0, z1, where, by_frame in iter_masked_frames(series, mask, max_bytes):
        yield chunk_rows(z0, z1).ravel(order="F")[where], np.ascontiguousarray(by_frame.T)


#: a memory page: reading one value of a mapped file reads this many bytes
_PAGE_BYTES = 4096


def masked_curves(series, mask, max_bytes=CHUNK_BYTES):
    """The curves (n, T) of the voxels in a 3D ``mask``, float32, in ``series[mask]``'s order, read chunk by chunk.

    Holds the chosen curves and one chunk, never the whole series. A few voxels of a mapped NIfTI
    (:func:`_mapped_nifti`; fewer than one per page of the file and frame) are read alone, their pages only.

    >>> s = np.arange(2 * 2 * 3 * 2, dtype=np.float32).reshape(2, 2, 3, 2); m = s[..., 0] % 4 == 0
    >>> bool(np.array_equal(masked_curves(s, m, max_bytes=16), s[m]))
    True
    """
    mask = np.asarray(mask, dtype=bool)
    n_frames = series.shape[3] if len(series.shape) == 4 else 0
    n_voxels = int(mask.sum())
    mapped = _mapped_nifti(series)
    if mapped is not None and n_voxels * n_frames * _PAGE_BYTES < mapped.nbytes:
        return np.array(mapped[np.nonzero(mask)])  # few voxels: touch their pages only, not every chunk
    out = np.empty((n_voxels,) + ((n_frames,) if n_frames else ()), np.float32)
    for rows, curves in iter_masked_curves(series, mask, max_bytes):
        out[rows] = curves
    return out
