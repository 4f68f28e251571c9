"""Region statistics and the group comparison, against known truth (phantom and constructed data)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import wilcoxon

from ctp_nipype.interfaces.stats import GroupStats, MapStats, parse_map_filename
from ctp_nipype.io import InputError, read_table_tsv, write_nifti
from ctp_nipype.perfusion import stats
from ctp_nipype.sims.phantom import PhantomLabel, make_phantom
from ctp_nipype.validation import label_mask

from helpers import SVD_METHODS, svd_maps, write_phantom_inputs

def rows_by_key(rows):
    return {(r["region"], r["method"], r["map"]): r for r in rows}


# ----------------------------------------------------------------------------------------------
# science


def test_describe_matches_numpy_and_ignores_non_finite():
    rng = np.random.default_rng(0)
    values = rng.gamma(3.0, 10.0, 1001)
    row = stats.describe(np.concatenate([values, [np.nan, np.inf]]), voxel_volume_ml=0.08)
    assert row["n_voxels"] == 1001
    assert row["volume_ml"] == pytest.approx(1001 * 0.08)
    assert row["mean"] == pytest.approx(values.mean())
    assert row["sd"] == pytest.approx(values.std(ddof=1))
    assert row["median"] == pytest.approx(np.median(values))
    for q in stats.PERCENTILES:
        assert row[f"p{q:02d}"] == pytest.approx(np.percentile(values, q))
    empty = stats.describe(np.array([]))
    assert empty["n_voxels"] == 0 and math.isnan(empty["mean"])


def test_hemispheres_follow_world_coordinates_not_voxel_order():
    brain = np.zeros((10, 4, 2), bool)
    brain[1:9] = True
    ras = np.eye(4)
    las = np.diag([-1.0, 1, 1, 1])  # x stored right-to-left
    left_ras, right_ras, mid = stats.hemisphere_masks(brain, ras)
    left_las, right_las, _ = stats.hemisphere_masks(brain, las)
    assert mid == pytest.approx(4.5)
    assert left_ras[1:5].all() and not left_ras[5:].any()
    np.testing.assert_array_equal(left_las, right_ras)  # the same voxels are the subject's right in the RAS file
    assert left_ras.sum() == right_ras.sum() == 4 * 4 * 2
    shifted, _, _ = stats.hemisphere_masks(brain, ras, midline_mm=2.5)
    assert shifted.sum() == 2 * 4 * 2
    with pytest.raises(ValueError, match="brain mask is empty"):
        stats.hemisphere_masks(np.zeros_like(brain), ras)


def test_phantom_hemispheres_and_regions_exclude_csf_and_vessels(clean_small_phantom):
    ph = clean_small_phantom
    csf, vessels = label_mask(ph, PhantomLabel.CSF), label_mask(ph, PhantomLabel.ARTERY, PhantomLabel.VEIN)
    regions, midline = stats.build_regions(
        ph.brain_mask, ph.affine, grey_matter=label_mask(ph, PhantomLabel.GREY_MATTER), csf=csf, vessels=vessels,
        lesion=label_mask(ph, PhantomLabel.CORE, PhantomLabel.PENUMBRA),
    )
    assert abs(midline) < 4.0  # the MNI brain is centred on x = 0 (one 4 mm voxel)
    tissue = label_mask(ph, *stats_perfused())
    np.testing.assert_array_equal(regions["brain"], tissue)
    assert not (regions["brain"] & (csf | vessels)).any()
    lesion_side = ph.parameters["lesion"]["hemisphere"]
    other = "left" if lesion_side == "right" else "right"
    lesion = label_mask(ph, PhantomLabel.CORE, PhantomLabel.PENUMBRA)
    assert (regions[lesion_side] & lesion).sum() == lesion.sum()
    assert not (regions[other] & lesion).any()
    np.testing.assert_array_equal(regions["ischemic"] | regions["normal"], tissue)
    with pytest.raises(ValueError, match="already a region name"):
        stats.build_regions(ph.brain_mask, ph.affine, rois={"brain": tissue})


def stats_perfused():
    return (PhantomLabel.GREY_MATTER, PhantomLabel.WHITE_MATTER, PhantomLabel.CORE, PhantomLabel.PENUMBRA)


def test_region_statistics_of_true_maps_are_the_truth():
    ph = make_phantom("small", seed=2, noise_sd_hu=0)
    gm = label_mask(ph, PhantomLabel.GREY_MATTER)
    rows = stats.region_statistics({("truth", "cbf"): ph.cbf, ("truth", "mtt"): ph.mtt}, {"gm": gm}, 0.08)
    by_key = rows_by_key(rows)
    cbf = by_key[("gm", "truth", "cbf")]
    assert cbf["units"] == "ml/100g/min"
    assert cbf["n_voxels"] == gm.sum() and cbf["volume_ml"] == pytest.approx(gm.sum() * 0.08)
    assert cbf["mean"] == pytest.approx(ph.cbf[gm].mean(), rel=1e-6)
    assert cbf["p95"] == pytest.approx(np.percentile(ph.cbf[gm], 95), rel=1e-6)
    # the phantom's grey matter: CBF 60 with a 10% smooth field, MTT 4 s
    assert 55 < cbf["median"] < 65
    assert by_key[("gm", "truth", "mtt")]["sd"] == pytest.approx(0.0, abs=1e-5)


def test_svd_region_means_match_the_phantom_within_each_methods_accuracy(clean_small_phantom):
    """Noise-free phantom, true AIF: CBV is exact (areas), CBF within the SVD family's bias."""
    ph = clean_small_phantom
    maps = svd_maps(ph)
    regions = {
        "gm": label_mask(ph, PhantomLabel.GREY_MATTER),
        "wm": label_mask(ph, PhantomLabel.WHITE_MATTER),
        "ischemic": label_mask(ph, PhantomLabel.CORE, PhantomLabel.PENUMBRA),
    }
    by_key = rows_by_key(stats.region_statistics(maps, regions, 0.08))
    cbf_tolerance = {"ssvd": 0.10, "csvd": 0.20, "osvd": 0.10}
    for method in SVD_METHODS:
        for region, mask in regions.items():
            assert by_key[(region, method, "cbv")]["mean"] == pytest.approx(ph.cbv[mask].mean(), rel=0.01)
        for region in ("gm", "wm"):  # no delay: CBF within the method's accuracy
            truth = ph.cbf[regions[region]].mean()
            assert by_key[(region, method, "cbf")]["mean"] == pytest.approx(truth, rel=cbf_tolerance[method])
        # delayed, dispersed ischemic tissue: every SVD method underestimates CBF (here by about 20%)
        ischemic = by_key[("ischemic", method, "cbf")]["mean"] / ph.cbf[regions["ischemic"]].mean()
        assert 0.7 < ischemic < 0.9


# ----------------------------------------------------------------------------------------------
# group comparison


def test_group_comparison_matches_a_direct_computation():
    rng = np.random.default_rng(3)
    reference = rng.normal(35.0, 5.0, 12)
    network = reference * 1.4 + rng.normal(0, 1.0, 12)
    csvd = reference + rng.normal(0, 1.0, 12)
    records = [
        {"scan": f"sub-{i:02d}", "region": "normal", "method": method, "map": "cbf", "units": "ml/100g/min", "mean": v}
        for method, values in (("transformer", network), ("ssvd", reference), ("csvd", csvd))
        for i, v in enumerate(values)
    ]
    # one scan without the network: the pairing must drop it
    records = [r for r in records if not (r["scan"] == "sub-11" and r["method"] == "transformer")]
    summary, pairs = stats.group_comparison(records)
    by_method = {row["method"]: row for row in summary}
    assert [row["method"] for row in summary] == ["ssvd", "csvd", "transformer"]
    net = by_method["transformer"]
    assert net["n_scans"] == 11 and net["n_pairs"] == 11
    assert net["mean"] == pytest.approx(network[:11].mean())
    assert net["deviation"] == pytest.approx(network[:11].mean() - reference[:11].mean())
    assert net["deviation_percent"] == pytest.approx(100 * (network[:11].mean() / reference[:11].mean() - 1))
    assert 30 < net["deviation_percent"] < 50
    assert net["p_value"] == pytest.approx(wilcoxon(network[:11], reference[:11]).pvalue)
    assert net["p_value"] < 0.001
    assert by_method["ssvd"]["deviation"] == 0.0 and math.isnan(by_method["ssvd"]["p_value"])
    assert len(pairs) == 3
    pair = next(p for p in pairs if {p["method_a"], p["method_b"]} == {"ssvd", "csvd"})
    assert pair["p_value"] == pytest.approx(wilcoxon(reference, csvd).pvalue)


def test_without_ssvd_the_group_comparison_refers_to_the_first_method_of_the_paper_order():
    # the BIDS App's default methods (osvd, transformer): deviations must still be computed, against oSVD
    rng = np.random.default_rng(5)
    osvd = rng.normal(30.0, 4.0, 8)
    network = osvd + 10.0 + rng.normal(0, 1.0, 8)
    records = [
        {"scan": f"sub-{i:02d}", "region": "normal", "method": method, "map": "cbf", "units": "ml/100g/min", "mean": v}
        for method, values in (("transformer", network), ("osvd", osvd)) for i, v in enumerate(values)
    ]
    summary, _ = stats.group_comparison(records)
    net = next(row for row in summary if row["method"] == "transformer")
    assert {row["reference"] for row in summary} == {"osvd"}
    assert net["deviation"] == pytest.approx(network.mean() - osvd.mean())
    assert net["p_value"] == pytest.approx(wilcoxon(network, osvd).pvalue)
    # an explicit reference is kept, even one that is absent (then no deviations)
    summary, _ = stats.group_comparison(records, reference="ssvd")
    assert all(math.isnan(row["deviation"]) and row["reference"] == "ssvd" for row in summary)
    assert stats.resolve_reference(["transformer", "csvd", "ssvd"]) == "ssvd"
    with pytest.raises(ValueError, match="No methods"):
        stats.resolve_reference([])


def test_paired_wilcoxon_edge_cases():
    assert stats.paired_wilcoxon([1.0], [2.0])[0] == 1 and math.isnan(stats.paired_wilcoxon([1.0], [2.0])[2])
    assert stats.paired_wilcoxon([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])[2] == 1.0
    n, _, _ = stats.paired_wilcoxon([1.0, np.nan, 3.0, 4.0], [2.0, 2.0, np.inf, 5.0])
    assert n == 2


# ----------------------------------------------------------------------------------------------
# interfaces


def test_mapstats_interface_writes_bids_tsv_and_json(clean_small_phantom, tmp_path):
    ph = clean_small_phantom
    maps = svd_maps(ph, ("ssvd", "osvd"))
    map_files, masks = write_phantom_inputs(tmp_path, ph, maps)
    roi = label_mask(ph, PhantomLabel.CORE)
    roi_file = tmp_path / "sub-01_label-core_mask.nii.gz"
    write_nifti(roi_file, roi.astype(np.uint8), ph.affine, dtype=np.uint8)
    work = tmp_path / "work"
    work.mkdir()
    result = MapStats(
        map_files=map_files, brain_mask=masks["brain"], gm_mask=masks["gm"], wm_mask=masks["wm"],
        csf_mask=masks["csf"], vessel_mask=masks["vessel"], lesion_mask=masks["lesion"], roi_masks=[str(roi_file)],
    ).run(cwd=str(work))
    out_tsv = result.outputs.out_tsv
    assert out_tsv.endswith("sub-01_desc-regions_stats.tsv")
    with open(out_tsv, newline="") as handle:
        header = next(csv.reader(handle, delimiter="\t"))
    assert header == ["region", "method", "map", "units"] + list(stats.STAT_COLUMNS)
    rows = read_table_tsv(out_tsv)
    regions = list(dict.fromkeys(r["region"] for r in rows))
    assert regions == ["brain", "gm", "wm", "left", "right", "normal", "ischemic", "core"]
    assert len(rows) == len(regions) * 2 * 4
    by_key = rows_by_key(rows)
    core = by_key[("core", "osvd", "cbv")]
    assert int(core["n_voxels"]) == roi.sum()
    assert float(core["volume_ml"]) == pytest.approx(roi.sum() * 0.08, rel=1e-5)
    assert float(core["mean"]) == pytest.approx(ph.cbv[roi].mean(), rel=0.01)
    assert by_key[("brain", "osvd", "tmax")]["units"] == "s"
    sidecar = json.loads((work / "sub-01_desc-regions_stats.json").read_text())
    assert sidecar["volume_ml"]["Units"] == "ml"
    assert sidecar["MapUnits"]["cbf"] == "ml/100g/min"
    assert "world" in sidecar["HemisphereSplit"]
    assert set(sidecar["region"]["Levels"]) == set(regions)


def test_mapstats_rejects_unnamed_maps_and_other_grids(clean_small_phantom, tmp_path):
    ph = clean_small_phantom
    _, masks = write_phantom_inputs(tmp_path, ph, {})
    bad_name = tmp_path / "cbf.nii.gz"
    write_nifti(bad_name, ph.cbf, ph.affine)
    with pytest.raises(InputError, match="desc-<method>_<map>"):
        MapStats(map_files=[str(bad_name)], brain_mask=masks["brain"]).run(cwd=str(tmp_path))
    small = tmp_path / "sub-01_desc-osvd_cbf.nii.gz"
    write_nifti(small, ph.cbf[:30], ph.affine)
    with pytest.raises(InputError, match="shape"):
        MapStats(map_files=[str(small)], brain_mask=masks["brain"]).run(cwd=str(tmp_path))
    assert parse_map_filename(small) == ("sub-01", "osvd", "cbf")


def test_groupstats_over_phantom_scans(tmp_path):
    """Three phantom scans: sSVD against oSVD; the TSVs, the HTML and the test agree with a direct computation."""
    tsvs = []
    per_scan = []
    for seed in (0, 1, 2, 3, 4, 5):
        ph = make_phantom("small", seed=seed, noise_sd_hu=2.0)
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        maps = svd_maps(ph, ("ssvd", "osvd"))
        map_files, masks = write_phantom_inputs(folder, ph, maps, prefix=f"sub-{seed:02d}")
        result = MapStats(
            map_files=map_files, brain_mask=masks["brain"], csf_mask=masks["csf"], vessel_mask=masks["vessel"],
            lesion_mask=masks["lesion"],
        ).run(cwd=str(folder))
        tsvs.append(result.outputs.out_tsv)
        normal = label_mask(ph, PhantomLabel.GREY_MATTER, PhantomLabel.WHITE_MATTER)
        per_scan.append({m: maps[(m, "cbf")][normal].mean() for m in ("ssvd", "osvd")})
    work = tmp_path / "group"
    work.mkdir()
    result = GroupStats(in_files=tsvs).run(cwd=str(work))
    rows = read_table_tsv(result.outputs.out_tsv, required=("region", "method", "deviation_percent", "p_value"))
    row = next(r for r in rows if r["region"] == "normal" and r["map"] == "cbf" and r["method"] == "osvd")
    ssvd = np.array([s["ssvd"] for s in per_scan])
    osvd = np.array([s["osvd"] for s in per_scan])
    assert int(row["n_scans"]) == 6
    assert float(row["mean"]) == pytest.approx(osvd.mean(), rel=1e-4)
    assert float(row["deviation"]) == pytest.approx(osvd.mean() - ssvd.mean(), rel=1e-3, abs=1e-3)
    assert float(row["p_value"]) == pytest.approx(wilcoxon(osvd, ssvd).pvalue, rel=1e-4)
    pairs = read_table_tsv(result.outputs.out_pairs_tsv)
    assert {(p["method_a"], p["method_b"]) for p in pairs} == {("ssvd", "osvd")}
    assert {r["reference"] for r in rows} == {"ssvd"}
    html = open(result.outputs.out_html, encoding="utf-8").read()
    assert "Table 2" in html and "sub-05" in html and "<script" not in html


@settings(max_examples=60, deadline=None)
@given(shape=st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9)),
       row=st.lists(st.floats(-10, 10, allow_nan=False), min_size=4, max_size=4))
def test_world_x_is_bitwise_the_affine_applied_to_every_voxel_index(shape, row):
    """Broadcast per-axis terms: the very sums of the affine's first row over the full index grids."""
    affine = np.eye(4)
    affine[0] = row
    i, j, k = np.indices(shape, dtype=float)
    expected = affine[0, 0] * i + affine[0, 1] * j + affine[0, 2] * k + affine[0, 3]
    x = stats.world_x_mm(shape, affine)
    assert x.shape == shape
    np.testing.assert_array_equal(x, expected)


def test_region_statistics_reads_each_map_once_and_orders_rows_by_region():
    """A clinical scan's maps are read one at a time (FileBackedMaps): each map asked for once, rows as with a dict."""
    from ctp_nipype.io import FileBackedMaps
    from ctp_nipype.perfusion.stats import region_statistics

    rng = np.random.default_rng(3)
    arrays = {(m, n): rng.random((6, 5, 4)) for m in ("osvd", "ssvd") for n in ("cbf", "mtt")}
    regions = {"brain": np.ones((6, 5, 4), bool), "left": rng.random((6, 5, 4)) > 0.5}
    reads = []
    lazy = FileBackedMaps({k: k for k in arrays}, lambda key, path: reads.append(key) or arrays[path])
    assert region_statistics(lazy, regions, 0.1) == region_statistics(arrays, regions, 0.1)
    assert sorted(reads) == sorted(arrays) and len(reads) == len(arrays)
    rows = region_statistics(arrays, regions, 0.1)
    assert [r["region"] for r in rows] == ["brain"] * 4 + ["left"] * 4
    assert [(r["method"], r["map"]) for r in rows[:4]] == [("ssvd", "cbf"), ("ssvd", "mtt"), ("osvd", "cbf"), ("osvd", "mtt")]
