"""estimate_curves (numpy in, numpy out) and the shipped weights against sSVD on simulated curves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hypothesis import given, settings
from hypothesis import strategies as st

from ctp_nipype.nn.inference import estimate_curves
from ctp_nipype.nn.model import ModelConfig, PerfusionTransformer
from ctp_nipype.nn.weights import (
    SHIPPED_WEIGHTS,
    MAX_WEIGHTS_BYTES,
    load_model,
    save_weights,
    shipped_weights_available,
)
from ctp_nipype.perfusion.constants import KAPPA_H, RHO


@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(1)
    return PerfusionTransformer().eval()


def _curves(n=6, frames=50, dt=1.0):
    t = np.arange(frames) * dt
    aif = 300 * np.exp(-0.5 * ((t - 12) / 3) ** 2)
    rng = np.random.default_rng(0)
    tissue = 20 * rng.random((n, 1)) * np.exp(-0.5 * ((t - 16) / 6) ** 2) + rng.normal(0, 1, (n, frames))
    return aif, tissue, t


def test_one_aif_for_all_equals_one_aif_per_curve(untrained):
    aif, tissue, t = _curves()
    shared = estimate_curves(aif, tissue, t, model=untrained)
    each = estimate_curves(np.tile(aif, (tissue.shape[0], 1)), tissue, t, model=untrained)
    for key in shared:
        np.testing.assert_allclose(shared[key], each[key], rtol=1e-4, atol=1e-6)


def test_outputs_are_in_the_conventions_units(untrained):
    aif, tissue, t = _curves(dt=1.5)
    out = estimate_curves(aif, tissue, t, model=untrained, batch_size=4)
    assert out["residue"].shape == tissue.shape and out["local_aif"].shape == tissue.shape
    np.testing.assert_allclose(out["cbf"], 6000 * KAPPA_H / RHO * out["residue"].max(axis=1), rtol=1e-5)
    # CBV from the areas of the tissue curve and the AIF (the conventions), not from the residue
    cbv = 100 * KAPPA_H / RHO * np.trapezoid(tissue, dx=1.5, axis=1) / np.trapezoid(aif, dx=1.5)
    np.testing.assert_allclose(out["cbv"], np.where(out["cbf"] > 0, cbv, 0.0), rtol=1e-5, atol=1e-7)
    positive = (out["cbv"] > 0) & (out["cbf"] > 0)
    np.testing.assert_allclose(out["mtt"][positive], 60 * out["cbv"][positive] / out["cbf"][positive], rtol=1e-4)
    assert np.all(out["mtt"][~positive] == 0)
    # scaling the HU of both inputs scales the local AIF and leaves K, CBF, BAD unchanged
    same_grid = estimate_curves(aif, tissue, t, model=untrained)
    scaled = estimate_curves(2 * aif, 2 * tissue, t, model=untrained)
    np.testing.assert_allclose(scaled["cbf"], same_grid["cbf"], rtol=1e-4)
    np.testing.assert_allclose(scaled["bad"], same_grid["bad"], rtol=1e-4)
    np.testing.assert_allclose(scaled["local_aif"], 2 * same_grid["local_aif"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["ssvd", "csvd", "osvd"])
def test_network_cbv_equals_the_svd_familys_and_the_truth_on_clean_curves(method):
    """Noise free, true AIF, whole curve inside the window: one formula on the same inputs gives one CBV."""
    from conftest import fine_grid_case

    from ctp_nipype.perfusion.svd import SVDModel

    model = load_model()
    cases = [(cbf, mtt, delay) for cbf, mtt in ((60.0, 4.0), (25.0, 6.0), (10.0, 5.0)) for delay in (0.0, 3.0)]
    for cbf, mtt, delay in cases:
        aif, tissue, t = fine_grid_case(cbf=cbf, mtt=mtt, delay=delay, dt=1.0, duration=100.0)
        network = estimate_curves(aif, tissue[None], t, model=model)
        svd = SVDModel(aif, t, method=method).fit(tissue[None])
        np.testing.assert_allclose(network["cbv"], svd.cbv, rtol=1e-5)
        assert network["cbv"][0] == pytest.approx(cbf * mtt / 60.0, rel=0.01)
        assert network["mtt"][0] == pytest.approx(60.0 * network["cbv"][0] / network["cbf"][0], rel=1e-5)


def test_specific_errors(untrained):
    aif, tissue, t = _curves()
    with pytest.raises(ValueError, match="uniformly spaced"):
        estimate_curves(aif, tissue, t ** 1.01, model=untrained)
    with pytest.raises(ValueError, match="no positive peak"):
        estimate_curves(-aif, tissue, t, model=untrained)
    with pytest.raises(ValueError, match="must have shape"):
        estimate_curves(aif, tissue[:, :10], t, model=untrained)


@pytest.mark.skipif(not shipped_weights_available(), reason=f"no trained weights shipped yet ({SHIPPED_WEIGHTS})")
def test_shipped_weights_beat_ssvd_on_delay_and_keep_a_physical_residue():
    """Fixed seed, 2,000 curves of the training ranges (CBF 0-200, MTT 3.4-24 s, 1 s frames over 80 s, 20 dB):
    the network's delay error is clearly below sSVD's Tmax error (RMSE <= 0.5x) and every residue is
    non-negative and non-increasing.

    CBF is not compared on this draw: read with the tissue-amplitude normalisation (shipped since 2026-12-07)
    the network's CBF error is a share of the flow at every flow (median ratio 1.14, IQR 1.03-1.29, measured
    2026-12-07), so its RMSE here is carried by the upper half of the range (CBF 100-200: 45.4 against sSVD's
    28.8; CBF 0-100: 16.9 against 11.3; docs/model_card.md). The CBF claim is on the paper's sets (below)."""
    from ctp_nipype.perfusion.evaluation import deconvolve_svd_batch, rmse
    from ctp_nipype.sims.simulate import simulate_curves

    assert SHIPPED_WEIGHTS.stat().st_size <= MAX_WEIGHTS_BYTES
    sim = simulate_curves(2000, np.random.default_rng(2026), frame_interval=1.0, n_frames=80, snr_db=20.0)
    net = estimate_curves(sim.global_aif, sim.tissue, sim.frame_times, model=load_model())
    ssvd = deconvolve_svd_batch(sim.global_aif, sim.tissue, sim.frame_times, methods=("ssvd",))["ssvd"]
    net_delay, svd_delay = rmse(net["bad"], sim.delay), rmse(ssvd["tmax"], sim.delay)
    print(f"delay RMSE {net_delay:.2f} s vs {svd_delay:.2f} s")
    assert net_delay <= 0.5 * svd_delay
    assert np.all(net["residue"] >= 0)
    assert np.all(np.diff(net["residue"], axis=1) <= 0)


@pytest.mark.skipif(not shipped_weights_available(), reason=f"no trained weights shipped yet ({SHIPPED_WEIGHTS})")
def test_shipped_weights_beat_ssvd_on_cbf_over_the_papers_sets():
    """The README's headline claim at a small size: over the paper's six test sets (300 curves each, their
    fixed seeds) the network's mean CBF RMSE is at most 0.85x sSVD's in the same draw (10,000 curves a set:
    7.07 against 10.49, measured 2026-12-07)."""
    import ctp_nipype.nn.inference  # noqa: F401  (registers 'transformer')
    from ctp_nipype.perfusion.evaluation import evaluate
    from ctp_nipype.sims.testsets import make_test_sets

    result = evaluate(make_test_sets(n_curves=300), ["ssvd", "transformer"])
    net, svd = (result.mean_of_sets(m)["cbf_rmse"] for m in ("transformer", "ssvd"))
    print(f"mean CBF RMSE over the six sets: network {net:.2f} vs sSVD {svd:.2f}")
    assert net <= 0.85 * svd


@pytest.mark.skipif(not shipped_weights_available(), reason=f"no trained weights shipped yet ({SHIPPED_WEIGHTS})")
def test_shipped_weights_are_linear_in_the_tissue_curve():
    """Issue 28: the shipped weights read each curve normalised by its own amplitude, so a quarter of the curve
    gives a quarter of the CBF, CBV and residue, the same MTT, BAD and local AIF (as deconvolution does)."""
    from ctp_nipype.sims.simulate import simulate_curves

    assert load_model().config.tissue_normalisation == "tissue_amplitude"
    rng = np.random.default_rng(28)  # CBF >= 20: a quarter of every curve stays above MIN_TISSUE_AMPLITUDE's floor
    sim = simulate_curves(200, rng, frame_interval=1.0, n_frames=80, snr_db=20.0, cbf=rng.uniform(20.0, 200.0, 200))
    once = estimate_curves(sim.global_aif, sim.tissue, sim.frame_times, model=load_model())
    quarter = estimate_curves(sim.global_aif, 0.25 * sim.tissue, sim.frame_times, model=load_model())
    for key in ("cbf", "cbv"):
        np.testing.assert_allclose(quarter[key], 0.25 * once[key], rtol=1e-3, err_msg=key)
    for key in ("mtt", "bad"):
        np.testing.assert_allclose(quarter[key], once[key], rtol=1e-3, atol=1e-3, err_msg=key)


@pytest.fixture(scope="module")
def untrained_amplitude():
    torch.manual_seed(1)
    return PerfusionTransformer(ModelConfig(tissue_normalisation="tissue_amplitude")).eval()


@settings(max_examples=20, deadline=None)
@given(factor=st.floats(0.05, 20.0))
def test_tissue_amplitude_normalisation_makes_the_residue_linear_in_the_curve(untrained_amplitude, factor):
    """With 'tissue_amplitude' c times the tissue curve gives c times K (CBF, CBV) and the same BAD, MTT and
    local AIF, as deconvolution does, whatever the weights."""
    aif, tissue, t = _curves()
    tissue = tissue + 25.0  # every curve clearly above MIN_TISSUE_AMPLITUDE, so the floor plays no part
    once = estimate_curves(aif, tissue, t, model=untrained_amplitude)
    scaled = estimate_curves(aif, factor * tissue, t, model=untrained_amplitude)
    np.testing.assert_allclose(scaled["residue"], factor * once["residue"], rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(scaled["cbf"], factor * once["cbf"], rtol=1e-4)
    np.testing.assert_allclose(scaled["cbv"], factor * once["cbv"], rtol=1e-4)
    for key in ("bad", "mtt", "local_aif"):
        np.testing.assert_allclose(scaled[key], once[key], rtol=1e-4, atol=1e-4)


def test_aif_peak_normalisation_is_not_linear_in_the_curve(untrained):
    """The guard of the test above: the 'aif_peak' network's K does not scale with the curve."""
    aif, tissue, t = _curves()
    tissue = tissue + 25.0
    once = estimate_curves(aif, tissue, t, model=untrained)
    scaled = estimate_curves(aif, 3.0 * tissue, t, model=untrained)
    assert not np.allclose(scaled["cbf"], 3.0 * once["cbf"], rtol=1e-2)


def test_weights_keep_their_normalisation_and_old_weights_read_as_aif_peak(untrained_amplitude, tmp_path):
    path = save_weights(untrained_amplitude, tmp_path / "amplitude.safetensors")
    assert load_model(path).config.tissue_normalisation == "tissue_amplitude"
    config = untrained_amplitude.config.to_dict()
    del config["tissue_normalisation"]  # as in weights written before the field existed
    assert ModelConfig.from_dict(config).tissue_normalisation == "aif_peak"
    with pytest.raises(ValueError, match="Unknown tissue_normalisation 'peak'"):
        ModelConfig(tissue_normalisation="peak")


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(1e-3, 1e3), factor=st.floats(0.01, 100.0), seed=st.integers(0, 2**16))
def test_least_squares_flow_scale_recovers_the_scale_and_is_linear(scale, factor, seed):
    """A noise-free curve that the residue shape and local AIF explain gives back its scale exactly, and
    a times the curve gives a times the scale (noise included)."""
    from ctp_nipype.nn.inference import least_squares_flow_scale
    from ctp_nipype.perfusion.convolution import convolve

    rng = np.random.default_rng(seed)
    t = np.arange(40.0)
    local_aif = 300 * np.exp(-0.5 * ((t[None] - rng.uniform(8, 20, (5, 1))) / rng.uniform(2, 5, (5, 1))) ** 2)
    residue = np.sort(rng.random((5, 40)) * 0.01, axis=1)[:, ::-1]
    clean = scale * convolve(local_aif, residue, 1.0)
    np.testing.assert_allclose(least_squares_flow_scale(clean, local_aif, residue, 1.0)[:, 0], scale, rtol=1e-9)
    noisy = clean + rng.normal(0, 1, clean.shape)
    once = least_squares_flow_scale(noisy, local_aif, residue, 1.0)
    np.testing.assert_allclose(least_squares_flow_scale(factor * noisy, local_aif, residue, 1.0), factor * once,
                               rtol=1e-9, atol=1e-15)


def test_least_squares_flow_makes_cbf_linear_and_data_consistent(untrained_amplitude):
    """With the least-squares scale the network's K reproduces the measured curve in the least-squares
    sense (the residual is orthogonal to the fitted curve) and CBF scales with the curve."""
    from ctp_nipype.perfusion.convolution import convolve

    aif, tissue, t = _curves()
    tissue = tissue + 25.0
    once = estimate_curves(aif, tissue, t, model=untrained_amplitude, flow_scale="least_squares")
    fitted = convolve(once["local_aif"].astype(float), once["residue"].astype(float), 1.0)
    residual = tissue - fitted
    np.testing.assert_allclose(np.einsum("ij,ij->i", residual, fitted) / np.einsum("ij,ij->i", fitted, fitted), 0,
                               atol=1e-4)
    scaled = estimate_curves(aif, 4.0 * tissue, t, model=untrained_amplitude, flow_scale="least_squares")
    np.testing.assert_allclose(scaled["cbf"], 4.0 * once["cbf"], rtol=1e-4)
    with pytest.raises(ValueError, match="flow_scale"):
        estimate_curves(aif, tissue, t, model=untrained_amplitude, flow_scale="fitted")
