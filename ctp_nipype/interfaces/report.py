"""Nipype interface of the per-scan HTML report."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nb
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from ..bids import derivative_name, parse_derivative_name
from ..io import (
    FileBackedMaps,
    InputError,
    load_ctp,
    load_mask,
    load_nifti,
    output_prefix,
    read_columns_tsv,
    read_json,
    read_table_tsv,
    sidecar_path,
    strip_extension,
    write_text,
)
from .preprocessing import head_motion_warning
from .stats import parse_map_filename



def _defined(value, default=None):
    return value if isdefined(value) else default


class _ScanReportInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="the 4D CTP scan (HU) the maps were computed from")
    curves_file = File(exists=True, mandatory=True,
                       desc="<prefix>_desc-global_aif.tsv: time, aif, vof, aif_corrected (HU); its JSON sidecar's "
                            "AIFVoxels/VOFVoxels are shown when present")
    aif_column = traits.Str("aif_corrected", usedefault=True,
                            desc="the curve the deconvolution used (falls back to 'aif' when absent)")
    aif_png = File(exists=True, desc="a ready AIF/VOF figure (PNG) shown instead of the drawn one")
    motion_file = File(exists=True, desc="motion TSV of MotionCorrection (time, trans_*_mm, rot_*_deg, fd)")
    brain_mask = File(exists=True, desc="brain mask (default: computed from the scan)")
    gm_mask = File(exists=True, desc="grey-matter mask (ROIs split into GM/WM when both are given)")
    wm_mask = File(exists=True, desc="white-matter mask")
    csf_mask = File(exists=True, desc="CSF mask (kept out of the ROIs)")
    vessel_mask = File(exists=True, desc="vessel mask (kept out of the ROIs)")
    lesion_mask = File(exists=True, desc="ischemic lesion mask for the ischemic ROIs (default: a hypoperfused mask)")
    map_files = InputMultiObject(File(exists=True), desc="3D maps <prefix>_desc-<method>_<map>.nii.gz")
    residue_files = InputMultiObject(
        File(exists=True), desc="4D <prefix>_desc-<method>_residue.nii.gz (and the network's _localaif)"
    )
    stats_file = File(exists=True, desc="region statistics TSV of MapStats")
    lesion_files = InputMultiObject(File(exists=True), desc="lesion JSONs of LesionVolumes (<prefix>_desc-<method>_lesion.json)")
    lesion_mask_files = InputMultiObject(
        File(exists=True),
        desc="core/hypoperfused masks <prefix>_label-<core|hypoperfused>_desc-<method>_mask.nii.gz "
             "(default: the MaskFiles next to each lesion JSON)",
    )
    ttp_file = File(exists=True, desc="time-to-peak map <prefix>_ttp.nii.gz (s)")
    summary_files = InputMultiObject(
        File(exists=True),
        desc="TriageSummary's figures <prefix>_desc-<method>_summary.png, embedded as they are (else the "
             "report draws the same figure again)",
    )
    frame_interval = traits.Float(desc="frame interval in seconds, used only when no other timing source exists")
    out_prefix = traits.Str(desc="output file-name prefix (default: the scan's prefix)")


class _ScanReportOutputSpec(TraitedSpec):
    out_report = File(exists=True, desc="self-contained HTML report <prefix>_desc-perfusion_report.html")


class ScanReport(SimpleInterface):
    """A self-contained HTML report of one scan (images embedded as base64 PNG).

    Reads the scan, the curves TSV (and its sidecar), the optional motion TSV,
    masks, maps, residues, region statistics, lesion JSONs/masks and the
    triage summaries' PNGs, and writes ``<prefix>_desc-perfusion_report.html`` via
    :func:`ctp_nipype.reports.scan.scan_report_html`. Of the 4D files it reads
    what it draws: the series (lazily) at the slices shown and the ROIs'
    voxels, each residue in one pass at the ROIs' voxels; memory is bounded
    by the 3D maps and masks and one frame. Methods and map names are
    read from the file names (``<prefix>_desc-<method>_<map>.nii.gz``).
    Warnings on the page come from the inputs' sidecars (flagged voxels,
    resampling, AIF scale) and the motion trace.

    Examples
    --------
    >>> ScanReport().inputs.aif_column
    'aif_corrected'
    """

    input_spec = _ScanReportInputSpec
    output_spec = _ScanReportOutputSpec

    def _run_interface(self, runtime):
        from ..reports.scan import ScanReportData, scan_report_html

        # the series lazily, the residues as paths: the report reads only the slices and voxels it draws
        scan = load_ctp(self.inputs.in_file, frame_interval=_defined(self.inputs.frame_interval), lazy=True)
        shape, affine = scan.spatial_shape, scan.affine
        motion_warning = head_motion_warning(scan.sidecar)
        warnings = [] if motion_warning is None else [motion_warning]

        def mask(name, what):
            path = _defined(getattr(self.inputs, name))
            return None if path is None else load_mask(path, shape, affine, what)

        curves = read_columns_tsv(self.inputs.curves_file)
        if "aif" not in curves:
            raise InputError(f"The curves file {self.inputs.curves_file} has no 'aif' column.")
        aif_column = self.inputs.aif_column if self.inputs.aif_column in curves else "aif"
        curves_sidecar_file = sidecar_path(self.inputs.curves_file)
        curves_sidecar = read_json(curves_sidecar_file) if curves_sidecar_file.exists() else {}
        scale = curves_sidecar.get("PartialVolumeCorrection", {}).get("Scale")
        if scale is not None and scale > 3:
            warnings.append(f"The AIF was scaled by {scale:.2g} for partial volume: check the chosen artery.")
        censoring_warning = (curves_sidecar.get("AIFFirstPassCensoring") or {}).get("Warning")
        if censoring_warning:
            warnings.append(censoring_warning)

        map_paths = {}
        for path in _defined(self.inputs.map_files, []):
            method, name = self._method_map(path)
            map_paths[(method, name)] = path
            sidecar = sidecar_path(path)
            meta = read_json(sidecar) if sidecar.exists() else {}
            if meta.get("FlaggedVoxels"):
                warnings.append(f"{method}: {meta['FlaggedVoxels']} voxels flagged by the fit ({name} map sidecar).")
            if meta.get("ResampledToUniformGrid"):
                warnings.append(f"{method}: the series was resampled to a uniform grid before fitting.")
            if meta.get("TimeResampling") and not any("time grid" in w for w in warnings):
                warnings.append(f"Slices put on one time grid when converted from DICOM: {meta['TimeResampling']}")
        residues, local_aifs = {}, {}
        for path in _defined(self.inputs.residue_files, []):
            method, name = self._method_map(path)
            try:
                img = nb.load(str(path))  # the header: the ROIs' voxels are read later, in one pass
            except Exception as err:  # nibabel raises many kinds for corrupt files
                raise InputError(f"The {method} {name} {path} cannot be read as NIfTI ({type(err).__name__}: "
                                 f"{err}).") from None
            if len(img.shape) != 4 or img.shape[:3] != tuple(shape):
                raise InputError(f"The {method} {name} {path} has shape {img.shape}; a 4D series on the scan's "
                                 f"grid {tuple(shape)} is needed.")
            (local_aifs if name == "localaif" else residues)[method] = str(path)

        lesions = {}
        for path in _defined(self.inputs.lesion_files, []):
            summary = read_json(path)
            parsed = parse_map_filename(path)
            method = summary.get("Method") or (parsed[1] if parsed else strip_extension(path))
            lesions[method] = {"summary": summary, "core": None, "hypoperfused": None}
            if not isdefined(self.inputs.lesion_mask_files):
                for label, name in summary.get("MaskFiles", {}).items():
                    candidate = Path(path).with_name(name)
                    if candidate.exists():
                        lesions[method][label] = load_mask(candidate, shape, affine, f"{method} {label} mask")
        for path in _defined(self.inputs.lesion_mask_files, []):
            match = parse_derivative_name(path)
            if match is None or match["label"] not in ("core", "hypoperfused") or not match["desc"] or match["suffix"] != "mask":
                raise InputError(
                    f"The lesion mask {path} is not named <prefix>_label-<core|hypoperfused>_desc-<method>_mask.nii.gz."
                )
            method, label = match["desc"], match["label"]
            entry = lesions.setdefault(method, {"summary": {}, "core": None, "hypoperfused": None})
            entry[label] = load_mask(path, shape, affine, f"{method} {label} mask")
        sides = {m: e["summary"].get("AffectedHemisphere") for m, e in lesions.items() if e["summary"]}
        if len(set(sides.values())) > 1:
            warnings.append(f"The methods disagree on the affected hemisphere: {sides}.")

        voxels = {k: curves_sidecar.get(f"{k.upper()}Voxels") for k in ("aif", "vof")}
        data = ScanReportData(
            title=_defined(self.inputs.out_prefix, output_prefix(self.inputs.in_file)),
            hu=scan.data,
            frame_times=scan.frame_times,
            affine=affine,
            voxel_size_mm=tuple(float(v) for v in scan.header.get_zooms()[:3]),
            timing_source=scan.timing.source,
            curves=curves,
            aif_column=aif_column,
            aif_voxels=None if voxels["aif"] is None else np.asarray(voxels["aif"], int),
            vof_voxels=None if voxels["vof"] is None else np.asarray(voxels["vof"], int),
            aif_png=Path(self.inputs.aif_png).read_bytes() if isdefined(self.inputs.aif_png) else None,
            motion=read_columns_tsv(self.inputs.motion_file) if isdefined(self.inputs.motion_file) else None,
            brain=mask("brain_mask", "brain mask"),
            grey_matter=mask("gm_mask", "grey-matter mask"),
            white_matter=mask("wm_mask", "white-matter mask"),
            csf=mask("csf_mask", "CSF mask"),
            vessels=mask("vessel_mask", "vessel mask"),
            lesion=mask("lesion_mask", "lesion mask"),
            maps=FileBackedMaps(map_paths, _read_map),  # read where drawn, a few at a time
            residues=residues,
            local_aifs=local_aifs,
            stats_rows=read_table_tsv(self.inputs.stats_file) if isdefined(self.inputs.stats_file) else [],
            lesions=lesions,
            warnings=warnings,
            ttp=self._ttp(shape, affine),
            summary_pngs=self._summary_pngs(),
        )
        html = scan_report_html(data)
        out_report = os.path.join(runtime.cwd, derivative_name(data.title, "report", desc="perfusion", extension=".html"))
        write_text(out_report, html)
        self._results["out_report"] = out_report
        return runtime

    def _ttp(self, shape, affine):
        if not isdefined(self.inputs.ttp_file):
            return None
        img, values = load_nifti(self.inputs.ttp_file, "time-to-peak map")
        if img.shape[:3] != tuple(shape) or not np.allclose(img.affine, affine, atol=1e-3):
            raise InputError(f"The time-to-peak map {self.inputs.ttp_file} is not on the scan's grid.")
        return np.asarray(values, np.float32)

    def _summary_pngs(self):
        pngs = {}
        for path in _defined(self.inputs.summary_files, []):
            method, name = self._method_map(path)
            if name != "summary" or not str(path).endswith(".png"):
                raise InputError(f"The triage summary {path} is not named <prefix>_desc-<method>_summary.png.")
            pngs[method] = Path(path).read_bytes()
        return pngs

    @staticmethod
    def _method_map(path):
        parsed = parse_map_filename(path)
        if parsed is None:
            raise InputError(
                f"{path} is not named <prefix>_desc-<method>_<map>.nii.gz, so its method and map cannot be told; "
                "rename it per the conventions."
            )
        return parsed[1], parsed[2]


def _read_map(key, path):
    """A map for the report, float32 (read each time a section draws it)."""
    return np.asarray(load_nifti(path, f"{key[0]} {key[1]} map")[1], np.float32)
