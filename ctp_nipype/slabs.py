"""Slabs of a scan: how many (from the memory available), where they start, and NIfTI I/O one frame at a time.

A whole-brain scan (512 x 512 x 160 x 40 is 6.7 GB of float32) does not fit in memory several times over,
so the workflow deconvolves it in slabs of slices: :func:`plan_slabs` cuts the slices into slabs holding
about as many brain voxels each, as many as the memory available asks for and at least one per process;
:func:`iter_frames` reads a 4D NIfTI (``.nii`` or ``.nii.gz``) one frame at a time in a single pass; and
:class:`FrameWriter` writes one frame at a time, so that joining slabs never holds a whole 4D series.
"""

from __future__ import annotations

import os

import nibabel as nb
import numpy as np

from .perfusion.chunks import available_memory_bytes

#: bytes a slab costs per float32 value of its 4D series in a deconvolution step: the series, its
#: concentration, the residue (and the network's local AIF), the copies made when writing (measured
#: peak / series size of the sSVD and network steps on 512 x 512 x 8 x 40: see benchmarks/bench_clinical.py)
BYTES_PER_SERIES_VALUE = 4 * 6
#: share of the available memory the parallel slab steps may take together
MEMORY_SHARE = 0.5
#: the most float32 series a slab holds, however much memory there is: a deconvolution step costs the same
#: per voxel on a bigger slab, so bigger slabs only cost memory (about 6 times this per job in flight:
#: :data:`BYTES_PER_SERIES_VALUE`) and balance worse over the processes
MAX_SLAB_SERIES_BYTES = 256 << 20


def plan_slabs(brain_voxels_per_slice, n_frames, n_procs=1, n_slabs=None, slice_voxels=None, memory_bytes=None):
    """Slice ranges ``[(z0, z1), ...]`` that cover the scan, each with about the same number of brain voxels.

    Parameters
    ----------
    brain_voxels_per_slice : sequence of int
        Brain-mask voxels in each slice (the work a slab carries).
    n_frames : int
        Frames of the series.
    n_procs : int
        Processes that run slabs at once: at least this many slabs (where there are slices for them).
    n_slabs : int, optional
        Slabs asked for; default from the memory: enough that ``n_procs`` slabs in flight take at most
        :data:`MEMORY_SHARE` of ``memory_bytes``, and none holds more than :data:`MAX_SLAB_SERIES_BYTES`
        of series.
    slice_voxels : int, optional
        Voxels in one slice (x * y) of the series the steps read; default the brain voxels' maximum.
    memory_bytes : int, optional
        Memory to plan for; default :func:`available_memory_bytes`.

    Examples
    --------
    >>> plan_slabs([0, 10, 10, 10, 10, 0], 40, n_slabs=2)
    [(0, 3), (3, 6)]
    >>> plan_slabs([5] * 4, 40, n_slabs=9)
    [(0, 1), (1, 2), (2, 3), (3, 4)]
    """
    counts = np.asarray(brain_voxels_per_slice, dtype=np.int64)
    n_slices = counts.size
    if n_slices == 0:
        raise ValueError("A scan with no slices has no slabs.")
    if n_slabs is None:
        memory = available_memory_bytes() if memory_bytes is None else int(memory_bytes)
        per_slice = int(slice_voxels or max(int(counts.max()), 1)) * n_frames * BYTES_PER_SERIES_VALUE
        slices_in_flight = max(1, int(MEMORY_SHARE * memory // max(per_slice, 1)))
        n_slabs = max(int(n_procs), -(-n_slices * int(n_procs) // slices_in_flight))
        slice_series_bytes = int(slice_voxels or max(int(counts.max()), 1)) * n_frames * 4  # float32
        slices_per_slab = max(1, MAX_SLAB_SERIES_BYTES // slice_series_bytes)
        n_slabs = max(n_slabs, -(-n_slices // slices_per_slab))
    n_slabs = int(min(max(1, n_slabs), n_slices))
    # cut where the cumulative brain voxels cross equal shares; every slab keeps at least one slice
    cumulative = np.cumsum(counts)
    total = cumulative[-1]
    cuts = [0]
    for k in range(1, n_slabs):
        cut = int(np.searchsorted(cumulative, total * k / n_slabs, side="left")) + 1 if total else k * n_slices // n_slabs
        cut = min(max(cut, cuts[-1] + 1), n_slices - (n_slabs - k))
        cuts.append(cut)
    cuts.append(n_slices)
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:])]


def iter_frames(path):
    """Yield the frames (x, y, z) of a 4D NIfTI as float32, in one pass over the (possibly gzipped) file.

    A gzipped file is decompressed ahead of the frames in a thread of its own when ISA-L is installed
    (:func:`ctp_nipype.fastgzip.open_stream`). A file that ends early raises ``OSError`` (or ``EOFError``).
    """
    from .fastgzip import open_stream

    img = nb.load(str(path))
    proxy = img.dataobj
    shape = img.shape
    if len(shape) == 3:
        shape = shape + (1,)
    dtype = img.header.get_data_dtype()
    n_voxels = int(np.prod(shape[:3]))
    slope, inter = float(proxy.slope), float(proxy.inter)
    with open_stream(path) as handle:
        _read_exactly(handle, bytearray(int(proxy.offset)), path)  # the header and extensions
        for _ in range(shape[3]):
            raw = np.empty(n_voxels, dtype)
            _read_exactly(handle, raw.view(np.uint8), path)
            frame = raw.reshape(shape[:3], order="F")
            frame = frame.astype(np.float32, copy=False)
            if slope != 1.0 or inter != 0.0:
                frame = frame * np.float32(slope) + np.float32(inter)
            yield frame


def _read_exactly(handle, buffer, path):
    """Fill ``buffer`` (bytes-like) from ``handle``; a file that ends first raises ``OSError``."""
    view, filled = memoryview(buffer).cast("B"), 0
    while filled < len(view):
        got = handle.readinto(view[filled:])
        if not got:
            raise OSError(f"{path}: the file ends {len(view) - filled} bytes early (truncated).")
        filled += got


class FrameWriter:
    """Write a float32 NIfTI frame by frame (``.nii`` or ``.nii.gz``), atomically, with its JSON sidecar.

    The header is the one :func:`ctp_nipype.io.write_nifti` writes for the same array (units and zooms of
    ``header``), so a map written here reads back the same.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.nii.gz"
    >>> with FrameWriter(path, (2, 2, 1, 3), np.eye(4)) as out:
    ...     for t in range(3):
    ...         out.write(np.full((2, 2, 1), t, np.float32))
    >>> nb.load(path).get_fdata()[0, 0, 0].tolist()
    [0.0, 1.0, 2.0]
    """

    def __init__(self, path, shape, affine, header=None, sidecar=None):
        from .io import sidecar_path, write_json

        self.path = path
        self.shape = tuple(int(s) for s in shape)
        # the header of write_nifti's image, built on a zero-stride stand-in (no memory for the data)
        stand_in = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), self.shape, (0,) * len(self.shape))
        img = nb.Nifti1Image(stand_in, affine)
        if header is not None:
            img.header.set_xyzt_units(*header.get_xyzt_units())
            zooms = tuple(header.get_zooms()[: len(self.shape)])
            img.header.set_zooms(zooms + (1.0,) * (len(self.shape) - len(zooms)))
        img.header.set_data_dtype(np.float32)
        img.update_header()
        img.header.set_data_offset(352)
        img.header.set_slope_inter(1.0, 0.0)  # as nibabel's array writer leaves them
        self._header_bytes = img.header.binaryblock + b"\x00" * 4  # no extensions
        self._frames = int(np.prod(self.shape[3:])) if len(self.shape) > 3 else 1
        self._written = 0
        if sidecar is not None:
            write_json(sidecar_path(path), sidecar)

    def __enter__(self):
        from .fastgzip import GzipFile
        from .io import _atomic_target

        self.path, self._tmp = _atomic_target(self.path)
        self._raw = open(self._tmp, "wb")
        name = self.path.name
        self._stream = GzipFile(name[: -len(".gz")], "wb", 1, self._raw, mtime=0) if name.endswith(".gz") else self._raw
        self._stream.write(self._header_bytes)
        return self

    def write(self, frame):
        frame = np.asarray(frame, dtype=np.float32)
        if frame.shape != self.shape[:3]:
            raise ValueError(f"A frame of {self.path.name} must have shape {self.shape[:3]}, got {frame.shape}.")
        self._stream.write(frame.tobytes(order="F"))
        self._written += 1

    def _incomplete(self):
        """What is missing from the file, or '' when it is whole."""
        return "" if self._written == self._frames else f"{self._written} frames written of {self._frames}."

    def __exit__(self, exc_type, exc, tb):
        from .io import _publish

        try:
            if self._stream is not self._raw:
                self._stream.close()
            self._raw.close()
            if exc_type is None:
                incomplete = self._incomplete()
                if incomplete:
                    raise ValueError(f"{self.path.name}: {incomplete}")
                _publish(self._tmp, self.path)
        finally:
            self._tmp.unlink(missing_ok=True)
        return False


class SliceWriter(FrameWriter):
    """Write a 4D float32 ``.nii`` (uncompressed) by ranges of slices, atomically, with its JSON sidecar.

    For steps that work on chunks of slices (:mod:`ctp_nipype.perfusion.chunks`): each call of
    :meth:`write_slices` puts a block (x, y, z1 - z0, T) in place, one contiguous write per frame, so that
    no step holds the whole output. The header is :class:`FrameWriter`'s (that of
    :func:`ctp_nipype.io.write_nifti`). Every slice must be written once before the file is published.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.nii"
    >>> with SliceWriter(path, (2, 1, 3, 2), np.eye(4)) as out:
    ...     out.write_slices(1, np.ones((2, 1, 2, 2)))
    ...     out.write_slices(0, np.zeros((2, 1, 1, 2)))
    >>> nb.load(path).get_fdata()[0, 0, :, 1].tolist()
    [0.0, 1.0, 1.0]
    """

    def __init__(self, path, shape, affine, header=None, sidecar=None):
        if not str(path).endswith(".nii"):
            raise ValueError(f"SliceWriter writes uncompressed .nii files only, not {path}.")
        if len(tuple(shape)) != 4:
            raise ValueError(f"SliceWriter writes 4D series, got shape {tuple(shape)}.")
        super().__init__(path, shape, affine, header, sidecar)
        self._slices_written = np.zeros(self.shape[2], bool)

    def __enter__(self):
        super().__enter__()
        self._raw.flush()
        self._raw.truncate(len(self._header_bytes) + 4 * int(np.prod(self.shape, dtype=np.int64)))
        return self

    def write(self, frame):  # pragma: no cover - a frame at a time is FrameWriter's job
        raise TypeError("SliceWriter writes ranges of slices: use write_slices(z0, block).")

    def write_slices(self, z0, block):
        """Put ``block`` (x, y, nz, T) at slices ``z0:z0 + nz``."""
        block = np.asarray(block, dtype=np.float32)
        nx, ny, nz, n_frames = self.shape
        if block.ndim != 4 or block.shape[:2] != (nx, ny) or block.shape[3] != n_frames or z0 + block.shape[2] > nz:
            raise ValueError(f"A block of {self.path.name} at slice {z0} must be ({nx}, {ny}, <= {nz - z0}, "
                             f"{n_frames}), got {block.shape}.")
        fd = self._raw.fileno()
        frame_bytes = nx * ny * nz * 4
        start = len(self._header_bytes) + z0 * nx * ny * 4
        for t in range(n_frames):
            frame = block[..., t]
            # NIfTI's order is x fastest: a frame already laid out so (its transpose C-contiguous) is written
            # from its own memory, any other copied once into that order
            os.pwrite(fd, frame.T if frame.flags.f_contiguous else frame.tobytes(order="F"), start + t * frame_bytes)
        self._slices_written[z0 : z0 + block.shape[2]] = True

    def _incomplete(self):
        missing = np.flatnonzero(~self._slices_written)
        return f"slices {missing[:5].tolist()} (of {missing.size} missing) were never written." if missing.size else ""
