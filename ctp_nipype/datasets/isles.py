"""ISLES 2018 and ISLES 2024 to BIDS: the CTP with its frame timing, the reference maps and lesion masks.

Neither dataset can be downloaded from here; the layouts below are what the
sources named say, and ``ctp_nipype.sims.isles`` writes phantoms in exactly
these layouts for the tests.

ISLES 2018 (Hakim et al., Stroke 2021;52:2328-2337; SMIR export)
------------------------------------------------------------------
Layout (seen in users' code that reads the download, e.g. MATLAB and Python
scripts that open ``TRAINING/case_1/SMIR.Brain.XX.O.CT_4DPWI.345561/SMIR.Brain.XX.O.CT_4DPWI.345561.nii``,
and in OpenPerfusion's ``openperfusion/io_isles2018.py``)::

    TRAINING/case_<N>/SMIR.Brain.XX.O.CT.<id>/SMIR.Brain.XX.O.CT.<id>.nii          non-contrast slab
    TRAINING/case_<N>/SMIR.Brain.XX.O.CT_4DPWI.<id>/SMIR.Brain.XX.O.CT_4DPWI.<id>.nii  4D CTP, HU
    TRAINING/case_<N>/SMIR.Brain.XX.O.CT_{CBF,CBV,MTT,Tmax}.<id>/....nii          RAPID maps
    TRAINING/case_<N>/SMIR.Brain.XX.O.OT.<id>/SMIR.Brain.XX.O.OT.<id>.nii          DWI infarct mask
                                                                                   (training cases only)

* ``<id>`` differs per file; folders are recognised by the kind between
  ``SMIR.Brain.XX.O.`` and the id. ``TESTING/case_<N>`` has no ``OT``.
* The maps were computed by RAPID (iSchemaView) (Hakim et al. 2021; OpenPerfusion
  validates against them as RAPID), in ml/100 g/min, ml/100 g, s and s.
* The DWI was acquired shortly after the CTP (median 36 min, Hakim et al. 2021),
  so ``OT`` is an acute core, not a final infarct.
* Frame timing: the 4D PWI were resampled to 1 s per frame by the challenge
  (OpenPerfusion's loader: "falls back to 1.0 s, which is what the challenge
  resampled to"); we could not read the challenge page itself from here. The
  loader takes the NIfTI's pixdim[4] when its header sets a time unit, else
  1 s, and says which in the sidecar (``FrameTimingSource``).
* A 4D PWI stored as 5D with a singleton 4th axis ``(x, y, z, 1, t)`` is read as 4D
  (OpenPerfusion's loader allows for it).

ISLES 2024 (Riedel et al., arXiv:2408.11142; de la Rosa et al., arXiv:2408.10966)
----------------------------------------------------------------------------------
Layout of the training release (Zenodo record 17652035, v7; described by its
record page, by the challenge repository github.com/ezequieldlrosa/isles24,
whose sample mask is ``derivatives/sub-stroke0014/ses-02/sub-stroke0014_ses-02_lesion-msk.nii.gz``,
and by users' loaders)::

    raw_data/sub-stroke<NNNN>/ses-01/sub-stroke<NNNN>_ses-01_ctp.nii.gz            4D CTP, native space
    raw_data/sub-stroke<NNNN>/ses-01/perfusion-maps/sub-stroke<NNNN>_ses-01_{cbf,cbv,mtt,tmax}.nii.gz
    derivatives/sub-stroke<NNNN>/ses-01/sub-stroke<NNNN>_ses-01_space-ncct_ctp.nii.gz
    derivatives/sub-stroke<NNNN>/ses-01/perfusion-maps/sub-stroke<NNNN>_ses-01_space-ncct_{cbf,...}.nii.gz
    derivatives/sub-stroke<NNNN>/ses-02/sub-stroke<NNNN>_ses-02[_space-ncct]_lesion-msk.nii.gz

* Earlier releases spell ``rawdata`` and ``sub-strokecase<NNNN>/ses-0001``
  (the challenge repository's README); both spellings are accepted.
* "Derivatives include all modalities linearly co-registered to the NCCT space"
  (the record's description). The follow-up lesion mask, drawn on the
  follow-up DWI (2-9 days later), exists in NCCT space only.
* Two ways to convert, ``space``:

  - ``native`` (default): the raw CTP and the raw perfusion maps (one grid);
    the NCCT-space lesion mask is carried over as it is, and ``ctp-compare``
    brings it onto the CTP grid through the two files' world coordinates (it
    is not registered: valid when the CTP and the NCCT share the scanner's
    coordinates, as scans of one session without re-positioning do);
  - ``ncct``: the co-registered CTP and maps in NCCT space, where the lesion
    mask lies (finer in plane, so a larger scan to process).

* The maps come from icobrain cva (icometrix) (OpenPerfusion's
  ``io_isles2024.py``), which fills Tmax with -30 outside the brain (0 in the
  other maps); ``ctp-compare`` leaves such voxels out.
* Frame timing: the released CTP was "temporally resampled to 1s and motion
  corrected via registration to the first timepoint" (a user's preprocessing
  script for the ISLES'24 data; OpenPerfusion's loader also reads 1 s). The
  loader takes, first match wins, a JSON sidecar next to the CTP
  (``FrameTimesStart`` or ``RepetitionTime``), the NIfTI's pixdim[4] with its
  time unit, else 1 s, and says which in the sidecar.

What the conversion writes
--------------------------
``BIDS_DIR/sub-<l>/[ses-<s>/]sub-<l>[_ses-<s>]_ctp.nii.gz`` (+ ``.json`` with
``FrameTimesStart``, ``FrameTimingSource``, ``SourceFile``) and the derivative
dataset ``BIDS_DIR/derivatives/reference/`` with
``sub-<l>/[ses-<s>/]perf/<prefix>_desc-reference_<cbf|cbv|mtt|tmax>.nii.gz``
and ``<prefix>_label-infarct_desc-reference_mask.nii.gz``, each with a sidecar
naming the dataset, the software and the units. ISLES 2018 cases become
``sub-case<NNN>`` (``sub-train<NNN>``/``sub-test<NNN>`` when SRC holds both
``TRAINING`` and ``TESTING``), without sessions; ISLES 2024 keeps its subject
labels and the acute session's label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..bids import derivative_name

#: the layouts ``ctp-convert`` knows
LAYOUTS = ("isles2018", "isles2024")
#: the reference derivative dataset's folder name under ``BIDS_DIR/derivatives``
REFERENCE_PIPELINE = "reference"
#: the maps a reference set holds
REFERENCE_MAPS = ("cbf", "cbv", "mtt", "tmax")
#: the documented frame interval of both datasets' released CTP, seconds
DOCUMENTED_FRAME_INTERVAL_S = 1.0

_UNITS = {"cbf": "ml/100g/min", "cbv": "ml/100g", "mtt": "s", "tmax": "s"}
_SOFTWARE = {"isles2018": "RAPID (iSchemaView)", "isles2024": "icobrain cva (icometrix)"}
_DATASET = {
    "isles2018": "ISLES 2018 (Ischemic Stroke Lesion Segmentation challenge, CT perfusion; Hakim et al., Stroke 2021)",
    "isles2024": "ISLES 2024 (Riedel et al., arXiv:2408.11142; training release on Zenodo)",
}
_LESION = {
    "isles2018": "Infarct core drawn on diffusion-weighted MRI acquired shortly after the CTP (ISLES 2018 'OT').",
    "isles2024": "Final infarct drawn on the follow-up diffusion-weighted MRI 2-9 days later (ISLES 2024 lesion-msk).",
}
_SMIR = re.compile(r"^SMIR\.Brain\.XX\.O\.(?P<kind>[A-Za-z0-9_]+)\.(?P<id>\d+)$")
_ISLES2018_KINDS = {"ctp": "CT_4DPWI", "cbf": "CT_CBF", "cbv": "CT_CBV", "mtt": "CT_MTT", "tmax": "CT_Tmax", "lesion": "OT"}


class DatasetError(ValueError):
    """A dataset folder that does not have the layout it should, naming the case and the missing file."""


@dataclass
class DatasetCase:
    """One scan of a public dataset, its reference maps and lesion mask (paths), and its BIDS labels."""

    layout: str
    source: str  # the case's name in the dataset, e.g. 'case_3' or 'sub-stroke0001'
    subject: str
    session: str | None
    ctp: Path
    maps: dict = field(default_factory=dict)  # name -> Path
    lesion: Path | None = None
    space: str = "native"

    @property
    def prefix(self):
        return f"sub-{self.subject}" + (f"_ses-{self.session}" if self.session else "")

    @property
    def subdir(self):
        sub = Path(f"sub-{self.subject}")
        return sub / f"ses-{self.session}" if self.session else sub


# ----------------------------------------------------------------------------------------------
# finding the cases


def _nii_in(folder):
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith((".nii", ".nii.gz")))
    return files[0] if files else None


def _isles2018_case(case_dir, subject):
    found = {}
    for child in sorted(p for p in case_dir.iterdir() if p.is_dir()):
        match = _SMIR.match(child.name)
        if match:
            found.setdefault(match["kind"], child)
    paths, missing = {}, []
    for key, kind in _ISLES2018_KINDS.items():
        folder = found.get(kind)
        nii = _nii_in(folder) if folder is not None else None
        if nii is None and key != "lesion":
            missing.append(f"SMIR.Brain.XX.O.{kind}.<id>/SMIR.Brain.XX.O.{kind}.<id>.nii")
        paths[key] = nii
    if missing:
        raise DatasetError(
            f"ISLES 2018 {case_dir.name} ({case_dir}): missing {', '.join(missing)}; "
            "restore the case from the download or remove its folder."
        )
    return DatasetCase("isles2018", case_dir.name, subject, None, paths["ctp"],
                       {name: paths[name] for name in REFERENCE_MAPS}, paths["lesion"])


def _case_number(path):
    match = re.fullmatch(r"case_(\d+)", path.name)
    return int(match.group(1)) if match else None


def find_isles2018_cases(src):
    """The cases of an ISLES 2018 folder (``TRAINING``, ``TESTING``, or their parent), checked complete.

    Raises
    ------
    DatasetError
        Naming every case with a missing file (the lesion ``OT`` is optional: test cases have none).
    """
    src = Path(src)
    groups = []
    direct = [p for p in src.iterdir() if p.is_dir() and _case_number(p) is not None] if src.is_dir() else []
    if direct:
        groups.append(("case", direct))
    else:
        for folder, label in (("TRAINING", "train"), ("TESTING", "test")):
            sub = src / folder
            if sub.is_dir():
                groups.append((label, [p for p in sub.iterdir() if p.is_dir() and _case_number(p) is not None]))
    cases, problems = [], []
    for label, folders in groups:
        for folder in sorted(folders, key=_case_number):
            try:
                cases.append(_isles2018_case(folder, f"{label}{_case_number(folder):03d}"))
            except DatasetError as err:
                problems.append(str(err))
    if problems:
        raise DatasetError(" ".join(problems))
    if not cases:
        raise DatasetError(
            f"No ISLES 2018 case in {src}: expected case_<N> folders (holding SMIR.Brain.XX.O.CT_4DPWI.<id>/ etc.) "
            "in it, or in its TRAINING/ and TESTING/ folders."
        )
    return cases


def _first(folder, patterns):
    for pattern in patterns:
        hits = sorted(folder.glob(pattern)) if folder.is_dir() else []
        if hits:
            return hits[0]
    return None


def find_isles2024_cases(src, space="native"):
    """The subjects of an ISLES 2024 release folder (holding ``raw_data`` and ``derivatives``), checked complete.

    Parameters
    ----------
    src : Path
    space : {'native', 'ncct'}
        Which CTP and maps to take (see the module's docstring).

    Raises
    ------
    DatasetError
        Naming every subject with a missing file (the follow-up lesion is optional).
    """
    if space not in ("native", "ncct"):
        raise DatasetError(f"space must be 'native' or 'ncct', got {space!r}.")
    src = Path(src)
    raw_root = next((src / n for n in ("raw_data", "rawdata") if (src / n).is_dir()), None)
    deriv_root = src / "derivatives"
    if raw_root is None:
        raise DatasetError(
            f"No raw_data/ (or rawdata/) folder in {src}: point SRC at the ISLES'24 release folder that holds "
            "raw_data/ and derivatives/."
        )
    cases, problems = [], []
    for sub in sorted(p for p in raw_root.iterdir() if p.is_dir() and p.name.startswith("sub-")):
        sessions = sorted(p.name for p in sub.iterdir() if p.is_dir() and p.name.startswith("ses-"))
        if not sessions:
            problems.append(f"ISLES 2024 {sub.name}: no ses-* folder in {sub}.")
            continue
        acute, followup = sessions[0], (sessions[1] if len(sessions) > 1 else None)
        if followup is None:  # the follow-up session may exist under derivatives only
            deriv_sessions = sorted(p.name for p in (deriv_root / sub.name).glob("ses-*") if p.is_dir())
            followup = next((s for s in deriv_sessions if s != acute), None)
        name = f"{sub.name}_{acute}"
        if space == "native":
            ctp = _first(sub / acute, [f"{name}_ctp.nii.gz", f"{name}_ctp.nii"])
            maps = {m: _first(sub / acute / "perfusion-maps", [f"{name}_{m}.nii.gz", f"{name}_{m}.nii"])
                    for m in REFERENCE_MAPS}
            where = {"ctp": sub / acute / f"{name}_ctp.nii.gz",
                     **{m: sub / acute / "perfusion-maps" / f"{name}_{m}.nii.gz" for m in REFERENCE_MAPS}}
        else:
            folder = deriv_root / sub.name / acute
            ctp = _first(folder, [f"{name}_space-ncct_ctp.nii.gz", f"{name}_space-ncct_ctp.nii"])
            maps = {m: _first(folder / "perfusion-maps", [f"{name}_space-ncct_{m}.nii.gz", f"{name}_space-ncct_{m}.nii"])
                    for m in REFERENCE_MAPS}
            where = {"ctp": folder / f"{name}_space-ncct_ctp.nii.gz",
                     **{m: folder / "perfusion-maps" / f"{name}_space-ncct_{m}.nii.gz" for m in REFERENCE_MAPS}}
        missing = [str(where[key]) for key, path in {"ctp": ctp, **maps}.items() if path is None]
        if missing:
            hint = " (or convert with --space ncct)" if space == "native" else ""
            problems.append(f"ISLES 2024 {sub.name}: missing {', '.join(missing)}{hint}.")
            continue
        lesion = None
        if followup is not None:
            lesion = _first(deriv_root / sub.name / followup, ["*_lesion-msk.nii.gz", "*_lesion-msk.nii"])
        subject = sub.name[len("sub-"):]
        session = acute[len("ses-"):]
        cases.append(DatasetCase("isles2024", sub.name, subject, session, ctp, maps, lesion, space))
    if problems:
        raise DatasetError(" ".join(problems))
    if not cases:
        raise DatasetError(f"No sub-* folder in {raw_root}: is this the ISLES'24 release folder?")
    return cases


def find_cases(layout, src, space="native"):
    """The cases of a dataset in ``layout`` (:data:`LAYOUTS`), every one checked complete before any work."""
    src = Path(src)
    if not src.is_dir():
        raise DatasetError(f"The dataset folder {src} does not exist.")
    if layout == "isles2018":
        if space != "native":
            raise DatasetError("ISLES 2018 has one space (its maps are on the CTP's grid); leave --space out.")
        return find_isles2018_cases(src)
    if layout == "isles2024":
        return find_isles2024_cases(src, space)
    raise DatasetError(f"Unknown dataset layout {layout!r}; choose one of {', '.join(LAYOUTS)}.")


# ----------------------------------------------------------------------------------------------
# timing


def dataset_frame_times(n_frames, sidecar=None, pixdim4=None, time_unit=None):
    """Frame times (s) of a released CTP and a sentence saying where they come from.

    The conventions' sources in order (sidecar ``FrameTimesStart``, sidecar
    ``RepetitionTime``, pixdim[4] with a time unit), then the datasets'
    documented 1 s frames (:data:`DOCUMENTED_FRAME_INTERVAL_S`).

    >>> times, source = dataset_frame_times(3, pixdim4=1.0, time_unit="unknown")
    >>> times.tolist(), source
    ([0.0, 1.0, 2.0], 'the dataset documents 1 s frames (its CTP was resampled to 1 s); no timing in the file')
    >>> dataset_frame_times(2, pixdim4=1500.0, time_unit="msec")[0].tolist()
    [0.0, 1.5]
    """
    from ..perfusion.timing import TimingError, frame_times_from_sources

    try:
        timing = frame_times_from_sources(n_frames, sidecar=sidecar, pixdim4=pixdim4, time_unit=time_unit)
        return timing.frame_times, timing.source
    except TimingError as err:
        if "No frame timing found" not in str(err):
            raise
    times = np.arange(n_frames) * DOCUMENTED_FRAME_INTERVAL_S
    return times, (f"the dataset documents {DOCUMENTED_FRAME_INTERVAL_S:g} s frames (its CTP was resampled to "
                   f"{DOCUMENTED_FRAME_INTERVAL_S:g} s); no timing in the file")


# ----------------------------------------------------------------------------------------------
# writing


def _load(path, what, case):
    from ..io import load_nifti

    img, data = load_nifti(path, f"{what} of {case.layout} {case.source}")
    return img, data


def _scaled(img):
    """Whether the NIfTI stores scaled values (scl_slope/scl_inter other than none or 1/0)."""
    slope, inter = img.header.get_slope_inter()
    return slope is not None and not (slope == 1 and inter in (None, 0))


def check_ctp(case):
    """Read the header (not the data) of a case's CTP and find its frame times, raising with the case's name.

    Returns ``(image, source sidecar dict, frame times, timing source)``.
    """
    import nibabel as nb

    from ..io import read_json, sidecar_path
    from ..perfusion.timing import TimingError

    try:
        img = nb.load(str(case.ctp))
    except Exception as err:  # noqa: BLE001 - nibabel raises many kinds for corrupt files
        raise DatasetError(f"{case.layout} {case.source}: the CTP {case.ctp} cannot be read as NIfTI "
                           f"({type(err).__name__}: {err}).") from None
    shape = img.shape
    if not (len(shape) == 4 or (len(shape) == 5 and shape[3] == 1)):
        raise DatasetError(f"{case.layout} {case.source}: the CTP {case.ctp} has shape {shape}, not 4D (x, y, z, t).")
    side = sidecar_path(case.ctp)
    source_sidecar = read_json(side) if side.exists() else {}
    zooms = img.header.get_zooms()
    pixdim4 = float(zooms[-1])  # the time axis's pixdim, also of a 5D (x, y, z, 1, t)
    try:
        times, source = dataset_frame_times(shape[-1], source_sidecar, pixdim4, img.header.get_xyzt_units()[1])
    except TimingError as err:
        raise DatasetError(f"{case.layout} {case.source}: {err} ({side if side.exists() else case.ctp})") from None
    return img, source_sidecar, times, source


def _write_ctp(case, bids_dir, generated_by):
    """Write the case's CTP as ``<subdir>/<prefix>_ctp.nii.gz`` with a timing sidecar; returns its path."""
    from ..io import copy_atomic, write_nifti, write_sidecar
    from ..perfusion.timing import is_uniform

    img, source_sidecar, times, source = check_ctp(case)
    zooms = img.header.get_zooms()
    space_unit = img.header.get_xyzt_units()[0]
    durations = np.append(np.diff(times), np.diff(times)[-1]) if times.size > 1 else np.array([DOCUMENTED_FRAME_INTERVAL_S])
    sidecar = {k: v for k, v in source_sidecar.items() if k not in ("FrameTimesStart", "RepetitionTime")}
    sidecar.update({
        "Modality": "CT",
        "Units": "HU",
        "FrameTimesStart": [float(t) for t in times],
        "FrameDuration": [float(d) for d in durations],
        "FrameTimingSource": source,
        "SourceDataset": _DATASET[case.layout],
        "SourceFile": str(case.ctp),
        "SourceCase": case.source,
        "GeneratedBy": generated_by,
    })
    if case.layout == "isles2024":
        sidecar["Space"] = "native CTP" if case.space == "native" else "NCCT (co-registered by the dataset)"
    out = Path(bids_dir) / case.subdir / derivative_name(case.prefix, "ctp")
    write_sidecar(out, sidecar)
    if case.ctp.name.endswith(".nii.gz") and img.ndim == 4:
        copy_atomic(case.ctp, out)  # unchanged: no decoding, no re-encoding
    else:
        import nibabel as nb

        _, data = _load(case.ctp, "CTP", case)  # reads it all: a truncated file fails here, by name
        if data.ndim == 5:
            data = data[:, :, :, 0, :]
        integer = np.issubdtype(img.get_data_dtype(), np.integer) and not _scaled(img)
        dtype = img.get_data_dtype() if integer else np.float32
        values = data if integer else np.asarray(img.dataobj, dtype=np.float32).reshape(data.shape)
        header = nb.Nifti1Header()
        header.set_data_shape(values.shape)
        # the header says the timing found (0 for non-uniform frames); the sidecar's FrameTimesStart rules
        step = float(np.diff(times).mean()) if times.size > 1 else DOCUMENTED_FRAME_INTERVAL_S
        header.set_xyzt_units(space_unit, "sec")
        header.set_zooms(tuple(float(z) for z in zooms[:3]) + (step if is_uniform(times) else 0.0,))
        write_nifti(out, values, img.affine, header=header, dtype=dtype)
    return out


def _write_reference(case, deriv_dir, generated_by):
    from ..io import write_nifti

    folder = Path(deriv_dir) / case.subdir / "perf"
    written = []
    for name in REFERENCE_MAPS:
        img, data = _load(case.maps[name], f"reference {name} map", case)
        data = np.squeeze(data)
        if data.ndim != 3:
            raise DatasetError(f"{case.layout} {case.source}: the {name} map {case.maps[name]} has shape "
                               f"{np.shape(data)}, not 3D.")
        values = np.asarray(img.dataobj, dtype=np.float32).reshape(data.shape)  # scaling applied
        written.append(write_nifti(
            folder / derivative_name(case.prefix, name, desc="reference"), values, img.affine, header=img.header,
            sidecar={"Units": _UNITS[name], "Software": _SOFTWARE[case.layout], "SourceDataset": _DATASET[case.layout],
                     "SourceFile": str(case.maps[name]), "SourceCase": case.source, "StoredDataType": str(img.get_data_dtype()),
                     "Space": case.space, "Description": f"{name.upper()} map shipped with the dataset, "
                     f"computed by {_SOFTWARE[case.layout]}.", "GeneratedBy": generated_by},
        ))
    if case.lesion is not None:
        img, data = _load(case.lesion, "lesion mask", case)
        data = np.squeeze(data)
        written.append(write_nifti(
            folder / derivative_name(case.prefix, "mask", desc="reference", label="infarct"), data > 0, img.affine,
            header=img.header, dtype=np.uint8,
            sidecar={"Description": _LESION[case.layout], "SourceDataset": _DATASET[case.layout],
                     "SourceFile": str(case.lesion), "SourceCase": case.source,
                     "Space": "NCCT" if case.layout == "isles2024" else "CTP",
                     "GeneratedBy": generated_by},
        ))
    return written


def convert_dataset(layout, src, bids_dir, space="native", log=None):
    """Convert a downloaded dataset to BIDS (see the module's docstring); every case is checked first.

    Returns
    -------
    list of Path
        The CTP scans written.
    """
    from .. import __url__, __version__
    from ..bids import check_output_outside_input
    from ..io import write_json

    cases = find_cases(layout, src, space)
    problems = []
    for case in cases:  # every scan's shape and timing, from the headers, before anything is written
        try:
            check_ctp(case)
        except DatasetError as err:
            problems.append(str(err))
    if problems:
        raise DatasetError(" ".join(problems))
    bids_dir = Path(bids_dir)
    check_output_outside_input(bids_dir, [src], what="BIDS folder")
    generated_by = [{"Name": "ctp_nipype ctp-convert", "Version": __version__, "CodeURL": __url__}]
    write_json(bids_dir / "dataset_description.json", {
        "Name": f"{_DATASET[layout]}, CT perfusion in BIDS", "BIDSVersion": "1.10.0", "DatasetType": "raw",
        "GeneratedBy": generated_by, "SourceDatasets": [{"URL": Path(src).resolve().as_uri(),
                                                          "Description": _DATASET[layout]}],
    })
    deriv_dir = bids_dir / "derivatives" / REFERENCE_PIPELINE
    write_json(deriv_dir / "dataset_description.json", {
        "Name": f"Reference perfusion maps and lesion masks of {_DATASET[layout]}", "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": _SOFTWARE[layout], "Description": f"maps as shipped with {_DATASET[layout]}"},
                        *generated_by],
        "SourceDatasets": [{"URL": "bids:raw"}], "DatasetLinks": {"raw": "../.."},
    })
    scans = []
    for case in cases:
        scans.append(_write_ctp(case, bids_dir, generated_by))
        _write_reference(case, deriv_dir, generated_by)
        if log is not None:
            lesion = "lesion mask" if case.lesion is not None else "no lesion mask"
            log(f"{case.source} -> {case.prefix}: CTP, 4 reference maps, {lesion}")
    return scans
