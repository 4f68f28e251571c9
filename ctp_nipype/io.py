"""Reading and writing the files of the conventions (NIfTI, JSON sidecars, curve TSVs).

This module knows files, not science: it turns a path into arrays with
checked shapes and timing, and arrays back into files, atomically (written to
a temporary name in the destination folder and renamed, so that a killed run
never leaves a map that looks complete).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np

from . import __url__, __version__
from .fastgzip import GzipFile, register_with_nibabel
from .perfusion.timing import (
    FrameTiming,
    TimingError,
    check_frame_times,
    check_timing_units,
    frame_times_from_sources,
)

register_with_nibabel()  # ISA-L's gzip for every .nii.gz when installed (ctp_nipype.fastgzip)


class InputError(ValueError):
    """An input file that cannot be used, with what is wrong and what to do."""


def sidecar_path(path):
    """The JSON sidecar next to a NIfTI (``x.nii.gz`` -> ``x.json``).

    >>> str(sidecar_path("/d/sub-01_ctp.nii.gz"))
    '/d/sub-01_ctp.json'
    """
    path = Path(path)
    name = path.name
    for ext in (".nii.gz", ".nii", ".tsv", ".json"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return path.with_name(name + ".json")


def strip_extension(name):
    """File name without ``.nii``, ``.nii.gz``, ``.tsv`` or ``.json``.

    >>> strip_extension("sub-01_ses-01_ctp.nii.gz")
    'sub-01_ses-01_ctp'
    """
    name = Path(name).name
    for ext in (".nii.gz", ".nii", ".tsv", ".json"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def output_prefix(in_file):
    """The conventions' output prefix: the input's name without ``_ctp`` and extension.

    >>> output_prefix("/data/sub-01_ses-01_ctp.nii.gz")
    'sub-01_ses-01'
    >>> output_prefix("scan.nii")
    'scan'
    """
    stem = strip_extension(in_file)
    return stem[: -len("_ctp")] if stem.endswith("_ctp") else stem


def read_json(path):
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not valid JSON ({err}); fix or remove the file.") from None


def unreadable_nifti(what, path, err):
    """The :class:`InputError` for a NIfTI that nibabel cannot read (truncated, corrupt, not NIfTI)."""
    return InputError(
        f"The {what} {path} cannot be read as NIfTI ({type(err).__name__}: {err}). "
        "Check that the file is complete (not truncated) and a valid .nii or .nii.gz."
    )


def load_nifti(path, what="image", read_data=True):
    """Load a NIfTI with a specific error for missing, corrupt or truncated files.

    ``read_data=False``: the header only (``data`` is None), for a file whose values are read later.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"The {what} {path} does not exist.")
    try:
        img = nb.load(str(path))
        # touch the data now so that truncated files fail here, not deep in numpy
        data = np.asanyarray(img.dataobj) if read_data else None
    except Exception as err:  # nibabel raises many kinds for corrupt files
        raise unreadable_nifti(what, path, err) from None
    return img, data


@dataclass
class CTPImage:
    """A loaded 4D CTP series with its timing."""

    path: Path
    data: np.ndarray  # float32, (x, y, z, t), HU; nibabel's array proxy when loaded lazily
    affine: np.ndarray
    header: nb.Nifti1Header
    timing: FrameTiming
    sidecar: dict

    @property
    def frame_times(self):
        return self.timing.frame_times

    @property
    def spatial_shape(self):
        return self.data.shape[:3]


def load_ctp(path, frame_interval=None, sidecar=None, min_frames=10, allow_long_frames=False, lazy=False):
    """Load a 4D CTP NIfTI (HU) and its frame timing per the conventions.

    With ``lazy`` (for the series the pipeline's own steps pass on: uncompressed float32 NIfTI checked
    when it was loaded) ``data`` is nibabel's array proxy, read only where it is sliced
    (:mod:`ctp_nipype.perfusion.chunks`), and the values are not checked again. A gzipped or scaled file is
    read whole even then: slicing it would decompress it once per slice range.

    The timing rules of :func:`ctp_nipype.perfusion.timing.frame_times_from_sources` apply
    (seconds; milliseconds, a corrupt frame time or an over-long series refused unless
    ``allow_long_frames``, or the sidecar's ``AllowLongFrames`` that LoadCTP writes for the
    later steps when the user allowed them).

    Parameters
    ----------
    path : str or Path
        The 4D NIfTI.
    frame_interval : float, optional
        Explicit frame interval in seconds, the last timing source.
    sidecar : str or Path, optional
        JSON sidecar; default the file next to ``path``.
    min_frames : int
        Fewer frames than this is an error.
    allow_long_frames : bool
        Accept frame intervals above 10 s and series above 10 minutes.

    Returns
    -------
    CTPImage
    """
    path = Path(path)
    if lazy and _can_read_lazily(path):
        img = nb.load(str(path), mmap=False)
        check_image_type(img, path)
        if len(img.shape) != 4:
            raise InputError(f"The series {path} has shape {img.shape}: not a 4D (x, y, z, time) series.")
        check_frame_count(img.shape[3], path, min_frames)
        timing, meta = read_timing(path, img, img.shape[3], frame_interval, sidecar, allow_long_frames)
        return CTPImage(path, img.dataobj, img.affine, img.header, timing, meta)
    img, data = load_nifti(path, "CTP scan")
    check_image_type(img, path)
    if data.ndim != 4:
        raise InputError(
            f"The CTP scan {path} has {data.ndim} dimensions {data.shape}; a 4D (x, y, z, time) "
            "series is needed (a 2D slab must be stored as x, y, 1, time)."
        )
    check_frame_count(data.shape[3], path, min_frames)
    data = np.asarray(data, dtype=np.float32)
    check_finite(data, path)
    timing, meta = read_timing(path, img, data.shape[3], frame_interval, sidecar, allow_long_frames)
    return CTPImage(path, data, img.affine, img.header, timing, meta)


def check_finite(data, path):
    """Raise :class:`InputError` when ``data`` (values of the CTP scan at ``path``) holds NaN or infinite values.

    >>> check_finite(np.array([1.0, np.nan]), "scan.nii")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctp_nipype.io.InputError: The CTP scan scan.nii contains 1 NaN or infinite values...
    """
    finite = np.isfinite(data)
    if not finite.all():
        refuse_non_finite(int(finite.size - np.count_nonzero(finite)), path)


def check_frame_count(n_frames, path, min_frames=10):
    """Raise :class:`InputError` for a series of fewer than ``min_frames`` frames."""
    if n_frames < min_frames:
        raise InputError(
            f"The CTP scan {path} has {n_frames} frames; at least {min_frames} are needed "
            "to see the baseline, the bolus and its wash-out."
        )


def _can_read_lazily(path):
    """Whether slices of the NIfTI at ``path`` can be read without the rest: uncompressed, float32, unscaled."""
    if not str(path).endswith(".nii"):
        return False
    try:
        header = nb.load(str(path), mmap=False).header
    except Exception:  # noqa: BLE001 - the full load gives the specific error
        return False
    slope, inter = header.get_slope_inter()
    return header.get_data_dtype() == np.float32 and slope in (None, 1.0) and inter in (None, 0.0)


def read_timing(path, img=None, n_frames=None, frame_interval=None, sidecar=None, allow_long_frames=False):
    """The frame timing of a CTP scan and its sidecar's contents, from the header and sidecar alone.

    Cheap (the image data is not read), so that a command can check the timing of every scan
    before any work starts. Returns ``(FrameTiming, sidecar dict)``; raises :class:`InputError`.
    """
    path = Path(path)
    if img is None:
        try:
            img = nb.load(str(path))
        except Exception as err:  # noqa: BLE001 - nibabel raises many kinds for corrupt headers
            raise unreadable_nifti("CTP scan", path, err) from None
        check_image_type(img, path)
    if n_frames is None:
        shape = img.shape
        if len(shape) != 4:
            raise InputError(
                f"The CTP scan {path} has {len(shape)} dimensions {tuple(shape)}; a 4D (x, y, z, time) "
                "series is needed (a 2D slab must be stored as x, y, 1, time)."
            )
        n_frames = shape[3]
    sidecar_file = Path(sidecar) if sidecar is not None else sidecar_path(path)
    meta = read_json(sidecar_file) if sidecar_file.exists() else {}
    if not isinstance(meta, dict):
        raise InputError(
            f"The sidecar {sidecar_file} holds a JSON {type(meta).__name__}, not an object; "
            'it must look like {"FrameTimesStart": [...]} (fix or remove the file).'
        )
    pixdim4 = float(img.header["pixdim"][4])
    time_unit = img.header.get_xyzt_units()[1]
    try:
        timing = frame_times_from_sources(
            n_frames, sidecar=meta, pixdim4=pixdim4, time_unit=time_unit, frame_interval=frame_interval,
            allow_long_frames=bool(allow_long_frames or meta.get("AllowLongFrames")),
        )
    except TimingError as err:
        raise InputError(f"{path}: {err}") from None
    return timing, meta


def check_image_type(img, path, what="CTP scan"):
    """Refuse a NIfTI that cannot hold Hounsfield units or has no usable geometry.

    An RGB or complex image (dcm2niix writes RGB24 for secondary captures and
    screenshots) holds colours, not attenuation; an affine with no extent along an axis
    (all zero, or a zero column) places every voxel at one point.
    """
    dtype = img.get_data_dtype()
    if dtype.names is not None or dtype.kind in "cV":
        raise InputError(
            f"The {what} {path} stores {'RGB colour' if dtype.names else str(dtype)} values, not Hounsfield units; "
            "it is a screenshot or a colour rendering, not the CT series. Convert the original DICOM series "
            "(dcm2niix) instead."
        )
    affine = np.asarray(img.affine, dtype=float)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(
            f"The {what} {path} has no usable geometry: its affine (voxel to mm) is "
            f"{'not finite' if not np.all(np.isfinite(affine)) else 'singular (all zero or a zero axis)'}, so "
            "voxel sizes and positions are unknown. Set the NIfTI's sform/qform (e.g. with nibabel "
            "img.set_sform(affine)) or reconvert the DICOM series."
        )


#: plausible attenuation of a CT scan in HU: padding down to -3024, metal up to tens of thousands
PLAUSIBLE_HU = (-3100.0, 35000.0)


def check_plausible_hu(data, path, hu_range=PLAUSIBLE_HU):
    """Raise :class:`InputError` when a scan's values cannot be Hounsfield units.

    Two failures: values outside ``hu_range`` (corrupt or wrongly scaled data),
    and an image with no negative values and a median above 500 (stored
    values written without the DICOM RescaleSlope/RescaleIntercept, so air is
    0 or 24 instead of -1000).

    >>> check_plausible_hu(np.array([-1000.0, 35.0, 1200.0]), "scan.nii.gz")
    >>> check_plausible_hu(np.array([0.0, 1060.0, 1100.0]), "scan.nii.gz")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctp_nipype.io.InputError: The CTP scan scan.nii.gz does not look like Hounsfield units ...
    """
    _check_hu(float(np.min(data)), float(np.max(data)), lambda: float(np.median(data)), path, hu_range)


def _check_hu(low, high, median, path, hu_range):
    """:func:`check_plausible_hu` on a series' range; ``median()`` is asked for only when no value is negative."""
    if low < hu_range[0] or high > hu_range[1]:
        raise InputError(
            f"The CTP scan {path} has values from {low:.6g} to {high:.6g}, outside the plausible HU range "
            f"[{hu_range[0]:g}, {hu_range[1]:g}]. Convert the scan to HU (apply RescaleSlope and "
            "RescaleIntercept) or check that the file is not corrupt."
        )
    if low >= 0 and median() > 500:
        raise InputError(
            f"The CTP scan {path} does not look like Hounsfield units (no negative values, median "
            f"{median():.0f}): air should be near -1000 HU. Apply the DICOM RescaleSlope and "
            "RescaleIntercept when converting the scan."
        )


def check_enhancement(data, path):
    """Raise :class:`InputError` when no voxel of a 4D series changes over time (a constant or all-zero
    scan has no contrast bolus to measure).

    >>> check_enhancement(np.zeros((2, 2, 1, 5)), "scan.nii.gz")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctp_nipype.io.InputError: The CTP scan scan.nii.gz has the same value in every frame...
    """
    _check_changes(bool(np.any(np.ptp(data, axis=-1) > 0)), path)


def _check_changes(changes, path):
    if not changes:
        raise InputError(
            f"The CTP scan {path} has the same value in every frame, so it shows no contrast bolus; "
            "check that it is the perfusion series (one volume per time point)."
        )


def refuse_non_finite(n_bad, path):
    """Raise :class:`InputError` when ``n_bad`` values of the CTP scan at ``path`` are NaN or infinite."""
    if n_bad:
        raise InputError(
            f"The CTP scan {path} contains {n_bad} NaN or infinite values; replace them "
            "(e.g. by the image's background value) before running."
        )


class SeriesValueChecks:
    """The value checks of :func:`load_ctp`, :func:`check_plausible_hu` and :func:`check_enhancement`, one frame
    at a time, so that a series is checked as it is streamed (memory: two frames, not the series).

    The "no negative value" check of unscaled DICOM values uses the median of the first frame (the whole
    series' median needs the whole series; an unscaled scan fails either way).

    >>> checks = SeriesValueChecks("scan.nii.gz")
    >>> for t in range(3):
    ...     checks.update(np.full((2, 2, 1), -1000.0 + 10 * t))
    >>> checks.check()
    >>> checks = SeriesValueChecks("scan.nii.gz"); checks.update(np.zeros((2, 1, 1))); checks.update(np.zeros((2, 1, 1)))
    >>> checks.check()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctp_nipype.io.InputError: The CTP scan scan.nii.gz has the same value in every frame...
    """

    def __init__(self, path, hu_range=PLAUSIBLE_HU):
        self.path, self.hu_range = path, hu_range
        self.low, self.high, self.n_nonfinite, self.changes, self.first = np.inf, -np.inf, 0, False, None

    def update(self, frame):
        frame = np.asarray(frame)
        finite = np.isfinite(frame)
        if not finite.all():
            self.n_nonfinite += int(frame.size - np.count_nonzero(finite))
            frame = frame[finite]
        if frame.size:
            self.low, self.high = min(self.low, float(frame.min())), max(self.high, float(frame.max()))
        if self.first is None:
            self.first = frame.copy()
        elif not self.changes and not self.n_nonfinite:
            self.changes = bool(np.any(frame != self.first))

    def check(self):
        """Raise :class:`InputError` for the first check that failed (non-finite values, HU, no change)."""
        refuse_non_finite(self.n_nonfinite, self.path)
        _check_hu(self.low, self.high, lambda: float(np.median(self.first)), self.path, self.hu_range)
        _check_changes(self.changes, self.path)


def check_series_values(path, hu_range=PLAUSIBLE_HU):
    """:class:`SeriesValueChecks` over the 4D NIfTI at ``path``, read one frame at a time (one pass, even gzipped)."""
    checks = SeriesValueChecks(path, hu_range)
    for frame in read_frames(path):
        checks.update(frame)
    checks.check()


def read_frames(path, what="CTP scan"):
    """The frames of a 4D NIfTI as float32, in one pass (:func:`ctp_nipype.slabs.iter_frames`); a truncated or
    corrupt file raises :class:`InputError`."""
    from .slabs import iter_frames

    frames = iter_frames(path)
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except (OSError, EOFError, ValueError) as err:  # a truncated or corrupt file, gzipped or not
            raise unreadable_nifti(what, path, err) from None
        yield frame


def load_mask(path, spatial_shape, affine=None, what="mask"):
    """Load a 3D mask that must match the scan's grid; returns a bool array."""
    img, data = load_nifti(path, what)
    data = np.asarray(data)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.shape != tuple(spatial_shape):
        raise InputError(
            f"The {what} {path} has shape {data.shape} but the scan has {tuple(spatial_shape)}; "
            "resample the mask to the scan's grid."
        )
    if affine is not None and not np.allclose(img.affine, affine, atol=1e-3):
        raise InputError(
            f"The {what} {path} is on another grid than the scan (the affines differ); "
            "resample it to the scan."
        )
    return np.asarray(data) > 0


def read_curve_tsv(path, column="aif", n_frames=None, check_units=False, allow_long_frames=False):
    """Read one curve column (and the optional ``time`` column) from a TSV with a header row.

    ``column`` is a column name, or a sequence of names of which the first the file has is read
    (e.g. ``("aif_corrected", "aif")``: the partial-volume corrected AIF when the file has one).
    ``check_units`` applies the timing rules of :func:`ctp_nipype.perfusion.timing.check_timing_units`
    to the ``time`` column (a user's file: milliseconds refused; frames above 10 s unless
    ``allow_long_frames``); the pipeline's own TSVs, checked when the scan was loaded, skip them.

    Returns
    -------
    values : ndarray
    times : ndarray or None
    """
    candidates = (column,) if isinstance(column, str) else tuple(column)
    column = candidates[0]
    path = Path(path)
    if not path.exists():
        raise InputError(f"The curve file {path} does not exist.")
    try:
        # utf-8-sig: spreadsheets save UTF-8 with a byte-order mark, which would stick to the first column's name
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputError(
            f"The curve file {path} is not a tab-separated text file ({err}); save it as UTF-8 text "
            f"with a header row naming '{column}' and one row per frame."
        ) from None
    if not rows:
        raise InputError(f"The curve file {path} is empty; it needs a header row with a '{column}' column.")
    header = [h.strip() for h in rows[0]]
    column = next((name for name in candidates if name in header), candidates[0])
    if len(candidates) > 1 and column not in header:
        raise InputError(
            f"The curve file {path} has none of the columns {', '.join(repr(c) for c in candidates)} (columns: "
            f"{', '.join(header) or 'none'}); it must be a tab-separated file with a header row naming one of them."
        )
    if column not in header:
        raise InputError(
            f"The curve file {path} has no '{column}' column (columns: {', '.join(header) or 'none'}); "
            f"it must be a tab-separated file with a header row naming '{column}'."
        )

    def column_values(name):
        j = header.index(name)
        out = []
        for i, row in enumerate(rows[1:], start=2):
            try:
                out.append(float(row[j]))
            except (ValueError, IndexError):
                raise InputError(
                    f"Line {i} of {path} has no number in column '{name}' "
                    f"({row[j] if j < len(row) else 'missing'!r}); every row needs a number there."
                ) from None
        return np.asarray(out)

    values = column_values(column)
    if not np.all(np.isfinite(values)):
        raise InputError(f"The '{column}' column of {path} contains NaN or infinite values.")
    if n_frames is not None and values.size != n_frames:
        raise InputError(
            f"The '{column}' column of {path} has {values.size} rows but the scan has {n_frames} frames; "
            "give one value per frame."
        )
    times = None
    if "time" in header:
        try:
            times = check_frame_times(column_values("time"), values.size, f"The 'time' column of {path}")
            if check_units:
                times = check_timing_units(times, f"The 'time' column of {path}", "curve time column",
                                           allow_long_frames)
        except TimingError as err:
            raise InputError(str(err)) from None
    return values, times


def prepare_output_dir(folder, what="output folder"):
    """Create ``folder`` if missing and check that files can be written in it.

    Raises :class:`InputError` with what to do when the path is a file, cannot
    be created or is not writable. Returns the folder as a Path.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"The {what} {folder} is a file, not a folder; give a folder (it is created if missing).")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(
            f"The {what} {folder} cannot be created ({err.strerror or err}); choose a folder you may write to."
        ) from None
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise InputError(
            f"The {what} {folder} is not writable ({err.strerror or err}); fix its permissions or choose "
            "another folder."
        ) from None
    return folder


#: temporary files of the atomic writers: ``.<name>.<random>.tmp`` beside the destination; never a
#: name ending in ``.nii.gz`` or ``.json``, so that a half-written file cannot pass for an output
TEMP_SUFFIX = ".tmp"


def _atomic_target(path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    return path, Path(tmp)


def _read_umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: the process's umask, read once (os.umask can only be read by setting it)
_UMASK = _read_umask()


def _publish(tmp, path):
    """Rename a finished temporary file to its destination, with the permissions of a normal new file.

    ``mkstemp`` creates files readable by their owner only; outputs get ``0o666 & ~umask``
    like any file the user writes.
    """
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)


def write_json(path, payload):
    """Write JSON atomically (sorted keys, indented)."""
    path, tmp = _atomic_target(path)
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True, default=_json_default)
            handle.write("\n")
        _publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


def write_nifti(path, data, affine, header=None, sidecar=None, dtype=np.float32):
    """Write a NIfTI (and its JSON sidecar) atomically.

    The sidecar is written first and the image last, so an image that exists
    always has its sidecar.
    """
    data = np.asarray(data, dtype=dtype)
    img = nb.Nifti1Image(data, affine)
    if header is not None:
        img.header.set_xyzt_units(*header.get_xyzt_units())
        zooms = tuple(header.get_zooms()[: data.ndim])
        img.header.set_zooms(zooms + (1.0,) * (data.ndim - len(zooms)))
    img.header.set_data_dtype(dtype)
    if sidecar is not None:
        write_sidecar(path, sidecar)
    path, tmp = _atomic_target(path)
    try:
        with open(tmp, "wb") as raw:
            if path.name.endswith(".gz"):
                # the destination's name and mtime 0 in the gzip header: the same map gives the same bytes
                with GzipFile(path.name[: -len(".gz")], "wb", 1, raw, mtime=0) as stream:
                    img.to_stream(stream)
            else:
                img.to_stream(raw)
        _publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------------------------------------- tables (TSV)


def format_value(value, missing="n/a"):
    """A TSV cell: ``missing`` for None and non-finite numbers (BIDS: ``n/a``), 6 significant digits.

    >>> format_value(1 / 3), format_value(float("nan")), format_value(12), format_value("osvd")
    ('0.333333', 'n/a', '12', 'osvd')
    >>> format_value(True), format_value(None, missing="")
    ('true', '')
    """
    if value is None:
        return missing
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}" if np.isfinite(value) else missing
    return str(value)


def table_columns(rows):
    """The columns of dict rows: every key, in the order first seen.

    >>> table_columns([{"set": 1, "cbf": 2.5}, {"set": 2, "cbv": 1.0}])
    ['set', 'cbf', 'cbv']
    """
    columns = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def write_table_tsv(path, rows, columns=None, missing="n/a"):
    """Write dict rows as a TSV with a header row, atomically.

    ``columns`` default: every key of the rows (:func:`table_columns`); cells by :func:`format_value`
    (``missing`` for None and non-finite numbers: ``n/a``, the BIDS convention).
    """
    columns = table_columns(rows) if columns is None else list(columns)
    path, tmp = _atomic_target(path)
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            writer.writerow(columns)
            for row in rows:
                writer.writerow([format_value(row.get(name), missing) for name in columns])
        _publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def append_table_row(path, row, columns, missing=""):
    """Append one dict row to a TSV log, writing the header row first when the file is new.

    A file that exists keeps its own header's columns (a log started by an older version).
    Not atomic: a log grows row by row.
    """
    path = Path(path)
    new = not path.exists()
    if not new:
        with open(path, encoding="utf-8") as handle:
            columns = handle.readline().rstrip("\n").split("\t")
    with open(path, "a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        if new:
            writer.writerow(columns)
        writer.writerow([format_value(row.get(name), missing) for name in columns])
    return path


def read_table_tsv(path, required=(), hint="give a table written by ctp_nipype"):
    """Rows of a TSV with a header row as dicts of strings (``n/a`` and empty -> None).

    A missing ``required`` column is an :class:`InputError` that ends with ``hint`` (what to give instead).
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        rows = [{k: (None if v in ("n/a", "") else v) for k, v in row.items()} for row in reader]
        header = reader.fieldnames or []
    missing = [name for name in required if name not in header]
    if missing:
        raise InputError(
            f"The table {path} lacks the column(s) {', '.join(missing)} (it has: {', '.join(header) or 'none'}); "
            f"{hint}."
        )
    return rows


def read_columns_tsv(path):
    """All columns of a numeric TSV with a header row, as float arrays (``n/a`` -> NaN)."""
    rows = read_table_tsv(path)
    if not rows:
        raise InputError(f"The table {path} has no rows.")
    return {name: np.array([np.nan if r[name] is None else float(r[name]) for r in rows]) for name in rows[0]}


def write_curves_tsv(path, columns):
    """Write named 1D arrays of equal length as a TSV with a header row, atomically.

    Non-finite values are written as ``n/a`` (the BIDS convention for a missing value).
    """
    arrays = {name: np.asarray(values, dtype=float) for name, values in columns.items()}
    if len({a.size for a in arrays.values()}) > 1:
        raise ValueError("All curve columns must have the same length.")
    rows = [dict(zip(arrays, values)) for values in zip(*arrays.values())]
    return write_table_tsv(path, rows, list(arrays))


def write_text(path, text):
    """Write a text file (an HTML page, a markdown table) atomically, UTF-8."""
    path, tmp = _atomic_target(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        _publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------------------------- sidecars and provenance


def software_version():
    """``ctp_nipype <version>``, the sidecars' ``SoftwareVersion``."""
    return f"ctp_nipype {__version__}"


def generated_by(name="ctp_nipype"):
    """BIDS ``GeneratedBy`` of a dataset_description.json or a results file (name, version, code URL)."""
    return [{"Name": name, "Version": __version__, "CodeURL": __url__}]


def provenance(*sources, **fields):
    """The provenance fields every sidecar carries: ``Sources`` (the input files, absolute) and
    ``SoftwareVersion``, plus ``fields``.

    Unset sources (None, nipype's Undefined) are left out. The derivatives sink turns the
    paths into BIDS URIs when it publishes the sidecar (:func:`ctp_nipype.bids.source_uris`).

    >>> provenance("/d/a.nii.gz", None, Method="osvd")["Sources"]
    ['/d/a.nii.gz']
    """
    return {
        "Sources": [os.path.abspath(s) for s in sources if s],
        "SoftwareVersion": software_version(),
        **fields,
    }


def write_sidecar(path, payload):
    """Write the JSON sidecar of a data file (``x.nii.gz`` or ``x.tsv`` -> ``x.json``), atomically."""
    return write_json(sidecar_path(path), payload)


def voxel_volume_ml(header):
    """Volume of one voxel in ml (mm^3 / 1000) from a NIfTI header."""
    zooms = header.get_zooms()[:3]
    return float(np.prod(zooms)) / 1000.0


class FileBackedMaps(Mapping):
    """``{key: array}`` read from its file by ``read(key, path)`` each time a key is asked for: a clinical scan's
    maps of every method (gigabytes) are never held together, one at a time at most by each reader.

    >>> maps = FileBackedMaps({("osvd", "cbf"): "x.nii.gz"}, lambda key, path: key[1] + ":" + path)
    >>> list(maps), maps[("osvd", "cbf")]
    ([('osvd', 'cbf')], 'cbf:x.nii.gz')
    """

    def __init__(self, paths, read):
        self._paths, self._read = dict(paths), read

    def __getitem__(self, key):
        return self._read(key, self._paths[key])

    def __iter__(self):
        return iter(self._paths)

    def __len__(self):
        return len(self._paths)


def map_filename(prefix, method, name, ext=".nii.gz"):
    """The conventions' file name of a map: ``<prefix>_desc-<method>_<map><ext>``.

    >>> map_filename("sub-01_ses-01", "osvd", "cbf")
    'sub-01_ses-01_desc-osvd_cbf.nii.gz'
    """
    from .bids import derivative_name

    return derivative_name(prefix, name, desc=method, extension=ext)


def write_perfusion_maps(out_dir, prefix, method, maps, affine, header=None, metadata=None, mask=None):
    """Write perfusion maps and curves with the conventions' names and JSON sidecars.

    Parameters
    ----------
    out_dir : str or Path
        Destination folder (created if missing).
    prefix : str
        File-name prefix (``sub-01_ses-01``).
    method : str
        ``ssvd``, ``csvd``, ``osvd`` or ``transformer``.
    maps : dict
        ``{map name: array}``, names from :data:`ctp_nipype.perfusion.constants.UNITS`
        (3D maps, or 4D curves such as ``residue`` and ``localaif``); with ``mask``, the values of the
        mask's voxels in ``volume[mask]``'s order: shape (n,) for a map, (n, T) for curves.
    affine, header
        Geometry of the scan.
    metadata : dict
        Extra sidecar fields shared by all maps (method parameters, constants,
        provenance). Each sidecar also gets ``Units`` and ``Description``.
    mask : ndarray of bool, shape (x, y, z), optional
        Where the values go; 0 elsewhere. Curves are then written a frame at a time (the 4D array is never
        built).

    Non-finite values are written as 0.

    Returns
    -------
    dict
        ``{map name: Path}``.
    """
    from .perfusion.constants import UNITS

    descriptions = {
        "cbf": "Cerebral blood flow",
        "cbv": "Cerebral blood volume",
        "mtt": "Mean transit time (central volume theorem, 60 * CBV / CBF)",
        "tmax": "Time to the maximum of the deconvolved residue function",
        "bad": "Bolus arrival delay relative to the global AIF",
        "residue": "Flow-scaled residue function K(t) = rho / kappa_H * F * r(t)",
        "localaif": "Local arterial input function",
    }
    out_dir = Path(out_dir)
    written = {}
    unmask = _Unmask(np.asarray(mask, dtype=bool)) if mask is not None else None
    for name, values in maps.items():
        sidecar = {"Units": UNITS.get(name, ""), "Description": descriptions.get(name, name), "Method": method}
        sidecar.update(metadata or {})
        path = out_dir / map_filename(prefix, method, name)
        values = _finite_or_zero(values)
        if mask is None:
            written[name] = write_nifti(path, values, affine, header, sidecar)
        elif values.ndim == 1:
            written[name] = write_nifti(path, unmask(values), affine, header, sidecar)
        else:
            from .slabs import FrameWriter

            by_frame = np.ascontiguousarray(values.T)
            with FrameWriter(path, mask.shape + by_frame.shape[:1], affine, header, sidecar) as out:
                for frame in by_frame:
                    out.write(unmask(frame))
            written[name] = path
    return written


def _finite_or_zero(values):
    """``values`` as float32 with non-finite values set to 0 (copied only when it has any)."""
    values = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(values)
    if finite.all():
        return values
    return np.where(finite, values, np.float32(0))


class _Unmask:
    """``unmask(values)``: a float32 volume of ``mask``'s shape holding ``values`` at its voxels (in
    ``volume[mask]``'s order), 0 elsewhere; laid out x fastest as NIfTI stores it, so that writing it is one copy.
    The voxels' positions are found once for all the volumes of one mask."""

    def __init__(self, mask):
        self.shape = mask.shape
        self.where = np.ravel_multi_index(np.nonzero(mask), mask.shape, order="F")

    def __call__(self, values):
        volume = np.zeros(self.shape, np.float32, order="F")
        volume.ravel(order="F")[self.where] = values  # a view: the volume is F-contiguous
        return volume


def copy_atomic(source, destination):
    """Copy a file to ``destination`` through a temporary name in the same folder."""
    import shutil

    destination, tmp = _atomic_target(destination)
    try:
        shutil.copyfile(source, tmp)
        _publish(tmp, destination)
    finally:
        tmp.unlink(missing_ok=True)
    return destination


def timing_provenance(scan, resampled_here=False):
    """Timing provenance for sidecars, carried over from an upstream step's sidecar.

    A series that LoadCTP resampled arrives uniform, with ``ResampledToUniformGrid``
    and ``TimingSource`` in its sidecar; those are kept, so that every map says
    how its time axis was made; so are ``ShuttleMode`` and ``TimeResampling`` of a
    series converted from DICOM (:mod:`ctp_nipype.dicom`) whose slices were put on
    one time grid.
    """
    provenance = {
        "TimingSource": scan.sidecar.get("TimingSource", scan.timing.source),
        "ResampledToUniformGrid": bool(resampled_here or scan.sidecar.get("ResampledToUniformGrid", False)),
    }
    # what the DICOM conversion did to the time axis (shuttle mode, missing frames): carried to every map
    for key in ("ShuttleMode", "TimeResampling"):
        if scan.sidecar.get(key):
            provenance[key] = scan.sidecar[key]
    return provenance
