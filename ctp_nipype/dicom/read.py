"""Reading a CT perfusion series from a folder of DICOM files (pydicom).

Which tool does what: pydicom reads every header (series discovery, slice
geometry, per-slice acquisition times, shuttle detection) and the pixel data
(rescaled to HU); dcm2niix is not used here because it keeps one acquisition
time per series and drops the per-frame and per-slice times that a perfusion
series needs (it serves the tests as an independent check of the voxel grid).

The result is a 4D array ``(x, y, z, t)`` in HU on the slices' own grid: x runs
along the DICOM rows' direction (increasing column index), y along the
columns' direction (increasing row index), z along the slice normal (sorted by
ImagePositionPatient); the affine maps it to RAS millimetres (DICOM's LPS with
x and y negated), as nibabel's DICOM reader does.

Timing: every 2D image has its own time (AcquisitionDateTime, else
AcquisitionDate + AcquisitionTime, else ContentDate + ContentTime; in an
enhanced multi-frame file the frame's FrameAcquisitionDateTime). Each slice
position thus has its own time series. When all slices share the frame times
(within a quarter of the shortest frame interval) the series is kept as it
is, non-uniform protocols included, and the small offsets are written as
``SliceTiming``. Otherwise (shuttle or jog mode: the table moves between
positions, so each table position is sampled at other times; or a slice that
lacks a frame) every slice's series is interpolated linearly in time
(:func:`ctp_nipype.perfusion.timing.interpolate_in_time`) onto the frame times
of the first table position, and the sidecar says so.

Nothing identifying leaves this module: the sidecar is built from a list of
acquisition parameters (:data:`SIDECAR_TAGS`), never by copying the header.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..perfusion.timing import interpolate_in_time


class DicomInputError(ValueError):
    """A DICOM folder or series that cannot be read as a CT perfusion series, with what to do."""


#: fewest temporal positions of a series taken for a perfusion series
MIN_CTP_TIME_POINTS = 10
#: slices whose times differ by less than this fraction of the shortest frame interval are one frame
SYNC_FRACTION = 0.25
#: positions closer than this (mm) along the slice normal are the same slice
POSITION_TOL_MM = 0.01
#: the acquisition parameters the sidecar keeps (DICOM keywords; none identifies the patient)
SIDECAR_TAGS = (
    "Manufacturer",
    "ManufacturerModelName",
    "KVP",
    "XRayTubeCurrent",
    "Exposure",
    "ExposureTime",
    "CTDIvol",
    "SliceThickness",
    "ConvolutionKernel",
    "ReconstructionDiameter",
    "ContrastBolusAgent",
)
#: the enhanced CT functional groups' names of the same parameters
ENHANCED_ALIASES = {"XRayTubeCurrent": "XRayTubeCurrentInmA", "Exposure": "ExposureInmAs",
                    "ExposureTime": "ExposureTimeInms"}
#: SOP classes of enhanced (multi-frame) CT
ENHANCED_CT_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2")
#: SOP class of a DICOMDIR (skipped)
MEDIA_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"


@dataclass
class Image2D:
    """One 2D image of a series: a single-frame file, or one frame of a multi-frame file."""

    path: Path
    frame: int | None  # index in a multi-frame file; None for a single-frame file
    sop_instance_uid: str
    position: np.ndarray  # ImagePositionPatient, LPS mm
    orientation: np.ndarray  # ImageOrientationPatient (row cosines, column cosines)
    spacing: tuple  # PixelSpacing (between rows, between columns), mm
    shape: tuple  # (rows, columns)
    time: tuple  # (date or None, seconds after midnight or None)
    time_tag: str | None
    slope: float
    intercept: float

    @property
    def normal(self):
        return np.cross(self.orientation[:3], self.orientation[3:])

    @property
    def geometry_key(self):
        return (
            tuple(np.round(self.orientation, 4)),
            tuple(round(float(s), 4) for s in self.spacing),
            tuple(self.shape),
        )

    @property
    def where(self):
        return f"{self.path}" + (f" frame {self.frame + 1}" if self.frame is not None else "")


@dataclass
class DicomSeries:
    """The headers of one series found in a folder."""

    uid: str
    images: list = field(default_factory=list)
    files: list = field(default_factory=list)
    without_pixels: list = field(default_factory=list)
    transfer_syntaxes: dict = field(default_factory=dict)  # path -> TransferSyntaxUID
    header: object = None  # the first file's dataset (pixel data not loaded)
    description: str = ""
    modality: str = ""

    @property
    def n_positions(self):
        return len(_slice_locations(self.images)) if self.images else 0

    @property
    def n_time_points(self):
        """Most images at one slice position (the temporal positions)."""
        if not self.images:
            return 0
        locations = _slice_locations(self.images)
        return max(Counter(locations).values())

    def label(self):
        text = f"series {self.uid}"
        if self.description:
            text += f" ('{self.description}')"
        return text

    def summary(self):
        if not self.images:
            return f"{self.label()}: {len(self.files)} files without pixel data ({self.modality or 'no modality'})"
        return (
            f"{self.label()}: {self.modality or '?'}, {len(self.files)} files, {self.n_positions} slice positions x "
            f"{self.n_time_points} time points"
        )


# ----------------------------------------------------------------------------------------------
# headers


def _parse_time(value):
    """DICOM TM (``HHMMSS.FFFFFF``, parts optional) as seconds after midnight."""
    text = str(value).strip()
    if not text:
        return None
    whole, _, fraction = text.partition(".")
    whole = whole.replace(":", "")
    try:
        hours = int(whole[0:2])
        minutes = int(whole[2:4]) if len(whole) >= 4 else 0
        seconds = int(whole[4:6]) if len(whole) >= 6 else 0
        frac = float("0." + fraction) if fraction else 0.0
    except ValueError:
        return None
    return hours * 3600 + minutes * 60 + seconds + frac


def _parse_date(value):
    text = str(value).strip().replace(".", "")
    try:
        return _dt.date(int(text[0:4]), int(text[4:6]), int(text[6:8]))
    except (ValueError, IndexError):
        return None


def _parse_datetime(value):
    """DICOM DT (``YYYYMMDDHHMMSS.FFFFFF&ZZXX``) as (date, seconds after midnight)."""
    text = str(value).strip()
    for sign in ("+", "-"):
        if sign in text[8:]:
            text = text[: 8 + text[8:].index(sign)]
    if len(text) < 8:
        return None, None
    date = _parse_date(text[:8])
    seconds = _parse_time(text[8:]) if len(text) > 8 else 0.0
    return date, seconds


def _image_time(ds, frame_content=None):
    """``(date, seconds, tag)`` of one image, first match: frame, DT, date + TM of acquisition, of content."""
    if frame_content is not None:
        for tag in ("FrameAcquisitionDateTime", "FrameReferenceDateTime"):
            value = frame_content.get(tag)
            if value:
                date, seconds = _parse_datetime(value)
                if seconds is not None:
                    return date, seconds, tag
    value = ds.get("AcquisitionDateTime")
    if value:
        date, seconds = _parse_datetime(value)
        if seconds is not None:
            return date, seconds, "AcquisitionDateTime"
    for date_tag, time_tag in (("AcquisitionDate", "AcquisitionTime"), ("ContentDate", "ContentTime")):
        value = ds.get(time_tag)
        if value:
            seconds = _parse_time(value)
            if seconds is not None:
                return _parse_date(ds.get(date_tag, "")), seconds, time_tag
    return None, None, None


def _functional_group(ds, frame, name):
    """The item of functional group ``name`` for a frame: per-frame first, then shared."""
    for container in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        groups = ds.get(container)
        if not groups:
            continue
        item = groups[frame] if container.startswith("PerFrame") else groups[0]
        sequence = item.get(name)
        if sequence:
            return sequence[0]
    return None


def _floats(value, n, what, where):
    try:
        out = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        out = np.zeros(0)
    if out.size != n:
        raise DicomInputError(
            f"{where} has no valid {what}; the series cannot be placed in space. Re-export it from the scanner "
            "or PACS with its full headers (image plane module)."
        )
    return out


def _images_of(ds, path):
    """The 2D images (geometry, time, rescale) of one dataset."""
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    uid = str(ds.get("SOPInstanceUID", path))
    if "PerFrameFunctionalGroupsSequence" in ds or str(ds.get("SOPClassUID", "")) in ENHANCED_CT_SOP_CLASSES:
        images = []
        for i in range(n_frames):
            where = f"{path} frame {i + 1}"
            plane = _functional_group(ds, i, "PlanePositionSequence")
            orient = _functional_group(ds, i, "PlaneOrientationSequence")
            measures = _functional_group(ds, i, "PixelMeasuresSequence")
            transform = _functional_group(ds, i, "PixelValueTransformationSequence")
            content = _functional_group(ds, i, "FrameContentSequence")
            date, seconds, tag = _image_time(ds, content)
            images.append(
                Image2D(
                    path, i, uid,
                    _floats(plane.get("ImagePositionPatient") if plane else None, 3, "ImagePositionPatient", where),
                    _floats(orient.get("ImageOrientationPatient") if orient else None, 6, "ImageOrientationPatient",
                            where),
                    tuple(_floats(measures.get("PixelSpacing") if measures else None, 2, "PixelSpacing", where)),
                    (int(ds.Rows), int(ds.Columns)),
                    (date, seconds), tag,
                    float(transform.get("RescaleSlope", 1.0)) if transform else float(ds.get("RescaleSlope", 1.0)),
                    float(transform.get("RescaleIntercept", 0.0)) if transform
                    else float(ds.get("RescaleIntercept", 0.0)),
                )
            )
        return images
    if n_frames > 1:
        raise DicomInputError(
            f"{path} holds {n_frames} frames without the enhanced multi-frame functional groups that place each "
            "frame in space and time; export the series as one file per image or as enhanced CT."
        )
    date, seconds, tag = _image_time(ds)
    return [
        Image2D(
            path, None, uid,
            _floats(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient", path),
            _floats(ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", path),
            tuple(_floats(ds.get("PixelSpacing"), 2, "PixelSpacing", path)),
            (int(ds.Rows), int(ds.Columns)),
            (date, seconds), tag,
            float(ds.get("RescaleSlope", 1.0) or 1.0),
            float(ds.get("RescaleIntercept", 0.0) or 0.0),
        )
    ]


def _dicom_files(folder):
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                yield Path(root) / name


def scan_folder(folder):
    """Read the headers of every DICOM file under ``folder`` and group them by series.

    Files that are not DICOM are skipped; so is a DICOMDIR. Returns ``{SeriesInstanceUID: DicomSeries}``.
    Raises :class:`DicomInputError` when the folder is missing or holds no DICOM file.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    folder = Path(folder)
    if not folder.is_dir():
        raise DicomInputError(f"The DICOM folder {folder} does not exist or is not a folder.")
    series = {}
    n_files = n_other = 0
    for path in _dicom_files(folder):
        n_files += 1
        try:
            ds = pydicom.dcmread(path, defer_size="4 KB")
        except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError):
            n_other += 1
            continue
        if str(ds.get("MediaStorageSOPClassUID", ds.file_meta.get("MediaStorageSOPClassUID", ""))) == \
                MEDIA_DIRECTORY_SOP_CLASS or "DirectoryRecordSequence" in ds:
            continue
        uid = str(ds.get("SeriesInstanceUID", "")) or "(no SeriesInstanceUID)"
        entry = series.setdefault(uid, DicomSeries(uid))
        entry.files.append(path)
        entry.transfer_syntaxes[path] = str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
        if entry.header is None:
            entry.header = ds
            entry.description = str(ds.get("SeriesDescription", "")).strip()
            entry.modality = str(ds.get("Modality", "")).strip()
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            entry.without_pixels.append(path)
            continue
        if "ImagePositionPatient" not in ds and "PerFrameFunctionalGroupsSequence" not in ds:
            entry.without_pixels.append(path)  # a secondary capture or a localiser without geometry
            continue
        entry.images.extend(_images_of(ds, path))
    if not series:
        raise DicomInputError(
            f"No DICOM file found in {folder} ({n_files} files looked at, none readable as DICOM with a "
            "preamble or a file meta header); give the folder that holds the CT perfusion series' .dcm files."
        )
    return series


# ----------------------------------------------------------------------------------------------
# choosing the perfusion series


def _slice_locations(images):
    """Index of each image's slice position along the normal of the first image (positions within the tolerance
    are one slice)."""
    normal = images[0].normal
    distance = np.array([float(np.dot(im.position, normal)) for im in images])
    return _cluster_offsets(distance, POSITION_TOL_MM).tolist()


def _merge_time_point_series(series_list):
    """Some exports give every time point of a perfusion scan its own series: at least
    :data:`MIN_CTP_TIME_POINTS` series of one time point each with the same frame of reference, geometry and
    slice positions are merged into one (None when there are no such series)."""
    groups = defaultdict(list)
    for entry in series_list:
        if entry.n_time_points != 1:
            continue
        first = entry.images[0]
        positions = tuple(sorted(round(float(np.dot(im.position, first.normal)), 2) for im in entry.images))
        key = (str(entry.header.get("FrameOfReferenceUID", "")), first.geometry_key, positions)
        groups[key].append(entry)
    big = [members for members in groups.values() if len(members) >= MIN_CTP_TIME_POINTS]
    if len(big) != 1:
        return None

    def start(entry):
        times = [_sort_seconds(im) for im in entry.images if im.time[1] is not None]
        return min(times) if times else 0.0

    members = sorted(big[0], key=start)
    merged = DicomSeries(
        uid=f"{members[0].uid} (+{len(members) - 1} series of one time point each)",
        images=[im for entry in members for im in entry.images],
        files=[path for entry in members for path in entry.files],
        without_pixels=[path for entry in members for path in entry.without_pixels],
        transfer_syntaxes={k: v for entry in members for k, v in entry.transfer_syntaxes.items()},
        header=members[0].header,
        description=members[0].description,
        modality=members[0].modality,
    )
    merged.parts = members
    return merged


def choose_series(series, series_uid=None, folder=""):
    """The perfusion series: ``series_uid`` if given, else the one series with many temporal positions (or, when
    there is none, the time points exported as one series each, merged: :func:`_merge_time_point_series`).

    Returns ``(DicomSeries, note)`` where ``note`` is one line naming the series left aside (or '').
    """
    if series_uid is not None:
        if series_uid not in series:
            listed = "; ".join(s.summary() for s in series.values())
            raise DicomInputError(f"--series-uid {series_uid} is not in {folder}; the folder holds: {listed}.")
        chosen = series[series_uid]
    else:
        with_images = [s for s in series.values() if s.images]
        if not with_images:
            files = [f for s in series.values() for f in s.without_pixels]
            raise DicomInputError(
                f"The DICOM files in {folder} have no pixel data with a position in space (first: {files[0]}; "
                f"{len(files)} files, {'; '.join(s.summary() for s in series.values())}); they are reports, "
                "presentation states or screenshots, not CT images: give the folder of the perfusion series."
            )
        candidates = [s for s in with_images if s.n_time_points >= MIN_CTP_TIME_POINTS]
        if len(candidates) > 1:
            listed = "; ".join(s.summary() for s in candidates)
            raise DicomInputError(
                f"{folder} holds {len(candidates)} series with {MIN_CTP_TIME_POINTS} or more time points: {listed}. "
                "Choose the perfusion series with --series-uid UID."
            )
        merged = None if candidates else _merge_time_point_series(with_images)
        if candidates:
            chosen = candidates[0]
        elif merged is not None:
            chosen = merged
        else:
            chosen = max(with_images, key=lambda s: (s.n_time_points, len(s.images)))
    parts = set(map(id, getattr(chosen, "parts", [chosen])))
    others = [s for s in series.values() if id(s) not in parts]
    note = ""
    if others:
        note = f"left aside {len(others)} other series: " + "; ".join(s.summary() for s in others)
    return chosen, note


# ----------------------------------------------------------------------------------------------
# checks of the chosen series, before any pixel is read


def _check_series(series):
    label = series.label()
    if not series.images:
        first = series.without_pixels[0] if series.without_pixels else series.files[0]
        raise DicomInputError(
            f"The {label} has no pixel data placed in space (e.g. {first}); it is not a CT image series: give the "
            "perfusion series."
        )
    if series.without_pixels:
        raise DicomInputError(
            f"{series.without_pixels[0]} of the {label} has no pixel data (or no ImagePositionPatient), unlike the "
            f"series' other {len(series.images)} images; remove it or re-export the series."
        )
    modality = series.modality.upper()
    if modality and modality != "CT":
        raise DicomInputError(f"The {label} is modality {modality}, not CT; give the CT perfusion series.")
    seen = {}
    for im in series.images:
        key = (im.sop_instance_uid, im.frame)
        if key in seen:
            raise DicomInputError(
                f"Duplicated instance: {im.where} and {seen[key].where} of the {label} are the same image "
                f"(SOPInstanceUID {im.sop_instance_uid}); remove one copy."
            )
        seen[key] = im
    geometries = Counter(im.geometry_key for im in series.images)
    if len(geometries) > 1:
        (main_key, n_main), (other_key, n_other) = geometries.most_common(2)
        odd = next(im for im in series.images if im.geometry_key == other_key)
        raise DicomInputError(
            f"The {label} mixes {len(geometries)} geometries (orientation, pixel spacing or matrix): {n_main} images "
            f"of {main_key[2][1]}x{main_key[2][0]} pixels at {main_key[1][1]:g} x {main_key[1][0]:g} mm against "
            f"{n_other} such as {odd.where} ({other_key[2][1]}x{other_key[2][0]} at {other_key[1][1]:g} x "
            f"{other_key[1][0]:g} mm); one perfusion series has one grid: separate the reconstructions "
            "(or choose another series with --series-uid)."
        )
    missing = [im for im in series.images if im.time[1] is None]
    if missing:
        raise DicomInputError(
            f"{missing[0].where} of the {label} has no acquisition time (none of FrameAcquisitionDateTime, "
            "AcquisitionDateTime, AcquisitionTime, ContentTime); the frame timing cannot be known. Re-export the "
            "series with its acquisition times (an anonymiser may have removed them)."
        )
    _check_transfer_syntaxes(series)


def _check_transfer_syntaxes(series):
    """Every file's transfer syntax has a decoder installed (checked before any pixel is read)."""
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import UID

    checked = {}
    for path in dict.fromkeys(im.path for im in series.images):
        uid = UID(series.transfer_syntaxes.get(path, "1.2.840.10008.1.2"))
        if uid not in checked:
            if not uid.is_compressed:
                checked[uid] = True
            else:
                try:
                    checked[uid] = bool(get_decoder(uid).is_available)
                except NotImplementedError:
                    checked[uid] = False
        if not checked[uid]:
            name = uid.name if uid.name != str(uid) else "unknown to pydicom"
            raise DicomInputError(
                f"{path} of the {series.label()} is compressed with transfer syntax {uid} ({name}), which none of "
                "the installed decoders reads; decompress the series first (e.g. `gdcmconv --raw` or `dcmdjpeg`) "
                "or install a decoder plugin for pydicom (pylibjpeg-libjpeg, pylibjpeg-openjpeg, python-gdcm)."
            )


# ----------------------------------------------------------------------------------------------
# the grid


@dataclass
class SeriesGeometry:
    """Where the slices of a series lie: the affine and, per slice, its source images."""

    affine: np.ndarray  # RAS voxel-to-world of the (x, y, z) array
    shape: tuple  # (x, y, z)
    slice_images: list  # per z index, the slice's images sorted by time
    gantry_tilt_deg: float
    lps_affine: np.ndarray = None  # the sheared source grid's LPS affine (before any tilt resampling)


LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _sort_seconds(im):
    date, seconds = im.time
    return (date.toordinal() * 86400.0 if date is not None else 0.0) + seconds


def _slice_geometry(series):
    images = series.images
    labels = _slice_locations(images)
    by_slice = defaultdict(list)
    for im, label in zip(images, labels):
        by_slice[label].append(im)
    slices = [sorted(by_slice[k], key=_sort_seconds) for k in sorted(by_slice)]
    label = series.label()
    for images_k in slices:
        for a, b in zip(images_k, images_k[1:]):
            if _sort_seconds(a) == _sort_seconds(b):
                raise DicomInputError(
                    f"Duplicated instances: {a.where} and {b.where} of the {label} are the same slice at the same "
                    f"time (different SOPInstanceUIDs); remove the copies (was the series exported twice?)."
                )
    first = slices[0][0]
    row_cos, col_cos = first.orientation[:3], first.orientation[3:]
    row_spacing, col_spacing = first.spacing
    normal = first.normal
    if len(slices) == 1:  # a single-slice series: the slice thickness as the z step
        positions = np.array([first.position])
        step = normal * float(series.header.get("SliceThickness", 1.0) or 1.0)
    else:
        positions = np.array([s[0].position for s in slices])
        steps = np.diff(positions, axis=0)
        step = steps.mean(axis=0)
        if not np.allclose(steps, step, atol=max(1e-3, 0.01 * np.linalg.norm(step))):
            gaps = np.linalg.norm(steps, axis=1)
            raise DicomInputError(
                f"The slices of the {label} are unevenly spaced (steps from {gaps.min():.3g} to {gaps.max():.3g} mm "
                "between ImagePositionPatient); a slice may be missing at every time point, or two slabs overlap. "
                "Re-export the complete series."
            )
    along = float(np.dot(step, normal))
    tilt = float(np.degrees(np.arccos(min(1.0, abs(along) / np.linalg.norm(step)))))
    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_spacing  # x: along a row (increasing column index)
    lps[:3, 1] = col_cos * row_spacing  # y: down the columns (increasing row index)
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    affine = LPS_TO_RAS @ lps
    rows, cols = first.shape
    return SeriesGeometry(affine, (cols, rows, len(slices)), slices, tilt, lps)


# ----------------------------------------------------------------------------------------------
# timing


@dataclass
class SeriesTiming:
    """The common time grid of a series and how each slice was put on it."""

    frame_times: np.ndarray  # seconds from the first frame
    slice_times: list  # per z index, that slice's own times (seconds from the first frame)
    resampled: bool
    shuttle: dict | None
    slice_timing: list | None  # per z index, offset from the frame start (s), when not resampled
    missing: list  # [(z, n_missing)] slices with fewer time points than the reference
    time_tag: str


def _absolute_times(slices):
    """Per slice, its images' times in seconds from the earliest image (dates honoured, midnight crossing)."""
    stamps = [[im.time for im in images] for images in slices]
    flat = [t for s in stamps for t in s]
    dates = [d for d, _ in flat if d is not None]
    base_date = min(dates) if dates else None
    out = []
    for s in stamps:
        seconds = []
        for date, sec in s:
            day = (date - base_date).days if (date is not None and base_date is not None) else 0
            seconds.append(day * 86400.0 + sec)
        out.append(np.asarray(seconds))
    first = min(float(t.min()) for t in out)
    out = [t - first for t in out]
    if not dates and max(float(t.max()) for t in out) > 43200:  # times only, crossing midnight
        out = [np.where(t > 43200, t - 86400, t) for t in out]
        first = min(float(t.min()) for t in out)
        out = [t - first for t in out]
    return out


def _cluster_offsets(offsets, tolerance):
    """Group values that lie within ``tolerance`` of their neighbour (sorted); returns a label per value."""
    order = np.argsort(offsets, kind="stable")
    labels = np.empty(len(offsets), dtype=int)
    current, previous = -1, None
    for idx in order:
        if previous is None or offsets[idx] - previous > tolerance:
            current += 1
        labels[idx] = current
        previous = offsets[idx]
    return labels


def _series_timing(series, geometry):
    label = series.label()
    slices = geometry.slice_images
    times = _absolute_times(slices)
    counts = np.array([t.size for t in times])
    tags = Counter(im.time_tag for images in slices for im in images)
    time_tag = tags.most_common(1)[0][0]
    if counts.max() < 2:
        raise DicomInputError(
            f"The {label} has one temporal position ({len(slices)} slices, each acquired once): it is a static "
            "scan, not a perfusion series. Give the CT perfusion series (many time points of the same slices)."
        )
    if counts.min() < 2:
        z = int(np.argmin(counts))
        raise DicomInputError(
            f"Slice {z} of the {label} ({slices[z][0].where}) was acquired once while other slices have up to "
            f"{counts.max()} time points; its time series cannot be rebuilt. Re-export the complete series."
        )
    reference = max(range(len(times)), key=lambda k: (counts[k], -times[k][0]))
    grid = times[reference]
    steps = np.diff(grid)
    tolerance = SYNC_FRACTION * float(steps.min())
    same_count = bool(np.all(counts == counts.max()))
    if same_count:
        offsets = np.stack(times) - grid  # (z, t)
        synchronous = bool(np.all(np.abs(offsets - offsets[:, :1]) <= tolerance)
                           and np.ptp(offsets[:, 0]) <= tolerance)
    else:
        synchronous = False
    if synchronous:
        frame_start = np.stack(times).min(axis=0)
        slice_offsets = np.median(np.stack(times) - frame_start, axis=1)
        origin = float(frame_start[0])
        return SeriesTiming(
            frame_start - origin, [t - origin for t in times], False, None,
            [float(v) for v in slice_offsets] if np.any(slice_offsets > 1e-6) else None, [], time_tag,
        )
    # each slice onto the reference slice's frame times; table positions are the groups of slices by start time
    first_times = np.array([t[0] for t in times])
    groups = _cluster_offsets(first_times - grid[0], tolerance)
    n_positions = int(groups.max()) + 1
    shuttle = None
    if n_positions > 1:
        shuttle = {
            "TablePositions": n_positions,
            "SlicesPerTablePosition": [int(np.sum(groups == g)) for g in range(n_positions)],
            "TablePositionOfSlice": [int(g) for g in groups],
            "TimeOffsetsSeconds": [float(np.median(first_times[groups == g] - grid[0])) for g in range(n_positions)],
        }
    missing = [(int(z), int(counts.max() - counts[z])) for z in range(len(times)) if counts[z] < counts.max()]
    origin = float(grid[0])
    return SeriesTiming(grid - origin, [t - origin for t in times], True, shuttle, None, missing, time_tag)


# ----------------------------------------------------------------------------------------------
# pixels


def _read_pixels(geometry, timing, label):
    """The (x, y, z, t) float32 HU array on the common time grid.

    Filled as a C-ordered (t, z, rows, columns) array, so that every image is one contiguous copy, and returned
    transposed: an (x, y, z, t) view in Fortran order, the order NIfTI stores (written without a copy).
    """
    import pydicom

    nx, ny, nz = geometry.shape
    n_t = timing.frame_times.size
    stacked = np.empty((n_t, nz, ny, nx), dtype=np.float32)

    def in_place(z):  # a slice read straight into the output, or into its own buffer to be put on the grid
        own = timing.slice_times[z]
        return not timing.resampled or (own.size == n_t and np.allclose(own, timing.frame_times, atol=1e-6))

    buffers = {z: np.empty((len(images), ny, nx), dtype=np.float32)
               for z, images in enumerate(geometry.slice_images) if not in_place(z)}
    by_file = defaultdict(list)  # each file decoded once, whatever order its frames have
    for z, images in enumerate(geometry.slice_images):
        for j, im in enumerate(images):
            by_file[im.path].append((im, z, j))
    for path, entries in by_file.items():
        try:
            pixels = pydicom.dcmread(path).pixel_array
        except Exception as err:  # noqa: BLE001 - pydicom and its plugins raise many kinds
            raise DicomInputError(
                f"The pixel data of {path} ({label}) cannot be decoded ({type(err).__name__}: {err}); the file "
                "may be truncated or its compression unsupported: re-export the series uncompressed."
            ) from None
        for im, z, j in entries:
            array = pixels if im.frame is None else pixels[im.frame]
            if array.ndim != 2:
                raise DicomInputError(
                    f"{im.where} ({label}) holds pixels of shape {array.shape}, not a greyscale image; a CT series "
                    "has one sample per pixel."
                )
            values = array.astype(np.float64) * im.slope + im.intercept  # (rows, columns)
            if z in buffers:
                buffers[z][j] = values
            else:
                stacked[j, z] = values
    for z, stack in buffers.items():  # time last for the interpolation, then back
        resampled = interpolate_in_time(np.moveaxis(stack, 0, -1), timing.slice_times[z], timing.frame_times)
        stacked[:, z] = np.moveaxis(resampled, -1, 0)
    return stacked.T


def _resample_gantry_tilt(data, geometry, fill_hu):
    """Resample a sheared (gantry-tilted) grid onto an orthogonal one with axial planes across the table axis.

    The output keeps the in-plane x axis and spacing, takes the table axis (the step between slice positions)
    as z with the same step, and y orthogonal to both, extended to hold every input voxel; linear interpolation
    (``scipy.ndimage.map_coordinates``, one 3D call per frame). Returns ``(data, affine_ras)``.
    """
    from scipy import ndimage

    lps = geometry.lps_affine
    e1 = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    step = lps[:3, 2]
    e3 = step / np.linalg.norm(step)
    e2 = np.cross(e3, e1)
    if np.dot(e2, lps[:3, 1]) < 0:
        e2 = -e2
    dx = np.linalg.norm(lps[:3, 0])
    dy = np.linalg.norm(lps[:3, 1])
    nx, ny, nz = data.shape[:3]
    corners = np.array([[i, j, k, 1] for i in (0, nx - 1) for j in (0, ny - 1) for k in (0, nz - 1)], float).T
    world = (lps @ corners)[:3] - lps[:3, 3:4]
    along_e2 = e2 @ world
    y_low, y_high = float(along_e2.min()), float(along_e2.max())
    ny_out = int(np.floor((y_high - y_low) / dy + 1e-6)) + 1
    out = np.eye(4)
    out[:3, 0] = e1 * dx
    out[:3, 1] = e2 * dy
    out[:3, 2] = step
    out[:3, 3] = lps[:3, 3] + e2 * y_low
    to_input = np.linalg.inv(lps) @ out
    grid = np.indices((nx, ny_out, nz), dtype=np.float32).reshape(3, -1)
    coords = (to_input[:3, :3] @ grid + to_input[:3, 3:4]).astype(np.float32)
    del grid
    # outside the input by more than round-off: the fill value; on the edge (within 1e-3 voxel): the edge's value
    outside = np.any((coords < -1e-3) | (coords > np.array([[nx - 1], [ny - 1], [nz - 1]]) + 1e-3), axis=0)
    result = np.empty((nx, ny_out, nz, data.shape[3]), dtype=np.float32)
    for t in range(data.shape[3]):
        values = ndimage.map_coordinates(data[..., t], coords, order=1, mode="nearest")
        values[outside] = fill_hu
        result[..., t] = values.reshape(nx, ny_out, nz)
    return result, LPS_TO_RAS @ out


# ----------------------------------------------------------------------------------------------
# the sidecar


def _acquisition_parameters(ds):
    """The sidecar's acquisition parameters: the whitelisted tags, top level or in the shared functional groups."""
    found = {}
    places = [ds]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        for name in ("CTAcquisitionDetailsSequence", "CTXRayDetailsSequence", "CTExposureSequence",
                     "CTReconstructionSequence", "CTAcquisitionTypeSequence", "PixelMeasuresSequence",
                     "UnassignedSharedConvertedAttributesSequence"):
            seq = shared[0].get(name)
            if seq:
                places.append(seq[0])
    for tag in SIDECAR_TAGS:
        for place in places:
            value = place.get(tag)
            if value is None and tag in ENHANCED_ALIASES:
                value = place.get(ENHANCED_ALIASES[tag])
            if value is None or value == "":
                continue
            if tag == "ConvolutionKernel":
                value = "\\".join(str(v) for v in value) if not isinstance(value, str) else value
            elif isinstance(value, (str, bytes)) and tag not in ("Manufacturer", "ManufacturerModelName",
                                                                  "ContrastBolusAgent"):
                try:
                    value = float(value)
                except ValueError:
                    value = str(value)
            elif hasattr(value, "real"):
                value = float(value)
            else:
                value = str(value)
            found[tag] = value
            break
    return found


@dataclass
class DicomCTP:
    """A CT perfusion series read from DICOM."""

    data: np.ndarray  # (x, y, z, t) float32 HU
    affine: np.ndarray  # RAS
    frame_times: np.ndarray  # seconds from the first frame
    sidecar: dict
    series: DicomSeries
    geometry: SeriesGeometry
    note: str = ""

    @property
    def voxel_size_mm(self):
        return tuple(float(v) for v in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))


def read_dicom_series(series):
    """Read one chosen series (checked first) into a :class:`DicomCTP`."""
    _check_series(series)
    label = series.label()
    geometry = _slice_geometry(series)
    timing = _series_timing(series, geometry)
    data = _read_pixels(geometry, timing, label)
    affine = geometry.affine
    tilt_note = None
    if geometry.gantry_tilt_deg > 0.01:
        data, affine = _resample_gantry_tilt(data, geometry, float(data.min()))
        tilt_note = (
            f"Gantry tilt of {geometry.gantry_tilt_deg:.2f} degrees: the sheared slices were resampled (linear "
            "interpolation) onto an orthogonal grid whose axial planes lie across the table axis"
        )
    enhanced = any(im.frame is not None for im in series.images)
    sidecar = {
        "Modality": "CT",
        "FrameTimesStart": [float(t) for t in timing.frame_times],
        "TimingSource": f"DICOM {timing.time_tag} of each image",
        "SourceFormat": "DICOM enhanced multi-frame CT" if enhanced else "DICOM CT, one file per image",
        "ConversionSoftware": "ctp_nipype (pydicom)",
        "ResampledInTime": bool(timing.resampled),
        "ShuttleMode": timing.shuttle is not None,
    }
    from .. import __version__

    sidecar["ConversionSoftwareVersion"] = __version__
    sidecar.update(_acquisition_parameters(series.header))
    if timing.slice_timing is not None:
        sidecar["SliceTiming"] = timing.slice_timing
    if timing.resampled:
        reasons = []
        if timing.shuttle is not None:
            reasons.append(
                f"shuttle (jog) mode: {timing.shuttle['TablePositions']} table positions sampled alternately, "
                f"offsets {', '.join(f'{v:.3g}' for v in timing.shuttle['TimeOffsetsSeconds'])} s"
            )
        if timing.missing:
            reasons.append(
                "missing frames: " + ", ".join(f"slice {z} lacks {n}" for z, n in timing.missing)
            )
        sidecar["TimeResampling"] = (
            "; ".join(reasons) + ". Each slice's series was interpolated linearly in time onto the frame times of "
            "the slice with the most time points (the first table position); before a slice's first sample it "
            "keeps that sample's value."
        )
        if timing.shuttle is not None:
            sidecar["ShuttleModeDetails"] = timing.shuttle
        if timing.missing:
            sidecar["MissingFrames"] = [{"Slice": z, "Count": n} for z, n in timing.missing]
    if getattr(series, "parts", None):
        sidecar["MergedSeries"] = (
            f"{len(series.parts)} series of one time point each (same frame of reference, grid and slice positions) "
            "merged into one perfusion series by acquisition time"
        )
    if tilt_note:
        sidecar["GantryTiltDegrees"] = round(geometry.gantry_tilt_deg, 4)
        sidecar["GantryTiltCorrection"] = tilt_note
    return DicomCTP(data, affine, timing.frame_times, sidecar, series, geometry)


def read_dicom_ctp(folder, series_uid=None):
    """Find the perfusion series in a DICOM folder and read it (:class:`DicomCTP`, its ``note`` naming the
    series left aside)."""
    series = scan_folder(folder)
    chosen, note = choose_series(series, series_uid, folder)
    ctp = read_dicom_series(chosen)
    ctp.note = note
    return ctp


def describe(ctp):
    """Lines for the console: what was read, how its timing was made."""
    nx, ny, nz, nt = ctp.data.shape
    steps = np.diff(ctp.frame_times)
    lines = [
        f"read {ctp.series.label()}: {nx} x {ny} x {nz} voxels of "
        f"{' x '.join(f'{v:.3g}' for v in ctp.voxel_size_mm)} mm, {nt} frames over {ctp.frame_times[-1]:.4g} s "
        f"(steps {steps.min():.3g}-{steps.max():.3g} s), times from {ctp.sidecar['TimingSource']}"
    ]
    if ctp.sidecar.get("TimeResampling"):
        lines.append("time resampling: " + ctp.sidecar["TimeResampling"])
    if ctp.sidecar.get("GantryTiltCorrection"):
        lines.append(ctp.sidecar["GantryTiltCorrection"])
    if ctp.note:
        lines.append(ctp.note)
    return lines
