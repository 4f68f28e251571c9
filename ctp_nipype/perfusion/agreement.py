"""Agreement of our perfusion maps with a reference software's maps and with a follow-up lesion.

Plain numpy/scipy/nibabel on arrays (no files, no nipype); ``ctp-compare``
(:mod:`ctp_nipype.cli.compare`) reads the files, calls these functions and
writes the tables.

Per scan and per method (:func:`compare_scan`):

* voxelwise Pearson and Spearman r (``scipy.stats.pearsonr``, ``spearmanr``)
  of CBF, CBV, MTT and Tmax (the network's BAD against the reference's Tmax)
  inside perfused tissue: our brain mask without our CSF and vessel masks, and
  without the voxels the reference software left out (see
  :func:`reference_outside`);
* ischemic core (relative CBF below a fraction of the unaffected hemisphere's
  mean, within Tmax > 6 s) and hypoperfused tissue (Tmax above a threshold)
  computed from both sets of maps by the SAME code, the package's one
  thresholding path (:func:`ctp_nipype.perfusion.stats.contralateral_reference`
  for the reference CBF, :func:`ctp_nipype.perfusion.triage.triage_volumes`
  for the masks and volumes), on the same tissue and the same affected
  hemisphere (the reference's), so that the comparison isolates the map
  computation: Dice (:func:`ctp_nipype.perfusion.stats.dice`)
  and volume difference at the clinical thresholds (rCBF < 30%, Tmax > 6 s)
  and at :data:`CORE_FRACTIONS` and :data:`DELAY_THRESHOLDS_S`;
* against a DWI or follow-up lesion mask, when given: Dice and volume of our
  core and of the reference's core;
* the DEFUSE 3 and EXTEND target-mismatch calls of both, as ``triage_volumes``
  makes them (:data:`ctp_nipype.perfusion.triage.TARGET_MISMATCH`).

Across scans (:func:`volume_agreement`, :func:`call_agreement`):

* ICC(A,1) of each volume, two-way random effects, absolute agreement, single
  measurement (McGraw and Wong 1996; Shrout and Fleiss's ICC(2,1)), from
  ``pingouin.intraclass_corr`` (row ``ICC(A,1)``, called ``ICC2`` in older
  pingouin releases), with its 95% confidence interval;
* Bland-Altman bias (mean of ours - reference) and 95% limits of agreement
  (bias +- 1.96 sample SD of the differences); no library computes these
  two numbers without also drawing (``statsmodels.graphics.agreement.mean_diff_plot``,
  ``pingouin.plot_blandaltman``), so they are computed here with numpy;
* Cohen's kappa of the DEFUSE 3 and EXTEND calls,
  ``statsmodels.stats.inter_rater.cohens_kappa`` on the 2 x 2 table, with its
  asymptotic 95% confidence interval (not clipped to [-1, 1]).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import triage
from .stats import contralateral_reference, dice
from .triage import CORE_RELATIVE_CBF
from .triage import HYPOPERFUSION_THRESHOLD_S as DELAY_THRESHOLD_S

#: the maps compared voxel by voxel, in table order
MAP_NAMES = ("cbf", "cbv", "mtt", "tmax")
#: hypoperfusion thresholds (s) of the threshold sweep; the clinical one is DELAY_THRESHOLD_S
DELAY_THRESHOLDS_S = (4.0, 5.0, 6.0, 8.0, 10.0)
#: core thresholds (fraction of the unaffected hemisphere's mean CBF) of the sweep; the clinical one is 0.30
CORE_FRACTIONS = (0.20, 0.25, 0.30, 0.35, 0.40)

#: the target-mismatch profiles compared, as column stems (``defuse3``, ``extend``) of triage's criteria
PROFILES = {name.lower(): name for name in triage.TARGET_MISMATCH}

#: plausible medians over perfused tissue of each reference map in the conventions' units, and what a
#: median outside says (checked by :func:`check_reference_units`)
PLAUSIBLE_MEDIAN = {
    "cbf": (3.0, 300.0, "ml/100g/min"),
    "cbv": (0.3, 30.0, "ml/100g"),
    "mtt": (0.5, 40.0, "s"),
    "tmax": (-5.0, 40.0, "s"),
}


class AgreementError(ValueError):
    """A reference map or mask that cannot be compared (grid, units, empty overlap)."""


# ----------------------------------------------------------------------------------------------
# grids


def same_grid(shape_a, affine_a, shape_b, affine_b, atol_mm=1e-3):
    """Whether two 3D grids are the same voxels: same shape and affines equal within ``atol_mm``.

    >>> same_grid((2, 2, 2), np.eye(4), (2, 2, 2), np.eye(4) + 1e-6)
    True
    >>> same_grid((2, 2, 2), np.eye(4), (2, 2, 2), np.diag([-1.0, 1, 1, 1]))
    False
    """
    return tuple(shape_a)[:3] == tuple(shape_b)[:3] and np.allclose(
        np.asarray(affine_a, float), np.asarray(affine_b, float), atol=atol_mm
    )


def resample_to_grid(values, affine, target_shape, target_affine, order=1, what="reference map"):
    """Resample a 3D array onto another grid through world coordinates (``nibabel.processing``).

    Orientation is handled by the affines: a map stored with flipped or
    permuted axes lands on the same world positions. Voxels of the target grid
    outside the source's field of view are NaN.

    Parameters
    ----------
    values : ndarray, (x, y, z)
    affine : ndarray, (4, 4)
        Voxel-to-world affine of ``values``.
    target_shape : tuple
    target_affine : ndarray, (4, 4)
    order : int
        Spline order: 1 (linear) for maps, 0 (nearest) for masks.
    what : str
        Named in the error when the two grids do not overlap.

    Returns
    -------
    ndarray, float64, ``target_shape``

    Raises
    ------
    AgreementError
        When no voxel of the target grid lies inside the source's field of view.

    Examples
    --------
    A map stored right-to-left lands back on the left-to-right grid exactly:

    >>> values = np.arange(8.0).reshape(2, 2, 2)
    >>> flipped = np.diag([-1.0, 1, 1, 1]); flipped[0, 3] = 1.0
    >>> resample_to_grid(values[::-1], flipped, (2, 2, 2), np.eye(4)).ravel().tolist()
    [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    """
    import nibabel as nb
    from nibabel.processing import resample_from_to

    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 3:
        raise AgreementError(f"The {what} must be 3D, got shape {values.shape}.")
    target_shape = tuple(int(n) for n in target_shape)[:3]
    source = nb.Nifti1Image(values, np.asarray(affine, float))
    out = resample_from_to(source, (target_shape, np.asarray(target_affine, float)), order=order,
                           mode="constant", cval=np.nan)
    data = np.asarray(out.dataobj, dtype=np.float64)
    if not np.isfinite(data).any() and np.isfinite(values).any():
        raise AgreementError(
            f"The {what} does not overlap our grid in world coordinates (its affine puts it elsewhere); "
            "check that both are in the same space (e.g. ISLES'24 maps in NCCT space need the CTP in NCCT space)."
        )
    return data


# ----------------------------------------------------------------------------------------------
# reference checks


def reference_outside(reference):
    """Voxels the reference software left out: every map exactly 0, or a negative Tmax (a fill value).

    RAPID's maps are 0 outside its brain mask; icobrain cva (ISLES'24) fills
    Tmax with -30 there. NaN anywhere counts as outside too.

    >>> ref = {"cbf": np.array([0.0, 40, 0, 30]), "tmax": np.array([0.0, 2, 5, -30])}
    >>> reference_outside(ref).tolist()
    [True, False, False, True]
    """
    maps = [np.asarray(v, dtype=np.float64) for v in reference.values()]
    outside = np.logical_and.reduce([m == 0 for m in maps])
    for m in maps:
        outside |= ~np.isfinite(m)
    if "tmax" in reference:
        outside |= np.asarray(reference["tmax"], dtype=np.float64) < 0
    return outside


def check_reference_units(name, values, tissue, frame_interval_s=None, dtype=None):
    """Why a reference map looks like it is not in the conventions' units, or None when it looks fine.

    Detected from the values inside perfused tissue:

    * a map stored as 8-bit or whose values are whole numbers reaching exactly
      255: a display-scaled (0-255) image, not a quantitative map;
    * a median outside :data:`PLAUSIBLE_MEDIAN` (e.g. MTT or Tmax in ms, CBF in ml/g/min);
    * Tmax in whole numbers when the frames are not 1 s apart: Tmax in frames.

    Parameters
    ----------
    name : str
        ``cbf``, ``cbv``, ``mtt`` or ``tmax``.
    values : ndarray
    tissue : ndarray of bool
        The voxels compared.
    frame_interval_s : float, optional
        Seconds between frames of the scan (for the Tmax-in-frames check).
    dtype : numpy dtype, optional
        The dtype stored on disk (``uint8`` is display-scaled).

    Examples
    --------
    >>> tissue = np.ones(5, bool)
    >>> check_reference_units("tmax", np.array([1500.0, 2000, 4000, 800, 9000]), tissue)
    'tmax: median 2000 over tissue is outside the plausible -5 to 40 s; is it in other units (ms)?'
    >>> check_reference_units("cbf", np.array([30.0, 50, 255, 0, 60]), tissue)
    'cbf: whole numbers from 0 to exactly 255: a display-scaled (0-255) image, not ml/100g/min.'
    >>> check_reference_units("cbf", np.array([30.2, 50.1, 65.0, 12.5, 60.3]), tissue) is None
    True
    """
    low, high, units = PLAUSIBLE_MEDIAN[name]
    inside = np.asarray(values, dtype=np.float64)[np.asarray(tissue, bool)]
    inside = inside[np.isfinite(inside)]
    if inside.size == 0:
        return f"{name}: no finite value inside the compared tissue."
    whole = bool(np.all(inside == np.round(inside)))
    if (dtype is not None and np.dtype(dtype) == np.uint8) or (whole and inside.max() == 255 and inside.min() >= 0):
        return f"{name}: whole numbers from 0 to exactly 255: a display-scaled (0-255) image, not {units}."
    median = float(np.median(inside))
    if not low <= median <= high:
        hint = "ms" if units == "s" else "other units"
        return (f"{name}: median {median:.4g} over tissue is outside the plausible {low:g} to {high:g} {units}; "
                f"is it in other units ({hint})?")
    if name == "tmax" and whole and frame_interval_s is not None and not math.isclose(frame_interval_s, 1.0, rel_tol=1e-3):
        return (f"tmax: whole numbers only while the frames are {frame_interval_s:g} s apart: "
                "Tmax in frames, not seconds? Multiply it by the frame interval.")
    return None


def align_reference(reference, reference_affines, shape, affine, lesion=None, lesion_affine=None):
    """The reference maps (and lesion mask) on our grid: as they are when the grids match, else resampled
    through world coordinates (linear for maps, nearest for the mask; :func:`resample_to_grid`).

    Parameters
    ----------
    reference : dict
        ``{name: 3D array}``.
    reference_affines : dict
        ``{name: (4, 4) affine}`` of each map.
    shape, affine :
        Our grid.
    lesion : ndarray, optional
    lesion_affine : ndarray, optional

    Returns
    -------
    maps : dict of float64 arrays
    lesion : ndarray of bool or None
    resampled : list of str
        The names (maps, ``lesion``) that were resampled.
    """
    maps, resampled = {}, []
    for name, values in reference.items():
        if same_grid(np.shape(values), reference_affines[name], shape, affine):
            maps[name] = np.asarray(values, dtype=np.float64)
        else:
            maps[name] = resample_to_grid(values, reference_affines[name], shape, affine, order=1,
                                          what=f"reference {name} map")
            resampled.append(name)
    if lesion is not None:
        if same_grid(np.shape(lesion), lesion_affine, shape, affine):
            lesion = np.asarray(lesion) > 0
        else:
            lesion = resample_to_grid(np.asarray(lesion) > 0, lesion_affine, shape, affine, order=0,
                                      what="lesion mask") > 0.5
            resampled.append("lesion")
    return maps, lesion, resampled


def check_reference(reference, tissue, frame_interval_s=None, dtypes=None):
    """Refuse reference maps that look like they are not in the conventions' units (:func:`check_reference_units`).

    Raises
    ------
    AgreementError
        Naming every map that looks wrong, in one line.
    """
    dtypes = dtypes or {}
    problems = [check_reference_units(name, values, tissue, frame_interval_s, dtypes.get(name))
                for name, values in reference.items() if name in PLAUSIBLE_MEDIAN]
    problems = [p for p in problems if p]
    if problems:
        raise AgreementError("reference maps in other units? " + " ".join(problems)
                             + " (convert them, or compare them as they are with --skip-unit-checks)")


# ----------------------------------------------------------------------------------------------
# per scan


def voxelwise_agreement(ours, reference, mask):
    """Pearson and Spearman r of two maps over ``mask`` (voxels finite in both).

    Returns
    -------
    dict
        ``n_voxels, pearson_r, spearman_r, mean_ours, mean_reference, mean_difference``
        (NaN where undefined: fewer than 3 voxels or a constant map).

    Examples
    --------
    A scaled and shifted copy correlates perfectly:

    >>> x = np.linspace(1, 50, 100)
    >>> row = voxelwise_agreement(x, 1.2 * x + 3, np.ones(100, bool))
    >>> round(row["pearson_r"], 12), round(row["spearman_r"], 12), row["n_voxels"]
    (1.0, 1.0, 100)
    """
    from scipy import stats

    ours = np.asarray(ours, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    keep = np.asarray(mask, bool) & np.isfinite(ours) & np.isfinite(reference)
    a, b = ours[keep], reference[keep]
    row = {
        "n_voxels": int(a.size),
        "pearson_r": math.nan,
        "spearman_r": math.nan,
        "mean_ours": float(a.mean()) if a.size else math.nan,
        "mean_reference": float(b.mean()) if b.size else math.nan,
        "mean_difference": float((a - b).mean()) if a.size else math.nan,
    }
    if a.size >= 3 and np.ptp(a) > 0 and np.ptp(b) > 0:
        row["pearson_r"] = float(stats.pearsonr(a, b).statistic)
        row["spearman_r"] = float(stats.spearmanr(a, b).statistic)
    return row


@dataclass
class ScanAgreement:
    """Agreement of one method's maps with the reference on one scan.

    Attributes
    ----------
    maps : list of dict
        One row per map: ``map, our_map, n_voxels, pearson_r, spearman_r, mean_ours,
        mean_reference, mean_difference``.
    thresholds : list of dict
        One row per region and threshold: ``region`` (core or hypoperfused),
        ``threshold`` (fraction or s), ``volume_ours_ml, volume_reference_ml,
        volume_difference_ml`` (ours - reference) and ``dice``.
    summary : dict
        The clinical thresholds' volumes (ml), Dice, mismatch, target-mismatch
        calls of both, the affected hemisphere, and against the lesion mask
        (when given) its volume and the Dice of both cores.
    histograms : dict
        ``{map: counts}``, the voxelwise joint histograms (:func:`joint_histogram`).
    core_ours, core_reference, hypoperfused_ours, hypoperfused_reference : ndarray of bool
        The masks at the clinical thresholds (for figures).
    """

    maps: list
    thresholds: list
    summary: dict
    core_ours: np.ndarray = field(repr=False, default=None)
    core_reference: np.ndarray = field(repr=False, default=None)
    hypoperfused_ours: np.ndarray = field(repr=False, default=None)
    hypoperfused_reference: np.ndarray = field(repr=False, default=None)
    histograms: dict = field(repr=False, default_factory=dict)


#: value ranges (the conventions' units) and bins of the voxelwise joint histograms, ours against the reference
HISTOGRAM_RANGES = {"cbf": (0.0, 120.0), "cbv": (0.0, 10.0), "mtt": (0.0, 20.0), "tmax": (0.0, 20.0)}
HISTOGRAM_BINS = 60


def joint_histogram(ours, reference, mask, name):
    """Counts of (reference, ours) value pairs over ``mask`` on the fixed grid of :data:`HISTOGRAM_RANGES`.

    Fixed edges, so that the counts of many scans add up (bounded memory, whatever the number of voxels);
    values outside the range are clipped into the edge bins. Rows: the reference's bins; columns: ours.

    >>> counts = joint_histogram(np.array([10.0, 50.0]), np.array([10.0, 200.0]), np.ones(2, bool), "cbf")
    >>> counts.shape, int(counts.sum()), int(counts[5, 5]), int(counts[-1, 25])
    ((60, 60), 2, 1, 1)
    """
    low, high = HISTOGRAM_RANGES[name]
    ours = np.asarray(ours, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    keep = np.asarray(mask, bool) & np.isfinite(ours) & np.isfinite(reference)
    edge = high - (high - low) * 1e-9
    counts, _, _ = np.histogram2d(np.clip(reference[keep], low, edge), np.clip(ours[keep], low, edge),
                                  bins=HISTOGRAM_BINS, range=[[low, high], [low, high]])
    return counts.astype(np.int64)


def compare_scan(
    ours,
    reference,
    brain,
    affine,
    voxel_volume_ml,
    csf=None,
    vessels=None,
    lesion=None,
    our_delay="tmax",
    core_fractions=CORE_FRACTIONS,
    delay_thresholds_s=DELAY_THRESHOLDS_S,
    core_relative_cbf=CORE_RELATIVE_CBF,
    delay_threshold_s=DELAY_THRESHOLD_S,
):
    """Agreement of one method's maps with reference maps on the same grid (see the module's docstring).

    Parameters
    ----------
    ours : dict
        ``{map name: 3D array}`` with ``cbf`` and ``our_delay``; ``cbv`` and ``mtt`` when present.
    reference : dict
        ``{map name: 3D array}`` with ``cbf`` and ``tmax``; ``cbv`` and ``mtt`` when present;
        on our grid (:func:`resample_to_grid`).
    brain : ndarray of bool
        Our brain mask.
    affine : ndarray, (4, 4)
        Our grid's affine (the hemispheres are split in world coordinates).
    voxel_volume_ml : float
    csf, vessels : ndarray of bool, optional
        Our CSF and vessel masks, removed from the compared tissue.
    lesion : ndarray of bool, optional
        A DWI or follow-up infarct mask on our grid.
    our_delay : str
        ``tmax`` (SVD methods) or ``bad`` (the network): our map compared with the reference's Tmax.
    core_fractions, delay_thresholds_s : sequence of float
        The threshold sweep.
    core_relative_cbf, delay_threshold_s : float
        The clinical thresholds (rCBF < 30%, Tmax > 6 s).

    Returns
    -------
    ScanAgreement
    """
    for needed, where in ((("cbf", our_delay), ours), (("cbf", "tmax"), reference)):
        missing = [name for name in needed if name not in where]
        if missing:
            side = "our" if where is ours else "the reference's"
            raise AgreementError(f"{side} maps lack {', '.join(missing)}; both CBF and a delay map are needed.")
    brain = np.asarray(brain, bool)
    for name, values in list(ours.items()) + list(reference.items()):
        if np.shape(values) != brain.shape:
            raise AgreementError(
                f"The {name} map has shape {np.shape(values)} but the brain mask {brain.shape}; "
                "resample the reference onto our grid first."
            )
    excluded = reference_outside(reference)
    for values in ours.values():
        excluded |= ~np.isfinite(np.asarray(values, dtype=np.float64))
    for mask in (csf, vessels):
        if mask is not None:
            excluded |= np.asarray(mask, bool)
    tissue = brain & ~excluded
    if not tissue.any():
        raise AgreementError("No voxel is tissue in both our masks and the reference's maps; check the grids.")

    map_rows, histograms = [], {}
    for name in MAP_NAMES:
        our_name = our_delay if name == "tmax" else name
        if our_name in ours and name in reference:
            map_rows.append({"map": name, "our_map": our_name,
                             **voxelwise_agreement(ours[our_name], reference[name], tissue)})
            histograms[name] = joint_histogram(ours[our_name], reference[name], tissue, name)

    # the reference CBF of each set on the same tissue and the same side (the reference's)
    side_ref = contralateral_reference(reference["cbf"], reference["tmax"], brain, affine, csf=excluded,
                                       delay_threshold_s=delay_threshold_s)
    side = side_ref.affected_hemisphere
    side_ours = contralateral_reference(ours["cbf"], ours[our_delay], brain, affine, csf=excluded, hemisphere=side,
                                        delay_threshold_s=delay_threshold_s, delay_name=our_delay)

    def measures(maps, contralateral, fraction, delay, delay_name):
        return triage.triage_volumes(maps["cbf"], maps[delay_name], contralateral.tissue, contralateral.reference_cbf,
                                     voxel_volume_ml, core_relative_cbf=fraction, hypoperfusion_threshold_s=delay,
                                     delay_name=delay_name)

    clinical_ref = measures(reference, side_ref, core_relative_cbf, delay_threshold_s, "tmax")
    clinical_ours = measures(ours, side_ours, core_relative_cbf, delay_threshold_s, our_delay)

    rows = []

    def add(region, threshold, a, b):
        rows.append({"region": region, "threshold": float(threshold), "volume_ours_ml": float(a.sum() * voxel_volume_ml),
                     "volume_reference_ml": float(b.sum() * voxel_volume_ml),
                     "volume_difference_ml": float((int(a.sum()) - int(b.sum())) * voxel_volume_ml),
                     "dice": dice(a, b)})

    sweep = [("core", f, f, delay_threshold_s) for f in core_fractions]
    sweep += [("hypoperfused", d, core_relative_cbf, d) for d in delay_thresholds_s]
    for region, threshold, fraction, delay in sweep:
        if math.isclose(fraction, core_relative_cbf) and math.isclose(delay, delay_threshold_s):
            a, b = clinical_ours, clinical_ref
        else:
            a = measures(ours, side_ours, fraction, delay, our_delay)
            b = measures(reference, side_ref, fraction, delay, "tmax")
        add(region, threshold, getattr(a, region), getattr(b, region))

    summary = {"affected_hemisphere": side, "n_tissue_voxels": int(tissue.sum())}
    for label, m in (("ours", clinical_ours), ("reference", clinical_ref)):
        summary[f"core_ml_{label}"] = m.core_volume_ml
        summary[f"hypoperfused_ml_{label}"] = m.hypoperfused_volume_ml
        summary[f"mismatch_ml_{label}"] = m.mismatch_volume_ml
        summary[f"mismatch_ratio_{label}"] = m.mismatch_ratio
        for profile, name in PROFILES.items():
            summary[f"{profile}_{label}"] = bool(m.target_mismatch[name])
    summary["dice_core"] = dice(clinical_ours.core, clinical_ref.core)
    summary["dice_hypoperfused"] = dice(clinical_ours.hypoperfused, clinical_ref.hypoperfused)
    if lesion is not None:
        lesion = np.asarray(lesion, bool)
        if lesion.shape != brain.shape:
            raise AgreementError(f"The lesion mask has shape {lesion.shape} but the brain mask {brain.shape}.")
        summary["lesion_ml"] = float(lesion.sum() * voxel_volume_ml)
        summary["dice_lesion_core_ours"] = dice(clinical_ours.core, lesion)
        summary["dice_lesion_core_reference"] = dice(clinical_ref.core, lesion)
    return ScanAgreement(map_rows, rows, summary, clinical_ours.core, clinical_ref.core,
                         clinical_ours.hypoperfused, clinical_ref.hypoperfused, histograms)


# ----------------------------------------------------------------------------------------------
# across scans


def _paired_finite(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def bland_altman(ours, reference):
    """Bland-Altman bias (mean of ours - reference) and 95% limits of agreement (bias +- 1.96 SD, ddof 1).

    >>> row = bland_altman([10.0, 20, 30, 40], [8.0, 18, 28, 38])
    >>> row["n"], row["bias"], row["sd"], row["loa_low"], row["loa_high"]
    (4, 2.0, 0.0, 2.0, 2.0)
    """
    a, b = _paired_finite(ours, reference)
    difference = a - b
    n = int(difference.size)
    bias = float(difference.mean()) if n else math.nan
    sd = float(difference.std(ddof=1)) if n > 1 else math.nan
    return {"n": n, "bias": bias, "sd": sd, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd}


def icc_absolute_agreement(ours, reference):
    """ICC(A,1) (two-way random, absolute agreement, single measurement) with its 95% CI, from pingouin.

    Returns ``(icc, ci_low, ci_high)``; NaN with fewer than 3 paired scans or no
    variance at all. Identical values give 1 (pingouin's CI is then NaN).

    >>> icc, low, high = icc_absolute_agreement([10.0, 20, 35, 50, 5], [11.0, 18, 38, 50, 6])
    >>> round(icc, 3)
    0.996
    """
    a, b = _paired_finite(ours, reference)
    n = a.size
    if n < 3 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return math.nan, math.nan, math.nan
    import pandas as pd
    import pingouin

    frame = pd.DataFrame({"scan": np.tile(np.arange(n), 2), "rater": np.repeat(["ours", "reference"], n),
                          "value": np.concatenate([a, b])})
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # divisions by zero of the F tests when the agreement is perfect
        table = pingouin.intraclass_corr(frame, targets="scan", raters="rater", ratings="value")
    row = table[table["Type"].isin(["ICC(A,1)", "ICC2"])].iloc[0]
    low, high = (float(v) for v in row["CI95"]) if row["CI95"] is not None else (math.nan, math.nan)
    return float(row["ICC"]), low, high


def cohen_kappa(ours, reference):
    """Cohen's kappa of two binary calls (statsmodels), with the observed agreement and the 95% CI.

    Returns ``dict(n, agreement, kappa, kappa_low, kappa_high, n_positive_ours, n_positive_reference)``;
    kappa is NaN when the expected agreement is 1 (both call every scan the same way).

    >>> row = cohen_kappa([True, True, False, False, True], [True, False, False, False, True])
    >>> row["n"], row["agreement"], round(row["kappa"], 4)
    (5, 0.8, 0.6154)
    """
    a = np.asarray(ours, dtype=bool)
    b = np.asarray(reference, dtype=bool)
    n = int(a.size)
    row = {"n": n, "agreement": float(np.mean(a == b)) if n else math.nan, "kappa": math.nan,
           "kappa_low": math.nan, "kappa_high": math.nan,
           "n_positive_ours": int(a.sum()), "n_positive_reference": int(b.sum())}
    table = np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]], dtype=float)
    expected = (table.sum(1) @ table.sum(0)) / n**2 if n else 1.0
    if n >= 2 and expected < 1:
        from statsmodels.stats.inter_rater import cohens_kappa

        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore")
            result = cohens_kappa(table)
        row.update(kappa=float(result.kappa), kappa_low=float(result.kappa_low), kappa_high=float(result.kappa_upp))
    return row


#: the volumes compared across scans: (name, column stem of ScanAgreement.summary)
VOLUMES = (("core", "core_ml"), ("hypoperfused", "hypoperfused_ml"), ("mismatch", "mismatch_ml"))


def volume_agreement(summaries):
    """Across scans: ICC(A,1), Bland-Altman and mean/median Dice of each volume of :data:`VOLUMES`.

    Parameters
    ----------
    summaries : list of dict
        :attr:`ScanAgreement.summary` of one method on each scan.

    Returns
    -------
    list of dict
        One row per volume: ``measure, n, icc, icc_low, icc_high, bias, sd,
        loa_low, loa_high, mean_ours, mean_reference, dice_mean, dice_median``
        (Dice for core and hypoperfused only), in ml.
    """
    rows = []
    for measure, stem in VOLUMES:
        a = [s[f"{stem}_ours"] for s in summaries]
        b = [s[f"{stem}_reference"] for s in summaries]
        icc, low, high = icc_absolute_agreement(a, b)
        ba = bland_altman(a, b)
        dices = np.array([s.get(f"dice_{measure}", math.nan) for s in summaries], dtype=float)
        dices = dices[np.isfinite(dices)]
        rows.append({"measure": measure, "n": ba["n"], "icc": icc, "icc_low": low, "icc_high": high,
                     "bias": ba["bias"], "sd": ba["sd"], "loa_low": ba["loa_low"], "loa_high": ba["loa_high"],
                     "mean_ours": float(np.nanmean(a)) if a else math.nan,
                     "mean_reference": float(np.nanmean(b)) if b else math.nan,
                     "dice_mean": float(dices.mean()) if dices.size else math.nan,
                     "dice_median": float(np.median(dices)) if dices.size else math.nan})
    return rows


def call_agreement(summaries):
    """Across scans: Cohen's kappa of each target-mismatch profile's calls (:data:`PROFILES`).

    Returns one row per profile: ``profile`` and the keys of :func:`cohen_kappa`.
    """
    return [{"profile": profile, **cohen_kappa([s[f"{profile}_ours"] for s in summaries],
                                               [s[f"{profile}_reference"] for s in summaries])}
            for profile in PROFILES]


def map_agreement(map_rows):
    """Across scans: mean and median of the per-scan voxelwise r of each map.

    Parameters
    ----------
    map_rows : list of dict
        :attr:`ScanAgreement.maps` rows of one method on every scan.

    Returns
    -------
    list of dict
        ``map, our_map, n, pearson_mean, pearson_median, spearman_mean, spearman_median``.
    """
    out = []
    for name in MAP_NAMES:
        rows = [r for r in map_rows if r["map"] == name]
        if not rows:
            continue
        pearson = np.array([r["pearson_r"] for r in rows], dtype=float)
        spearman = np.array([r["spearman_r"] for r in rows], dtype=float)
        pearson, spearman = pearson[np.isfinite(pearson)], spearman[np.isfinite(spearman)]
        out.append({"map": name, "our_map": rows[0]["our_map"], "n": int(pearson.size),
                    "pearson_mean": float(pearson.mean()) if pearson.size else math.nan,
                    "pearson_median": float(np.median(pearson)) if pearson.size else math.nan,
                    "spearman_mean": float(spearman.mean()) if spearman.size else math.nan,
                    "spearman_median": float(np.median(spearman)) if spearman.size else math.nan})
    return out


def threshold_agreement(threshold_rows):
    """Across scans, per region and threshold: mean Dice, mean volume difference (ml) and ICC(A,1) of the volumes.

    Parameters
    ----------
    threshold_rows : list of dict
        :attr:`ScanAgreement.thresholds` rows of one method on every scan.
    """
    out = []
    keys = list(dict.fromkeys((r["region"], r["threshold"]) for r in threshold_rows))
    for region, threshold in keys:
        rows = [r for r in threshold_rows if r["region"] == region and r["threshold"] == threshold]
        dices = np.array([r["dice"] for r in rows], dtype=float)
        icc, _, _ = icc_absolute_agreement([r["volume_ours_ml"] for r in rows], [r["volume_reference_ml"] for r in rows])
        out.append({"region": region, "threshold": threshold, "n": len(rows),
                    "dice_mean": float(np.nanmean(dices)) if rows else math.nan,
                    "volume_difference_mean_ml": float(np.mean([r["volume_difference_ml"] for r in rows])),
                    "icc": icc})
    return out
