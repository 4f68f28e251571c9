"""Region statistics, clinical lesion measures and group comparisons of perfusion maps.

Plain numpy/scipy on arrays (no files, no nipype); :mod:`ctp_nipype.interfaces.stats`
wraps it.

* :func:`hemisphere_masks` splits a brain mask at its mid-sagittal plane,
  found in **world coordinates**: the plane ``x = midline_mm`` of the
  scanner/RAS+ space of the affine (``x`` grows to the subject's right), at
  the brain mask's centroid unless given. World coordinates make "left" and
  "right" mean the subject's sides whatever the voxel axes' order and
  direction in the file; the plane is normal to the world x axis (a head
  rolled in the scanner is split along the scanner's, not the head's, midline).
* :func:`build_regions` makes the named regions (brain, gm, wm, left, right,
  normal/ischemic from a lesion mask, user ROIs), all restricted to
  perfused tissue: CSF and vessel masks, when given, are removed from every
  region (as in Zeng et al. 2025, Table 2).
* :func:`describe` and :func:`region_statistics`: mean, median, sample
  standard deviation, percentiles, voxel count and volume of every map in
  every region, as table rows.
* :func:`contralateral_reference` and :func:`lesion_measures`: ischemic core
  (relative CBF below a fraction of the mean CBF of the unaffected hemisphere)
  and hypoperfused tissue (Tmax or BAD above a threshold in seconds), their
  volumes in ml, the mismatch volume and ratio, and the triage measures of
  :mod:`ctp_nipype.perfusion.triage` (delay volumes, hypoperfusion intensity
  ratio, DEFUSE 3 / EXTEND flags, rCBF/rCBV).
* :func:`group_comparison`: per region, map and method across scans, the
  mean, the deviation from a reference method (sSVD) in the map's units and in
  percent, and paired Wilcoxon signed-rank tests between methods; laid out
  like Table 2 of Zeng et al. (2025) by :func:`table2_layout`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from . import triage
from .constants import METHODS

#: percentiles reported for every region (columns ``p05``, ``p25``, ``p75``, ``p95``)
PERCENTILES = (5, 25, 75, 95)
#: the statistic columns of a region-statistics row, in order
STAT_COLUMNS = ("n_voxels", "volume_ml", "mean", "sd", "median") + tuple(f"p{q:02d}" for q in PERCENTILES)

#: ischemic core: CBF below this fraction of the mean CBF of the unaffected hemisphere
CORE_RELATIVE_CBF = triage.CORE_RELATIVE_CBF
#: hypoperfused tissue: Tmax (SVD) or BAD (network) above this many seconds
DELAY_THRESHOLD_S = triage.HYPOPERFUSION_THRESHOLD_S
#: the methods' order in tables (the paper's), reference first
METHOD_ORDER = METHODS
#: the map's order in tables
MAP_ORDER = ("cbf", "cbv", "mtt", "tmax", "bad")


# ----------------------------------------------------------------------------------------------
# regions


def world_x_mm(shape, affine):
    """World (RAS+) x coordinate in mm of every voxel of a 3D grid.

    >>> world_x_mm((3, 1, 1), np.diag([-2.0, 1, 1, 1]))[:, 0, 0]
    array([ 0., -2., -4.])
    """
    affine = np.asarray(affine, dtype=float)
    # each axis' term on its own axis, broadcast: the same sums in the same order as on three full index
    # grids (bitwise), without the grids (1 s and 150 MB at 512 x 512 x 24)
    i, j, k = (np.arange(n, dtype=float).reshape([-1 if a == axis else 1 for a in range(3)])
               for axis, n in enumerate(tuple(shape)[:3]))
    return affine[0, 0] * i + affine[0, 1] * j + affine[0, 2] * k + affine[0, 3]


def hemisphere_masks(brain, affine, midline_mm=None):
    """Left and right halves of a brain mask, split at the mid-sagittal plane in world coordinates.

    Parameters
    ----------
    brain : ndarray of bool, shape (x, y, z)
    affine : ndarray, shape (4, 4)
        Voxel-to-world (RAS+, mm) affine of the NIfTI.
    midline_mm : float, optional
        World x (mm) of the plane; default the x of the brain mask's centroid.

    Returns
    -------
    left, right : ndarray of bool
        Voxels with world ``x < midline_mm`` (subject's left) and ``x > midline_mm``;
        a voxel centred exactly on the plane belongs to neither.
    midline_mm : float

    Examples
    --------
    >>> brain = np.ones((4, 1, 1), bool)
    >>> left, right, mid = hemisphere_masks(brain, np.eye(4))
    >>> left.ravel().tolist(), right.ravel().tolist(), mid
    ([True, True, False, False], [False, False, True, True], 1.5)

    A file stored with x running right-to-left (negative affine[0, 0]) gives the same sides:

    >>> left, right, _ = hemisphere_masks(brain, np.diag([-1.0, 1, 1, 1]))
    >>> left.ravel().tolist()
    [False, False, True, True]
    """
    brain = np.asarray(brain, dtype=bool)
    if not brain.any():
        raise ValueError("The brain mask is empty: no mid-sagittal plane can be found; check the mask.")
    x = world_x_mm(brain.shape, affine)
    if midline_mm is None:
        midline_mm = float(x[brain].mean())
    midline_mm = float(midline_mm)
    return brain & (x < midline_mm), brain & (x > midline_mm), midline_mm


def tissue_mask(brain, csf=None, vessels=None):
    """Brain voxels that are perfused tissue: the brain minus CSF and vessels (when given).

    >>> brain = np.ones(4, bool)
    >>> tissue_mask(brain, csf=np.array([1, 0, 0, 0], bool), vessels=np.array([0, 0, 0, 1], bool)).tolist()
    [False, True, True, False]
    """
    tissue = np.asarray(brain, dtype=bool).copy()
    for excluded in (csf, vessels):
        if excluded is not None:
            tissue &= ~np.asarray(excluded, dtype=bool)
    return tissue


def build_regions(
    brain,
    affine,
    grey_matter=None,
    white_matter=None,
    csf=None,
    vessels=None,
    lesion=None,
    rois=None,
    midline_mm=None,
):
    """The named regions of the region statistics, each restricted to perfused tissue.

    Parameters
    ----------
    brain : ndarray of bool, shape (x, y, z)
    affine : ndarray, shape (4, 4)
        Voxel-to-world affine (for the hemispheres, see :func:`hemisphere_masks`).
    grey_matter, white_matter : ndarray of bool, optional
        Tissue masks; regions ``gm`` and ``wm``.
    csf, vessels : ndarray of bool, optional
        Removed from every region.
    lesion : ndarray of bool, optional
        An ischemic lesion (e.g. a registered DWI infarct mask): regions
        ``ischemic`` (lesion) and ``normal`` (the rest of the brain's tissue),
        the paper's "ischemic" and "normally perfused" regions.
    rois : dict, optional
        ``{name: mask}`` of further regions (names made of letters and digits).
    midline_mm : float, optional
        World x of the mid-sagittal plane (default: brain centroid).

    Returns
    -------
    regions : dict
        ``{name: mask}`` in the order brain, gm, wm, left, right, normal,
        ischemic, then the ROIs.
    midline_mm : float

    Examples
    --------
    >>> brain = np.ones((4, 2, 1), bool)
    >>> csf = np.zeros_like(brain); csf[0, 0] = True
    >>> regions, mid = build_regions(brain, np.eye(4), csf=csf)
    >>> {name: int(mask.sum()) for name, mask in regions.items()}
    {'brain': 7, 'left': 3, 'right': 4}
    """
    brain = np.asarray(brain, dtype=bool)
    tissue = tissue_mask(brain, csf, vessels)
    left, right, midline_mm = hemisphere_masks(brain, affine, midline_mm)
    regions = {"brain": tissue}
    if grey_matter is not None:
        regions["gm"] = tissue & np.asarray(grey_matter, dtype=bool)
    if white_matter is not None:
        regions["wm"] = tissue & np.asarray(white_matter, dtype=bool)
    regions["left"] = tissue & left
    regions["right"] = tissue & right
    if lesion is not None:
        lesion = np.asarray(lesion, dtype=bool)
        regions["normal"] = tissue & ~lesion
        regions["ischemic"] = tissue & lesion
    for name, mask in (rois or {}).items():
        if name in regions:
            raise ValueError(f"The ROI name {name!r} is already a region name ({', '.join(regions)}); rename it.")
        regions[name] = tissue & np.asarray(mask, dtype=bool)
    return regions, midline_mm


# ----------------------------------------------------------------------------------------------
# statistics


def describe(values, voxel_volume_ml=None):
    """Summary statistics of one region's values (non-finite values ignored).

    Parameters
    ----------
    values : array_like
        The map's values in the region.
    voxel_volume_ml : float, optional
        Volume of one voxel in ml; gives ``volume_ml`` (else NaN).

    Returns
    -------
    dict
        :data:`STAT_COLUMNS`: ``n_voxels``, ``volume_ml``, ``mean``, ``sd``
        (sample standard deviation, ``ddof=1``), ``median`` and ``p05`` ...
        ``p95``; NaN where undefined (no voxels; ``sd`` of one voxel).

    Examples
    --------
    >>> row = describe(np.arange(1.0, 101.0), voxel_volume_ml=0.08)
    >>> row["n_voxels"], round(row["volume_ml"], 3), row["mean"], row["median"], round(row["p05"], 2)
    (100, 8.0, 50.5, 50.5, 5.95)
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    n = int(values.size)
    row = {"n_voxels": n, "volume_ml": n * voxel_volume_ml if voxel_volume_ml is not None else math.nan}
    if n == 0:
        row.update({name: math.nan for name in STAT_COLUMNS[2:]})
        return row
    quantiles = np.percentile(values, (50,) + PERCENTILES)
    row["mean"] = float(values.mean())
    row["sd"] = float(values.std(ddof=1)) if n > 1 else math.nan
    row["median"] = float(quantiles[0])
    row.update({f"p{q:02d}": float(v) for q, v in zip(PERCENTILES, quantiles[1:])})
    return row


def region_statistics(maps, regions, voxel_volume_ml=None, units=None):
    """Statistics of every map in every region, as table rows.

    Parameters
    ----------
    maps : dict
        ``{(method, map name): 3D array}``, e.g. ``{("osvd", "cbf"): cbf}``.
    regions : dict
        ``{region name: 3D bool mask}`` (:func:`build_regions`).
    voxel_volume_ml : float, optional
        Volume of one voxel in ml.
    units : dict, optional
        ``{map name: units}``; default :data:`ctp_nipype.perfusion.constants.UNITS`.

    Returns
    -------
    list of dict
        One row per region, method and map (regions in the given order; methods
        and maps in :data:`METHOD_ORDER`, :data:`MAP_ORDER`), with keys
        ``region, method, map, units`` and :data:`STAT_COLUMNS`.

    Examples
    --------
    >>> cbf = np.array([[[10.0], [30.0]]])
    >>> rows = region_statistics({("ssvd", "cbf"): cbf}, {"brain": np.ones(cbf.shape, bool)}, 0.1)
    >>> rows[0]["region"], rows[0]["units"], rows[0]["mean"], rows[0]["volume_ml"]
    ('brain', 'ml/100g/min', 20.0, 0.2)
    """
    from .constants import UNITS

    units = UNITS if units is None else units
    keys = sorted(maps, key=_method_map_order)
    regions = {region: np.asarray(mask, dtype=bool) for region, mask in regions.items()}
    by_region = {region: [] for region in regions}
    # one map at a time (``maps`` may be a mapping that reads each map when asked: a clinical scan's maps of
    # four methods are gigabytes), every region of it; the rows then region by region
    for method, name in keys:
        values = np.asarray(maps[(method, name)])
        for region, mask in regions.items():
            if values.shape != mask.shape:
                raise ValueError(
                    f"The {method} {name} map has shape {values.shape} but the region {region!r} "
                    f"has {mask.shape}; maps and masks must share the scan's grid."
                )
            by_region[region].append(
                {"region": region, "method": method, "map": name, "units": units.get(name, ""),
                 **describe(values[mask], voxel_volume_ml)}
            )
        del values
    return [row for region in regions for row in by_region[region]]


def _rank(value, order):
    return (order.index(value), "") if value in order else (len(order), value)


def _method_map_order(key):
    method, name = key
    return _rank(method, METHOD_ORDER), _rank(name, MAP_ORDER)


# ----------------------------------------------------------------------------------------------
# lesion measures


@dataclass
class LesionMeasures:
    """Ischemic core, hypoperfused tissue and the triage measures of one method's maps.

    Attributes
    ----------
    core, hypoperfused : ndarray of bool, shape (x, y, z)
    affected_hemisphere : str
        ``'left'`` or ``'right'`` (the subject's side, world coordinates).
    reference_cbf : float
        Mean CBF of the unaffected hemisphere's tissue, ml/100 g/min.
    core_volume_ml, hypoperfused_volume_ml : float
    mismatch_volume_ml : float
        Hypoperfused minus core volume.
    mismatch_ratio : float
        Hypoperfused over core volume (``inf`` without core).
    triage : TriageVolumes
        Every triage measure (delay volumes, hypoperfusion intensity ratio,
        DEFUSE 3 / EXTEND flags, rCBF) of :func:`ctp_nipype.perfusion.triage.triage_volumes`.
    relative_cbv : ndarray or None
        CBV over the mean CBV of the same reference tissue (when a CBV map was given).
    reference_cbv : float or None
        That mean, ml/100 g.
    parameters : dict
        Thresholds and choices, for the JSON sidecar.
    """

    core: np.ndarray
    hypoperfused: np.ndarray
    affected_hemisphere: str
    reference_cbf: float
    core_volume_ml: float
    hypoperfused_volume_ml: float
    mismatch_volume_ml: float
    mismatch_ratio: float
    triage: triage.TriageVolumes | None = None
    relative_cbv: np.ndarray | None = None
    reference_cbv: float | None = None
    parameters: dict = field(default_factory=dict)

    @property
    def relative_cbf(self):
        """CBF over the reference CBF (1 = the unaffected hemisphere's mean), 0 outside the tissue."""
        return self.triage.relative_cbf

    def summary(self):
        """JSON-ready dict of the volumes (ml), ratios, flags, the affected side, references and parameters."""
        out = self.triage.summary()
        out.update({
            "AffectedHemisphere": self.affected_hemisphere,
            "ReferenceCBF": self.reference_cbf,
            "ReferenceRegion": REFERENCE_REGION,
        })
        out["Units"]["ReferenceCBF"] = "ml/100g/min"
        if self.reference_cbv is not None:
            out["ReferenceCBV"] = self.reference_cbv
            out["Units"]["ReferenceCBV"] = "ml/100g"
        out.update(self.parameters)
        return out


#: how the reference of the relative maps and of the core threshold is made (for sidecars)
REFERENCE_REGION = ("mean over the tissue (brain minus CSF and vessel masks, finite values) of the unaffected "
                    "hemisphere: the one with fewer voxels of delay above the hypoperfusion threshold, split at "
                    "the mid-sagittal plane x = MidlineWorldX (world RAS+ coordinates)")


def affected_hemisphere(delay, left, right, delay_threshold_s=DELAY_THRESHOLD_S):
    """The hemisphere with more hypoperfused voxels (delay above the threshold); ties go to ``'left'``.

    >>> delay = np.array([0.0, 8.0, 9.0, 1.0])
    >>> affected_hemisphere(delay, np.array([1, 1, 0, 0], bool), np.array([0, 0, 1, 1], bool))
    'left'
    """
    delay = np.asarray(delay)
    n_left = int(np.count_nonzero((delay > delay_threshold_s) & np.asarray(left, bool)))
    n_right = int(np.count_nonzero((delay > delay_threshold_s) & np.asarray(right, bool)))
    return "right" if n_right > n_left else "left"


@dataclass
class ContralateralReference:
    """The unaffected hemisphere's tissue, the reference of the core threshold and of the relative maps.

    Attributes
    ----------
    tissue : ndarray of bool
        Brain minus CSF and vessels, finite CBF and delay.
    unaffected : ndarray of bool
        Its part in the unaffected hemisphere.
    affected_hemisphere : str
    reference_cbf : float
        Mean CBF over ``unaffected``.
    midline_mm : float
    """

    tissue: np.ndarray
    unaffected: np.ndarray
    affected_hemisphere: str
    reference_cbf: float
    midline_mm: float

    def reference_of(self, values):
        """The mean of another map (CBV) over the same reference tissue."""
        values = np.asarray(values, dtype=np.float64)[self.unaffected]
        values = values[np.isfinite(values)]
        return float(values.mean()) if values.size else math.nan


def contralateral_reference(cbf, delay, brain, affine, csf=None, vessels=None, hemisphere="auto",
                            delay_threshold_s=DELAY_THRESHOLD_S, midline_mm=None, delay_name="tmax"):
    """Find the affected hemisphere and the reference CBF: the mean CBF of the other hemisphere's tissue.

    Tissue is the brain minus the CSF and vessel masks (when given) with finite
    CBF and delay; hemispheres are split in world coordinates
    (:func:`hemisphere_masks`); ``hemisphere='auto'`` takes the one with more
    voxels of delay above ``delay_threshold_s`` as affected.

    Returns
    -------
    ContralateralReference

    Examples
    --------
    >>> cbf = np.array([50, 50, 50, 50, 50, 20, 10, 5.0]).reshape(8, 1, 1)
    >>> tmax = np.array([1, 1, 1, 1, 1, 8, 9, 10.0]).reshape(8, 1, 1)
    >>> ref = contralateral_reference(cbf, tmax, np.ones((8, 1, 1), bool), np.eye(4))
    >>> ref.affected_hemisphere, ref.reference_cbf, int(ref.unaffected.sum())
    ('right', 50.0, 4)
    """
    cbf, delay, brain = triage.as_maps(cbf, delay, brain, delay_name)
    if hemisphere not in ("auto", "left", "right"):
        raise ValueError(f"hemisphere must be 'auto', 'left' or 'right', got {hemisphere!r}.")
    tissue = tissue_mask(brain, csf, vessels) & np.isfinite(cbf) & np.isfinite(delay)
    left, right, midline_mm = hemisphere_masks(brain, affine, midline_mm)
    left, right = left & tissue, right & tissue
    side = affected_hemisphere(delay, left, right, delay_threshold_s) if hemisphere == "auto" else hemisphere
    unaffected = right if side == "left" else left
    if not unaffected.any():
        raise ValueError(
            f"The unaffected ({'right' if side == 'left' else 'left'}) hemisphere has no tissue voxels; "
            "check the brain mask, the CSF/vessel masks and the affine."
        )
    return ContralateralReference(tissue, unaffected, side, float(cbf[unaffected].mean()), midline_mm)


def lesion_measures(
    cbf,
    delay,
    brain,
    affine,
    voxel_volume_ml,
    csf=None,
    vessels=None,
    hemisphere="auto",
    core_relative_cbf=CORE_RELATIVE_CBF,
    delay_threshold_s=DELAY_THRESHOLD_S,
    core_within_hypoperfused=True,
    midline_mm=None,
    delay_name="tmax",
    cbv=None,
    delay_thresholds_s=triage.DELAY_THRESHOLDS_S,
):
    """Ischemic core, hypoperfused tissue, their volumes, the mismatch and the triage measures.

    The reference is found by :func:`contralateral_reference` (the mean CBF of
    the unaffected hemisphere's tissue); the thresholds are applied by
    :func:`ctp_nipype.perfusion.triage.triage_volumes`, the one thresholding
    path of the masks and the volumes:

    * hypoperfused = tissue with ``delay > delay_threshold_s`` (Tmax for the
      SVD methods, BAD for the network);
    * core = tissue with ``cbf < core_relative_cbf * reference_cbf`` and, with
      ``core_within_hypoperfused``, also hypoperfused (so that tissue with
      low CBF but normal arrival, such as leftover CSF or noise in white
      matter, is not called core);
    * mismatch volume = hypoperfused - core volume; ratio = hypoperfused / core;
      delay volumes above ``delay_thresholds_s``, hypoperfusion intensity
      ratio, DEFUSE 3 / EXTEND flags; rCBF and (with ``cbv``) rCBV.

    Tissue is the brain minus the CSF and vessel masks when given: give them,
    or CSF (CBF near 0) counts as core and vessels raise the reference.

    Parameters
    ----------
    cbf : ndarray, shape (x, y, z)
        CBF, ml/100 g/min.
    delay : ndarray, shape (x, y, z)
        Tmax (SVD) or BAD (network), s.
    brain : ndarray of bool
    affine : ndarray, shape (4, 4)
        Voxel-to-world affine (hemispheres in world coordinates, :func:`hemisphere_masks`).
    voxel_volume_ml : float
        Volume of one voxel, ml.
    csf, vessels : ndarray of bool, optional
        Removed from the tissue.
    hemisphere : {'auto', 'left', 'right'}
        The affected hemisphere; ``'auto'``: the one with the larger
        hypoperfused volume (:func:`affected_hemisphere`).
    core_relative_cbf : float
        Core threshold as a fraction of the reference CBF (0.30: 30%).
    delay_threshold_s : float
        Hypoperfusion threshold, s.
    core_within_hypoperfused : bool
        Require core voxels to be hypoperfused.
    midline_mm : float, optional
        World x of the mid-sagittal plane (default: brain centroid).
    delay_name : str
        ``'tmax'`` or ``'bad'``, recorded in the parameters.
    cbv : ndarray, optional
        CBV, ml/100 g: gives rCBV over the same reference tissue.
    delay_thresholds_s : sequence of float
        Delays whose volumes are reported (4, 6, 8, 10 s).

    Returns
    -------
    LesionMeasures

    Examples
    --------
    Four voxels a side; the right side has a delayed region with one core voxel:

    >>> cbf = np.array([50, 50, 50, 50, 50, 20, 10, 5.0]).reshape(8, 1, 1)
    >>> tmax = np.array([1, 1, 1, 1, 1, 8, 9, 10.0]).reshape(8, 1, 1)
    >>> out = lesion_measures(cbf, tmax, np.ones((8, 1, 1), bool), np.eye(4), voxel_volume_ml=0.1)
    >>> out.affected_hemisphere, out.reference_cbf, int(out.core.sum()), int(out.hypoperfused.sum())
    ('right', 50.0, 2, 3)
    >>> round(out.core_volume_ml, 3), round(out.mismatch_volume_ml, 3), out.mismatch_ratio
    (0.2, 0.1, 1.5)
    """
    reference = contralateral_reference(cbf, delay, brain, affine, csf, vessels, hemisphere, delay_threshold_s,
                                        midline_mm, delay_name)
    volumes = triage.triage_volumes(
        cbf, delay, reference.tissue, reference.reference_cbf, voxel_volume_ml,
        core_relative_cbf=core_relative_cbf, delay_thresholds_s=delay_thresholds_s,
        hypoperfusion_threshold_s=delay_threshold_s, core_within_hypoperfused=core_within_hypoperfused,
        delay_name=delay_name,
    )
    relative_cbv = reference_cbv = None
    if cbv is not None:
        cbv = np.asarray(cbv, dtype=np.float64)
        if cbv.shape != reference.tissue.shape:
            raise ValueError(f"The CBV map has shape {cbv.shape} but the CBF map {reference.tissue.shape}.")
        reference_cbv = reference.reference_of(cbv)
        relative_cbv = triage.relative_map(cbv, reference_cbv, reference.tissue & np.isfinite(cbv))
    return LesionMeasures(
        core=volumes.core,
        hypoperfused=volumes.hypoperfused,
        affected_hemisphere=reference.affected_hemisphere,
        reference_cbf=reference.reference_cbf,
        core_volume_ml=volumes.core_volume_ml,
        hypoperfused_volume_ml=volumes.hypoperfused_volume_ml,
        mismatch_volume_ml=volumes.mismatch_volume_ml,
        mismatch_ratio=volumes.mismatch_ratio,
        triage=volumes,
        relative_cbv=relative_cbv,
        reference_cbv=reference_cbv,
        parameters={
            "HemisphereChoice": hemisphere,
            "MidlineWorldX": reference.midline_mm,
            "HemisphereSplit": "world (RAS+) x coordinate; left is x < MidlineWorldX",
            "CSFExcluded": csf is not None,
            "VesselsExcluded": vessels is not None,
        },
    )


def dice(a, b):
    """Dice coefficient ``2 |A and B| / (|A| + |B|)`` of two masks (1 when both are empty).

    >>> dice(np.array([1, 1, 0], bool), np.array([1, 0, 0], bool))
    0.6666666666666666
    """
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


# ----------------------------------------------------------------------------------------------
# group statistics


def paired_wilcoxon(a, b):
    """Two-sided paired Wilcoxon signed-rank test of ``a`` against ``b`` (scipy.stats.wilcoxon).

    Pairs with a non-finite member are dropped. Returns ``(n_pairs, statistic,
    p_value)``; statistic and p are NaN with fewer than two pairs, and p is 1
    when every difference is zero (no evidence of a difference).

    >>> n, w, p = paired_wilcoxon([1.0, 2, 3, 4, 5, 6], [2.0, 3, 4, 5, 6, 7.5])
    >>> n, w, round(p, 4)
    (6, 0.0, 0.0312)
    """
    from scipy.stats import wilcoxon

    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = int(a.size)
    if n < 2:
        return n, math.nan, math.nan
    if np.all(a == b):
        return n, 0.0, 1.0
    result = wilcoxon(a, b)
    return n, float(result.statistic), float(result.pvalue)


def resolve_reference(methods, reference="auto"):
    """The method that group deviations refer to: ``reference``, or for ``"auto"`` sSVD when present (the
    paper's reference), else the first of ``methods`` in the paper's order.

    Examples
    --------
    >>> resolve_reference(["transformer", "ssvd"]), resolve_reference(["transformer", "osvd"])
    ('ssvd', 'osvd')
    >>> resolve_reference(["transformer", "osvd"], "transformer")
    'transformer'
    """
    if reference != "auto":
        return reference
    if not methods:
        raise ValueError("No methods to choose a reference from.")
    return min(methods, key=lambda m: _rank(m, METHOD_ORDER))  # sSVD ranks first


def group_comparison(records, statistic="mean", reference="auto"):
    """Per region, map and method across scans: mean, deviation from the reference method, Wilcoxon tests.

    Parameters
    ----------
    records : iterable of dict
        Rows of per-scan region statistics (:func:`region_statistics`) with a
        ``scan`` key naming the scan (one value per scan, region, method, map).
    statistic : str
        The per-scan value compared (a :data:`STAT_COLUMNS` name); the paper's
        Table 2 uses the regional ``mean``.
    reference : str
        The method deviations and tests refer to; ``"auto"`` (default): the
        paper's sSVD when the records have it, else the first method present in
        the paper's order (:func:`resolve_reference`).

    Returns
    -------
    summary : list of dict
        One row per region, map and method: ``region, map, units, method,
        n_scans, mean, sd`` (across scans of the per-scan statistic), then
        ``reference`` (the method the next columns refer to) and, against it,
        on the scans that have both: ``n_pairs``,
        ``deviation`` (mean of method - reference, the map's units),
        ``deviation_percent`` (100 * deviation / mean of the reference on
        those scans), ``wilcoxon_w`` and ``p_value`` (two-sided, paired).
        The reference's own row has deviation 0 and no test.
    pairs : list of dict
        One row per region, map and unordered pair of methods: ``region, map,
        method_a, method_b, n_pairs, mean_difference`` (a - b), ``wilcoxon_w, p_value``.

    Examples
    --------
    >>> records = [{"scan": s, "region": "brain", "method": m, "map": "cbf", "units": "ml/100g/min", "mean": v}
    ...            for s, (a, b) in enumerate([(30, 40), (32, 45), (35, 47), (36, 50), (31, 44), (33, 43)])
    ...            for m, v in (("ssvd", a), ("transformer", b))]
    >>> summary, pairs = group_comparison(records)
    >>> row = summary[1]
    >>> row["method"], round(row["mean"], 2), round(row["deviation"], 2), round(row["deviation_percent"], 2)
    ('transformer', 44.83, 12.0, 36.55)
    >>> round(row["p_value"], 4)
    0.0312
    """
    records = list(records)
    if records:
        reference = resolve_reference({record["method"] for record in records}, reference)
    table = {}
    units = {}
    for record in records:
        key = (record["region"], record["map"])
        value = record.get(statistic)
        value = math.nan if value in (None, "", "n/a") else float(value)
        table.setdefault(key, {}).setdefault(record["method"], {})[record["scan"]] = value
        units.setdefault(record["map"], record.get("units", ""))
    summary, pairs = [], []
    regions = list(dict.fromkeys(key[0] for key in table))
    for region in regions:
        for name in sorted({key[1] for key in table if key[0] == region}, key=lambda n: _rank(n, MAP_ORDER)):
            by_method = table[(region, name)]
            methods = sorted(by_method, key=lambda m: _rank(m, METHOD_ORDER))
            for method in methods:
                values = np.array([v for v in by_method[method].values() if math.isfinite(v)])
                row = {
                    "region": region, "map": name, "units": units.get(name, ""), "method": method,
                    "n_scans": int(values.size),
                    "mean": float(values.mean()) if values.size else math.nan,
                    "sd": float(values.std(ddof=1)) if values.size > 1 else math.nan,
                    "reference": reference,
                }
                row.update(_against(by_method, method, reference))
                summary.append(row)
            for method_a, method_b in itertools.combinations(methods, 2):
                a, b = _paired(by_method[method_a], by_method[method_b])
                n, w, p = paired_wilcoxon(a, b)
                pairs.append({
                    "region": region, "map": name, "method_a": method_a, "method_b": method_b, "n_pairs": n,
                    "mean_difference": float(np.mean(a - b)) if a.size else math.nan, "wilcoxon_w": w, "p_value": p,
                })
    return summary, pairs


def _paired(values_a, values_b):
    scans = [s for s in values_a if s in values_b and math.isfinite(values_a[s]) and math.isfinite(values_b[s])]
    return np.array([values_a[s] for s in scans]), np.array([values_b[s] for s in scans])


def _against(by_method, method, reference):
    empty = {"n_pairs": 0, "deviation": math.nan, "deviation_percent": math.nan,
             "wilcoxon_w": math.nan, "p_value": math.nan}
    if reference not in by_method:
        return empty
    a, b = _paired(by_method[method], by_method[reference])
    if a.size == 0:
        return empty
    deviation = float(np.mean(a - b))
    reference_mean = float(np.mean(b))
    n, w, p = (a.size, math.nan, math.nan) if method == reference else paired_wilcoxon(a, b)
    return {
        "n_pairs": int(n),
        "deviation": deviation,
        "deviation_percent": 100.0 * deviation / reference_mean if reference_mean != 0 else math.nan,
        "wilcoxon_w": w,
        "p_value": p,
    }


def table2_layout(summary, map_name="cbf"):
    """Rows = regions, columns = methods, cells = the summary rows of one map (the paper's Table 2).

    Returns
    -------
    methods : list of str
    rows : list of (region, {method: summary row})

    >>> summary = [{"region": "brain", "map": "cbf", "method": "osvd", "mean": 1.0},
    ...            {"region": "brain", "map": "cbf", "method": "ssvd", "mean": 2.0}]
    >>> methods, rows = table2_layout(summary)
    >>> methods, rows[0][0], rows[0][1]["osvd"]["mean"]
    (['ssvd', 'osvd'], 'brain', 1.0)
    """
    selected = [row for row in summary if row["map"] == map_name]
    methods = sorted({row["method"] for row in selected}, key=lambda m: _rank(m, METHOD_ORDER))
    cells = {}
    for row in selected:
        cells.setdefault(row["region"], {})[row["method"]] = row
    return methods, list(cells.items())
