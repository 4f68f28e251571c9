"""The perfusion Transformer: shapes, physical constraints, variable grids, the torch convolution, weights I/O."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

from ctp_nipype.nn.loss import LossWeights, perfusion_loss, reconstruct_tissue
from hypothesis import given, settings
from hypothesis import strategies as st

from ctp_nipype.nn.model import (
    RESIDUE_SCALE,
    TISSUE_GAIN,
    ModelConfig,
    PerfusionTransformer,
    blocked_attention,
    exp_attention,
    layer_norm_head_bounds,
    trapezoid_convolve,
)
from ctp_nipype.nn import model as network
from ctp_nipype.nn.weights import WeightsError, load_model, read_metadata, save_weights
from ctp_nipype.perfusion.convolution import convolve, toeplitz_matrix


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return PerfusionTransformer().eval()


def _inputs(batch, frames, dt=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    times = torch.arange(frames, dtype=torch.float32) * dt
    aif = torch.exp(-0.5 * ((times - 15) / 3) ** 2)
    tissue = 0.3 * torch.rand(batch, 1, generator=g) * torch.exp(-0.5 * ((times - 20) / 6) ** 2)
    return tissue + 0.01 * torch.randn(batch, frames, generator=g), aif, times


@pytest.mark.parametrize("frames, dt", [(45, 2.0), (60, 1.0), (120, 1.0), (80, 1.6)])
def test_outputs_have_the_right_shapes_and_are_physical(model, frames, dt):
    tissue, aif, times = _inputs(5, frames, dt)
    with torch.inference_mode():
        out = model(tissue, aif, times)
    assert out["local_aif"].shape == (5, frames)
    assert out["residue"].shape == (5, frames)
    assert out["bad"].shape == (5,)
    residue = out["residue"]
    assert torch.all(residue >= 0)
    assert torch.all(residue[:, 1:] <= residue[:, :-1])  # non-increasing
    assert torch.all(out["local_aif"] >= 0)
    assert torch.all(out["bad"] >= 0)


def test_frame_times_change_the_output(model):
    """The temporal embedding sees the real frame times: the same values at 1 s and 2 s differ."""
    tissue, aif, times = _inputs(3, 60, 1.0)
    with torch.inference_mode():
        a = model(tissue, aif, times)["residue"]
        b = model(tissue, aif, 2 * times)["residue"]
    assert not torch.allclose(a, b)


def test_padding_with_a_mask_gives_the_unpadded_result(model):
    """Curves of 50 and 70 frames in one padded batch equal each run alone."""
    short, aif_short, times_short = _inputs(1, 50, seed=1)
    long, aif_long, times_long = _inputs(1, 70, seed=2)
    padded = torch.zeros(2, 70)
    padded[0, :50], padded[1] = short[0], long[0]
    aifs = torch.zeros(2, 70)
    aifs[0, :50], aifs[1] = aif_short, aif_long
    times = torch.stack([times_long, times_long])
    valid = torch.ones(2, 70, dtype=torch.bool)
    valid[0, 50:] = False
    with torch.inference_mode():
        together = model(padded, aifs, times, valid=valid)
        alone_short = model(short, aif_short, times_short)
        alone_long = model(long, aif_long, times_long)
    # the 1D-convolution projection replicates the edge value; padding puts a 0 there, so the
    # last valid frame's embedding differs slightly: compare the BAD and the curves loosely
    torch.testing.assert_close(together["residue"][1], alone_long["residue"][0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(together["bad"][1], alone_long["bad"][0], atol=1e-5, rtol=1e-4)
    assert torch.all(together["residue"][0, 50:] == 0)
    assert torch.all(together["local_aif"][0, 50:] == 0)
    assert torch.allclose(together["bad"][0], alone_short["bad"][0], atol=0.05 * float(alone_short["bad"][0]) + 1e-3)


def test_cached_aif_equals_the_full_forward_pass(model):
    tissue, aif, times = _inputs(7, 64)
    with torch.inference_mode():
        full = model(tissue, aif, times)
        cache = model.encode_aif(aif, times)
        cached = model(tissue, frame_times=times, aif_cache=cache)
    for key in full:
        torch.testing.assert_close(cached[key], full[key], atol=1e-5, rtol=1e-5)


def _heads(x, n_heads):
    """(B, T, H * D) -> (B, H, T, D), the layout of F.scaled_dot_product_attention."""
    return x.unflatten(-1, (n_heads, x.shape[-1] // n_heads)).transpose(1, 2)


def _with_ones(value, n_heads):
    """(B, S, H * D) -> (B, S, H * (D + 1)): a constant 1 after each head's features."""
    heads = value.unflatten(-1, (n_heads, value.shape[-1] // n_heads))
    return torch.cat([heads, torch.ones(*heads.shape[:-1], 1)], -1).flatten(2)


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 9),
    n_queries=st.integers(1, 13),
    n_keys=st.integers(1, 13),
    n_heads=st.sampled_from([1, 2, 4]),
    dim=st.sampled_from([1, 4]),
    shared_query=st.booleans(),
    block_rows=st.integers(1, 10),
    score_scale=st.sampled_from([0.1, 1.0, 3.0, 8.0]),
    seed=st.integers(0, 2**16),
)
def test_cpu_attentions_equal_scaled_dot_product_attention(
    batch, n_queries, n_keys, n_heads, dim, shared_query, block_rows, score_scale, seed
):
    """blocked_attention with padded keys and exp_attention without, any block size, a shared or per-row query,
    scores from tenths to tens: the fused kernel's result to float rounding."""
    g = torch.Generator().manual_seed(seed)
    width = n_heads * dim
    query = score_scale * torch.randn(1 if shared_query else batch, n_queries, width, generator=g)
    key, value = torch.randn(2, batch, n_keys, width, generator=g)
    lengths = torch.randint(1, n_keys + 1, (batch,), generator=g)
    key_valid = torch.arange(n_keys)[None, :] < lengths[:, None]
    block_elements = block_rows * n_queries * n_keys

    def fused(mask=None):
        return torch.nn.functional.scaled_dot_product_attention(
            _heads(query, n_heads).expand(batch, -1, -1, -1), _heads(key, n_heads), _heads(value, n_heads),
            attn_mask=mask,
        )

    out = blocked_attention(query, key, value, n_heads, key_valid, block_elements=block_elements)
    assert out.shape == (batch, n_queries, width)
    torch.testing.assert_close(_heads(out, n_heads), fused(key_valid[:, None, None, :]), atol=2e-6 * max(1.0, score_scale), rtol=1e-5)
    # a padded key gets no weight: changing its value changes nothing
    value_changed = torch.where(key_valid[..., None], value, value + 100.0)
    changed = blocked_attention(query, key, value_changed, n_heads, key_valid, block_elements)
    torch.testing.assert_close(changed, out, atol=0, rtol=0)

    # exp_attention's contract: scores bounded inside float32's exponent range (Attention.exp_attention_is_safe
    # proves it from the weights); random queries of scale 8 can pass exp(88) and are left to blocked_attention
    scores = _heads(query, n_heads) @ _heads(key, n_heads).transpose(-1, -2) * dim**-0.5
    largest_log = float(scores.abs().max()) + np.log(n_keys * max(1.0, float(value.abs().max())))
    if largest_log <= network.EXP_ATTENTION_LOG_LIMIT:
        exp_out = exp_attention(query, key, _with_ones(value, n_heads), n_heads, block_elements=block_elements)
        assert exp_out.shape == (batch, n_queries, width) and exp_out.is_contiguous()
        torch.testing.assert_close(_heads(exp_out, n_heads), fused(), atol=2e-6 * max(1.0, score_scale), rtol=1e-5)


@settings(max_examples=30, deadline=None)
@given(
    d_model=st.sampled_from([4, 8, 16]),
    n_heads=st.sampled_from([1, 2, 4]),
    groups=st.sampled_from([1, 2]),
    input_scale=st.sampled_from([1e-3, 1.0, 1e4]),
    seed=st.integers(0, 2**16),
)
def test_layer_norm_head_bounds_hold_for_any_input(d_model, n_heads, groups, input_scale, seed):
    torch.manual_seed(seed)
    norm, linear = torch.nn.LayerNorm(d_model), torch.nn.Linear(d_model, groups * d_model)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.5)
        norm.bias.normal_(0.0, 0.5)
    bound = layer_norm_head_bounds(linear, norm, n_heads, groups)
    # random inputs, and inputs aimed at each head's largest direction
    inputs = input_scale * torch.randn(2000, d_model)
    with torch.no_grad():
        projected = linear(norm(inputs)).view(-1, groups, n_heads, d_model // n_heads).norm(dim=-1)
    assert bound.shape == (groups, n_heads)
    assert torch.all(projected <= bound * (1 + 1e-5))
    if input_scale >= 1:  # (far below the norm's epsilon its output shrinks towards beta)
        # the bound is not vacuous: the largest projection seen reaches a fair share of it
        assert torch.all(projected.amax(0) >= 0.2 * bound)


def test_cpu_inference_uses_exp_attention_when_the_weights_bound_the_scores(monkeypatch):
    """The shipped weights prove every score below 61 (their largest bound); weights that do not prove a safe
    bound fall back to blocked_attention; both give the training path's outputs."""
    shipped = load_model()
    bounds = [
        attention.exp_attention_is_safe(norm_q, norm_kv, 120)
        for attention, norm_q, norm_kv in _attentions_with_norms(shipped)
    ]
    assert bounds == [True] * 9
    calls = {"exp": 0, "blocked": 0}

    def counted(name):
        function = getattr(network, f"{name}_attention")

        def count(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return count

    for name in calls:
        monkeypatch.setattr(network, f"{name}_attention", counted(name))
    tissue, aif, times = _inputs(9, 60)
    with torch.inference_mode():
        out = shipped(tissue, aif, times)
    assert calls == {"exp": 9, "blocked": 0}  # 3 encoder, 3 decoder self- and 3 cross-attentions
    calls.update(exp=0, blocked=0)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        shipped(tissue, aif, times)
    assert calls == {"exp": 0, "blocked": 9}  # bfloat16 projections: softmax attention
    # scores blown up beyond float32's exponent range: no proof, so softmax attention, same as the fused kernel
    blown = load_model()
    with torch.no_grad():
        for attention, _, _ in _attentions_with_norms(blown):
            attention.query.weight.mul_(30.0)
    assert not any(a.exp_attention_is_safe(q, kv, 60) for a, q, kv in _attentions_with_norms(blown))
    calls.update(exp=0, blocked=0)
    with torch.inference_mode():
        inference = blown(tissue, aif, times)
    assert calls == {"exp": 0, "blocked": 9}
    training = blown(tissue, aif, times)
    for key in inference:
        assert torch.isfinite(inference[key]).all()
        torch.testing.assert_close(inference[key], training[key].detach(), atol=2e-5, rtol=1e-4)
    training = shipped(tissue, aif, times)
    for key in out:
        torch.testing.assert_close(out[key], training[key].detach(), atol=2e-5, rtol=1e-4)


def test_derived_weights_follow_changed_weights():
    """key_value_with_ones and the score bound are remade when a weight changes in place (fine-tuning, loading)."""
    attention = PerfusionTransformer().encoder[0].attention
    norm = torch.nn.LayerNorm(64)
    weight, bias = attention.key_value_with_ones()
    assert weight.shape == (64 + 16 * 5, 64)
    torch.testing.assert_close(weight[64:].view(16, 5, 64)[:, :4].reshape(64, 64), attention.key_value.weight[64:])
    assert torch.equal(weight[64:].view(16, 5, 64)[:, 4], torch.zeros(16, 64))
    assert torch.equal(bias[64:].view(16, 5)[:, 4], torch.ones(16))
    assert attention.exp_attention_is_safe(norm, norm, 60)
    with torch.no_grad():
        attention.key_value.weight.mul_(100.0)
    torch.testing.assert_close(attention.key_value_with_ones()[0][:64], attention.key_value.weight[:64])
    assert not attention.exp_attention_is_safe(norm, norm, 60)


def _attentions_with_norms(model):
    """Each attention of the network with the layer norms its query and keys/values come out of."""
    for layer in model.encoder:
        yield layer.attention, layer.norm_attention, layer.norm_attention
    for layer in model.decoder:
        yield layer.self_attention, layer.norm_self, layer.norm_self
        yield layer.cross_attention, layer.norm_cross, model.encoder_norm


def test_cpu_inference_path_equals_the_training_path(model):
    """Without gradients the CPU runs blocked_attention; with them, the fused kernel: same outputs."""
    tissue, aif, times = _inputs(37, 60)
    valid = torch.ones(37, 60, dtype=torch.bool)
    valid[::3, 48:] = False
    # one AIF shared by every voxel (as for a scan), or one per row with padded frames (as in training)
    for aifs, mask in ((aif, None), (aif.expand(37, -1) * valid, valid)):
        with torch.inference_mode():
            inference = model(tissue, aifs, times, valid=mask)
        training = model(tissue, aifs, times, valid=mask)
        assert training["residue"].requires_grad
        for key in inference:
            torch.testing.assert_close(inference[key], training[key].detach(), atol=2e-5, rtol=1e-4)
    # one shared AIF with the same mask in every row is the unmasked pass; masks that differ are an error
    with torch.inference_mode():
        unmasked = model(tissue, aif, times)
        uniform = model(tissue, aif, times, valid=torch.ones(37, 60, dtype=torch.bool))
        torch.testing.assert_close(uniform["residue"], unmasked["residue"])
        with pytest.raises(ValueError, match="one AIF per row"):
            model(tissue, aif, times, valid=valid)
    with pytest.raises(ValueError, match="one AIF per row"):
        model(tissue, aif, times, valid=valid)


@pytest.mark.parametrize("dt", [1.0, 1.7])
def test_torch_convolution_equals_the_numpy_trapezoid(dt):
    rng = np.random.default_rng(3)
    aif = rng.random((4, 53))
    residue = rng.random((4, 53))
    expected = convolve(aif, residue, dt)
    got = trapezoid_convolve(torch.from_numpy(aif), torch.from_numpy(residue), dt).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[0], toeplitz_matrix(aif[0], dt) @ residue[0], rtol=1e-10, atol=1e-12)
    # float32, per-row frame intervals
    dts = torch.tensor([1.0, 1.5, 2.0, 1.2])
    got32 = trapezoid_convolve(torch.from_numpy(aif).float(), torch.from_numpy(residue).float(), dts).numpy()
    for row, step in enumerate(dts.tolist()):
        np.testing.assert_allclose(got32[row], convolve(aif[row], residue[row], step), rtol=1e-5, atol=1e-5)


def test_reconstruction_closes_the_physics_in_network_units():
    """TISSUE_GAIN * C / peak = reconstruct_tissue(Ca_local / peak, RESIDUE_SCALE * K)."""
    rng = np.random.default_rng(4)
    peak, dt = 350.0, 1.3
    local_aif = peak * rng.random((3, 40))
    k = 0.02 * np.sort(rng.random((3, 40)))[:, ::-1]
    tissue = convolve(local_aif, k, dt)
    got = reconstruct_tissue(torch.from_numpy(local_aif / peak), torch.from_numpy(RESIDUE_SCALE * k), dt).numpy()
    np.testing.assert_allclose(got, TISSUE_GAIN * tissue / peak, rtol=1e-9, atol=1e-12)


def test_loss_is_zero_for_a_perfect_estimate_and_positive_otherwise():
    times = torch.arange(30.0)
    local_aif = torch.exp(-0.5 * ((times - 10) / 3) ** 2)[None].repeat(2, 1)
    residue = torch.full((2, 30), 2.0)  # constant: zero curvature
    tissue = reconstruct_tissue(local_aif, residue, 1.0)
    output = {"local_aif": local_aif, "residue": residue, "bad": torch.tensor([1.0, 2.0])}
    target = {"tissue": tissue, "bad": torch.tensor([1.0, 2.0]), "local_aif": local_aif, "residue": residue}
    total, terms = perfusion_loss(output, target, 1.0, LossWeights(residue=1.0))
    assert float(total) == pytest.approx(0.0, abs=1e-10)
    assert set(terms) == {"tissue", "smooth", "bad", "local_aif", "residue"}
    output["bad"] = torch.tensor([2.0, 2.0])
    total, terms = perfusion_loss(output, target, 1.0, LossWeights(bad=3.0))
    assert terms["bad"] == pytest.approx(3.0 * 0.5)


def test_weights_round_trip_as_safetensors_without_pickle(tmp_path, model):
    path = save_weights(model, tmp_path / "w.safetensors", {"recipe": "test", "seed": 1})
    raw = path.read_bytes()
    assert not zipfile.is_zipfile(path)  # not a torch.save (zip + pickle) archive
    header_size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_size])
    assert header["__metadata__"]["format"] == "ctp_nipype.PerfusionTransformer"
    assert read_metadata(path)["card"] == {"recipe": "test", "seed": 1}
    loaded = load_model(path)
    tissue, aif, times = _inputs(3, 50)
    with torch.inference_mode():
        a, b = model(tissue, aif, times), loaded(tissue, aif, times)
    torch.testing.assert_close(a["residue"], b["residue"])
    assert path.stat().st_size < 5 * 1024 * 1024


def test_weights_errors_are_specific(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors")
    pickled = tmp_path / "w.pt"
    torch.save({"a": torch.zeros(1)}, pickled)
    with pytest.raises(WeightsError, match="only safetensors"):
        load_model(pickled)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="cannot be read"):
        load_model(broken)


def test_config_round_trips():
    config = ModelConfig(dim_feedforward=96)
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert PerfusionTransformer(config).config.dim_feedforward == 96
