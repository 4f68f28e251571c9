"""Evaluation: batched SVD equals SVDModel, metrics on known inputs, plugins, ctp-evaluate end to end."""

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ctp_nipype.cli.evaluate import main as evaluate_main
from ctp_nipype.perfusion import evaluation
from ctp_nipype.perfusion.convolution import circulant_matrix, toeplitz_matrix
from ctp_nipype.perfusion.evaluation import (
    METHODS,
    deconvolve_svd_batch,
    evaluate,
    full_width_half_maximum,
    local_aif_metrics,
    markdown_table,
    pearson_rows,
    register_method,
    rmse,
    summarize,
    summary_rows,
)
from ctp_nipype.sims.simulate import simulate_curves
from ctp_nipype.perfusion.svd import SVDModel
from ctp_nipype.sims.testsets import make_test_sets


@settings(max_examples=30, deadline=None)
@given(aifs=arrays(np.float64, (3, 9), elements=st.floats(0, 500)), dt=st.floats(0.5, 2.0))
def test_matrix_stack_rows_are_the_single_aif_matrices(aifs, dt):
    toeplitz = toeplitz_matrix(aifs, dt)
    circulant = circulant_matrix(aifs, dt)
    assert toeplitz.shape == (3, 9, 9) and circulant.shape == (3, 18, 18)
    for i in range(3):
        np.testing.assert_allclose(toeplitz[i], toeplitz_matrix(aifs[i], dt))
        np.testing.assert_allclose(circulant[i], circulant_matrix(aifs[i], dt))


def _fits_curve_by_curve(sim, method, **options):
    return [SVDModel(sim.global_aif[i], sim.frame_times, method, **options).fit(sim.tissue[i : i + 1])
            for i in range(sim.n_curves)]


def _assert_equal_on_every_output(batch, fits, rtol, label):
    for key in ("cbf", "cbv", "mtt", "tmax", "threshold"):
        np.testing.assert_allclose(batch[key], [getattr(f, key)[0] for f in fits], rtol=rtol, atol=1e-6,
                                   err_msg=f"{label} {key}")
    np.testing.assert_array_equal(batch["flagged"], [f.flagged[0] for f in fits], err_msg=f"{label} flagged")
    np.testing.assert_allclose(batch["residue"], np.concatenate([f.residue for f in fits]), rtol=rtol * 10,
                               atol=1e-6, err_msg=f"{label} residue")


@pytest.mark.parametrize("ladder_stride", [1, 4])
def test_batched_svd_equals_svdmodel_curve_by_curve_on_every_output(ladder_stride):
    """One implementation: with the same ladder stride and precision the two paths agree on every output."""
    sim = simulate_curves(24, 5, frame_interval=1.0, n_frames=50, snr_db=15.0)
    batch = deconvolve_svd_batch(sim.global_aif, sim.tissue, sim.frame_times, chunk_size=10,
                                 ladder_stride=ladder_stride)
    for method in ("ssvd", "csvd", "osvd"):
        fits = _fits_curve_by_curve(sim, method, ladder_stride=ladder_stride, dtype=np.float64)
        _assert_equal_on_every_output(batch[method], fits, 1e-6, method)  # SVDFit holds float32 maps


def test_batched_svd_defaults_match_svdmodel_defaults():
    """Each path's defaults (float64 full sweep, float32 stride 4) give the same maps on the paper's curves."""
    sim = simulate_curves(24, 5, frame_interval=1.0, n_frames=50, snr_db=15.0)
    batch = deconvolve_svd_batch(sim.global_aif, sim.tissue, sim.frame_times, chunk_size=10)
    for method in ("ssvd", "csvd", "osvd"):
        _assert_equal_on_every_output(batch[method], _fits_curve_by_curve(sim, method), 1e-4, method)


def test_pure_noise_gives_no_negative_transit_time_on_either_path():
    """Noise without a bolus: CBV may come out negative, MTT is then 0 (never negative), the same on both paths."""
    rng = np.random.default_rng(3)
    sim = simulate_curves(200, 4, frame_interval=1.0, n_frames=60, snr_db=15.0)
    noise = rng.normal(0.0, 3.0, sim.tissue.shape)
    batch = deconvolve_svd_batch(sim.global_aif, noise, sim.frame_times)
    for method in ("ssvd", "csvd", "osvd"):
        result = batch[method]
        assert np.all(result["mtt"] >= 0), method
        negative_cbv = result["cbv"] < 0
        assert negative_cbv.sum() > 20, method  # the case the rule is for does occur
        assert np.all(result["mtt"][negative_cbv] == 0)
        assert np.all(result["mtt"][(result["cbf"] > 0) & (result["cbv"] > 0)] > 0)
        model = [SVDModel(sim.global_aif[i], sim.frame_times, method, ladder_stride=1, dtype=np.float64)
                 .fit(noise[i : i + 1]) for i in range(40)]
        np.testing.assert_allclose(result["mtt"][:40], [f.mtt[0] for f in model], rtol=1e-6, atol=1e-6)


def test_batched_svd_refuses_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        deconvolve_svd_batch(np.ones(10), np.ones((2, 10)), np.arange(10.0))
    with pytest.raises(ValueError, match="Unknown SVD method"):
        deconvolve_svd_batch(np.ones((2, 10)), np.ones((2, 10)), np.arange(10.0), methods=("tsvd",))


def test_metrics_on_known_inputs():
    assert rmse([3.0, -3.0], [0.0, 0.0]) == pytest.approx(3.0)
    np.testing.assert_allclose(pearson_rows([[1, 2, 3.0]], [[-5, -3, -1.0]]), [1.0])
    t = np.arange(0.0, 60.0, 0.05)
    sigma = 2.0
    gaussian = np.exp(-((t - 30.0) ** 2) / (2 * sigma**2))
    assert full_width_half_maximum(gaussian[None], t)[0] == pytest.approx(2 * np.sqrt(2 * np.log(2)) * sigma, abs=1e-3)
    # an estimate twice as wide, 20% lower and 3 s late
    estimate = 0.8 * np.exp(-((t - 33.0) ** 2) / (2 * (2 * sigma) ** 2))
    metrics = local_aif_metrics(estimate[None], gaussian[None], t)
    assert metrics["aif_peak_error"][0] == pytest.approx(-0.2)
    assert metrics["aif_ttp_error"][0] == pytest.approx(3.0)
    assert metrics["aif_fwhm_error"][0] == pytest.approx(2 * np.sqrt(2 * np.log(2)) * sigma, abs=1e-3)
    assert 0.5 < metrics["aif_r"][0] < 0.95
    summary = summarize({"cbf_true": np.array([10.0, 40.0]), "cbf_est": np.array([5.0, 60.0]),
                         "delay_true": np.array([1.0, 2.0]), "delay_est": np.array([1.0, 6.0]), **metrics})
    assert summary["cbf_rmse"] == pytest.approx(np.sqrt((25 + 400) / 2))
    assert summary["delay_rmse"] == pytest.approx(np.sqrt(8.0))
    assert summary["cbf_ratio_mean"] == pytest.approx(1.0)
    assert summary["cbf_ratio_sd"] == pytest.approx(np.std([0.5, 1.5], ddof=1))
    assert summary["aif_ttp_error_mean"] == pytest.approx(3.0)


def test_an_oracle_plugin_scores_perfectly_and_svd_scores_like_svd():
    sets = make_test_sets((2, 4), n_curves=110)
    truth = {}

    def oracle(global_aif, tissue, frame_times):
        sim = truth[tissue.shape[1]]
        return {"cbf": sim.cbf, "delay": sim.delay, "local_aif": sim.local_aif}

    for groups in sets.values():
        for sim in groups:
            truth[sim.n_frames] = sim  # one grid per frame count in these sets
    register_method("oracle", oracle)
    try:
        result = evaluate({4: sets[4]}, ["oracle", "osvd"])
    finally:
        del METHODS["oracle"]
    perfect = result.summary("oracle", 4)
    assert perfect["cbf_rmse"] == 0 and perfect["delay_rmse"] == 0 and perfect["cbf_ratio_mean"] == pytest.approx(1)
    assert perfect["aif_r_mean"] == pytest.approx(1.0) and perfect["aif_fwhm_error_mean"] == 0
    osvd = result.summary("osvd", 4)
    assert 0 < osvd["cbf_rmse"] < 30 and 0.5 < osvd["cbf_ratio_mean"] < 1.2 and "aif_r_mean" not in osvd
    levels = [level for level, _ in result.by_level("osvd", 4)]
    assert levels == [1.0, 1.1, 1.3, 1.6, 2.0]
    table = markdown_table(summary_rows(result))
    assert "| #4 frame interval | oracle | 110 | 0.00 | 0.00 | 1.00 ± 0.00 | 1.00 ± 0.00 |" in table


def test_transformer_is_registered_by_the_network_and_its_errors_are_clear(monkeypatch):
    aif, tissue, t = np.ones((2, 10)), np.ones((2, 10)), np.arange(10.0)
    import ctp_nipype.nn.inference as inference

    assert METHODS["transformer"] is inference.transformer_method
    monkeypatch.delitem(METHODS, "transformer")
    with pytest.raises(ValueError, match="registered by importing ctp_nipype.nn.inference"):
        evaluation.run_methods(["transformer"], aif, tissue, t)
    monkeypatch.undo()

    def one_aif_only(global_aif, *args, **kwargs):
        raise ValueError("The global AIF must be one curve (1D)")

    monkeypatch.setattr(inference, "estimate_curves", one_aif_only)
    with pytest.raises(RuntimeError, match="one global AIF per curve"):
        inference.transformer_method(aif, tissue, t)


def test_ctp_evaluate_says_when_the_network_cannot_be_imported(tmp_path, monkeypatch, capsys):
    monkeypatch.delitem(METHODS, "transformer", raising=False)
    monkeypatch.setitem(sys.modules, "ctp_nipype.nn.inference", None)  # import fails, as without torch
    assert evaluate_main([str(tmp_path), "--n-curves", "11", "--sets", "2", "--methods", "transformer"]) != 0
    assert "needs torch" in capsys.readouterr().err


def test_ctp_evaluate_writes_table_tsv_and_figures(tmp_path, capsys):
    assert evaluate_main([str(tmp_path), "--n-curves", "44", "--sets", "2", "5", "--methods", "ssvd", "csvd",
                          "--quiet"]) == 0
    for name in ("evaluation.md", "evaluation.tsv", "evaluation_levels.tsv", "figure4_cbf_rmse.png",
                 "figure5_delay_rmse.png", "evaluation.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    rows = (tmp_path / "evaluation.tsv").read_text().splitlines()
    header = rows[0].split("\t")
    assert header[:3] == ["set", "method", "n"] and "cbf_rmse" in header
    assert len(rows) == 1 + 2 * 2 + 2 * 2  # sets x methods, then mean-of-sets and pooled rows
    levels = (tmp_path / "evaluation_levels.tsv").read_text().splitlines()
    assert len(levels) == 1 + (11 + 2) * 2
    assert (tmp_path / "figure4_cbf_rmse.png").read_bytes()[:4] == b"\x89PNG"
    assert "| #2 delay | ssvd | 44 |" in (tmp_path / "evaluation.md").read_text()
    assert evaluate_main([str(tmp_path), "--methods", "nope"]) == 2
    assert "Unknown method" in capsys.readouterr().err
