"""Agreement with reference maps (perfusion/agreement.py, ctp-compare): known answers on phantom truth.

The reference maps are made from the phantom's truth (r = 1, Dice = 1 when our maps are the truth) or from it
with known distortions (scaled CBF, shifted Tmax, smoothed map), so every expected number is known exactly.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ctp_nipype.perfusion import agreement
from ctp_nipype.perfusion.agreement import (
    AgreementError,
    align_reference,
    bland_altman,
    check_reference_units,
    cohen_kappa,
    compare_scan,
    icc_absolute_agreement,
    resample_to_grid,
)
from ctp_nipype.sims.isles import distort_reference, make_isles_phantom, truth_reference_maps
from ctp_nipype.sims.phantom import PhantomLabel


@pytest.fixture(scope="module")
def phantom():
    return make_isles_phantom(seed=3, noise_sd_hu=0)


def _masks(ph):
    return {"brain": ph.brain_mask, "csf": ph.labels == PhantomLabel.CSF,
            "vessels": np.isin(ph.labels, [PhantomLabel.ARTERY, PhantomLabel.VEIN])}


def _compare(ph, ours, reference, **kwargs):
    m = _masks(ph)
    voxel_ml = float(np.prod(ph.voxel_size_mm)) / 1000
    return compare_scan(ours, reference, m["brain"], ph.affine, voxel_ml, csf=m["csf"], vessels=m["vessels"],
                        lesion=ph.labels == PhantomLabel.CORE, **kwargs)


def _lesion_ml(ph, labels):
    return float(np.isin(ph.labels, labels).sum() * np.prod(ph.voxel_size_mm) / 1000)


def test_truth_against_truth_agrees_exactly(phantom):
    truth = truth_reference_maps(phantom)
    result = _compare(phantom, dict(truth), dict(truth))
    assert [r["map"] for r in result.maps] == ["cbf", "cbv", "mtt", "tmax"]
    for row in result.maps:
        assert row["pearson_r"] == pytest.approx(1.0, abs=1e-12) and row["spearman_r"] == pytest.approx(1.0, abs=1e-12)
        assert row["mean_difference"] == 0.0
    assert all(r["dice"] == 1.0 and r["volume_difference_ml"] == 0.0 for r in result.thresholds)
    for name, counts in result.histograms.items():  # every voxel on the diagonal of the joint histogram
        assert counts.sum() == result.maps[0]["n_voxels"] and counts.sum() == np.trace(counts), name
    s = result.summary
    # the core is the core label (CBF 8 < 0.3 x the unaffected side's mean, delay 8 s > 6 s), the hypoperfused
    # region core + penumbra: against the lesion (the core label) our core and the reference's have Dice 1
    assert s["core_ml_ours"] == pytest.approx(_lesion_ml(phantom, [PhantomLabel.CORE]))
    assert s["hypoperfused_ml_ours"] == pytest.approx(_lesion_ml(phantom, [PhantomLabel.CORE, PhantomLabel.PENUMBRA]))
    assert s["dice_lesion_core_ours"] == 1.0 and s["dice_lesion_core_reference"] == 1.0
    assert s["defuse3_ours"] == s["defuse3_reference"]


def test_scaled_cbf_keeps_the_correlation_and_the_relative_core(phantom):
    truth = truth_reference_maps(phantom)
    reference = distort_reference(truth, cbf_scale=1.3)
    result = _compare(phantom, dict(truth), reference)
    cbf = next(r for r in result.maps if r["map"] == "cbf")
    assert cbf["pearson_r"] == pytest.approx(1.0, abs=1e-9) and cbf["spearman_r"] == pytest.approx(1.0, abs=1e-9)
    assert cbf["mean_difference"] == pytest.approx(-0.3 * cbf["mean_ours"], rel=1e-6)
    # rCBF is relative to the unaffected hemisphere: a scale changes no core at any threshold
    assert all(r["dice"] == 1.0 for r in result.thresholds if r["region"] == "core")


def test_shifted_tmax_moves_the_sweep_by_the_shift(phantom):
    truth = truth_reference_maps(phantom)
    reference = distort_reference(truth, tmax_shift_s=3.0)  # lesion Tmax 8 -> 11 s, normal tissue 0 -> 3 s
    result = _compare(phantom, dict(truth), reference)
    tmax = next(r for r in result.maps if r["map"] == "tmax")
    assert tmax["pearson_r"] == pytest.approx(1.0, abs=1e-9)
    assert tmax["mean_difference"] == pytest.approx(-3.0, abs=1e-6)
    hypo = {r["threshold"]: r for r in result.thresholds if r["region"] == "hypoperfused"}
    lesion = _lesion_ml(phantom, [PhantomLabel.CORE, PhantomLabel.PENUMBRA])
    for threshold in (4.0, 5.0, 6.0):  # both: the lesion only
        assert hypo[threshold]["dice"] == 1.0
    for threshold in (8.0, 10.0):  # ours: nothing above (8 is not > 8); the reference's 11 s: the lesion
        assert hypo[threshold]["volume_ours_ml"] == 0.0
        assert hypo[threshold]["volume_reference_ml"] == pytest.approx(lesion)
        assert hypo[threshold]["volume_difference_ml"] == pytest.approx(-lesion)
        assert hypo[threshold]["dice"] == 0.0


def test_smoothed_map_lowers_r_below_one(phantom):
    truth = truth_reference_maps(phantom)
    reference = distort_reference(truth, smooth=("cbv",), smooth_sigma_voxels=1.5)
    rows = {r["map"]: r for r in _compare(phantom, dict(truth), reference).maps}
    assert 0.5 < rows["cbv"]["pearson_r"] < 0.99
    assert rows["cbv"]["spearman_r"] < 0.99
    assert rows["cbf"]["pearson_r"] == pytest.approx(1.0, abs=1e-12)


def test_network_bad_is_compared_with_the_reference_tmax(phantom):
    truth = truth_reference_maps(phantom)
    ours = {"cbf": truth["cbf"], "bad": truth["tmax"]}
    result = _compare(phantom, ours, dict(truth), our_delay="bad")
    assert [(r["map"], r["our_map"]) for r in result.maps] == [("cbf", "cbf"), ("tmax", "bad")]
    assert result.summary["dice_hypoperfused"] == 1.0


def test_a_reference_stored_flipped_lands_back_exactly(phantom):
    truth = truth_reference_maps(phantom)
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, truth["cbf"].shape[0] - 1
    affines = {name: phantom.affine @ flip for name in truth}
    maps, lesion, resampled = align_reference({k: v[::-1] for k, v in truth.items()}, affines,
                                              truth["cbf"].shape, phantom.affine,
                                              (phantom.labels == PhantomLabel.CORE)[::-1], phantom.affine @ flip)
    assert sorted(resampled) == ["cbf", "cbv", "lesion", "mtt", "tmax"]
    for name in truth:
        np.testing.assert_allclose(maps[name], truth[name], atol=1e-5)
    assert np.array_equal(lesion, phantom.labels == PhantomLabel.CORE)


def test_a_reference_on_a_finer_grid_is_resampled_and_still_agrees(phantom):
    truth = truth_reference_maps(phantom)
    fine_affine = phantom.affine.copy()
    fine_affine[:2, :2] /= 2  # half the in-plane voxel size, same corner
    shape = (truth["cbf"].shape[0] * 2, truth["cbf"].shape[1] * 2, truth["cbf"].shape[2])
    fine = {k: resample_to_grid(v, phantom.affine, shape, fine_affine, order=0) for k, v in truth.items()}
    maps, _, resampled = align_reference(fine, {k: fine_affine for k in fine}, truth["cbf"].shape, phantom.affine)
    assert resampled == ["cbf", "cbv", "mtt", "tmax"]
    rows = {r["map"]: r for r in _compare(phantom, dict(truth), maps).maps}
    assert rows["cbf"]["pearson_r"] > 0.9


def test_a_reference_elsewhere_in_the_world_is_refused(phantom):
    far = phantom.affine.copy()
    far[:3, 3] += 1000.0
    with pytest.raises(AgreementError, match="does not overlap"):
        resample_to_grid(truth_reference_maps(phantom)["cbf"], far, phantom.labels.shape, phantom.affine)


def test_units_that_are_not_the_conventions_are_named(phantom):
    truth = truth_reference_maps(phantom)
    tissue = truth["cbf"] > 0
    assert all(check_reference_units(n, v, tissue, 1.0) is None for n, v in truth.items())
    assert "ms" in check_reference_units("tmax", 1000 * truth["tmax"] + 2000, tissue)
    assert "ms" in check_reference_units("mtt", 1000 * truth["mtt"], tissue)
    display = np.round(255 * truth["cbf"] / truth["cbf"].max()).astype(np.uint8)
    assert "0-255" in check_reference_units("cbf", display, tissue, dtype=np.uint8)
    assert "0-255" in check_reference_units("cbf", display.astype(np.float32), tissue)
    frames = np.round(truth["tmax"] / 2.0)  # Tmax counted in frames of 2 s
    assert "frames" in check_reference_units("tmax", frames, tissue, frame_interval_s=2.0)
    with pytest.raises(AgreementError, match="other units"):
        agreement.check_reference({"cbf": truth["cbf"], "tmax": 1000 * truth["tmax"] + 2000}, tissue)


def test_icc_is_the_absolute_agreement_single_measure_form():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 100, 20)
    b = 0.9 * a + 5 + rng.normal(0, 5, 20)
    x = np.column_stack([a, b])
    n, k = x.shape
    grand = x.mean()
    ms_rows = k * ((x.mean(1) - grand) ** 2).sum() / (n - 1)
    ms_cols = n * ((x.mean(0) - grand) ** 2).sum() / (k - 1)
    ms_error = ((x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + grand) ** 2).sum() / ((n - 1) * (k - 1))
    expected = (ms_rows - ms_error) / (ms_rows + (k - 1) * ms_error + k * (ms_cols - ms_error) / n)  # McGraw-Wong A,1
    icc, low, high = icc_absolute_agreement(a, b)
    assert icc == pytest.approx(expected, rel=1e-9)
    assert low < icc < high
    assert icc_absolute_agreement(a, a + 10)[0] < icc_absolute_agreement(a, a)[0] == pytest.approx(1.0)


def test_bland_altman_of_a_constant_offset():
    row = bland_altman([5.0, 10, 20, 40], [3.0, 8, 18, 38])
    assert (row["bias"], row["sd"], row["loa_low"], row["loa_high"]) == (2.0, 0.0, 2.0, 2.0)
    row = bland_altman([1.0, 3.0], [0.0, 0.0])
    assert row["bias"] == 2.0 and row["loa_high"] == pytest.approx(2.0 + 1.96 * math.sqrt(2.0))


def test_cohen_kappa_matches_its_definition():
    ours = np.array([1, 1, 1, 0, 0, 0, 1, 0, 1, 1], bool)
    ref = np.array([1, 1, 0, 0, 0, 1, 1, 0, 1, 1], bool)
    observed = np.mean(ours == ref)
    expected = ours.mean() * ref.mean() + (1 - ours.mean()) * (1 - ref.mean())
    row = cohen_kappa(ours, ref)
    assert row["kappa"] == pytest.approx((observed - expected) / (1 - expected))
    assert row["kappa_low"] < row["kappa"] < row["kappa_high"]
    assert math.isnan(cohen_kappa(np.ones(4, bool), np.ones(4, bool))["kappa"])  # both always call it


def test_target_mismatch_calls_are_triages_on_the_summary_volumes(phantom):
    from ctp_nipype.perfusion import triage

    truth = truth_reference_maps(phantom)
    s = _compare(phantom, dict(truth), distort_reference(truth, tmax_shift_s=-3.0)).summary  # lesion at 5 s
    for label in ("ours", "reference"):
        for profile, criteria in (("defuse3", triage.DEFUSE3), ("extend", triage.EXTEND)):
            expected = criteria.met(s[f"core_ml_{label}"], s[f"mismatch_ratio_{label}"], s[f"mismatch_ml_{label}"])
            assert s[f"{profile}_{label}"] == expected
    assert s["defuse3_ours"] and not s["defuse3_reference"]  # the reference sees no Tmax > 6 s at all
    assert s["hypoperfused_ml_reference"] == 0.0


# ----------------------------------------------------------------------------------------------
# ctp-compare on phantom datasets in ISLES layouts


def _write_ours(out, prefix, subdir, ph, maps, methods=("ssvd",)):
    from ctp_nipype.io import write_nifti

    folder = out / subdir / "perf"
    for method in methods:
        for name, values in maps.items():
            name = "bad" if (method == "transformer" and name == "tmax") else name
            write_nifti(folder / f"{prefix}_desc-{method}_{name}.nii.gz", values, ph.affine)
    for name, mask in _masks(ph).items():
        name = {"vessels": "vessel"}.get(name, name)
        write_nifti(folder / f"{prefix}_desc-{name}_mask.nii.gz", mask, ph.affine, dtype=np.uint8)


def _tsv(path):
    import csv

    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


@pytest.fixture(scope="module")
def isles2018_phantoms():
    # lesion size and side vary with the seed, so the volumes vary across cases
    return [make_isles_phantom(seed=s, noise_sd_hu=0) for s in (0, 1, 2, 5, 6)]


def test_compare_command_on_an_isles2018_phantom(tmp_path, isles2018_phantoms, capsys):
    from ctp_nipype.cli.compare import main as compare
    from ctp_nipype.cli.convert_datasets import main as convert
    from ctp_nipype.sims.isles import write_isles2018_case

    phantoms = isles2018_phantoms
    for number, ph in enumerate(phantoms, start=1):
        reference = distort_reference(truth_reference_maps(ph), cbf_scale=1.25, tmax_shift_s=3.0)
        if number == 3:  # Tmax in ms: detected, the case is left out
            reference["tmax"] = reference["tmax"] * 1000 + 2000 * (reference["cbf"] > 0)
        write_isles2018_case(tmp_path / "TRAINING", number, ph, reference=reference)
    assert convert(["isles2018", str(tmp_path / "TRAINING"), str(tmp_path / "bids")]) == 0
    out = tmp_path / "out"
    for number, ph in enumerate(phantoms, start=1):
        if number != 4:  # case 4: the reference only
            _write_ours(out, f"sub-case{number:03d}", f"sub-case{number:03d}", ph, truth_reference_maps(ph),
                        methods=("ssvd", "transformer"))
    _write_ours(out, "sub-case009", "sub-case009", phantoms[0], truth_reference_maps(phantoms[0]))  # ours only
    capsys.readouterr()
    assert compare([str(out), str(tmp_path / "bids" / "derivatives" / "reference"), str(tmp_path / "cmp")]) == 0
    err = capsys.readouterr().err
    assert "sub-case003 left out: reference maps in other units? tmax: median" in err
    assert "sub-case004 left out: reference only" in err and "sub-case009 left out: ours only" in err

    cmp = tmp_path / "cmp"
    cases = _tsv(cmp / "agreement_desc-cases_stats.tsv")
    assert sorted({(c["scan"], c["method"]) for c in cases}) == [
        (f"sub-case00{n}", m) for n in (1, 2, 5) for m in ("ssvd", "transformer")]
    for case in cases:  # CBF scaled: same relative core; Tmax 8 -> 11 s: same region above 6 s
        assert float(case["dice_core"]) == 1.0 and float(case["dice_hypoperfused"]) == 1.0
        assert float(case["dice_lesion_core_ours"]) == 1.0
    maps = {(r["scan"], r["method"], r["map"]): r for r in _tsv(cmp / "agreement_desc-maps_stats.tsv")}
    row = maps[("sub-case001", "transformer", "tmax")]
    assert row["our_map"] == "bad" and float(row["pearson_r"]) == pytest.approx(1.0, abs=1e-6)
    assert float(row["mean_difference"]) == pytest.approx(-3.0, abs=1e-4)
    volumes = {(r["method"], r["measure"]): r for r in _tsv(cmp / "agreement_desc-volumesummary_stats.tsv")}
    assert float(volumes[("ssvd", "core")]["icc"]) == pytest.approx(1.0)
    assert float(volumes[("ssvd", "core")]["bias"]) == 0.0
    sweep = {(r["method"], r["region"], r["threshold"]): r for r in _tsv(cmp / "agreement_desc-thresholdsummary_stats.tsv")}
    assert float(sweep[("ssvd", "hypoperfused", "8")]["dice_mean"]) == 0.0  # the shift shows past 8 s
    side = json.loads((cmp / "agreement_desc-volumesummary_stats.json").read_text())
    assert set(side["CasesLeftOut"]) == {"sub-case003", "sub-case004", "sub-case009"}
    assert "pingouin" in side["icc"]["Description"]
    html = (cmp / "agreement_report.html").read_text()
    assert "Cases left out" in html and "sub-case003" in html and html.count("<img") == 4  # per method: volumes, voxel densities


def test_compare_command_brings_the_ncct_lesion_onto_the_native_grid(tmp_path, phantom):
    from ctp_nipype.cli.compare import main as compare
    from ctp_nipype.cli.convert_datasets import main as convert
    from ctp_nipype.sims.isles import write_isles2024_case

    write_isles2024_case(tmp_path / "isles24", 7, phantom)
    assert convert(["isles2024", str(tmp_path / "isles24"), str(tmp_path / "bids")]) == 0
    _write_ours(tmp_path / "out", "sub-stroke0007_ses-01", "sub-stroke0007/ses-01", phantom,
                truth_reference_maps(phantom))
    assert compare([str(tmp_path / "out"), str(tmp_path / "bids" / "derivatives" / "reference"),
                    str(tmp_path / "cmp")]) == 0
    (case,) = _tsv(tmp_path / "cmp" / "agreement_desc-cases_stats.tsv")
    assert case["resampled"] == "lesion"  # the follow-up mask lies in NCCT space (stored flipped)
    assert float(case["dice_lesion_core_ours"]) == 1.0 and float(case["dice_core"]) == 1.0
    # icobrain's Tmax fill (-30) outside the brain is left out, so r stays 1
    for row in _tsv(tmp_path / "cmp" / "agreement_desc-maps_stats.tsv"):
        assert float(row["pearson_r"]) == pytest.approx(1.0, abs=1e-6)


def test_compare_command_with_nothing_to_compare_says_so(tmp_path, capsys):
    from ctp_nipype.cli.compare import main as compare

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert compare([str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c")]) == 2
    assert "No maps of ours" in capsys.readouterr().err
    assert compare([str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "b" / "c")]) == 2
    assert "lies inside the input dataset" in capsys.readouterr().err  # nothing written into the reference
    assert not (tmp_path / "b" / "c").exists()


@pytest.mark.slow
def test_end_to_end_isles2018_phantom_through_the_bids_app(tmp_path):
    """ctp-convert, the BIDS App's participant level (sSVD) and ctp-compare on one small noise-free phantom in
    ISLES 2018's layout, against the truth-derived reference. Measured 2026-12-07: voxelwise Pearson r CBF 0.75,
    CBV 0.74, MTT 0.97, Tmax 0.90; Tmax > 6 s Dice 0.91; core 13.8 ml against 5.4 ml (Dice 0.56): on 4 mm voxels
    the guided filter and partial volume blur the small core into its surroundings."""
    from ctp_nipype.cli import bids_app
    from ctp_nipype.cli.compare import main as compare
    from ctp_nipype.cli.convert_datasets import main as convert
    from ctp_nipype.sims.isles import write_isles2018_case

    write_isles2018_case(tmp_path / "TRAINING", 1, make_isles_phantom(seed=4, noise_sd_hu=0))
    bids, out = tmp_path / "bids", tmp_path / "out"
    assert convert(["isles2018", str(tmp_path / "TRAINING"), str(bids)]) == 0
    assert bids_app.main([str(bids), str(out), "participant", "--methods", "ssvd", "-w", str(tmp_path / "work"),
                          "--nprocs", "1"]) == 0
    assert compare([str(out), str(bids / "derivatives" / "reference"), str(tmp_path / "cmp")]) == 0
    maps = {r["map"]: r for r in _tsv(tmp_path / "cmp" / "agreement_desc-maps_stats.tsv")}
    (case,) = _tsv(tmp_path / "cmp" / "agreement_desc-cases_stats.tsv")
    assert float(maps["cbf"]["pearson_r"]) > 0.65 and float(maps["cbv"]["pearson_r"]) > 0.65
    assert float(maps["tmax"]["pearson_r"]) > 0.8 and float(case["dice_hypoperfused"]) > 0.8
    assert float(case["dice_lesion_core_reference"]) == 1.0  # the truth's core is the lesion


# ----------------------------------------------------------------------------------------------
# invariances (hypothesis)

# whole numbers: distinct values stay distinct after the change of units (no ties made by rounding)
_values = arrays(np.float64, st.integers(5, 60), elements=st.integers(-100, 100).map(float))


@settings(max_examples=40, deadline=None)
@given(_values, st.floats(0.1, 10), st.floats(-50, 50))
def test_voxelwise_r_is_invariant_to_a_positive_affine_change_of_units(x, scale, offset):
    from ctp_nipype.perfusion.agreement import voxelwise_agreement

    if np.ptp(x) < 1e-3:
        return  # a constant map has no correlation
    row = voxelwise_agreement(x, scale * x + offset, np.ones(x.size, bool))
    assert row["pearson_r"] == pytest.approx(1.0, abs=1e-6)
    assert row["spearman_r"] == pytest.approx(1.0, abs=1e-9)
    flipped = voxelwise_agreement(x, -scale * x + offset, np.ones(x.size, bool))
    assert flipped["pearson_r"] == pytest.approx(-1.0, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(_values, st.floats(-20, 20))
def test_bland_altman_bias_is_the_offset(x, offset):
    row = bland_altman(x + offset, x)
    assert row["bias"] == pytest.approx(offset, abs=1e-9)
    assert row["sd"] == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=2, max_size=40))
def test_cohen_kappa_is_symmetric_and_bounded(pairs):
    a, b = (np.array(v, bool) for v in zip(*pairs))
    ab, ba = cohen_kappa(a, b), cohen_kappa(b, a)
    if math.isnan(ab["kappa"]):
        assert math.isnan(ba["kappa"])
        return
    assert ab["kappa"] == pytest.approx(ba["kappa"])
    assert -1.0 - 1e-12 <= ab["kappa"] <= 1.0 + 1e-12
    assert (ab["kappa"] == pytest.approx(1.0)) == bool(np.all(a == b))
