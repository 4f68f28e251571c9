"""Writing a 4D CT perfusion array (e.g. the digital phantom) as a DICOM series, in vendor-like layouts.

Test data for the DICOM reader, and for users who want to try the DICOM path
(``ctp-convert``, ``ctp-perfusion DICOM_DIR``, ``--dicom-out``) without a
patient's scan. Layouts:

* ``single``: one CT Image Storage file per slice per time point, each with its
  own acquisition time (``time_tag``: AcquisitionTime with AcquisitionDate,
  AcquisitionDateTime, or ContentTime with ContentDate);
* ``enhanced``: one multi-frame file converted from the single-frame files by
  highdicom's Legacy Converted Enhanced CT (per-frame position and
  FrameAcquisitionDateTime in the functional groups);
* shuttle (jog) mode: give ``slice_times`` with other times per table position
  (:func:`shuttle_slice_times`) and data sampled at those times
  (:func:`make_shuttle_phantom`);
* a missing frame: ``drop=[(z, t)]`` leaves images out.

The slices are written in the usual axial orientation (ImageOrientationPatient
1\\0\\0\\0\\1\\0: rows towards the patient's left, columns towards the back), the
array being flipped as needed; HU are stored as integers
``round((HU - intercept) / slope)``, so what a reader gets back is the input
quantised to ``rescale_slope``. The patient is "Phantom^Digital" (nothing real).
"""

from __future__ import annotations

import copy
import datetime as _dt
from pathlib import Path

import numpy as np

#: CT Image Storage
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: the clock time of frame time 0 in the written series
SERIES_START = _dt.datetime(2026, 1, 15, 10, 0, 0)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
TIME_TAGS = ("AcquisitionTime", "AcquisitionDateTime", "ContentTime", None)


def _uid(*parts):
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def shuttle_slice_times(frame_times, n_slices, n_positions=2, offset_s=None):
    """Per-slice acquisition times of a shuttle (jog) mode series, shape ``(n_slices, n_frames)``.

    The slices are split into ``n_positions`` contiguous table positions; position ``b`` is sampled at
    ``frame_times + b * offset_s`` (default: the shortest frame interval divided by ``n_positions``, the table
    moving half-way between two sweeps for two positions).

    >>> shuttle_slice_times([0.0, 2.0, 4.0], 4)[:, :2]
    array([[0., 2.],
           [0., 2.],
           [1., 3.],
           [1., 3.]])
    """
    frame_times = np.asarray(frame_times, dtype=float)
    if offset_s is None:
        offset_s = float(np.min(np.diff(frame_times))) / n_positions
    position = np.minimum(np.arange(n_slices) * n_positions // n_slices, n_positions - 1)
    return frame_times[None, :] + position[:, None] * float(offset_s)


def make_shuttle_phantom(frame_times, n_positions=2, offset_s=None, **phantom_options):
    """A phantom scan as a shuttle-mode scanner samples it: each table position at its own times.

    Returns ``(hu, slice_times, reference)``: the (x, y, z, t) HU array whose slices of table position ``b``
    come from the phantom made at ``frame_times + b * offset_s`` (same seed, so the same anatomy and bolus),
    the per-slice times, and the phantom at ``frame_times`` (the truth on the first position's grid).
    """
    from .phantom import make_phantom

    frame_times = np.asarray(frame_times, dtype=float)
    reference = make_phantom(frame_times=frame_times, **phantom_options)
    n_slices = reference.hu.shape[2]
    slice_times = shuttle_slice_times(frame_times, n_slices, n_positions, offset_s)
    hu = reference.hu.copy()
    for row in np.unique(slice_times[:, 0]):
        if row == frame_times[0]:
            continue
        slices = np.flatnonzero(slice_times[:, 0] == row)
        shifted = make_phantom(frame_times=slice_times[slices[0]], **phantom_options)
        hu[:, :, slices, :] = shifted.hu[:, :, slices, :]
    return hu, slice_times, reference


def _standard_orientation(hu, affine):
    """Flip x/y so that the LPS row and column directions point along +x and +y (the usual axial DICOM)."""
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=float)
    hu = np.asarray(hu)
    for axis in (0, 1):
        if lps[axis, axis] < 0:
            hu = np.flip(hu, axis)
            lps[:, 3] += lps[:, axis] * (hu.shape[axis] - 1)
            lps[:, axis] *= -1
    return hu, lps


def _tm(seconds):
    moment = SERIES_START + _dt.timedelta(seconds=float(seconds))
    return moment.strftime("%H%M%S.%f"), moment.strftime("%Y%m%d")


def _base_dataset(study, series_uid, series_number, description):
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.PatientName = "Phantom^Digital"
    ds.PatientID = "PHANTOM-0001"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study["StudyInstanceUID"]
    ds.StudyDate = SERIES_START.strftime("%Y%m%d")
    ds.StudyTime = SERIES_START.strftime("%H%M%S")
    ds.StudyID = "1"
    ds.AccessionNumber = "PH0001"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Head perfusion (digital phantom)"
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.SeriesDate = ds.StudyDate
    ds.SeriesTime = ds.StudyTime
    ds.FrameOfReferenceUID = study["FrameOfReferenceUID"]
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "ctp_nipype"
    ds.ManufacturerModelName = "digital phantom"
    ds.SoftwareVersions = "1"
    ds.DeviceSerialNumber = "0"
    ds.KVP = 80
    ds.XRayTubeCurrent = 200
    ds.Exposure = 100
    ds.ExposureTime = 500
    ds.ConvolutionKernel = "H20f"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleType = "HU"
    ds.PatientPosition = "HFS"
    ds.BodyPartExamined = "HEAD"
    return ds


def write_dicom_series(
    hu,
    affine,
    folder,
    frame_times=None,
    slice_times=None,
    layout="single",
    time_tag="AcquisitionTime",
    rescale_slope=1.0,
    rescale_intercept=-1024.0,
    drop=(),
    series_number=5,
    description="CT perfusion (phantom)",
    study=None,
    seed=0,
):
    """Write a 4D HU array as a DICOM CT series; returns the list of files written.

    Parameters
    ----------
    hu : ndarray, (x, y, z, t)
        Attenuation in HU on the grid of ``affine`` (RAS mm, as nibabel).
    affine : ndarray, (4, 4)
    folder : str or Path
        Created if missing.
    frame_times : array_like, optional
        Seconds, one per frame, shared by every slice (give this or ``slice_times``).
    slice_times : ndarray, (z, t), optional
        Seconds per slice and frame (shuttle mode), in the array's slice order.
    layout : {'single', 'enhanced'}
    time_tag : {'AcquisitionTime', 'AcquisitionDateTime', 'ContentTime', None}
        Where each image's time goes (None: no time at all, for the reader's error).
    rescale_slope, rescale_intercept : float
        HU = stored * slope + intercept.
    drop : iterable of (z, t)
        Images left out (a missing frame).
    study : dict, optional
        ``StudyInstanceUID`` and ``FrameOfReferenceUID`` to share with other series of the same study.
    seed : int
        Makes the UIDs (the same inputs give the same UIDs).
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    if layout not in ("single", "enhanced"):
        raise ValueError(f"Unknown layout {layout!r}; choose 'single' or 'enhanced'.")
    if time_tag not in TIME_TAGS:
        raise ValueError(f"Unknown time_tag {time_tag!r}; choose one of {TIME_TAGS}.")
    hu = np.asarray(hu, dtype=float)
    nx, ny, nz, nt = hu.shape
    if slice_times is None:
        if frame_times is None:
            raise ValueError("Give frame_times or slice_times.")
        slice_times = np.broadcast_to(np.asarray(frame_times, dtype=float), (nz, nt))
    slice_times = np.asarray(slice_times, dtype=float)
    if slice_times.shape != (nz, nt):
        raise ValueError(f"slice_times must have shape {(nz, nt)}, got {slice_times.shape}.")
    data, lps = _standard_orientation(hu, affine)
    flipped_z = False  # z is kept in the array's order; positions say where each slice is
    del flipped_z
    stored = np.round((data - rescale_intercept) / rescale_slope)
    if stored.min() < -32768 or stored.max() > 32767:
        raise ValueError("The HU values do not fit 16-bit signed integers with this slope and intercept.")
    stored = stored.astype(np.int16)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study = study or {"StudyInstanceUID": _uid("study", seed), "FrameOfReferenceUID": _uid("for", seed)}
    series_uid = _uid("series", seed, series_number, layout)
    base = _base_dataset(study, series_uid, series_number, description)
    dx, dy, dz = (float(np.linalg.norm(lps[:3, i])) for i in range(3))
    orientation = [float(v) for v in np.concatenate([lps[:3, 0] / dx, lps[:3, 1] / dy])]
    dropped = {(int(z), int(t)) for z, t in drop}
    datasets = []
    instance = 0
    for t in range(nt):
        for z in range(nz):
            if (z, t) in dropped:
                continue
            instance += 1
            ds = copy.deepcopy(base)
            ds.SOPClassUID = CT_IMAGE_STORAGE
            ds.SOPInstanceUID = _uid("image", seed, series_number, layout, z, t)
            ds.InstanceNumber = instance
            ds.AcquisitionNumber = t + 1
            position = lps @ np.array([0.0, 0.0, z, 1.0])
            ds.ImagePositionPatient = [round(float(v), 6) for v in position[:3]]
            ds.ImageOrientationPatient = [round(v, 6) for v in orientation]
            ds.SliceLocation = round(float(position[2]), 6)
            ds.PixelSpacing = [round(dy, 6), round(dx, 6)]
            ds.SliceThickness = round(dz, 6)
            ds.Rows, ds.Columns = ny, nx
            ds.RescaleSlope = rescale_slope
            ds.RescaleIntercept = rescale_intercept
            clock, day = _tm(slice_times[z, t])
            if time_tag == "AcquisitionTime":
                ds.AcquisitionDate, ds.AcquisitionTime = day, clock
            elif time_tag == "AcquisitionDateTime":
                ds.AcquisitionDateTime = day + clock
            elif time_tag == "ContentTime":
                ds.ContentDate, ds.ContentTime = day, clock
            if time_tag != "ContentTime" and time_tag is not None:
                ds.ContentDate, ds.ContentTime = base.StudyDate, "120000"  # the reconstruction, later
            ds.PixelData = np.ascontiguousarray(stored[:, :, z, t].T).tobytes()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            datasets.append(ds)
    written = []
    if layout == "single":
        for ds in datasets:
            path = folder / f"IM{int(ds.InstanceNumber):05d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            written.append(path)
        return written
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    enhanced = LegacyConvertedEnhancedCTImage(
        datasets, series_instance_uid=series_uid, series_number=series_number,
        sop_instance_uid=_uid("enhanced", seed, series_number), instance_number=1,
    )
    path = folder / "ENHANCED.dcm"
    enhanced.save_as(path, enforce_file_format=True)
    return [path]


def write_static_series(hu3d, affine, folder, description, series_number, study, seed=0):
    """A one-time-point series (a non-contrast head, a CTA) of the same study: one file per slice."""
    return write_dicom_series(
        np.asarray(hu3d)[..., None], affine, folder, frame_times=[0.0], series_number=series_number,
        description=description, study=study, seed=seed,
    )
