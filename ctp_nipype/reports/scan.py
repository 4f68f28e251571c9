"""The per-scan report: one self-contained HTML page from arrays and tables.

:func:`scan_report_html` takes a :class:`ScanReportData` (what the
:class:`~ctp_nipype.interfaces.report.ScanReport` interface read from files)
and returns the page: scan summary and warnings, motion trace, AIF/VOF curves
and their voxels, a mosaic of every map of every method (one colour scale per
map across methods, colour bars in units), core and hypoperfusion overlays
with their volumes, residue and reconstructed tissue curves averaged in 5 x 5
ROIs of normal and ischemic grey and white matter (as figures 6-7 of Zeng
et al. 2025) and the table of region statistics.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..perfusion.chunks import iter_slices, read_slices
from ..perfusion.constants import UNITS
from ..perfusion.convolution import convolve
from ..perfusion.masks import brain_mask, time_average
from ..perfusion.prepare import prepare_curves
from ..perfusion.stats import MAP_ORDER, METHOD_ORDER, STAT_COLUMNS, hemisphere_masks, tissue_mask
from ..perfusion.timing import is_uniform, resample_to_uniform
from . import figures
from .html import escape, format_cell, page, png_img, table

#: in-plane side of the ROIs of the curve figure, voxels (the paper's 5 x 5)
ROI_SIZE = 5
#: a framewise displacement above this (mm) is reported as a warning
MAX_FRAMEWISE_DISPLACEMENT_MM = 1.0
#: methods whose lesion masks are preferred for the ischemic ROI when no lesion mask is given
ISCHEMIC_ROI_METHODS = ("osvd", "transformer", "csvd", "ssvd")


@dataclass
class ScanReportData:
    """Everything the report shows, as arrays and plain values.

    Attributes
    ----------
    title : str
        The scan's name (prefix).
    hu : array-like (x, y, z, T)
        The scan, HU: a numpy array or nibabel's lazy proxy (:func:`ctp_nipype.io.load_ctp` with ``lazy``);
        the report reads the time average of the slices it draws and the curves of the ROIs' voxels.
    frame_times : ndarray (T,)
        Seconds.
    affine : ndarray (4, 4)
    voxel_size_mm : tuple of float
    timing_source : str
    curves : dict
        Columns of the curves TSV: ``time`` (optional), ``aif``, ``vof``, ``aif_corrected`` (HU).
    aif_column : str
        The curve the deconvolution used (``aif_corrected`` when present).
    aif_voxels, vof_voxels : ndarray (n, 3) of int, optional
        Voxels averaged into the AIF and VOF.
    aif_png : bytes, optional
        A ready AIF figure (replaces the one drawn from ``curves``).
    motion : dict, optional
        Columns of the motion TSV.
    brain, grey_matter, white_matter, csf, vessels, lesion : ndarray of bool, optional
    maps : dict
        ``{(method, map): 3D array}``.
    residues : dict
        ``{method: 4D flow-scaled residue [1/s]}``: an array-like, or the path of a 4D NIfTI of which the
        ROIs' voxels are read in one pass (:func:`read_voxel_curves`).
    local_aifs : dict
        ``{method: 4D local AIF [HU above baseline]}`` (the network's), likewise.
    stats_rows : list of dict
        Region statistics (rows of the MapStats TSV).
    lesions : dict
        ``{method: {"summary": dict of the lesion JSON, "core": mask or None, "hypoperfused": mask or None}}``.
    warnings : list of str
    ttp : ndarray, optional
        Time to peak of the tissue curves, s (one map, whatever the methods).
    summary_pngs : dict
        ``{method: PNG bytes}``: the triage summaries :class:`~ctp_nipype.interfaces.triage.TriageSummary`
        drew (:func:`ctp_nipype.reports.figures.triage_summary` of the same inputs), embedded instead of
        drawn again.
    """

    title: str
    hu: object
    frame_times: np.ndarray
    affine: np.ndarray
    voxel_size_mm: tuple
    timing_source: str = "unknown"
    curves: dict = field(default_factory=dict)
    aif_column: str = "aif_corrected"
    aif_voxels: np.ndarray | None = None
    vof_voxels: np.ndarray | None = None
    aif_png: bytes | None = None
    motion: dict | None = None
    brain: np.ndarray | None = None
    grey_matter: np.ndarray | None = None
    white_matter: np.ndarray | None = None
    csf: np.ndarray | None = None
    vessels: np.ndarray | None = None
    lesion: np.ndarray | None = None
    maps: dict = field(default_factory=dict)
    residues: dict = field(default_factory=dict)
    local_aifs: dict = field(default_factory=dict)
    stats_rows: list = field(default_factory=list)
    lesions: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    ttp: np.ndarray | None = None
    summary_pngs: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# reading only what is drawn


class TimeAveragedSlices:
    """The time-averaged scan (x, y, z), HU, float32, each slice computed from the series when first indexed.

    The figures draw a few slices over it (``background[bx, by, k]``): only those are read from a lazily
    loaded series (:func:`ctp_nipype.perfusion.masks.time_average` of ``series[:, :, k:k+1]``, the same
    values as the whole series' average). ``np.asarray`` of it (and any other indexing) averages every slice,
    chunk by chunk.

    >>> series = np.arange(2 * 2 * 3 * 4, dtype=np.float32).reshape(2, 2, 3, 4)
    >>> background = TimeAveragedSlices(series)
    >>> background[:, :, 1].tolist(), background.read_slices
    ([[5.5, 17.5], [29.5, 41.5]], [1])
    >>> bool(np.array_equal(np.asarray(background), time_average(series)))
    True
    """

    def __init__(self, series):
        self.series = series
        self.shape = tuple(int(n) for n in series.shape[:3])
        self.ndim = 3
        self.dtype = np.dtype(np.float32)
        self._slices = {}

    @property
    def read_slices(self):
        """The slices averaged so far (sorted)."""
        return sorted(self._slices)

    def slice(self, k):
        """Slice ``k`` of the average, (x, y)."""
        k = int(k)
        if k not in self._slices:
            self._slices[k] = time_average(read_slices(self.series, k, k + 1))[:, :, 0]
        return self._slices[k]

    def __getitem__(self, key):
        if isinstance(key, tuple) and len(key) == 3 and isinstance(key[2], (int, np.integer)):
            return self.slice(key[2])[key[0], key[1]]
        return np.asarray(self)[key]

    def __array__(self, dtype=None, copy=None):
        whole = np.empty(self.shape, np.float32)
        if len(self._slices) == self.shape[2]:  # every slice already averaged
            for k, values in self._slices.items():
                whole[:, :, k] = values
        else:
            for z0, z1, chunk in iter_slices(self.series):
                whole[:, :, z0:z1] = time_average(chunk)
            self._slices = {k: whole[:, :, k].copy() for k in range(self.shape[2])}
        return whole if dtype is None else whole.astype(dtype)


def read_voxel_curves(source, mask):
    """The curves (n, T) of the voxels of a 3D ``mask`` in ``array[mask]``'s order, from a 4D source (float32, or
    the array's float type).

    ``source`` is an array-like (a numpy array, nibabel's proxy of an uncompressed NIfTI: one box per slice
    holding voxels is read) or the path of a 4D NIfTI, read in one pass frame by frame
    (:func:`ctp_nipype.slabs.iter_frames`: a gzipped file is decompressed once, one frame held at a time).

    >>> s = np.arange(3 * 3 * 2 * 2, dtype=np.float32).reshape(3, 3, 2, 2); m = s[..., 0] % 3 == 0
    >>> bool(np.array_equal(read_voxel_curves(s, m), s[m]))
    True
    """
    mask = np.asarray(mask, bool)
    if isinstance(source, (str, os.PathLike)):
        from ..slabs import iter_frames

        frames = [frame[mask] for frame in iter_frames(source)]
        return np.stack(frames, axis=-1) if frames else np.zeros((int(mask.sum()), 0), np.float32)
    where = np.argwhere(mask)  # C order, as array[mask]
    dtype = np.result_type(getattr(source, "dtype", np.float32), np.float32)  # float64 stays float64
    out = np.empty((where.shape[0], int(source.shape[3])), dtype)
    for k in np.unique(where[:, 2]):
        rows = np.flatnonzero(where[:, 2] == k)
        (x0, y0), (x1, y1) = where[rows, :2].min(axis=0), where[rows, :2].max(axis=0) + 1
        box = np.asarray(source[x0:x1, y0:y1, int(k)], dtype)  # (bx, by, T)
        out[rows] = box[where[rows, 0] - x0, where[rows, 1] - y0]
    return out


# ----------------------------------------------------------------------------------------------
# ROIs


def place_square_roi(region, size=ROI_SIZE):
    """The ``size x size`` in-plane square (one slice) that holds the most voxels of ``region``.

    Returns the square's voxels inside ``region`` (a bool mask), or None for an empty region.

    >>> region = np.zeros((12, 12, 2), bool); region[6:12, 1:7, 1] = True
    >>> roi = place_square_roi(region)
    >>> int(roi.sum()), bool(roi[..., 0].any())
    (25, False)
    """
    region = np.asarray(region, bool)
    if not region.any():
        return None
    fraction = ndimage.uniform_filter(region.astype(np.float32), size=(size, size, 1), mode="constant")
    fraction[~region] = -1.0  # centre the square on a voxel of the region
    i, j, k = np.unravel_index(int(np.argmax(fraction)), region.shape)
    half = size // 2
    roi = np.zeros_like(region)
    roi[max(i - half, 0) : i + half + 1, max(j - half, 0) : j + half + 1, k] = True
    return roi & region


def curve_regions(data):
    """The named regions whose ROIs the curve figure averages: normal/ischemic x GM/WM.

    Ischemic: the lesion mask, else the hypoperfused mask of the first method
    of :data:`ISCHEMIC_ROI_METHODS` that has one. Normal: tissue of the other
    hemisphere (the one holding less of the ischemic region), away from it.
    Without an ischemic region, only normal ROIs; when a GM/WM split of a
    region is empty (tissue masks that exclude the lesion), the region is one ROI.
    """
    brain = data.brain
    tissue = tissue_mask(brain, data.csf, data.vessels)
    ischemic = data.lesion
    if ischemic is None:
        for method in ISCHEMIC_ROI_METHODS:
            hypo = data.lesions.get(method, {}).get("hypoperfused")
            if hypo is not None and hypo.any():
                ischemic = hypo
                break
    left, right, _ = hemisphere_masks(brain, data.affine)
    regions = []
    if ischemic is not None and ischemic.any():
        ischemic = ischemic & tissue
        other = right if (ischemic & left).sum() >= (ischemic & right).sum() else left
        normal = tissue & other & ~ndimage.binary_dilation(ischemic, iterations=2)
        pairs = [("normal", normal), ("ischemic", ischemic)]
    else:
        pairs = [("normal", tissue)]
    for name, region in pairs:
        split = []
        if data.grey_matter is not None and data.white_matter is not None:
            split = [(f"{name} GM", region & data.grey_matter), (f"{name} WM", region & data.white_matter)]
        # tissue masks that leave the lesion out (labels, not templates) give no split: one ROI
        regions += split if split and all(mask.any() for _, mask in split) else [(name, region)]
    return regions


def roi_curve_data(data, rois):
    """Mean observed tissue curve, residues and reconstructions (AIF (x) residue) in each ROI.

    The tissue and the AIF go through :func:`ctp_nipype.perfusion.prepare.prepare_curves`
    (the deconvolution's baseline and uniform grid); the reconstruction is
    :func:`ctp_nipype.perfusion.convolution.convolve` of each voxel's AIF (the
    global one, or the network's local one) with its residue, averaged over
    the ROI. Methods whose residue has another number of frames are skipped.

    Returns
    -------
    frame_times : ndarray
    curves : list of dict (see :func:`ctp_nipype.reports.figures.roi_curves`)
    skipped : list of str
    """
    aif_hu = np.asarray(data.curves.get(data.aif_column, data.curves.get("aif")), float)
    times = np.asarray(data.frame_times, float)
    curve_times = data.curves.get("time")
    out, skipped = [], []
    prepared_times = None
    # every 4D source read once, at the voxels of all the ROIs (rows in the union's C order)
    union = np.logical_or.reduce([roi for _, roi in rois])
    # read side by side: gzip's decompression (most of the report's time on a clinical scan) leaves Python's
    # lock to the other threads (3 residues of 512 x 512 x 24 x 40: 5.7 s one after the other, 3.5 s so on 2 cores)
    sources = {("hu", None): data.hu, **{("residue", m): s for m, s in data.residues.items()},
               **{("localaif", m): s for m, s in data.local_aifs.items() if m in data.residues}}
    with ThreadPoolExecutor(max_workers=min(len(sources), os.cpu_count() or 1)) as pool:
        read = dict(zip(sources, pool.map(lambda source: read_voxel_curves(source, union), sources.values())))
    tissue_hu = read[("hu", None)]
    residues = {method: read[("residue", method)] for method in data.residues}
    local_aifs = {method: curves for (kind, method), curves in read.items() if kind == "localaif"}
    for name, roi in rois:
        rows = np.flatnonzero(roi[union])  # the ROI's voxels among the union's, in C order (no index volume)
        hu = tissue_hu[rows].astype(np.float64)
        roi_times = times
        if aif_hu.size != times.size or not is_uniform(times):
            step = float(np.diff(curve_times).min()) if curve_times is not None else None
            hu, roi_times = resample_to_uniform(hu, times, step)
        if aif_hu.size != roi_times.size:
            skipped.append(f"the AIF has {aif_hu.size} samples but the scan's grid {roi_times.size}")
            return None, [], skipped
        prepared = prepare_curves(hu, roi_times, aif_hu)
        dt = float(prepared.frame_times[1] - prepared.frame_times[0])
        prepared_times = prepared.frame_times
        entry = {"name": name, "observed": prepared.tissue.mean(axis=0), "residue": {}, "reconstructed": {}}
        for method, curves in residues.items():
            voxels = curves[rows]
            if voxels.shape[-1] != prepared.tissue.shape[-1]:
                skipped.append(f"{method}: residue has {voxels.shape[-1]} frames, the curves {prepared.tissue.shape[-1]}")
                continue
            aif = local_aifs[method][rows] if method in local_aifs else prepared.aif
            entry["residue"][method] = voxels.mean(axis=0)
            entry["reconstructed"][method] = convolve(aif, voxels, dt).mean(axis=0)
        out.append(entry)
    return prepared_times, out, sorted(set(skipped))


# ----------------------------------------------------------------------------------------------
# sections


def triage_rows(lesions):
    """The triage panel's rows, one per method (paper's order), from the lesion JSONs' summaries.

    >>> rows = triage_rows({"transformer": {"summary": {"DelayMap": "bad", "CoreVolume": 5.0, "DelayThreshold": 6.0,
    ...                     "DelayAbove6sVolume": 20.0, "MismatchVolume": 15.0, "MismatchRatio": 4.0,
    ...                     "HypoperfusionIntensityRatio": 0.25, "DEFUSE3": True, "EXTEND": True}}})
    >>> rows[0]["method"], rows[0]["hypo_rule"], rows[0]["hypo"], rows[0]["defuse3"]
    ('transformer', 'BAD > 6 s', 20.0, 'yes')
    """
    from ..perfusion.triage import delay_label, volume_key

    rows = []
    for method in sorted(lesions, key=lambda m: _order(m, METHOD_ORDER)):
        summary = lesions[method].get("summary", {})
        threshold = summary.get("DelayThreshold", 6.0)
        flag = {True: "yes", False: "no"}
        rows.append({
            "method": method,
            "core": summary.get("CoreVolume"),
            "hypo_rule": f"{delay_label(summary.get('DelayMap', 'tmax'))} > {format_cell(threshold)} s",
            "hypo": summary.get(volume_key(threshold), summary.get("HypoperfusedVolume")),
            "mismatch": summary.get("MismatchVolume"),
            "ratio": summary.get("MismatchRatio"),
            "hir": summary.get("HypoperfusionIntensityRatio"),
            "defuse3": flag.get(summary.get("DEFUSE3"), "n/a"),
            "extend": flag.get(summary.get("EXTEND"), "n/a"),
            "side": summary.get("AffectedHemisphere"),
        })
    return rows


def _triage_section(data, background, slices):
    """The first panel: what a stroke team reads in ten seconds, per method, with the criteria spelt out, and
    each method's one-page summary (the figure of ``<prefix>_desc-<method>_summary.png``)."""
    from ..perfusion.triage import TARGET_MISMATCH

    if not data.lesions:
        return '<p class="note">No lesion measures were given.</p>'
    rows = triage_rows(data.lesions)
    body = table(
        rows, ["method", "core", "hypo_rule", "hypo", "mismatch", "ratio", "hir", "defuse3", "extend", "side"],
        ["method", "core [ml] (rCBF < 30%)", "hypoperfusion rule", "hypoperfused [ml]", "mismatch [ml]",
         "mismatch ratio", "HIR", "DEFUSE 3", "EXTEND", "affected side"],
        text_columns=["method", "hypo_rule", "defuse3", "extend", "side"],
    )
    criteria = "".join(f"<li><b>{escape(c.name.replace('DEFUSE3', 'DEFUSE 3'))}</b>: {escape(c.text())}</li>"
                       for c in TARGET_MISMATCH.values())
    body += (f"<ul class=\"note\">{criteria}<li>HIR, hypoperfusion intensity ratio: volume with delay &gt; 10 s "
             "over volume with delay &gt; 6 s. Core: CBF below 30% of the mean CBF of the unaffected "
             "hemisphere's tissue, within the hypoperfused tissue. The network thresholds its BAD, the bolus "
             "arrival delay, which does not include the dispersion that Tmax adds: BAD &gt; 6 s is a stricter "
             "rule than Tmax &gt; 6 s.</li></ul>")
    for method in sorted(data.lesions, key=lambda m: _order(m, METHOD_ORDER)):
        entry = data.lesions[method]
        png = data.summary_pngs.get(method)  # TriageSummary's figure: the same bytes, not drawn again
        if png is None:
            delay = next((data.maps[(method, name)] for name in ("tmax", "bad") if (method, name) in data.maps), None)
            if entry.get("core") is None or entry.get("hypoperfused") is None or delay is None:
                continue
            png = figures.triage_summary(background, data.brain, entry["core"], entry["hypoperfused"], delay,
                                         entry.get("summary", {}), f"{data.title}: {method}", slices, data.affine)
        body += png_img(png, f"{method} triage summary")
    return body


def _summary_section(data, background):
    times = np.asarray(data.frame_times, float)
    steps = np.diff(times)
    rows = [
        ("scan", data.title),
        ("matrix (x, y, z)", " x ".join(str(s) for s in data.hu.shape[:3])),
        ("voxel size [mm]", " x ".join(f"{v:.3g}" for v in data.voxel_size_mm)),
        ("frames", str(times.size)),
        ("duration [s]", f"{times[-1] - times[0]:.4g}"),
        ("frame interval [s]", f"{steps.min():.3g}" + ("" if is_uniform(times) else f" to {steps.max():.3g} (non-uniform)")),
        ("timing source", data.timing_source),
        ("brain voxels", str(int(data.brain.sum()))),
        ("methods", ", ".join(sorted({m for m, _ in data.maps}, key=lambda m: _order(m, METHOD_ORDER))) or "none"),
    ]
    body = "<table>" + "".join(f"<tr><th class=\"text\">{escape(k)}</th><td class=\"text\">{escape(v)}</td></tr>"
                               for k, v in rows) + "</table>"
    if data.warnings:
        body += "".join(f'<div class="warning">{escape(w)}</div>' for w in data.warnings)
    else:
        body += '<p class="note">No warnings.</p>'
    return body


def _order(value, order):
    return order.index(value) if value in order else len(order)


def _maps_section(data, slices):
    names = sorted({name for _, name in data.maps}, key=lambda n: _order(n, MAP_ORDER))
    if not names:
        return '<p class="note">No maps were given.</p>'
    parts = []
    tissue = tissue_mask(data.brain, data.csf, data.vessels)  # sets every colour scale
    # Tmax (SVD) and BAD (network) are both delays in s: one row set, one colour scale
    groups = []
    for name in names:
        if name == "bad" and "tmax" in names:
            continue
        members = ["tmax", "bad"] if name == "tmax" and "bad" in names else [name]
        groups.append(members)
    for members in groups:
        # only this group's maps read (data.maps may read each map from its file when asked: keys first)
        maps = {
            f"{method} {name}" if len(members) > 1 else method: data.maps[(method, map_name)]
            for name in members
            for method, map_name in sorted(data.maps, key=lambda key: _order(key[0], METHOD_ORDER))
            if map_name == name
        }
        label = "/".join(members)
        png = figures.map_mosaic(maps, label, UNITS.get(members[0], ""), data.brain, slices,
                                 range_mask=tissue)
        parts.append(png_img(png, f"{label} maps"))
    if data.ttp is not None:
        png = figures.map_mosaic({"scan": data.ttp}, "ttp", UNITS["ttp"], data.brain, slices,
                                 range_mask=tissue)
        parts.append(png_img(png, "time to peak"))
    return "<p class=\"note\">One colour scale per map across methods: 0 to the 99th percentile in the brain's tissue (without CSF and vessels when their masks are given).</p>" + "".join(parts)


def _lesion_section(data, background, slices):
    if not data.lesions:
        return '<p class="note">No lesion measures were given.</p>'
    rows = []
    overlays = {}
    for method in sorted(data.lesions, key=lambda m: _order(m, METHOD_ORDER)):
        entry = data.lesions[method]
        summary = entry.get("summary", {})
        rows.append({
            "method": method,
            "core": summary.get("CoreVolume"),
            "hypo": summary.get("HypoperfusedVolume"),
            "mismatch": summary.get("MismatchVolume"),
            "ratio": summary.get("MismatchRatio"),
            "side": summary.get("AffectedHemisphere"),
            "reference": summary.get("ReferenceCBF"),
            "rule": f"CBF < {format_cell(summary.get('CoreRelativeCBFThreshold'))} x reference; "
                    f"{summary.get('DelayMap', 'delay')} > {format_cell(summary.get('DelayThreshold'))} s",
        })
        if entry.get("core") is not None and entry.get("hypoperfused") is not None:
            title = (f"core {format_cell(summary.get('CoreVolume'))} ml, "
                     f"hypoperfused {format_cell(summary.get('HypoperfusedVolume'))} ml")
            overlays[method] = (entry["core"], entry["hypoperfused"], title)
    body = table(
        rows, ["method", "core", "hypo", "mismatch", "ratio", "side", "reference", "rule"],
        ["method", "core [ml]", "hypoperfused [ml]", "mismatch [ml]", "mismatch ratio", "affected side",
         "reference CBF [ml/100g/min]", "rule"],
        text_columns=["method", "side", "rule"],
    )
    if overlays:
        body += png_img(figures.lesion_overlay(background, data.brain, overlays, slices), "core and hypoperfusion")
    return body


def _curve_rois_and_data(data):
    """``(rois, roi_curve_data(...))`` of the curves section: no figure drawn (run beside the drawing)."""
    if not data.residues:
        return [], None
    rois = [(name, place_square_roi(region)) for name, region in curve_regions(data)]
    rois = [(name, roi) for name, roi in rois if roi is not None]
    return rois, (roi_curve_data(data, rois) if rois else None)


def _curves_section(data, background, rois_and_data):
    rois, read = rois_and_data
    if not data.residues:
        return '<p class="note">No residue functions were given.</p>'
    if not rois:
        return '<p class="note">No tissue to place ROIs in.</p>'
    times, curves, skipped = read
    notes = "".join(f'<div class="warning">{escape(s)}</div>' for s in skipped)
    if not curves:
        return notes
    text = (f"<p class=\"note\">Means over {ROI_SIZE} x {ROI_SIZE} voxel ROIs (one slice each). Reconstructed tissue "
            "curve = AIF (x) residue (the network: its local AIF), against the observed concentration.</p>")
    return (text + png_img(figures.roi_locations(background, data.brain, rois), "ROI locations")
            + png_img(figures.roi_curves(times, curves), "residue and tissue curves") + notes)


def _stats_section(data):
    if not data.stats_rows:
        return '<p class="note">No region statistics were given.</p>'
    columns = ["region", "method", "map", "units"] + list(STAT_COLUMNS)
    rows = [{k: _number(v) if k not in ("region", "method", "map", "units") else v for k, v in row.items()}
            for row in data.stats_rows]
    return table(rows, columns, text_columns=["region", "method", "map", "units"])


def _number(value):
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if number.is_integer() and abs(number) < 1e15 and "." not in str(value) else number


def scan_report_html(data):
    """The per-scan report page (self-contained HTML) of a :class:`ScanReportData`.

    Of the 4D inputs it reads only what it draws: the time average of the slices shown
    (:class:`TimeAveragedSlices`; all of them when no brain mask is given, to compute one) and the curves
    of the ROIs' voxels (:func:`read_voxel_curves`).
    """
    background = TimeAveragedSlices(data.hu)
    if data.brain is None:
        data.brain = brain_mask(np.asarray(background))
    warnings = list(data.warnings)
    if data.motion and "framewise_displacement_mm" in data.motion:
        fd = float(np.max(data.motion["framewise_displacement_mm"]))
        if fd > MAX_FRAMEWISE_DISPLACEMENT_MM:
            warnings.append(f"Head motion: framewise displacement up to {fd:.2g} mm "
                            f"(above {MAX_FRAMEWISE_DISPLACEMENT_MM:g} mm).")
    if data.motion and "censored" in data.motion:
        censored = np.flatnonzero(np.asarray(data.motion["censored"], float) > 0.5)
        if censored.size:
            warnings.append(f"{censored.size} frame(s) displaced from the reference beyond the censoring threshold "
                            f"(frames {', '.join(str(i) for i in censored)}) were left out of the masks and of "
                            "the AIF/VOF selection; the deconvolution used them as corrected.")
    data.warnings = warnings
    with ThreadPoolExecutor(max_workers=1) as pool:
        # the ROI curves (reading every residue: most of the time on a clinical scan) beside the figures
        curve_data = pool.submit(_curve_rois_and_data, data)
        sections = _sections(data, background)
        sections.insert(-1, ("curves", "Residue and tissue curves in ROIs",
                             _curves_section(data, background, curve_data.result())))
    return page(f"CT perfusion report: {data.title}", sections)


def _sections(data, background):
    """Every section of the page but the ROI curves, in order."""
    slices = figures.slices_to_show(data.brain)
    sections = [("triage", "Triage", _triage_section(data, background, slices)),
                ("summary", "Scan summary", _summary_section(data, background))]
    if data.motion:
        times = np.asarray(data.motion.get("time", np.arange(len(next(iter(data.motion.values()))))), float)
        sections.append(("motion", "Head motion",
                         png_img(figures.motion_plot(times, {k: v for k, v in data.motion.items() if k != "time"}),
                                 "motion trace")))
    if data.aif_png is not None:
        vascular = png_img(data.aif_png, "AIF and VOF")
    elif data.curves:
        curve_times = data.curves.get("time", data.frame_times)
        vascular = png_img(figures.vascular_functions(
            curve_times, {k: v for k, v in data.curves.items() if k != "time"}, background,
            data.aif_voxels, data.vof_voxels, title=f"{data.title}: vascular functions"), "AIF and VOF")
    else:
        vascular = '<p class="note">No curves were given.</p>'
    sections.append(("vascular", "Arterial input and venous output", vascular))
    sections.append(("maps", "Perfusion maps", _maps_section(data, slices)))
    sections.append(("lesion", "Core and hypoperfusion", _lesion_section(data, background, slices)))
    sections.append(("stats", "Region statistics", _stats_section(data)))
    return sections
