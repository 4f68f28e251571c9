"""Nipype interfaces of the region statistics, the lesion measures and the group comparison.

They read maps and masks, call :mod:`ctp_nipype.perfusion.stats` and write
BIDS-style outputs into the node's working directory:

* :class:`MapStats` -> ``<prefix>_desc-regions_stats.tsv`` (+ ``.json``: columns, units, region definitions);
* :class:`LesionVolumes` -> ``<prefix>_label-core_desc-<method>_mask.nii.gz``,
  ``<prefix>_label-hypoperfused_desc-<method>_mask.nii.gz`` and ``<prefix>_desc-<method>_lesion.json``;
* :class:`GroupStats` -> ``<out_prefix>_desc-methods_stats.tsv`` (per region, map and method),
  ``<out_prefix>_desc-pairs_stats.tsv`` (Wilcoxon tests of every pair of methods) and an HTML page.

Maps are recognised by the conventions' names, ``<prefix>_desc-<method>_<map>.nii[.gz]``
(:func:`parse_map_filename`).
"""

from __future__ import annotations

import os
import re

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
    load_mask,
    load_nifti,
    provenance,
    read_json,
    read_table_tsv,
    strip_extension,
    voxel_volume_ml,
    write_json,
    write_nifti,
    write_sidecar,
    write_table_tsv,
    write_text,
)
from ..perfusion import stats, triage
from ..perfusion.constants import UNITS

def parse_map_filename(path):
    """``(prefix, method, map)`` of a file named ``<prefix>_desc-<method>_<map>.nii[.gz]`` (or .tsv, .json).

    >>> parse_map_filename("/d/sub-01_ses-01_desc-osvd_cbf.nii.gz")
    ('sub-01_ses-01', 'osvd', 'cbf')
    >>> parse_map_filename("cbf.nii.gz") is None
    True
    """
    entities = parse_derivative_name(path)
    if entities is None or entities["desc"] is None:
        return None
    prefix = entities["prefix"] + (f"_label-{entities['label']}" if entities["label"] else "")
    return prefix, entities["desc"].lower(), entities["suffix"].lower()


def region_name(path):
    """A region name from a mask's file name: its BIDS ``label-`` or ``desc-`` value, else the stem.

    >>> region_name("sub-01_label-infarct_mask.nii.gz"), region_name("sub-01_desc-dwi_mask.nii.gz")
    ('infarct', 'dwi')
    >>> region_name("/d/my roi.nii")
    'myroi'
    """
    stem = strip_extension(path)
    for entity in ("label", "desc"):
        match = re.search(rf"(?:^|_){entity}-([A-Za-z0-9]+)", stem)
        if match:
            return match.group(1)
    return re.sub(r"[^A-Za-z0-9]", "", stem) or "roi"


def _load_map(path, shape, affine, what):
    img, data = load_nifti(path, what)
    data = np.asarray(data, dtype=np.float64)
    _check_map_grid(path, data.shape, img.affine, shape, affine, what)
    return data


def _check_map_header(path, shape, affine, what):
    """The checks of :func:`_load_map` from the header alone."""
    img, _ = load_nifti(path, what, read_data=False)
    _check_map_grid(path, img.shape, img.affine, shape, affine, what)


def _check_map_grid(path, map_shape, map_affine, shape, affine, what):
    if tuple(map_shape) != tuple(shape):
        raise InputError(
            f"The {what} {path} has shape {tuple(map_shape)} but the brain mask has {tuple(shape)}; "
            "maps and masks must be on the scan's grid."
        )
    if not np.allclose(map_affine, affine, atol=1e-3):
        raise InputError(f"The {what} {path} is on another grid than the brain mask (the affines differ).")


def _load_brain(path):
    """The brain mask's image (grid and header of every input) and its bool array."""
    img, _ = load_nifti(path, "brain mask")
    return img, load_mask(path, img.shape[:3], img.affine, "brain mask")


def _optional_mask(value, shape, affine, what):
    return load_mask(value, shape, affine, what) if isdefined(value) else None


def _maps_by_key(map_files, shape, affine):
    """``({(method, map name): map}, prefixes)``: each file's name and header are checked now, its values read
    when the map is asked for (:class:`ctp_nipype.io.FileBackedMaps`: the maps are never held together)."""
    paths, prefixes = {}, []
    for path in map_files:
        parsed = parse_map_filename(path)
        if parsed is None:
            raise InputError(
                f"The map {path} is not named <prefix>_desc-<method>_<map>.nii.gz, so its method and map "
                "cannot be told; rename it per the conventions (e.g. sub-01_desc-osvd_cbf.nii.gz)."
            )
        prefix, method, name = parsed
        if (method, name) in paths:
            raise InputError(f"Two map files are the {method} {name} map (the second is {path}); give each once.")
        _check_map_header(path, shape, affine, f"{method} {name} map")
        paths[(method, name)] = path
        prefixes.append(prefix)
    return FileBackedMaps(paths, lambda key, path: _load_map(path, shape, affine, f"{key[0]} {key[1]} map")), prefixes


# ----------------------------------------------------------------------------------------------
# MapStats


class _MapStatsInputSpec(BaseInterfaceInputSpec):
    map_files = InputMultiObject(
        File(exists=True), mandatory=True,
        desc="3D maps named <prefix>_desc-<method>_<map>.nii.gz (method and map read from the name)",
    )
    brain_mask = File(exists=True, mandatory=True, desc="3D brain mask on the maps' grid")
    gm_mask = File(exists=True, desc="binary grey-matter mask: region 'gm'")
    wm_mask = File(exists=True, desc="binary white-matter mask: region 'wm'")
    csf_mask = File(exists=True, desc="CSF mask, removed from every region")
    vessel_mask = File(exists=True, desc="vessel mask, removed from every region")
    lesion_mask = File(exists=True, desc="ischemic lesion (e.g. registered DWI infarct): regions 'ischemic' and 'normal'")
    roi_masks = InputMultiObject(File(exists=True), desc="further region masks, one region each")
    roi_names = InputMultiObject(
        traits.Str(), desc="names of roi_masks (letters/digits), default their label-/desc- entity or file stem"
    )
    midline_mm = traits.Float(desc="world (RAS) x in mm of the mid-sagittal plane; default the brain's centroid")
    out_prefix = traits.Str(desc="output file-name prefix (default: the maps' prefix)")


class _MapStatsOutputSpec(TraitedSpec):
    out_tsv = File(exists=True, desc="one row per region, method and map: n_voxels, volume_ml, mean, sd, median, p05-p95")
    out_json = File(exists=True, desc="sidecar: column descriptions and units, region definitions, sources")


class MapStats(SimpleInterface):
    """Region statistics of perfusion maps: mean, median, sd, percentiles, voxel count and volume.

    Regions (all restricted to tissue: the brain minus the CSF and vessel masks
    when given): ``brain``; ``gm``/``wm`` with tissue masks; ``left``/``right``
    (split at the brain's mid-sagittal plane in world coordinates, see
    :func:`ctp_nipype.perfusion.stats.hemisphere_masks`); ``normal``/``ischemic``
    with a lesion mask (the paper's normally perfused and ischemic regions); and
    one region per ROI mask. Writes ``<prefix>_desc-regions_stats.tsv`` with
    columns ``region, method, map, units, n_voxels, volume_ml, mean, sd,
    median, p05, p25, p75, p95`` and its JSON sidecar.

    Inputs are files and plain values: ``map_files`` (list of maps of any
    methods), ``brain_mask``, optional ``gm_mask``, ``wm_mask``, ``csf_mask``,
    ``vessel_mask``, ``lesion_mask``, ``roi_masks`` (+ ``roi_names``),
    ``midline_mm``, ``out_prefix``.

    Examples
    --------
    >>> MapStats().inputs.roi_names
    <undefined>
    """

    input_spec = _MapStatsInputSpec
    output_spec = _MapStatsOutputSpec

    def _run_interface(self, runtime):
        brain_img, brain = _load_brain(self.inputs.brain_mask)
        shape, affine = brain.shape, brain_img.affine
        maps, prefixes = _maps_by_key(self.inputs.map_files, shape, affine)
        roi_files = list(self.inputs.roi_masks) if isdefined(self.inputs.roi_masks) else []
        names = list(self.inputs.roi_names) if isdefined(self.inputs.roi_names) else [region_name(p) for p in roi_files]
        if len(names) != len(roi_files):
            raise InputError(f"{len(roi_files)} ROI masks but {len(names)} roi_names; give one name per mask.")
        rois = {name: load_mask(path, shape, affine, f"ROI mask {name!r}") for name, path in zip(names, roi_files)}
        masks = {
            key: _optional_mask(getattr(self.inputs, f"{key}_mask"), shape, affine, f"{key} mask")
            for key in ("gm", "wm", "csf", "vessel", "lesion")
        }
        regions, midline = stats.build_regions(
            brain, affine,
            grey_matter=masks["gm"], white_matter=masks["wm"], csf=masks["csf"], vessels=masks["vessel"],
            lesion=masks["lesion"], rois=rois,
            midline_mm=self.inputs.midline_mm if isdefined(self.inputs.midline_mm) else None,
        )
        rows = stats.region_statistics(maps, regions, voxel_volume_ml(brain_img.header))
        prefix = self.inputs.out_prefix if isdefined(self.inputs.out_prefix) else prefixes[0]
        columns = ("region", "method", "map", "units") + stats.STAT_COLUMNS
        out_tsv = write_table_tsv(os.path.join(runtime.cwd, derivative_name(prefix, "stats", desc="regions", extension=".tsv")), rows, columns)
        definitions = {
            "brain": "brain mask" + (" minus CSF" if masks["csf"] is not None else "")
            + (" minus vessels" if masks["vessel"] is not None else ""),
            "gm": "grey-matter mask within the brain region",
            "wm": "white-matter mask within the brain region",
            "left": "brain region with world x < MidlineWorldX (subject's left)",
            "right": "brain region with world x > MidlineWorldX (subject's right)",
            "normal": "brain region outside the lesion mask (normally perfused)",
            "ischemic": "brain region inside the lesion mask",
        }
        definitions.update({name: f"ROI mask {os.path.basename(p)} within the brain region"
                            for name, p in zip(names, roi_files)})
        sidecar = {
            "region": {"Description": "region name", "Levels": {r: definitions[r] for r in regions}},
            "method": {"Description": "perfusion method (ssvd, csvd, osvd, transformer)"},
            "map": {"Description": "map name (cbf, cbv, mtt, tmax, bad)"},
            "units": {"Description": "units of the map and of its statistics (mean ... p95)"},
            "n_voxels": {"Description": "voxels of the region with a finite map value"},
            "volume_ml": {"Description": "n_voxels times the voxel volume", "Units": "ml"},
            "mean": {"Description": "mean of the map in the region", "Units": "see the units column"},
            "sd": {"Description": "sample standard deviation (ddof=1)", "Units": "see the units column"},
            "median": {"Description": "median", "Units": "see the units column"},
            **{f"p{q:02d}": {"Description": f"{q}th percentile (linear interpolation)", "Units": "see the units column"}
               for q in stats.PERCENTILES},
            "MapUnits": {name: UNITS.get(name, "") for _, name in maps},
            "HemisphereSplit": "mid-sagittal plane x = MidlineWorldX in world (RAS+) coordinates of the affine",
            "MidlineWorldX": midline,
            "VoxelVolume": voxel_volume_ml(brain_img.header),
            **provenance(*self.inputs.map_files, self.inputs.brain_mask),
        }
        out_json = write_sidecar(out_tsv, sidecar)
        self._results.update(out_tsv=str(out_tsv), out_json=str(out_json))
        return runtime


# ----------------------------------------------------------------------------------------------
# LesionVolumes


class _LesionVolumesInputSpec(BaseInterfaceInputSpec):
    cbf_file = File(exists=True, mandatory=True, desc="CBF map (ml/100 g/min) of one method, <prefix>_desc-<method>_cbf")
    delay_file = File(
        exists=True, mandatory=True, desc="Tmax (SVD) or BAD (network) map in s of the same method, ..._tmax or ..._bad"
    )
    brain_mask = File(exists=True, mandatory=True, desc="3D brain mask")
    csf_mask = File(exists=True, desc="CSF mask, excluded from core, hypoperfusion and the reference")
    vessel_mask = File(exists=True, desc="vessel mask, excluded likewise")
    core_relative_cbf = traits.Float(
        stats.CORE_RELATIVE_CBF, usedefault=True, desc="core: CBF below this fraction of the unaffected hemisphere's mean"
    )
    cbv_file = File(exists=True, desc="CBV map (ml/100 g) of the same method: gives the rCBV map")
    delay_threshold = traits.Float(stats.DELAY_THRESHOLD_S, usedefault=True, desc="hypoperfused: Tmax/BAD above this, s")
    delay_thresholds = traits.List(
        traits.Float, list(triage.DELAY_THRESHOLDS_S), usedefault=True,
        desc="delays (s) whose volumes are reported (Tmax, or BAD for the network)",
    )
    hemisphere = traits.Enum("auto", "left", "right", usedefault=True,
                             desc="affected hemisphere; auto: the one with the larger hypoperfused volume")
    core_within_hypoperfused = traits.Bool(True, usedefault=True, desc="core voxels must also be hypoperfused")
    midline_mm = traits.Float(desc="world (RAS) x in mm of the mid-sagittal plane; default the brain's centroid")
    method = traits.Str(desc="method name when the file names do not follow the conventions")
    out_prefix = traits.Str(desc="output file-name prefix (default: the CBF map's prefix)")


class _LesionVolumesOutputSpec(TraitedSpec):
    core_mask = File(exists=True, desc="ischemic core mask (uint8)")
    hypoperfused_mask = File(exists=True, desc="hypoperfused tissue mask (uint8)")
    out_json = File(exists=True, desc="volumes (ml), mismatch, affected hemisphere, thresholds, sources")
    core_volume_ml = traits.Float(desc="ischemic core volume, ml")
    hypoperfused_volume_ml = traits.Float(desc="hypoperfused volume, ml")
    mismatch_volume_ml = traits.Float(desc="hypoperfused minus core volume, ml")
    mismatch_ratio = traits.Float(desc="hypoperfused over core volume (inf without core)")
    affected_hemisphere = traits.Str(desc="'left' or 'right'")
    rcbf = File(exists=True, desc="<prefix>_desc-<method>_rcbf.nii.gz: CBF over the contralateral reference")
    rcbv = File(desc="<prefix>_desc-<method>_rcbv.nii.gz: CBV over the same reference (with cbv_file)")


class LesionVolumes(SimpleInterface):
    """Ischemic core, hypoperfused tissue and mismatch of one method's maps.

    Core: CBF below ``core_relative_cbf`` (30%) of the mean CBF of the
    unaffected hemisphere's tissue (and, by default, hypoperfused);
    hypoperfused: Tmax or BAD above ``delay_threshold`` (6 s); see
    :func:`ctp_nipype.perfusion.stats.lesion_measures`. Give the CSF and vessel
    masks: CSF has CBF near 0 and vessels raise the reference.

    The triage measures come with them (:func:`ctp_nipype.perfusion.triage.triage_volumes`,
    one thresholding path for masks and volumes): the volumes with delay above
    4, 6, 8 and 10 s, the hypoperfusion intensity ratio and the DEFUSE 3 and
    EXTEND target-mismatch flags with their criteria; and the relative maps
    rCBF (and, with ``cbv_file``, rCBV) over the same contralateral reference
    as the core threshold.

    Inputs: ``cbf_file``, ``delay_file`` (the method's tmax or bad map),
    ``brain_mask``, optional ``cbv_file``, ``csf_mask``, ``vessel_mask``, and
    the plain values ``core_relative_cbf``, ``delay_threshold``,
    ``delay_thresholds``, ``hemisphere``, ``core_within_hypoperfused``,
    ``midline_mm``, ``method``, ``out_prefix``.
    Writes ``<prefix>_label-core_desc-<method>_mask.nii.gz``,
    ``<prefix>_label-hypoperfused_desc-<method>_mask.nii.gz``,
    ``<prefix>_desc-<method>_rcbf.nii.gz`` (and ``_rcbv``) and
    ``<prefix>_desc-<method>_lesion.json``.

    Examples
    --------
    >>> LesionVolumes().inputs.delay_threshold
    6.0
    """

    input_spec = _LesionVolumesInputSpec
    output_spec = _LesionVolumesOutputSpec

    def _run_interface(self, runtime):
        brain_img, brain = _load_brain(self.inputs.brain_mask)
        shape, affine = brain.shape, brain_img.affine
        cbf_name = parse_map_filename(self.inputs.cbf_file)
        delay_name = parse_map_filename(self.inputs.delay_file)
        method = self.inputs.method if isdefined(self.inputs.method) else (cbf_name[1] if cbf_name else None)
        if method is None:
            raise InputError(
                f"The method of {self.inputs.cbf_file} cannot be read from its name; name it "
                "<prefix>_desc-<method>_cbf.nii.gz or set the 'method' input."
            )
        if cbf_name and delay_name and cbf_name[1] != delay_name[1] and not isdefined(self.inputs.method):
            raise InputError(
                f"The CBF map is from {cbf_name[1]} but the delay map {self.inputs.delay_file} is from "
                f"{delay_name[1]}; give both maps of one method."
            )
        delay_kind = delay_name[2] if delay_name and delay_name[2] in ("tmax", "bad") else (
            "bad" if method == "transformer" else "tmax")
        cbf = _load_map(self.inputs.cbf_file, shape, affine, "CBF map")
        delay = _load_map(self.inputs.delay_file, shape, affine, f"{delay_kind} map")
        cbv = _load_map(self.inputs.cbv_file, shape, affine, "CBV map") if isdefined(self.inputs.cbv_file) else None
        result = stats.lesion_measures(
            cbf, delay, brain, affine, voxel_volume_ml(brain_img.header),
            csf=_optional_mask(self.inputs.csf_mask, shape, affine, "CSF mask"),
            vessels=_optional_mask(self.inputs.vessel_mask, shape, affine, "vessel mask"),
            hemisphere=self.inputs.hemisphere,
            core_relative_cbf=self.inputs.core_relative_cbf,
            delay_threshold_s=self.inputs.delay_threshold,
            core_within_hypoperfused=self.inputs.core_within_hypoperfused,
            midline_mm=self.inputs.midline_mm if isdefined(self.inputs.midline_mm) else None,
            delay_name=delay_kind,
            cbv=cbv,
            delay_thresholds_s=self.inputs.delay_thresholds,
        )
        prefix = self.inputs.out_prefix if isdefined(self.inputs.out_prefix) else (
            cbf_name[0] if cbf_name else strip_extension(self.inputs.cbf_file))
        sources = [self.inputs.cbf_file, self.inputs.delay_file, self.inputs.brain_mask]
        sources += [self.inputs.cbv_file] if cbv is not None else []
        origin = provenance(*sources, Method=method)
        written = {}
        for label, mask, description in (
            ("core", result.core, f"ischemic core: CBF < {self.inputs.core_relative_cbf:g} x mean CBF of the unaffected hemisphere"),
            ("hypoperfused", result.hypoperfused, f"hypoperfused: {delay_kind} > {self.inputs.delay_threshold:g} s"),
        ):
            path = os.path.join(runtime.cwd, derivative_name(prefix, "mask", desc=method, label=label))
            write_nifti(path, mask.astype(np.uint8), affine, brain_img.header,
                        {"Description": description, **origin}, dtype=np.uint8)
            written[label] = path
        reference = {"ReferenceRegion": stats.REFERENCE_REGION, "AffectedHemisphere": result.affected_hemisphere,
                     "MidlineWorldX": result.parameters["MidlineWorldX"]}
        relative = {"rcbf": (result.relative_cbf, "CBF", result.reference_cbf, "ml/100g/min")}
        if result.relative_cbv is not None:
            relative["rcbv"] = (result.relative_cbv, "CBV", result.reference_cbv, "ml/100g")
        for name, (values, what, value, units) in relative.items():
            path = os.path.join(runtime.cwd, derivative_name(prefix, name, desc=method))
            write_nifti(path, values, affine, brain_img.header, {
                "Units": UNITS[name],
                "Description": f"relative {what}: {what} over the mean {what} of the contralateral reference "
                               "region (1 = that mean); 0 outside the tissue",
                **reference, "ReferenceValue": value, "ReferenceUnits": units, **origin,
            })
            written[name] = path
        summary = result.summary()
        summary.update(origin)
        summary["MaskFiles"] = {label: os.path.basename(written[label]) for label in ("core", "hypoperfused")}
        summary["RelativeMapFiles"] = {name: os.path.basename(written[name]) for name in relative}
        out_json = write_json(os.path.join(runtime.cwd, derivative_name(prefix, "lesion", desc=method, extension=".json")),
                              summary)
        self._results.update(
            core_mask=written["core"],
            hypoperfused_mask=written["hypoperfused"],
            out_json=str(out_json),
            core_volume_ml=result.core_volume_ml,
            hypoperfused_volume_ml=result.hypoperfused_volume_ml,
            mismatch_volume_ml=result.mismatch_volume_ml,
            mismatch_ratio=result.mismatch_ratio,
            affected_hemisphere=result.affected_hemisphere,
            rcbf=written["rcbf"],
        )
        if "rcbv" in written:
            self._results["rcbv"] = written["rcbv"]
        return runtime


# ----------------------------------------------------------------------------------------------
# GroupStats


#: columns of the group lesion table taken from each lesion JSON, in order (DelayMap says tmax or bad)
LESION_COLUMNS = ("CoreVolume", "HypoperfusedVolume", "MismatchVolume", "MismatchRatio",
                  *(triage.volume_key(t) for t in triage.DELAY_THRESHOLDS_S), "HypoperfusionIntensityRatio", "DEFUSE3", "EXTEND",
                  "DelayMap", "AffectedHemisphere", "ReferenceCBF")


def lesion_table(lesion_files):
    """Rows (scan, method, volumes, ratios, DEFUSE 3 / EXTEND flags) from the per-method lesion JSONs."""
    rows = []
    for path in lesion_files:
        payload = read_json(path)
        entities = parse_derivative_name(path)
        row = {"scan": entities["prefix"], "method": entities["desc"]}
        for key in LESION_COLUMNS:
            value = payload.get(key)
            value = value if not isinstance(value, dict) else value.get("value")
            row[key] = round(value, 3) if isinstance(value, float) else (
                "n/a" if value is None else str(value).lower() if isinstance(value, bool) else value)
        rows.append(row)
    return rows


class _GroupStatsInputSpec(BaseInterfaceInputSpec):
    in_files = InputMultiObject(File(exists=True), mandatory=True,
                                desc="per-scan region-statistics TSVs written by MapStats")
    scan_ids = InputMultiObject(traits.Str(), desc="one id per TSV (default: the file name up to '_desc-')")
    statistic = traits.Enum("mean", "median", usedefault=True, desc="per-scan regional value that is compared")
    reference = traits.Str(
        "auto", usedefault=True,
        desc="method that deviations and tests refer to; 'auto': sSVD when present, else the first method found "
             "in the paper's order (ssvd, csvd, osvd, transformer)",
    )
    lesion_files = InputMultiObject(
        File(exists=True), desc="lesion JSONs of LesionVolumes: their triage measures make the page's triage table")
    out_prefix = traits.Str("group", usedefault=True, desc="output file-name prefix")


class _GroupStatsOutputSpec(TraitedSpec):
    out_tsv = File(exists=True, desc="per region, map and method: n, mean, sd, deviation from the reference, Wilcoxon p")
    out_pairs_tsv = File(exists=True, desc="Wilcoxon signed-rank tests between every pair of methods")
    out_html = File(exists=True, desc="self-contained HTML page with the tables (Table 2 layout)")


def scan_id(path):
    """The scan's id from a statistics file name: the part before ``_desc-``.

    >>> scan_id("/d/sub-01_ses-02_desc-regions_stats.tsv")
    'sub-01_ses-02'
    """
    entities = parse_derivative_name(path)
    return entities["prefix"] if entities else strip_extension(path)


class GroupStats(SimpleInterface):
    """Group comparison of methods across scans, laid out like Table 2 of Zeng et al. (2025).

    For every region and map of the per-scan TSVs: per method the mean and sd
    across scans of the per-scan regional ``statistic``, the deviation from the
    ``reference`` method (default sSVD when present, else the first method of
    the paper's order found) in the map's units and in percent, and paired
    two-sided Wilcoxon signed-rank tests (scipy) against the reference and
    between every pair of methods (see
    :func:`ctp_nipype.perfusion.stats.group_comparison`).

    Inputs: ``in_files`` (MapStats TSVs), optional ``scan_ids``, ``statistic``
    ('mean' or 'median'), ``reference``, ``out_prefix``. Writes
    ``<out_prefix>_desc-methods_stats.tsv``, ``<out_prefix>_desc-pairs_stats.tsv``
    and ``<out_prefix>_desc-methods_report.html``.

    Examples
    --------
    >>> GroupStats().inputs.reference
    'auto'
    """

    input_spec = _GroupStatsInputSpec
    output_spec = _GroupStatsOutputSpec

    def _run_interface(self, runtime):
        files = list(self.inputs.in_files)
        ids = list(self.inputs.scan_ids) if isdefined(self.inputs.scan_ids) else [scan_id(p) for p in files]
        if len(ids) != len(files):
            raise InputError(f"{len(files)} statistics files but {len(ids)} scan_ids; give one id per file.")
        if len(set(ids)) != len(ids):
            raise InputError(f"The scan ids are not unique ({', '.join(ids)}); set scan_ids.")
        records = []
        for scan, path in zip(ids, files):
            for row in read_table_tsv(path, required=("region", "method", "map", self.inputs.statistic),
                                      hint="give a region-statistics TSV written by MapStats"):
                records.append({**row, "scan": scan})
        summary, pairs = stats.group_comparison(records, statistic=self.inputs.statistic,
                                                reference=self.inputs.reference)
        reference = summary[0]["reference"] if summary else self.inputs.reference
        prefix = self.inputs.out_prefix
        out_tsv = write_table_tsv(
            os.path.join(runtime.cwd, derivative_name(prefix, "stats", desc="methods", extension=".tsv")), summary,
            ("region", "map", "units", "method", "n_scans", "mean", "sd", "reference", "n_pairs", "deviation",
             "deviation_percent", "wilcoxon_w", "p_value"),
        )
        out_pairs = write_table_tsv(
            os.path.join(runtime.cwd, derivative_name(prefix, "stats", desc="pairs", extension=".tsv")), pairs,
            ("region", "map", "method_a", "method_b", "n_pairs", "mean_difference", "wilcoxon_w", "p_value"),
        )
        from ..reports.group import group_report_html

        lesions = lesion_table(self.inputs.lesion_files) if isdefined(self.inputs.lesion_files) else []
        html = group_report_html(summary, pairs, scans=ids, statistic=self.inputs.statistic, reference=reference,
                                 lesion_rows=lesions)
        out_html = os.path.join(runtime.cwd, derivative_name(prefix, "report", desc="methods", extension=".html"))
        write_text(out_html, html)
        self._results.update(out_tsv=str(out_tsv), out_pairs_tsv=str(out_pairs), out_html=out_html)
        return runtime

