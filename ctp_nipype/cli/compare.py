"""``ctp-compare OUR_DERIVATIVES REFERENCE_DERIVATIVES OUT_DIR``: agreement of our maps with a reference's.

Reads, per scan, our maps (``<p>_desc-<method>_<cbf|cbv|mtt|tmax|bad>.nii.gz``)
and masks (``<p>_desc-brain_mask``, ``_desc-csf_mask``, ``_desc-vessel_mask``)
from the BIDS App's derivatives, and the reference's maps
(``<p>_desc-reference_<cbf|cbv|mtt|tmax>.nii.gz``) and lesion mask
(``<p>_label-infarct_desc-reference_mask.nii.gz``) from a derivative dataset
such as the one ``ctp-convert isles2018|isles2024`` writes; scans are paired by
their prefix ``<p>``. It calls :mod:`ctp_nipype.perfusion.agreement` and writes
into OUT_DIR:

* per case: ``agreement_desc-cases_stats.tsv`` (volumes, Dice, target-mismatch
  calls, lesion Dice), ``agreement_desc-maps_stats.tsv`` (voxelwise r per map),
  ``agreement_desc-thresholds_stats.tsv`` (the threshold sweep);
* across cases: ``agreement_desc-volumesummary_stats.tsv`` (ICC, Bland-Altman),
  ``agreement_desc-callsummary_stats.tsv`` (Cohen's kappa),
  ``agreement_desc-mapsummary_stats.tsv``, ``agreement_desc-thresholdsummary_stats.tsv``;
* a JSON sidecar for each table (columns, units, the cases left out and why),
  and the page ``agreement_report.html``.

A case that cannot be compared (missing in one set, a reference map in other
units, grids that do not overlap) is left out with one line on stderr, and the
summary names it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .. import __url__, __version__
from ._errors import user_facing

#: what each column of the tables holds (the sidecars' column descriptions)
COLUMNS = {
    "scan": "Scan prefix sub-<label>[_ses-<label>]",
    "method": "Our method (ssvd, csvd, osvd, transformer)",
    "map": "Reference map compared",
    "our_map": "Our map compared with it (bad for the network's Tmax)",
    "units": "Units of the map",
    "n_voxels": "Voxels compared (perfused tissue, finite in both)",
    "pearson_r": "Voxelwise Pearson r (scipy.stats.pearsonr)",
    "spearman_r": "Voxelwise Spearman r (scipy.stats.spearmanr)",
    "mean_ours": "Mean of our map over the voxels compared",
    "mean_reference": "Mean of the reference map over the voxels compared",
    "mean_difference": "Mean of ours - reference",
    "region": "core (relative CBF below the threshold within Tmax > 6 s) or hypoperfused (Tmax above the threshold)",
    "threshold": "core: fraction of the unaffected hemisphere's mean CBF; hypoperfused: seconds",
    "volume_ours_ml": "Volume from our maps (ml)",
    "volume_reference_ml": "Volume from the reference maps by the same code (ml)",
    "volume_difference_ml": "Ours - reference (ml)",
    "dice": "Dice of our region and the reference's",
    "resampled": "Reference maps/masks resampled onto our grid (names), or none",
    "affected_hemisphere": "Side with more Tmax > 6 s in the reference; used for both sets",
    "n_tissue_voxels": "Perfused tissue voxels compared",
    "core_ml_ours": "Core volume (rCBF < 30%, within Tmax > 6 s) from our maps (ml)",
    "core_ml_reference": "Core volume from the reference maps, same code (ml)",
    "hypoperfused_ml_ours": "Tmax > 6 s volume from our maps (ml)",
    "hypoperfused_ml_reference": "Tmax > 6 s volume from the reference maps (ml)",
    "mismatch_ml_ours": "Hypoperfused - core (ml), ours",
    "mismatch_ml_reference": "Hypoperfused - core (ml), reference",
    "mismatch_ratio_ours": "Hypoperfused / core, ours (n/a without core)",
    "mismatch_ratio_reference": "Hypoperfused / core, reference (n/a without core)",
    "defuse3_ours": "DEFUSE 3 target mismatch (core < 70 ml, ratio >= 1.8, mismatch >= 15 ml), ours",
    "defuse3_reference": "DEFUSE 3 target mismatch, reference",
    "extend_ours": "EXTEND target mismatch (core < 70 ml, ratio > 1.2, mismatch > 10 ml), ours",
    "extend_reference": "EXTEND target mismatch, reference",
    "dice_core": "Dice of the cores (rCBF < 30%)",
    "dice_hypoperfused": "Dice of the Tmax > 6 s regions",
    "lesion_ml": "Volume of the reference's lesion mask (DWI or follow-up), ml",
    "dice_lesion_core_ours": "Dice of our core and the lesion mask",
    "dice_lesion_core_reference": "Dice of the reference's core and the lesion mask",
    "measure": "core, hypoperfused or mismatch volume",
    "n": "Cases (pairs) in the statistic",
    "icc": "ICC(A,1): two-way random, absolute agreement, single measurement (pingouin.intraclass_corr)",
    "icc_low": "Lower bound of the ICC's 95% CI (pingouin)",
    "icc_high": "Upper bound of the ICC's 95% CI (pingouin)",
    "bias": "Bland-Altman bias: mean of ours - reference (ml)",
    "sd": "Sample SD of ours - reference (ml)",
    "loa_low": "Lower 95% limit of agreement: bias - 1.96 SD (ml)",
    "loa_high": "Upper 95% limit of agreement: bias + 1.96 SD (ml)",
    "dice_mean": "Mean Dice across cases",
    "dice_median": "Median Dice across cases",
    "profile": "Target-mismatch profile (defuse3 or extend)",
    "agreement": "Fraction of cases with the same call",
    "kappa": "Cohen's kappa (statsmodels.stats.inter_rater.cohens_kappa)",
    "kappa_low": "Lower bound of kappa's asymptotic 95% CI (statsmodels; not clipped)",
    "kappa_high": "Upper bound of kappa's asymptotic 95% CI (statsmodels; not clipped)",
    "n_positive_ours": "Cases called target mismatch by ours",
    "n_positive_reference": "Cases called target mismatch by the reference",
    "pearson_mean": "Mean across cases of the voxelwise Pearson r",
    "pearson_median": "Median across cases of the voxelwise Pearson r",
    "spearman_mean": "Mean across cases of the voxelwise Spearman r",
    "spearman_median": "Median across cases of the voxelwise Spearman r",
    "volume_difference_mean_ml": "Mean across cases of ours - reference volume (ml)",
}

STATISTICS = (
    "Voxelwise r: scipy.stats.pearsonr and spearmanr. Volumes: ICC(A,1) (two-way random effects, absolute "
    "agreement, single measurement; Shrout and Fleiss ICC(2,1)) from pingouin.intraclass_corr, Bland-Altman bias "
    "and limits (bias +- 1.96 SD, ddof 1) with numpy. Calls: Cohen's kappa from "
    "statsmodels.stats.inter_rater.cohens_kappa. Core, hypoperfusion and the DEFUSE 3 / EXTEND calls from both "
    "map sets by the package's one thresholding path (stats.contralateral_reference, triage.triage_volumes) on "
    "the same tissue and the reference's affected hemisphere."
)

_OUR_MAPS = ("cbf", "cbv", "mtt", "tmax", "bad")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="ctp-compare",
        description=(
            "Agreement of ctp_nipype's maps with a reference software's maps and lesion masks (e.g. ISLES 2018's "
            "RAPID maps, converted by ctp-convert): voxelwise r, Dice and volumes of core and Tmax > 6 s by the "
            "same thresholding code, ICC, Bland-Altman, Cohen's kappa of DEFUSE 3 / EXTEND calls."
        ),
    )
    parser.add_argument("our_derivatives", type=Path, help="the BIDS App's output folder (participant level done)")
    parser.add_argument("reference_derivatives", type=Path,
                        help="the reference derivative dataset, e.g. BIDS_DIR/derivatives/reference")
    parser.add_argument("out_dir", type=Path, help="where the tables and the page go")
    parser.add_argument("--methods", nargs="+", metavar="METHOD",
                        help="our methods to compare (default: every method found)")
    parser.add_argument("--participant-label", nargs="+", metavar="LABEL", help="only these participants")
    parser.add_argument("--skip-unit-checks", action="store_true",
                        help="compare reference maps whose values look like other units (not advised)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"ctp_nipype {__version__}")
    return parser


def _index(folder, pattern, participant_labels):
    from ..interfaces.stats import parse_map_filename
    from ..workflows.group import find_scan_outputs

    found = {}
    for path in find_scan_outputs(folder, pattern, participant_labels):
        parsed = parse_map_filename(path)
        if parsed is not None:
            prefix, method, name = parsed
            found.setdefault(prefix, {}).setdefault(method, {})[name] = path
    return found


def find_our_maps(folder, methods=None, participant_labels=None):
    """``{prefix: {method: {map: path}}}`` of our derivatives (the reference's name excluded)."""
    found = {}
    for pattern in ("*_desc-*_*.nii.gz", "*_desc-*_*.nii"):
        for prefix, by_method in _index(folder, pattern, participant_labels).items():
            for method, maps in by_method.items():
                maps = {k: v for k, v in maps.items() if k in _OUR_MAPS}
                if method != "reference" and "cbf" in maps and (not methods or method in methods):
                    found.setdefault(prefix, {}).setdefault(method, {}).update(maps)
    return found


def find_reference_maps(folder, participant_labels=None):
    """``{prefix: {map: path}}`` of the reference derivative dataset, the lesion mask as ``lesion``."""
    found = {}
    for pattern in ("*_desc-reference_*.nii.gz", "*_desc-reference_*.nii"):
        for prefix, by_method in _index(folder, pattern, participant_labels).items():
            maps = {k: v for k, v in by_method.get("reference", {}).items() if k in ("cbf", "cbv", "mtt", "tmax")}
            if maps:
                found.setdefault(prefix, {}).update(maps)
    for prefix, maps in found.items():
        lesion = sorted(Path(maps["cbf"] if "cbf" in maps else next(iter(maps.values()))).parent.glob(
            f"{prefix}_label-infarct_desc-reference_mask.nii*"))
        if lesion:
            maps["lesion"] = lesion[0]
    return found


def _mask(folder, prefix, name, required):
    from ..io import InputError

    hits = sorted(Path(folder).glob(f"{prefix}_desc-{name}_mask.nii*"))
    if not hits and required:
        raise InputError(f"no {prefix}_desc-{name}_mask.nii.gz next to our maps in {folder}")
    return hits[0] if hits else None


def _frame_interval(reference_dir, map_path, prefix):
    """Seconds between frames from the raw CTP's sidecar ``ctp-convert`` wrote (raw = reference/../..), or None."""
    import json

    sub = Path(map_path).parent.relative_to(reference_dir)
    sub = sub.parent if sub.name == "perf" else sub
    side = Path(reference_dir).parent.parent / sub / f"{prefix}_ctp.json"
    if not side.exists():
        return None
    times = json.loads(side.read_text()).get("FrameTimesStart")
    return float(np.median(np.diff(times))) if times and len(times) > 1 else None


def compare_one(prefix, our_maps, reference_paths, reference_dir, unit_checks=True):
    """Compare every method of one scan; returns ``{method: ScanAgreement}`` and the resampled names."""
    from ..io import load_nifti, voxel_volume_ml
    from ..perfusion import agreement

    first = next(iter(next(iter(our_maps.values())).values()))
    folder = Path(first).parent
    brain_img, brain = load_nifti(_mask(folder, prefix, "brain", True), "brain mask")
    shape, affine = brain.shape, brain_img.affine
    csf = _mask(folder, prefix, "csf", False)
    vessels = _mask(folder, prefix, "vessel", False)
    csf = load_nifti(csf, "CSF mask")[1] > 0 if csf else None
    vessels = load_nifti(vessels, "vessel mask")[1] > 0 if vessels else None
    reference, affines, dtypes = {}, {}, {}
    for name in ("cbf", "cbv", "mtt", "tmax"):
        if name in reference_paths:
            img, data = load_nifti(reference_paths[name], f"reference {name} map")
            reference[name], affines[name] = np.squeeze(np.asarray(data, dtype=np.float64)), img.affine
            dtypes[name] = img.get_data_dtype()
    if "cbf" not in reference or "tmax" not in reference:
        raise agreement.AgreementError("the reference lacks a CBF or Tmax map")
    lesion = lesion_affine = None
    if "lesion" in reference_paths:
        img, lesion = load_nifti(reference_paths["lesion"], "lesion mask")
        lesion, lesion_affine = np.squeeze(lesion), img.affine
    reference, lesion, resampled = agreement.align_reference(reference, affines, shape, affine, lesion, lesion_affine)
    if unit_checks:
        tissue = (brain > 0) & ~agreement.reference_outside(reference)
        agreement.check_reference(reference, tissue, _frame_interval(reference_dir, reference_paths["cbf"], prefix),
                                  {k: v for k, v in dtypes.items() if k not in resampled})
    results = {}
    for method, paths in sorted(our_maps.items()):
        ours = {}
        for name, path in paths.items():
            ours[name] = np.asarray(load_nifti(path, f"{method} {name} map")[1], dtype=np.float64)
        delay = "bad" if "bad" in ours and "tmax" not in ours else "tmax"
        results[method] = agreement.compare_scan(
            ours, reference, brain > 0, affine, voxel_volume_ml(brain_img.header), csf=csf, vessels=vessels,
            lesion=lesion, our_delay=delay)
    return results, resampled


def _sidecar(columns, extra):
    return {**{c: {"Description": COLUMNS.get(c, c)} for c in columns}, **extra}


def compare_derivatives(our_derivatives, reference_derivatives, out_dir, methods=None, participant_labels=None,
                        unit_checks=True, log=print):
    """Compare our derivatives with a reference derivative dataset and write the tables and the page.

    What ``ctp-compare`` runs (the BIDS App's group level can call it too). Returns
    ``(volume summary rows, cases left out {scan: reason})``; raises
    :class:`ctp_nipype.io.InputError` when either folder has nothing to compare.
    """
    from ..bids import check_output_outside_input, derivative_name
    from ..io import InputError, prepare_output_dir, write_json, write_table_tsv, write_text
    from ..perfusion import agreement, triage
    from ..perfusion.constants import UNITS
    from ..reports.agreement import agreement_report_html
    from ._errors import one_line

    for folder, what in ((our_derivatives, "our derivatives"), (reference_derivatives, "reference derivatives")):
        if not Path(folder).is_dir():
            raise InputError(f"The {what} folder {folder} does not exist.")
    check_output_outside_input(out_dir, [reference_derivatives], what="output folder")
    ours = find_our_maps(our_derivatives, methods, participant_labels)
    refs = find_reference_maps(reference_derivatives, participant_labels)
    if not ours:
        raise InputError(f"No maps of ours (sub-*/**/<prefix>_desc-<method>_cbf.nii.gz) in {our_derivatives}"
                         + (f" for the methods {', '.join(methods)}" if methods else "")
                         + "; run ctp-bids-app participant first.")
    if not refs:
        raise InputError(f"No reference maps (sub-*/**/<prefix>_desc-reference_cbf.nii.gz) in "
                         f"{reference_derivatives}; convert the dataset with ctp-convert first.")
    out_dir = prepare_output_dir(out_dir)

    left_out, case_rows, map_rows, threshold_rows, per_method, histograms = {}, [], [], [], {}, {}
    for prefix in sorted(set(ours) | set(refs)):
        if prefix not in ours:
            left_out[prefix] = "reference only: none of our maps for this scan (run the participant level on it)"
        elif prefix not in refs:
            left_out[prefix] = "ours only: no reference maps for this scan"
        else:
            try:
                results, resampled = compare_one(prefix, ours[prefix], refs[prefix], reference_derivatives,
                                                 unit_checks)
            except (ValueError, OSError) as err:
                left_out[prefix] = one_line(err)
            else:
                for method, result in results.items():
                    case = {"scan": prefix, "method": method, "resampled": ",".join(resampled) or "none",
                            **result.summary}
                    case_rows.append(case)
                    map_rows += [{"scan": prefix, "method": method, "units": UNITS.get(r["map"], ""), **r}
                                 for r in result.maps]
                    threshold_rows += [{"scan": prefix, "method": method, **r} for r in result.thresholds]
                    per_method.setdefault(method, []).append(result)
                    for name, counts in result.histograms.items():
                        pooled = histograms.setdefault(method, {})
                        pooled[name] = pooled[name] + counts if name in pooled else counts
                continue
        print(f"ctp-compare: {prefix} left out: {left_out[prefix]}", file=sys.stderr)  # one line per case

    volume_rows, kappa_rows, map_summary, threshold_summary = [], [], [], []
    for method, results in per_method.items():
        summaries = [r.summary for r in results]
        volume_rows += [{"method": method, **r} for r in agreement.volume_agreement(summaries)]
        kappa_rows += [{"method": method, **r} for r in agreement.call_agreement(summaries)]
        map_summary += [{"method": method, **r} for r in agreement.map_agreement([m for r in results for m in r.maps])]
        threshold_summary += [{"method": method, **r}
                              for r in agreement.threshold_agreement([t for r in results for t in r.thresholds])]

    common = {
        "OurDerivatives": str(Path(our_derivatives).resolve()),
        "ReferenceDerivatives": str(Path(reference_derivatives).resolve()),
        "CasesCompared": sorted({r["scan"] for r in case_rows}),
        "CasesLeftOut": left_out,
        "Statistics": STATISTICS,
        "CoreRelativeCBFThreshold": agreement.CORE_RELATIVE_CBF,
        "DelayThreshold": agreement.DELAY_THRESHOLD_S,
        "ThresholdSweep": {"core": list(agreement.CORE_FRACTIONS), "hypoperfused": list(agreement.DELAY_THRESHOLDS_S)},
        "TargetMismatch": {name: criteria.text() for name, criteria in triage.TARGET_MISMATCH.items()},
        "GeneratedBy": [{"Name": "ctp_nipype ctp-compare", "Version": __version__, "CodeURL": __url__}],
    }
    case_columns = ["scan", "method", "resampled", "affected_hemisphere", "n_tissue_voxels",
                    "core_ml_ours", "core_ml_reference", "dice_core", "hypoperfused_ml_ours", "hypoperfused_ml_reference",
                    "dice_hypoperfused", "mismatch_ml_ours", "mismatch_ml_reference", "mismatch_ratio_ours",
                    "mismatch_ratio_reference", "defuse3_ours", "defuse3_reference", "extend_ours", "extend_reference",
                    "lesion_ml", "dice_lesion_core_ours", "dice_lesion_core_reference"]
    tables = {
        "cases": (case_rows, case_columns),
        "maps": (map_rows, ["scan", "method", "map", "our_map", "units", "n_voxels", "pearson_r", "spearman_r",
                            "mean_ours", "mean_reference", "mean_difference"]),
        "thresholds": (threshold_rows, ["scan", "method", "region", "threshold", "volume_ours_ml",
                                        "volume_reference_ml", "volume_difference_ml", "dice"]),
        "volumesummary": (volume_rows, ["method", "measure", "n", "icc", "icc_low", "icc_high", "bias", "sd",
                                        "loa_low", "loa_high", "mean_ours", "mean_reference", "dice_mean", "dice_median"]),
        "callsummary": (kappa_rows, ["method", "profile", "n", "agreement", "kappa", "kappa_low", "kappa_high",
                                     "n_positive_ours", "n_positive_reference"]),
        "mapsummary": (map_summary, ["method", "map", "our_map", "n", "pearson_mean", "pearson_median",
                                     "spearman_mean", "spearman_median"]),
        "thresholdsummary": (threshold_summary, ["method", "region", "threshold", "n", "dice_mean",
                                                 "volume_difference_mean_ml", "icc"]),
    }
    for desc, (rows, columns) in tables.items():
        path = write_table_tsv(out_dir / derivative_name("agreement", "stats", desc=desc, extension=".tsv"), rows,
                               columns)
        write_json(path.with_suffix(".json"), _sidecar(columns, common))
    html = agreement_report_html(volume_rows, kappa_rows, map_summary, case_rows, threshold_summary, left_out,
                                 str(reference_derivatives), STATISTICS, histograms)
    report = write_text(out_dir / "agreement_report.html", html)
    log(f"ctp-compare: {len({r['scan'] for r in case_rows})} case(s) compared, {len(left_out)} left out; "
        f"tables and {report.name} in {out_dir}")
    for row in volume_rows:
        log(f"  {row['method']:>11} {row['measure']:<12} n={row['n']:<3} ICC(A,1) {row['icc']:.3f}  "
            f"bias {row['bias']:.2f} ml  LoA {row['loa_low']:.2f} to {row['loa_high']:.2f} ml")
    return volume_rows, left_out


@user_facing("ctp-compare")
def main(argv=None):
    args = build_parser().parse_args(argv)
    volume_rows, _ = compare_derivatives(args.our_derivatives, args.reference_derivatives, args.out_dir,
                                         args.methods, args.participant_label, not args.skip_unit_checks)
    return 0 if volume_rows else 2
