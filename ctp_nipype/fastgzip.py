"""Faster ``.nii.gz`` reading and writing: ISA-L's gzip (the ``isal`` package) when it is installed.

Every 4D series the workflow passes between its steps is a gzipped NIfTI, and on a clinical scan
(512 x 512 x 8 x 40, 335 MB of float32) Python's zlib spent more time compressing and decompressing
than the steps computing: 42 s to compress and 15.7 s to decompress the scan, against 4.1 s and 6.2 s
with ISA-L at the same level and the same size (290 MB; measured on the shared 2-core box under a
load of about 9, ``benchmarks/bench_clinical.py`` docstring). The files are ordinary gzip streams
either way: any reader opens them.

:func:`register_with_nibabel` makes nibabel open ``.gz`` files with ISA-L; :data:`GzipFile` is the
class the package's own writer uses. Without ``isal`` both are Python's ``gzip``.
"""

from __future__ import annotations

import gzip

try:  # optional: pip install isal
    from isal import igzip, igzip_threaded
except ImportError:  # pragma: no cover - depends on the environment
    igzip = igzip_threaded = None

#: the gzip file class of the writers (``GzipFile(name, mode, compresslevel, fileobj, mtime=0)``)
GzipFile = igzip.IGzipFile if igzip is not None else gzip.GzipFile

#: ISA-L's levels are 0-3; nibabel's default (1) is ISA-L's fastest level that still compresses well
_ISAL_MAX_LEVEL = 3


def _isal_open(filename, mode="rb", compresslevel=1, mtime=0, keep_open=False):
    """nibabel's ``gzip_open`` with ISA-L: no file name in the header and ``mtime`` 0, as nibabel's own writer."""
    if "r" in mode:
        return igzip.IGzipFile(filename, mode)
    raw = open(filename, mode)
    stream = igzip.IGzipFile("", mode, min(int(compresslevel), _ISAL_MAX_LEVEL), raw, mtime=mtime)
    stream.myfileobj = raw  # closed with the stream
    return stream


def register_with_nibabel():
    """Open ``.gz`` files in nibabel with ISA-L (process-wide); returns whether ISA-L is in use."""
    if igzip is None:
        return False
    from nibabel.openers import ImageOpener, Opener

    # ImageOpener (what nibabel's images and array proxies read through) holds its own copy of the map,
    # made when nibabel was imported: both must be told
    for opener in (Opener, ImageOpener):
        opener.compress_ext_map[".gz"] = (_isal_open, ("mode", "compresslevel", "mtime", "keep_open"))
    return True


def open_stream(path):
    """A file object reading the file at ``path`` from its start to its end, decompressed when it ends in ``.gz``.

    With ISA-L a gzipped file is decompressed in a thread of its own (``isal.igzip_threaded``), ahead of the
    reader, so that decompressing (ISA-L leaves Python's lock while it works) overlaps what the reader does
    with each block: checking or writing the frames of a series as they come. Only forward reads: no seek.
    """
    path = str(path)
    if not path.endswith(".gz"):
        return open(path, "rb")
    if igzip_threaded is not None:
        return igzip_threaded.open(path, "rb", threads=1)
    return gzip.open(path, "rb")
