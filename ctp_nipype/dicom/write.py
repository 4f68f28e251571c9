"""Results back to PACS as DICOM (highdicom), referencing the source study.

:func:`export_dicom` reads a results folder by the conventions' names
(maps ``<prefix>_desc-<method>_<map>.nii.gz``, masks
``<prefix>_label-{core,hypoperfused}_desc-<method>_mask.nii.gz``, the summary
figure ``<prefix>_desc-<method>_summary.png`` when present) and the source
series' headers, and writes:

* per method, one **DICOM-SEG** (binary) with two segments, the ischemic core
  and the hypoperfused tissue, on the source slices;
* per method and map, one **Parametric Map** (32-bit float pixels, the map's
  values unchanged) with a real-world value mapping that states the units
  (UCUM) and the quantity;
* **Secondary Capture** images (RGB): the summary figure of each method where
  it exists, and one montage per map (slices across, one row per method).

Each object copies the patient and study modules of the source series
(highdicom does), and the SEG and Parametric Maps its FrameOfReferenceUID and
its source images, which is what a PACS needs to file them with the scan.
They therefore identify the patient: they are written only where ``--dicom-out``
points, never into the pipeline's de-identified outputs.

The maps are on the NIfTI grid of the converted series; every source slice's
pixel centres are mapped through the affine into that grid and sampled (nearest
voxel for masks, linear for maps: exact where the grids coincide, as they do for
a series converted by :mod:`ctp_nipype.dicom.read` without gantry tilt).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..bids import derivative_name, parse_derivative_name
from .read import LPS_TO_RAS, DicomInputError, choose_series, scan_folder

#: maps written as Parametric Maps: name -> (UCUM unit, its meaning, DICOM quantity code or None)
MAP_UNITS = {
    "cbf": ("mL/(100.g)/min", "ml/100 g/min", ("126390", "DCM", "Absolute Regional Blood Flow")),
    "cbv": ("mL/(100.g)", "ml/100 g", ("126391", "DCM", "Absolute Regional Blood Volume")),
    "mtt": ("s", "second", ("113052", "DCM", "Mean Transit Time")),
    "tmax": ("s", "second", None),
    "bad": ("s", "second", None),
    "ttp": ("s", "second", None),
    # rCBF/rCBV are ratios to the contralateral reference (1 = the reference; Units "1" in their sidecars)
    "rcbf": ("{ratio}", "ratio", None),
    "rcbv": ("{ratio}", "ratio", None),
}
#: the segments of the SEG: mask label -> (segment label, SNOMED CT property type)
SEGMENTS = {
    "core": ("Ischemic core", ("55641003", "SCT", "Infarct")),
    "hypoperfused": ("Hypoperfused tissue", ("52674009", "SCT", "Ischemia")),
}
#: first series number of the exported objects (each object is its own series)
SERIES_NUMBER_BASE = 9000
MANUFACTURER = "ctp_nipype"


@dataclass
class SourceSlices:
    """The source series' slices: one dataset (pixels not loaded) per slice position, sorted along the normal."""

    datasets: list  # single-frame: one per position; multi-frame: [the dataset]
    positions: np.ndarray  # (n, 3) LPS ImagePositionPatient of each slice
    orientation: np.ndarray  # (6,)
    spacing: tuple  # (between rows, between columns) mm
    shape: tuple  # (rows, columns)
    multiframe: bool
    thickness: float

    @property
    def reference(self):
        return self.datasets[0]


def source_slices(dicom_dir, series_uid=None):
    """The perfusion series of ``dicom_dir`` as :class:`SourceSlices` (the first time point of each slice)."""
    import pydicom

    series = scan_folder(dicom_dir)
    chosen, _ = choose_series(series, series_uid, dicom_dir)
    if not chosen.images:
        raise DicomInputError(f"The {chosen.label()} in {dicom_dir} has no images to reference.")
    from .read import _slice_geometry

    geometry = _slice_geometry(chosen)
    firsts = [images[0] for images in geometry.slice_images]
    multiframe = firsts[0].frame is not None
    if multiframe:
        datasets = [pydicom.dcmread(firsts[0].path, stop_before_pixels=True)]
    else:
        datasets = [pydicom.dcmread(im.path, stop_before_pixels=True) for im in firsts]
    ref = firsts[0]
    thickness = float(np.linalg.norm(geometry.lps_affine[:3, 2]))
    return SourceSlices(datasets, np.array([im.position for im in firsts]), ref.orientation, ref.spacing, ref.shape,
                        multiframe, thickness)


def sample_on_source(volume, affine, source, order):
    """A 3D array on a NIfTI grid sampled at the source slices' pixel centres: ``(slices, rows, columns)``.

    ``order`` 0 (nearest, masks) or 1 (linear, maps); outside the volume 0.
    """
    from scipy import ndimage

    rows, cols = source.shape
    row_cos, col_cos = source.orientation[:3], source.orientation[3:]
    d_row, d_col = source.spacing
    jj, ii = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")  # (rows, cols)
    to_voxel = np.linalg.inv(affine) @ LPS_TO_RAS
    out = np.empty((len(source.positions), rows, cols), dtype=np.float32)
    for k, position in enumerate(source.positions):
        world = (position[:, None, None] + row_cos[:, None, None] * (ii * d_col)[None]
                 + col_cos[:, None, None] * (jj * d_row)[None])  # LPS (3, rows, cols)
        voxel = np.tensordot(to_voxel[:3, :3], world, axes=1) + to_voxel[:3, 3][:, None, None]
        nearest = np.round(voxel)
        voxel = np.where(np.abs(voxel - nearest) < 1e-3, nearest, voxel)
        out[k] = ndimage.map_coordinates(np.asarray(volume, dtype=np.float32), voxel, order=order, mode="constant",
                                         cval=0.0)
    return out


def _check_overlap(affine, shape, source, what):
    """The source slices must lie on the results' grid (the same scan), else one line saying so."""
    centre = np.array([(source.shape[1] - 1) / 2, (source.shape[0] - 1) / 2])
    to_voxel = np.linalg.inv(affine) @ LPS_TO_RAS
    for position in source.positions[[0, -1]]:
        world = position + source.orientation[:3] * centre[0] * source.spacing[1] + \
            source.orientation[3:] * centre[1] * source.spacing[0]
        voxel = to_voxel[:3, :3] @ world + to_voxel[:3, 3]
        if np.any(voxel < -0.5) or np.any(voxel > np.asarray(shape[:3]) - 0.5):
            raise DicomInputError(
                f"The source DICOM series does not lie on the grid of {what} (a slice centre falls at voxel "
                f"{np.round(voxel, 1).tolist()} of a {tuple(shape[:3])} grid); give the series the results were "
                "computed from."
            )


def _plane_positions(source):
    import highdicom as hd

    return [hd.PlanePositionSequence("PATIENT", [float(v) for v in p]) for p in source.positions]


def _geometry_kwargs(source):
    """highdicom's plane geometry arguments for a multi-frame source (derived from the source otherwise)."""
    import highdicom as hd

    if not source.multiframe:
        return {}
    return {
        "plane_positions": _plane_positions(source),
        "plane_orientation": hd.PlaneOrientationSequence("PATIENT", [float(v) for v in source.orientation]),
        "pixel_measures": hd.PixelMeasuresSequence([float(v) for v in source.spacing], source.thickness),
    }


def _body_part(dataset, source):
    """BodyPartExamined from the source (a head, for a brain perfusion scan): validators ask for it, to know
    that no Laterality is due."""
    dataset.BodyPartExamined = str(source.reference.get("BodyPartExamined", "") or "HEAD")


def _new_instance(series_number):
    """The identity of a new derived object: its own series and instance, made by this package."""
    import highdicom as hd

    return {
        "series_instance_uid": hd.UID(), "series_number": series_number, "sop_instance_uid": hd.UID(),
        "instance_number": 1, "manufacturer": MANUFACTURER, "manufacturer_model_name": "ctp_nipype",
        "software_versions": _software(), "device_serial_number": "0",
    }


def _software():
    from .. import __version__

    return __version__


def write_segmentation(masks, source, path, method, series_number):
    """One binary DICOM-SEG with a segment per mask (``{label: (slices, rows, cols) bool}``)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    labels = [name for name in SEGMENTS if name in masks]
    descriptions = []
    for number, name in enumerate(labels, start=1):
        label, (value, scheme, meaning) = SEGMENTS[name]
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=hd.sr.CodedConcept(value, scheme, meaning),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=f"ctp_nipype {method}", version=_software(),
                family=codes.cid7162.ArtificialIntelligence if method == "transformer"
                else codes.cid7162.HistogramAnalysis,
            ),
        ))
    array = np.stack([masks[name] for name in labels], axis=-1).astype(np.uint8)  # (frames, rows, cols, segments)
    seg = hd.seg.Segmentation(
        source_images=source.datasets,
        pixel_array=array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        **_new_instance(series_number),
        series_description=f"CTP {method} core and hypoperfusion",
        omit_empty_frames=False,
        content_label="CTPLESION",
        content_description=f"ctp_nipype {method}: ischemic core and hypoperfused tissue",
        **_geometry_kwargs(source),
    )
    _body_part(seg, source)
    seg.save_as(path)
    return Path(path)


def write_parametric_map(values, source, path, method, map_name, series_number):
    """One Parametric Map (float32 pixels) with a real-world value mapping in the map's units."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    unit_code, unit_meaning, quantity = MAP_UNITS[map_name]
    values = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=map_name.upper(),
        lut_explanation=f"{map_name.upper()} [{unit_meaning}] ({method})",
        unit=hd.sr.CodedConcept(unit_code, "UCUM", unit_meaning),
        value_range=(low, high if high > low else low + 1.0),
        slope=1.0,
        intercept=0.0,
        quantity_definition=hd.sr.CodedConcept(*quantity) if quantity else None,
    )
    positive = values[values > 0]
    top = float(np.percentile(positive, 99)) if positive.size else 1.0
    pm = hd.pm.ParametricMap(
        source_images=source.datasets,
        pixel_array=values,
        **_new_instance(series_number),
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=top / 2, window_width=top if top > 0 else 1.0)],
        content_label=map_name.upper()[:16],
        content_description=f"ctp_nipype {method} {map_name.upper()} [{unit_meaning}]",
        series_description=f"CTP {method} {map_name.upper()} [{unit_meaning}]",
        **_geometry_kwargs(source),
    )
    _body_part(pm, source)
    pm.save_as(path)
    return Path(path)


def write_secondary_capture(png, source, path, description, series_number, instance_number=1):
    """An RGB Secondary Capture of a PNG figure (bytes or path), in the source's study."""
    import highdicom as hd
    from matplotlib import image as mpimg
    import io

    data = png if isinstance(png, (bytes, bytearray)) else Path(png).read_bytes()
    rgb = mpimg.imread(io.BytesIO(data), format="png")
    if rgb.dtype != np.uint8:
        rgb = np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=-1)
    rgb = np.ascontiguousarray(rgb[..., :3])
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source.reference,
        pixel_array=rgb,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system="PATIENT",
        patient_orientation=_figure_orientation(source),
        series_instance_uid=hd.UID(),
        sop_instance_uid=hd.UID(),
        series_number=series_number,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        series_description=description[:64],
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    _body_part(sc, source)
    sc.save_as(path)
    return Path(path)


def _letter(direction):
    """The DICOM patient-orientation letter of the main component of an LPS direction."""
    axis = int(np.argmax(np.abs(direction)))
    return ("L", "P", "H")[axis] if direction[axis] > 0 else ("R", "A", "F")[axis]


def _figure_orientation(source):
    """PatientOrientation of the report figures: x (DICOM row direction) to the right, y up (origin lower)."""
    return _letter(source.orientation[:3]), _letter(-source.orientation[3:])


def _maps_of(results_dir, prefix, method):
    from ..io import map_filename

    found = {}
    for name in MAP_UNITS:
        path = Path(results_dir) / map_filename(prefix, method, name)
        if path.exists():
            found[name] = path
    return found


def _mask_path(results_dir, prefix, label, method):
    return Path(results_dir) / derivative_name(prefix, "mask", desc=method, label=label)


def find_methods(results_dir, prefix):
    """The methods with maps in a results folder (``<prefix>_desc-<method>_cbf.nii.gz``)."""
    methods = []
    for path in sorted(Path(results_dir).glob(f"{prefix}_desc-*_cbf.nii.gz")):
        entities = parse_derivative_name(path)
        if entities and entities["prefix"] == prefix and entities["label"] is None:
            methods.append(entities["desc"])
    return methods


def export_dicom(results_dir, prefix, dicom_dir, out_dir, methods=None, series_uid=None):
    """Write DICOM-SEG, Parametric Maps and Secondary Captures of a results folder, referencing the source series.

    Parameters
    ----------
    results_dir : str or Path
        The folder with ``<prefix>_desc-<method>_<map>.nii.gz`` and the lesion masks.
    prefix : str
    dicom_dir : str or Path
        The source DICOM folder (the series the results were computed from).
    out_dir : str or Path
        Where the DICOM files go (created if missing); must lie outside ``dicom_dir``.
    methods : list of str, optional
        Default: every method with maps in ``results_dir``.
    series_uid : str, optional
        The source series when ``dicom_dir`` holds several perfusion series.

    Returns
    -------
    list of Path
    """
    from ..io import load_nifti
    from .convert import _check_outside

    results_dir, out_dir = Path(results_dir), Path(out_dir)
    _check_outside(out_dir, dicom_dir, "DICOM output folder")
    methods = methods or find_methods(results_dir, prefix)
    if not methods:
        raise DicomInputError(
            f"No maps named {prefix}_desc-<method>_cbf.nii.gz in {results_dir}; run ctp-perfusion first (or check "
            "the prefix)."
        )
    source = source_slices(dicom_dir, series_uid)
    out_dir.mkdir(parents=True, exist_ok=True)
    brain_path = results_dir / derivative_name(prefix, "mask", desc="brain")
    written = []
    number = SERIES_NUMBER_BASE
    montage_maps = {}
    for method in methods:
        maps = _maps_of(results_dir, prefix, method)
        for name, path in maps.items():
            img, data = load_nifti(path, f"{name} map")
            data = np.asarray(data, dtype=np.float32)
            _check_overlap(img.affine, data.shape, source, path.name)
            number += 1
            values = sample_on_source(data, img.affine, source, order=1)
            written.append(write_parametric_map(values, source, out_dir / f"PM_{method}_{name}.dcm", method, name,
                                                number))
            montage_maps.setdefault(name, {})[method] = data
        masks = {}
        for label in SEGMENTS:
            path = _mask_path(results_dir, prefix, label, method)
            if path.exists():
                img, data = load_nifti(path, f"{label} mask")
                masks[label] = sample_on_source(np.asarray(data) > 0, img.affine, source, order=0) > 0.5
        if masks:
            number += 1
            written.append(write_segmentation(masks, source, out_dir / f"SEG_{method}.dcm", method, number))
        summary = results_dir / derivative_name(prefix, "summary", desc=method, extension=".png")
        if summary.exists():
            number += 1
            written.append(write_secondary_capture(summary, source, out_dir / f"SC_{method}_summary.dcm",
                                                   f"CTP {method} summary", number))
    from ..perfusion.constants import UNITS
    from ..reports.figures import map_mosaic, slices_to_show

    brain = np.asarray(load_nifti(brain_path, "brain mask")[1]) > 0 if brain_path.exists() else None
    for name, by_method in montage_maps.items():
        shown = brain if brain is not None else np.ones(next(iter(by_method.values())).shape, bool)
        number += 1
        png = map_mosaic(by_method, name, UNITS.get(name, ""), shown, slices_to_show(shown))
        written.append(write_secondary_capture(png, source, out_dir / f"SC_{name}_montage.dcm",
                                               f"CTP {name.upper()} ({', '.join(by_method)})", number))
    return written
