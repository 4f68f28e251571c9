"""A DICOM perfusion series into the conventions' NIfTI + JSON sidecar: a BIDS dataset, or a run's work folder.

* :func:`dicom_to_nifti` writes ``<name>_ctp.nii.gz`` and its sidecar (``FrameTimesStart`` and the acquisition
  parameters; nothing that identifies the patient).
* :func:`dicom_to_bids` puts it at ``sub-L[/ses-S]/sub-L[_ses-S]_ctp.nii.gz`` of a BIDS dataset (no datatype
  folder, as ``ctp-phantom`` and ISLES'24 do), writes ``dataset_description.json`` if missing and, with
  ``keep_source``, copies the series' DICOM files to ``sourcedata/sub-L[/ses-S]/ctp/`` (BIDS keeps source data
  there; it identifies the patient and is not for sharing), recorded in the sidecar as ``SourceDICOM``, so that
  the BIDS App's ``--dicom-out`` can reference the source study.
* :func:`prepare_dicom_run` is what ``ctp-perfusion DICOM_DIR`` calls: the series into a work folder, the
  output prefix from the folder's name.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .read import DicomInputError, describe, read_dicom_ctp

#: where ``dicom_to_bids(keep_source=True)`` copies the series, relative to the dataset root
SOURCE_FOLDER = "sourcedata/sub-{subject}{session_dir}/ctp"
#: the sidecar key that points at the kept source series (a BIDS URI into the dataset)
SOURCE_KEY = "SourceDICOM"


def _check_outside(folder, dicom_dir, what):
    """Nothing is written inside the DICOM folder (a folder around it, e.g. a BIDS dataset whose sourcedata/
    holds the DICOM files, is fine)."""
    out = Path(os.path.realpath(folder))
    source = Path(os.path.realpath(dicom_dir))
    if out == source or source in out.parents:
        raise DicomInputError(
            f"The {what} {out} lies inside the input DICOM folder {source}; nothing may be written there. "
            "Choose a folder outside it."
        )


def _nifti_header(ctp):
    import nibabel as nb

    from ..perfusion.timing import is_uniform

    header = nb.Nifti1Header()
    header.set_data_shape(ctp.data.shape)
    steps = np.diff(ctp.frame_times)
    # pixdim[4] only for uniform timing; FrameTimesStart is the timing source either way
    header.set_zooms(ctp.voxel_size_mm + (float(steps.mean()) if is_uniform(ctp.frame_times) else 0.0,))
    header.set_xyzt_units("mm", "sec")
    return header


def dicom_to_nifti(dicom_dir, out_file, series_uid=None, extra_sidecar=None):
    """Read the perfusion series of ``dicom_dir`` and write it as ``out_file`` (4D NIfTI, HU) + JSON sidecar.

    Returns the :class:`~ctp_nipype.dicom.read.DicomCTP` read (its ``data`` included).
    """
    from ..io import write_nifti

    _check_outside(Path(out_file).parent, dicom_dir, "output folder")
    ctp = read_dicom_ctp(dicom_dir, series_uid)
    sidecar = dict(ctp.sidecar, Units="HU")
    sidecar.update(extra_sidecar or {})
    write_nifti(out_file, ctp.data, ctp.affine, header=_nifti_header(ctp), sidecar=sidecar)
    return ctp


def _dataset_description(bids_dir):
    from .. import __url__, __version__
    from ..io import write_json

    path = Path(bids_dir) / "dataset_description.json"
    if not path.exists():
        write_json(path, {
            "Name": "CT perfusion (converted from DICOM)",
            "BIDSVersion": "1.10.0",
            "DatasetType": "raw",
            "GeneratedBy": [{"Name": "ctp_nipype ctp-convert", "Version": __version__, "CodeURL": __url__}],
        })
    return path


def _check_label(value, option):
    if value is None:
        return None
    label = str(value)
    for prefix in ("sub-", "ses-"):
        if label.startswith(prefix):
            label = label[len(prefix):]
    if not re.fullmatch(r"[A-Za-z0-9]+", label):
        raise DicomInputError(f"{option} {value!r} is not a BIDS label; use letters and digits only (e.g. 01).")
    return label


def dicom_to_bids(dicom_dir, bids_dir, participant, session=None, series_uid=None, keep_source=False,
                  overwrite=False):
    """Convert the perfusion series of ``dicom_dir`` into the BIDS dataset ``bids_dir``.

    Returns ``(path of the NIfTI, DicomCTP)``.
    """
    from ..io import prepare_output_dir

    participant = _check_label(participant, "--participant-label")
    session = _check_label(session, "--session-label")
    dicom_dir, bids_dir = Path(dicom_dir), Path(bids_dir)
    if not dicom_dir.is_dir():
        raise DicomInputError(f"The DICOM folder {dicom_dir} does not exist or is not a folder.")
    _check_outside(bids_dir, dicom_dir, "BIDS folder")
    stem = f"sub-{participant}" + (f"_ses-{session}" if session else "")
    subject_dir = bids_dir / f"sub-{participant}" / (f"ses-{session}" if session else "")
    out_file = subject_dir / f"{stem}_ctp.nii.gz"
    if out_file.exists() and not overwrite:
        raise DicomInputError(f"{out_file} exists already; remove it or give --overwrite to replace it.")
    prepare_output_dir(bids_dir, "BIDS folder")
    source_rel = SOURCE_FOLDER.format(subject=participant, session_dir=f"/ses-{session}" if session else "")
    extra = {SOURCE_KEY: f"bids::{source_rel}"} if keep_source else {}
    ctp = dicom_to_nifti(dicom_dir, out_file, series_uid, extra)
    if keep_source:
        copy_series(ctp.series, bids_dir / source_rel)
    _dataset_description(bids_dir)
    return out_file, ctp


def copy_series(series, destination):
    """Copy a series' files into ``destination`` (replacing its ``.dcm`` files), named by their order."""
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for old in destination.glob("*.dcm"):
        old.unlink()
    for i, path in enumerate(sorted(series.files), start=1):
        shutil.copyfile(path, destination / f"{i:05d}.dcm")
    return destination


def prefix_from_folder(dicom_dir):
    """An output prefix from a DICOM folder's name: letters, digits and ``-`` / ``_`` only.

    >>> prefix_from_folder("/data/CTP Head 5mm/")
    'CTP-Head-5mm'
    """
    name = Path(dicom_dir).resolve().name
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-_")
    return cleaned or "dicom"


def prepare_dicom_run(dicom_dir, out_dir, work_dir=None, series_uid=None):
    """For ``ctp-perfusion DICOM_DIR OUT_DIR``: convert the series into the work folder (or a temporary one).

    Returns ``(nifti path, prefix, keeper)``: ``keeper`` is the temporary folder object to keep alive while the
    run lasts (None with a work folder). Nothing is written inside ``dicom_dir``.
    """
    dicom_dir = Path(dicom_dir)
    _check_outside(out_dir, dicom_dir, "output folder")
    keeper = None
    if work_dir is not None:
        _check_outside(work_dir, dicom_dir, "work folder (-w)")
        from ..cli._workdir import private_dir  # the work folder's rules: yours, not writable by others

        folder = private_dir(work_dir) / "dicom_input"
    else:
        keeper = tempfile.TemporaryDirectory(prefix="ctp_dicom_")
        folder = Path(keeper.name)
    prefix = prefix_from_folder(dicom_dir)
    out_file = folder / f"{prefix}_ctp.nii.gz"
    ctp = dicom_to_nifti(dicom_dir, out_file, series_uid)
    for line in describe(ctp):
        print(line)
    return out_file, prefix, keeper


def source_for_scan(bids_dir, scan_path):
    """The source DICOM folder of a converted scan: its sidecar's ``SourceDICOM`` (a ``bids::`` URI into the
    dataset), else ``sourcedata/sub-L[/ses-S]/ctp`` when that folder exists; a one-line error otherwise."""
    from ..io import read_json, sidecar_path

    bids_dir, scan_path = Path(bids_dir), Path(scan_path)
    sidecar = sidecar_path(scan_path)
    meta = read_json(sidecar) if sidecar.exists() else {}
    pointer = meta.get(SOURCE_KEY) if isinstance(meta, dict) else None
    if pointer:
        folder = bids_dir / str(pointer).split("::", 1)[-1]
    else:
        entities = dict(part.split("-", 1) for part in scan_path.name.split("_") if "-" in part)
        session = entities.get("ses")
        folder = bids_dir / SOURCE_FOLDER.format(subject=entities.get("sub", ""),
                                                 session_dir=f"/ses-{session}" if session else "")
    if not folder.is_dir():
        raise DicomInputError(
            f"--dicom-out: no source DICOM series for {scan_path.name} (looked for {folder}); convert it with "
            "`ctp-convert DICOM_DIR BIDS_DIR --participant-label L --keep-source`, or copy the series' files there."
        )
    return folder
