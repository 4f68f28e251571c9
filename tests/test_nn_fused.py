"""The fused CPU inference path (ctp_nipype.nn.fused) against the module forward, the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hypothesis import given, settings
from hypothesis import strategies as st

from ctp_nipype.nn.fused import FusedInference
from ctp_nipype.nn.inference import estimate_curves, run_network
from ctp_nipype.nn.model import ModelConfig, PerfusionTransformer
from ctp_nipype.nn.weights import load_model, shipped_weights_available
from ctp_nipype.sims.simulate import simulate_curves

OUTPUTS = ("bad", "local_aif", "residue", "cbf", "cbv", "mtt")
#: largest difference allowed, as a share of each output's largest magnitude: float32 rounding of the same sums
#: in another order (measured: at most 2e-6 on these curves, 2026-12-07)
RELATIVE_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(3)
    return PerfusionTransformer().eval()


@pytest.fixture(scope="module")
def shipped():
    if not shipped_weights_available():
        pytest.skip("the shipped weights are not installed")
    return load_model()


def assert_equal_to_rounding(fused, reference, keys):
    for key in keys:
        scale = max(float(np.abs(reference[key]).max()), 1e-30)
        np.testing.assert_allclose(fused[key], reference[key], rtol=0, atol=RELATIVE_TOLERANCE * scale, err_msg=key)


@pytest.mark.parametrize("weights", ["shipped", "untrained"])
@pytest.mark.parametrize("frames", [22, 40, 60, 120])
@pytest.mark.parametrize("local_aif", [True, False], ids=["local-aif", "no-local-aif"])
@pytest.mark.parametrize("shared_aif", [True, False], ids=["one-aif", "aif-per-curve"])
def test_fused_path_equals_the_module_forward_on_simulated_curves(
    request, weights, frames, local_aif, shared_aif
):
    """Curves with a local AIF (delayed and dispersed) or without (the global AIF itself), one AIF for all curves
    (a scan) or one each (simulations): the same outputs and maps as the module forward to float rounding."""
    model = request.getfixturevalue(weights)
    without_local = {} if local_aif else {"delay": 0.0, "t_a": 1e-3}
    sim = simulate_curves(24, frames, frame_interval=1.0, n_frames=frames, snr_db=20.0, **without_local)
    if not local_aif:
        np.testing.assert_allclose(sim.local_aif, sim.global_aif, atol=1e-2 * sim.global_aif.max())
    aif = sim.global_aif[0] if shared_aif else sim.global_aif
    fused = estimate_curves(aif, sim.tissue, sim.frame_times, model=model)
    reference = estimate_curves(aif, sim.tissue, sim.frame_times, model=model, fused=False)
    assert_equal_to_rounding(fused, reference, OUTPUTS)
    assert not np.array_equal(fused["residue"], reference["residue"])  # two paths, not one run twice


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 40),
    frames=st.integers(8, 130),
    amplitude=st.sampled_from([0.01, 1.0, 30.0]),
    shared=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fused_network_equals_the_module_forward_on_random_curves(untrained, batch, frames, amplitude, shared, seed):
    """Random curves of any length and height, a batch of any size, one AIF or one per curve, the AIF's decoder
    part cached or not: the network's outputs of the module forward."""
    g = torch.Generator().manual_seed(seed)
    tissue = amplitude * torch.rand(batch, frames, generator=g)
    aif = torch.rand(1 if shared else batch, frames, generator=g)
    times = torch.arange(frames, dtype=torch.float32) * 1.5
    with torch.inference_mode():
        assert FusedInference.applies(untrained, tissue)
        fused_model = FusedInference(untrained)
        got = fused_model(tissue, aif, times)
        reference = untrained(tissue, aif, times)
        cached = fused_model(tissue, frame_times=times, aif_cache=untrained.encode_aif(aif, times))
    for key in reference:
        assert got[key].shape == reference[key].shape
        scale = float(reference[key].abs().max()) + 1e-30
        torch.testing.assert_close(got[key], reference[key], rtol=0, atol=RELATIVE_TOLERANCE * scale)
        torch.testing.assert_close(cached[key], got[key], rtol=0, atol=RELATIVE_TOLERANCE * scale)


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_fused_embedding_follows_the_frame_times_it_is_given(kernel):
    """One instance called with one scan's frame times, then another's (same count, other values), then frame times
    per curve, with any odd convolution kernel: the module's embedding and outputs each time (the frame times' part
    of the embedding is kept between calls, and must not outlive the frame times it was made for)."""
    torch.manual_seed(5)
    model = PerfusionTransformer(ModelConfig(conv_kernel=kernel)).eval()
    g = torch.Generator().manual_seed(kernel)
    tissue, aif = torch.rand(6, 30, generator=g), torch.rand(30, generator=g)
    regular = torch.arange(30, dtype=torch.float32) * 1.5
    irregular = torch.cumsum(0.5 + 2.0 * torch.rand(30, generator=g), 0)
    per_curve = regular + 3.0 * torch.rand(6, 1, generator=g)
    with torch.inference_mode():
        fused = FusedInference(model)
        for times in (regular, irregular, regular.clone(), per_curve):
            embedded = fused.tissue_embedding(tissue, times)
            reference = model.tissue_embedding(tissue, times)
            assert embedded.is_contiguous()
            torch.testing.assert_close(embedded, reference, rtol=0, atol=1e-5 * float(reference.abs().max()))
            got, expected = fused(tissue, aif, times), model(tissue, aif, times)
            for key in expected:
                scale = float(expected[key].abs().max()) + 1e-30
                torch.testing.assert_close(got[key], expected[key], rtol=0, atol=RELATIVE_TOLERANCE * scale)


def test_run_network_falls_back_to_the_module_forward_where_the_fused_path_does_not_apply(untrained):
    """Weights that do not bound the scores (no proof that the unshifted exponential stays finite), CPU autocast,
    gradients or padded frames: the module forward, bitwise."""
    sim = simulate_curves(20, 1, frame_interval=1.0, n_frames=50, snr_db=20.0)
    aif, tissue = sim.global_aif[0] / sim.global_aif[0].max(), sim.tissue / sim.global_aif[0].max()
    blown = PerfusionTransformer().eval()
    blown.load_state_dict(untrained.state_dict())
    with torch.no_grad():
        for layer in blown.encoder:
            layer.attention.query.weight.mul_(30.0)
    probe = torch.as_tensor(tissue, dtype=torch.float32)
    assert FusedInference.applies(untrained, probe) is False  # gradients are on here
    with torch.inference_mode():
        assert FusedInference.applies(untrained, probe)
        assert not FusedInference.applies(blown, probe)
        assert not FusedInference.applies(untrained, probe, valid=torch.ones(probe.shape, dtype=torch.bool))
        assert not FusedInference.applies(untrained, probe.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not FusedInference.applies(untrained, probe)
    out = run_network(blown, aif, tissue, sim.frame_times, "cpu")
    reference = run_network(blown, aif, tissue, sim.frame_times, "cpu", fused=False)
    for key in out:
        assert np.isfinite(out[key]).all()
        np.testing.assert_array_equal(out[key], reference[key])


def test_fused_path_threads_and_batches_change_the_outputs_only_by_rounding(untrained):
    """Any batch size, one thread or two: the same numbers to float rounding (the matrix products' kernels
    depend on the number of rows, as for the module forward)."""
    sim = simulate_curves(45, 2, frame_interval=1.0, n_frames=60, snr_db=20.0)
    aif = sim.global_aif[0]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = estimate_curves(aif, sim.tissue, sim.frame_times, model=untrained, batch_size=7)
        torch.set_num_threads(2)
        two = estimate_curves(aif, sim.tissue, sim.frame_times, model=untrained, batch_size=16)
    finally:
        torch.set_num_threads(threads)
    assert_equal_to_rounding(one, two, OUTPUTS)
