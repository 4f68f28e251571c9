"""The perfusion Transformer of Zeng et al. (2025), section 2.2, in plain torch.

An encoder-decoder Transformer (3 + 3 layers, model dimension 64, 16 heads):
the tissue concentration curve feeds the encoder, the global AIF the
decoder, and three task heads of two linear layers each read the decoder's
output:

* ``local_aif`` -- the voxel's arterial input (a curve, Softplus: non-negative);
* ``residue``   -- the flow-scaled residue function ``K`` (a curve, Softplus then
  sorted descending: non-negative and non-increasing);
* ``bad``       -- the bolus arrival delay in seconds (a scalar, Softplus).

Normalisation (what the network sees and returns)
-------------------------------------------------
With ``s`` the global AIF's peak in HU above baseline and ``g`` the encoder's
gain of a curve (:func:`normalise_tissue`):

* decoder input ``aif / s``; encoder input ``g * tissue``;
* ``local_aif`` output in units of ``s`` (multiply by ``s`` for HU);
* ``residue`` output ``k`` with ``K [1/s] = k * TISSUE_GAIN / (RESIDUE_SCALE * s * g)``;
* ``bad`` output in seconds.

So the physics closes in the network's units: ``g * tissue == (TISSUE_GAIN /
RESIDUE_SCALE) * (local_aif (x) residue)``, the convolution being the
trapezoidal rule of :mod:`ctp_nipype.perfusion.convolution`
(:func:`trapezoid_convolve`, its torch twin). ``K`` does not depend on ``s``
because ``C / s = (Ca_local / s) (x) K``. The gain depends on
``ModelConfig.tissue_normalisation``:

* ``'aif_peak'`` (the first weights): ``g = TISSUE_GAIN / s``, so ``K = k /
  RESIDUE_SCALE``; a curve's amplitude reaches the network, which need not
  answer twice the curve with twice the residue;
* ``'tissue_amplitude'``: ``g = TISSUE_GAIN * REFERENCE_TISSUE_AMPLITUDE / a``
  with ``a`` the curve's amplitude (:func:`tissue_amplitude`), so every curve
  reaches the encoder at the same height and the residue scales with the curve
  exactly, as deconvolution does (``C -> c C`` gives ``K -> c K``, the local
  AIF and BAD unchanged).

Embedding (Informer-style): a 1D-convolution projection of the values +
fixed sinusoidal position of the frame index + a learnable temporal embedding
of the real frame times (a linear map of sines and cosines of ``t`` in seconds
at fixed periods), so that one network serves frame intervals of 1-2 s and
45-120 frames. Curves of different lengths share a batch through a boolean
``valid`` mask (True for real frames, padded frames at the end).

Attention uses :func:`torch.nn.functional.scaled_dot_product_attention`
(fused kernels) for training and on GPUs; for inference on the CPU,
:func:`exp_attention` (one exponential per score, no shift: every attention's
input comes out of a layer norm, so the weights bound its scores, 61 at most for
the shipped weights) or, when the weights do not prove that bound,
:func:`blocked_attention`. The decoder's input depends on the global AIF only, so its
embedding and the first decoder layer's self-attention are the same for all
voxels of a scan: :meth:`PerfusionTransformer.encode_aif` computes them once
and :meth:`PerfusionTransformer.forward` accepts the result as ``aif_cache``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import uniform_filter1d
from torch import nn

#: encoder input = TISSUE_GAIN * tissue / (global AIF peak): tissue curves are ~1-10% of the AIF
TISSUE_GAIN = 10.0
#: the residue head returns RESIDUE_SCALE * K, K in 1/s (K max ~0.05/s at CBF 200 ml/100 g/min)
RESIDUE_SCALE = 100.0
#: how the encoder's input is scaled (``ModelConfig.tissue_normalisation``; module docstring)
TISSUE_NORMALISATIONS = ("aif_peak", "tissue_amplitude")
#: with 'tissue_amplitude', every curve reaches the encoder as if its amplitude were this share of the AIF's
#: peak (grey matter's: ~20 HU against ~400 HU), so the encoder's inputs keep the range of 'aif_peak'
REFERENCE_TISSUE_AMPLITUDE = 0.05
#: a curve whose amplitude is below this share of the AIF's peak (a flat or negative curve) is scaled as if
#: it were this high, so that noise alone is not blown up to the reference height
MIN_TISSUE_AMPLITUDE = 1e-3


def tissue_amplitude(tissue):
    """A curve's amplitude: the maximum of its three-frame running mean, per row.

    Positively homogeneous (``tissue_amplitude(c * x) == c * tissue_amplitude(x)`` for
    ``c > 0``), and less driven by one noisy frame than the maximum itself. The running mean is
    scipy's ``uniform_filter1d`` (edges repeated), as in the AIF selection's smoothing.

    Parameters
    ----------
    tissue : ndarray, shape (n, T)

    Returns
    -------
    ndarray, shape (n, 1), the input's float precision

    Examples
    --------
    >>> tissue_amplitude(np.array([[0.0, 3.0, 6.0, 3.0, 0.0]]))
    array([[4.]])
    """
    tissue = np.asarray(tissue)
    if not np.issubdtype(tissue.dtype, np.floating):
        tissue = tissue.astype(np.float64)
    return uniform_filter1d(tissue, 3, axis=-1, mode="nearest").max(axis=-1, keepdims=True)


def normalise_tissue(tissue, aif_peak, normalisation="aif_peak"):
    """The encoder's input for tissue curves and the factor that turns the residue head into ``K`` in 1/s.

    Parameters
    ----------
    tissue : ndarray, shape (n, T)
        Tissue concentration (HU above baseline). Read in float32: a scan's million voxels are not
        copied in double precision.
    aif_peak : float or ndarray, shape (n, 1)
        Peak of the global AIF (HU above baseline), one for all curves or one per curve.
    normalisation : {'aif_peak', 'tissue_amplitude'}
        ``ModelConfig.tissue_normalisation`` of the weights (module docstring).

    Returns
    -------
    tissue_input : ndarray, float32, shape (n, T)
    residue_unit : ndarray, float64, shape (n, 1)
        ``K [1/s] = residue_head * residue_unit``.

    Examples
    --------
    With 'tissue_amplitude', twice the curve reaches the encoder unchanged and doubles ``K``:

    >>> curve = np.array([[0.0, 10.0, 20.0, 10.0, 5.0]])
    >>> x1, unit1 = normalise_tissue(curve, 400.0, "tissue_amplitude")
    >>> x2, unit2 = normalise_tissue(2 * curve, 400.0, "tissue_amplitude")
    >>> bool(np.allclose(x1, x2)), float(unit2[0, 0] / unit1[0, 0])
    (True, 2.0)
    """
    tissue = np.asarray(tissue, dtype=np.float32)
    peak = np.asarray(aif_peak, dtype=np.float64)
    if normalisation == "aif_peak":
        gain = TISSUE_GAIN / peak * np.ones((tissue.shape[0], 1))
    elif normalisation == "tissue_amplitude":
        amplitude = np.maximum(tissue_amplitude(tissue), MIN_TISSUE_AMPLITUDE * peak)
        gain = TISSUE_GAIN * REFERENCE_TISSUE_AMPLITUDE / amplitude
    else:
        raise ValueError(f"Unknown tissue normalisation {normalisation!r}; known: {TISSUE_NORMALISATIONS}.")
    residue_unit = TISSUE_GAIN / (RESIDUE_SCALE * peak * gain)
    return gain.astype(np.float32) * tissue, residue_unit


@dataclass
class ModelConfig:
    """Architecture hyper-parameters (the paper's unless noted).

    ``dim_feedforward`` is not given in the paper; 128 keeps the CPU path fast.
    ``n_time_frequencies`` sine/cosine pairs feed the temporal embedding, with
    periods geometrically spaced from ``min_period`` to ``max_period`` seconds.
    """

    d_model: int = 64
    n_heads: int = 16
    n_encoder_layers: int = 3
    n_decoder_layers: int = 3
    dim_feedforward: int = 128
    dropout: float = 0.0
    conv_kernel: int = 3
    n_time_frequencies: int = 16
    min_period: float = 4.0
    max_period: float = 512.0
    bad_scale: float = 10.0
    #: how tissue curves are scaled for the encoder (module docstring); weights written before this
    #: field existed were trained with 'aif_peak', which its default keeps
    tissue_normalisation: str = "aif_peak"

    def __post_init__(self):
        if self.tissue_normalisation not in TISSUE_NORMALISATIONS:
            raise ValueError(
                f"Unknown tissue_normalisation {self.tissue_normalisation!r}; known: {TISSUE_NORMALISATIONS}."
            )

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, values):
        known = {k: v for k, v in dict(values).items() if k in cls.__dataclass_fields__}
        return cls(**known)


def trapezoid_convolve(aif, residue, dt):
    """Trapezoidal convolution ``C = Ca (x) K`` in torch, batched (the twin of
    :func:`ctp_nipype.perfusion.convolution.convolve`).

    ``C[i] = dt * (sum_{k<=i} Ca[i-k] K[k] - (Ca[i] K[0] + Ca[0] K[i]) / 2)``, ``C[0] = 0``.

    Parameters
    ----------
    aif : Tensor, shape (B, T) or (T,)
        Arterial concentration.
    residue : Tensor, shape (B, T)
        Flow-scaled residue (any consistent unit).
    dt : float or Tensor of shape (B,)
        Frame interval in seconds.

    Returns
    -------
    Tensor, shape (B, T)

    Examples
    --------
    >>> trapezoid_convolve(torch.tensor([0.0, 2.0, 4.0]), torch.ones(1, 3), 1.0)
    tensor([[0., 1., 4.]])
    """
    n = residue.shape[-1]
    aif = aif.expand_as(residue) if aif.dim() == 1 else aif
    length = 2 * n
    work = torch.float64 if residue.dtype == torch.float64 else torch.float32
    a, k = aif.to(work), residue.to(work)
    full = torch.fft.irfft(torch.fft.rfft(a, length) * torch.fft.rfft(k, length), length)[..., :n]
    correction = 0.5 * (a * k[..., :1] + a[..., :1] * k)
    if torch.is_tensor(dt) and dt.dim() > 0:
        dt = dt.to(work).reshape(-1, 1)
    out = dt * (full - correction)
    out = torch.cat([torch.zeros_like(out[..., :1]), out[..., 1:]], dim=-1)
    return out.to(residue.dtype)


def sinusoidal_position(n_positions, d_model, device=None, dtype=torch.float32):
    """Fixed sinusoidal position embedding of Vaswani et al. (2017), shape (n_positions, d_model)."""
    position = torch.arange(n_positions, device=device, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(n_positions, d_model, device=device)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)
    return table.to(dtype)


class CurveEmbedding(nn.Module):
    """Value projection (1D convolution) + fixed position + learnable temporal embedding of frame times."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.d_model
        self.value = nn.Conv1d(1, d, config.conv_kernel, padding=config.conv_kernel // 2, padding_mode="replicate")
        periods = torch.logspace(
            math.log10(config.min_period), math.log10(config.max_period), config.n_time_frequencies
        )
        self.register_buffer("angular_frequency", 2 * math.pi / periods, persistent=False)
        self.temporal = nn.Linear(2 * config.n_time_frequencies, d)
        self.d_model = d

    def forward(self, values, frame_times):
        """``values`` (B, T); ``frame_times`` (B, T) or (T,) in seconds -> (B, T, d)."""
        projected = self.value(values[:, None, :]).transpose(1, 2)
        if frame_times.dim() == 1:
            frame_times = frame_times[None, :]
        phase = frame_times[..., None].to(projected.dtype) * self.angular_frequency.to(projected.dtype)
        temporal = self.temporal(torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1))
        position = sinusoidal_position(values.shape[-1], self.d_model, values.device, projected.dtype)
        return projected + position + temporal


#: score elements (rows x queries x keys) of one head per block of :func:`blocked_attention`: 1 MiB of
#: float32, 72 voxels at 60 frames. One attention of the paper's shape with its output projection (16 heads
#: of dimension 4, 60 frames, 512 voxels, 1 thread; 2026-12-02): 7,085 voxels/s in blocks of 64 voxels
#: against 4,760 for ``F.scaled_dot_product_attention``; with an earlier output layout, blocks of 64-128
#: voxels (6,641-6,747) beat 16 (6,258) and the whole batch of 512 (6,115).
ATTENTION_BLOCK_ELEMENTS = 1 << 18


def _blocks_of_rows(query, key, n_heads, block_elements, scale):
    """The scaled query cut into the blocks of rows that the CPU attentions walk: ``[(rows, block_query)]``.

    Blocks hold at most ``block_elements`` scores (rows x T x S) of one head; a
    shared query (batch 1) is repeated once, for a whole block.
    """
    batch, n_keys, width = key.shape
    n_queries = query.shape[1]
    rows = max(1, int(block_elements) // (n_queries * n_keys))
    query = query * ((width // n_heads) ** -0.5 if scale is None else scale)
    starts = range(0, batch, rows)
    if query.shape[0] == 1:
        query = query.expand(min(rows, batch), -1, -1).contiguous()
        return [(slice(s, min(s + rows, batch)), query[: min(rows, batch - s)]) for s in starts]
    return [(slice(s, min(s + rows, batch)), query[s : s + rows]) for s in starts]


def blocked_attention(
    query, key, value, n_heads, key_valid=None, block_elements=ATTENTION_BLOCK_ELEMENTS, scale=None
):
    """Multi-head scaled dot-product attention, one head and a block of rows at a time (the CPU inference path).

    ``softmax(q k^T / sqrt(D)) v`` per head, as
    :func:`F.scaled_dot_product_attention` (equal to float rounding), built for
    the paper's small heads (16 of dimension 4) where the fused kernel spends
    its time on per-head overhead. Each head's (T, D) matrices are strided views
    of the (B, T, H * D) projections, so heads are never copied apart, and the
    scores of one block of rows (at most ``block_elements``) are made,
    normalised and used while they are in the CPU's cache.

    Parameters
    ----------
    query : Tensor, shape (B, T, H * D) or (1, T, H * D)
        Already projected; a batch of 1 is shared by every row of ``key`` (the cached AIF).
    key, value : Tensor, shape (B, S, H * D)
        Already projected; unit stride in the last dimension.
    n_heads : int
        ``H``.
    key_valid : Tensor of bool, shape (B, S), optional
        True for keys that may be attended; every query needs at least one.
    block_elements : int
        Score elements (rows x T x S) per block.
    scale : float, optional
        Factor of the scores, default ``D ** -0.5``.

    Returns
    -------
    Tensor, shape (B, T, H * D)
        A transposed view of a (B, H * D, T) tensor.

    Examples
    --------
    >>> q, k, v = torch.randn(3, 5, 8), torch.randn(3, 6, 8), torch.randn(3, 6, 8)
    >>> out = blocked_attention(q, k, v, n_heads=2, block_elements=2 * 5 * 6)
    >>> heads = lambda x: x.unflatten(-1, (2, 4)).transpose(1, 2)  # (B, H, T, D)
    >>> expected = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
    >>> torch.allclose(heads(out), expected, atol=1e-6)
    True
    """
    batch, n_keys, width = key.shape
    n_queries, dim = query.shape[1], width // n_heads
    keys_t, values_t = key.transpose(1, 2), value.transpose(1, 2)
    # feature-major output (B, H * D, T): each head's (D, T) block is then written whole, as v^T p^T
    out_t = torch.empty(batch, width, n_queries, dtype=value.dtype, device=value.device)
    for block, block_query in _blocks_of_rows(query, key, n_heads, block_elements, scale):
        masked = None if key_valid is None else ~key_valid[block, None, :]
        for head in range(n_heads):
            features = slice(head * dim, (head + 1) * dim)
            scores = torch.bmm(block_query[..., features], keys_t[block, features])
            if masked is not None:
                scores.masked_fill_(masked, float("-inf"))
            weights = torch.softmax(scores, dim=-1)
            # into a contiguous product, then copied: torch's bmm multiplies matrix by matrix when its out is strided
            out_t[block, features] = torch.bmm(values_t[block, features], weights.transpose(1, 2))
    return out_t.transpose(1, 2)


#: use :func:`exp_attention` on the CPU where it is safe (set False to run :func:`blocked_attention` instead)
USE_EXP_ATTENTION = True
#: largest ``log`` of a value the unshifted exponentials of :func:`exp_attention` may reach: float32
#: overflows at exp(88.7) and becomes subnormal below exp(-87.3)
EXP_ATTENTION_LOG_LIMIT = 85.0


def layer_norm_head_bounds(linear, norm, n_heads, groups=1):
    """Largest Euclidean norm of each head's projection of any :class:`~torch.nn.LayerNorm` output.

    A layer norm's output before its affine part has norm at most ``sqrt(d)``
    whatever its input, so ``|W_h (gamma * y + beta) + b_h| <= ||W_h diag(gamma)||_2 sqrt(d) +
    |W_h beta + b_h|`` for each head ``h`` (its ``D`` rows of ``W``).

    Parameters
    ----------
    linear : nn.Linear
        The projection, ``groups * n_heads * D`` outputs (e.g. keys then values: ``groups=2``).
    norm : nn.LayerNorm
        The layer norm whose output ``linear`` projects.
    n_heads : int
    groups : int

    Returns
    -------
    Tensor, shape (groups, n_heads)

    Examples
    --------
    >>> norm, linear = nn.LayerNorm(8), nn.Linear(8, 4)
    >>> bound = layer_norm_head_bounds(linear, norm, n_heads=2)
    >>> y = linear(norm(100 * torch.randn(1000, 8))).detach().view(1000, 2, 2).norm(dim=-1)
    >>> bool((y <= bound[0]).all())
    True
    """
    weight, bias = linear.weight.detach().float(), linear.bias.detach().float()
    gamma, beta = norm.weight.detach().float(), norm.bias.detach().float()
    d_model = weight.shape[1]
    weight = weight.view(groups, n_heads, -1, d_model)
    spectral = torch.linalg.matrix_norm(weight * gamma, ord=2)  # (groups, heads)
    offset = (weight @ beta + bias.view(groups, n_heads, -1)).norm(dim=-1)
    return spectral * d_model**0.5 + offset


def exp_attention(query, key, value, n_heads, block_elements=ATTENTION_BLOCK_ELEMENTS, scale=None):
    """Multi-head attention with one exponential per score and no shift (the CPU inference path).

    ``softmax(s)_j = exp(s_j) / sum_k exp(s_k)``, computed as written: valid
    when every score is known to lie well inside float32's exponent range
    (:meth:`Attention.exp_attention_is_safe` proves it from the weights when the
    inputs come out of layer norms, as in this network). Then the scores are made
    by one matrix product, exponentiated in place by numpy (its float32
    exponential takes about half the time of torch's softmax, which also finds
    each row's maximum and divides every weight: 103 against 210 us for 64 x 60 x
    60 scores on one core of an AMD EPYC, 2026-12-03) and used by one more
    product, whose extra row of ones in ``value`` gives each row's sum; only the
    (D, T) outputs are divided. Equal to :func:`blocked_attention` to float rounding.

    Parameters
    ----------
    query : Tensor, shape (B, T, H * D) or (1, T, H * D), float32
        Already projected; a batch of 1 is shared by every row of ``key``.
    key : Tensor, shape (B, S, H * D), float32
        Already projected; unit stride in the last dimension.
    value : Tensor, shape (B, S, H * (D + 1)), float32
        Each head's D projected features followed by a constant 1
        (:meth:`Attention.key_value_with_ones`).
    n_heads, block_elements, scale
        As for :func:`blocked_attention`.

    Returns
    -------
    Tensor, shape (B, T, H * D)

    Examples
    --------
    >>> q, k, v = torch.randn(3, 5, 8), torch.randn(3, 6, 8), torch.randn(3, 6, 8)
    >>> v1 = torch.cat([v.unflatten(-1, (2, 4)), torch.ones(3, 6, 2, 1)], -1).flatten(2)
    >>> torch.allclose(exp_attention(q, k, v1, n_heads=2), blocked_attention(q, k, v, n_heads=2), atol=1e-6)
    True
    """
    batch, n_keys, width = key.shape
    n_queries, dim = query.shape[1], width // n_heads
    if batch == 0:
        return key.new_empty(0, n_queries, width)
    blocks = _blocks_of_rows(query, key, n_heads, block_elements, scale)
    keys_t, values_t = key.transpose(1, 2), value.transpose(1, 2)
    # head-major products (H, B, D + 1, T): each head's block is one contiguous output of the value product
    products = torch.empty(n_heads, batch, dim + 1, n_queries, dtype=value.dtype, device=value.device)
    # one buffer for every block's scores: a fresh (rows, T, S) tensor per head would be faulted in page by page
    buffer = torch.empty(len(blocks[0][1]), n_queries, n_keys, dtype=value.dtype, device=value.device)
    for block, block_query in blocks:
        scores = buffer[: len(block_query)]
        weights = scores.numpy()
        for head in range(n_heads):
            features = slice(head * dim, (head + 1) * dim)
            torch.bmm(block_query[..., features], keys_t[block, features], out=scores)
            np.exp(weights, out=weights)
            values = values_t[block, head * (dim + 1) : (head + 1) * (dim + 1)]
            torch.bmm(values, scores.transpose(1, 2), out=products[head, block])
    # divided by the row sums straight into the (B, T, H, D) layout of the output projection
    out = torch.empty(batch, n_queries, n_heads, dim, dtype=value.dtype, device=value.device)
    torch.div(products[:, :, :dim].permute(1, 3, 0, 2), products[:, :, dim:].permute(1, 3, 0, 2), out=out)
    return out.view(batch, n_queries, width)


class Attention(nn.Module):
    """Multi-head attention: :func:`F.scaled_dot_product_attention` for training and on GPUs; for
    inference on the CPU (both faster than the fused kernel for the paper's heads of dimension 4)
    :func:`exp_attention` when the weights bound the scores (float32, no padded keys, inputs from
    the layer norms named in ``norms``), else :func:`blocked_attention`.
    """

    def __init__(self, d_model, n_heads, dropout=0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads}).")
        self.n_heads = n_heads
        self.query = nn.Linear(d_model, d_model)
        self.key_value = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout
        self._derived = {}  # weights derived for exp_attention, keyed by the parameters' version counters

    def _split(self, x):
        b, t, d = x.shape
        return x.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)

    def _cached(self, name, modules, make):
        parameters = [p for m in modules for p in m.parameters()]
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in parameters)
        cached = self._derived.get(name)
        if cached is None or cached[0] != key:
            with torch.inference_mode(False):  # ordinary tensors, which a copy of the module may clone
                cached = (key, make())
            self._derived[name] = cached
        return cached[1]

    def key_value_with_ones(self):
        """Weight and bias of the key/value projection with a constant 1 after each head's values.

        Returns
        -------
        (Tensor, Tensor)
            Shape (H D + H (D + 1), d) and (H D + H (D + 1)): keys as before, then each head's D
            value features followed by a zero weight row with bias 1.
        """

        def make():
            weight, bias = self.key_value.weight.detach(), self.key_value.bias.detach()
            width, d_model = weight.shape[0] // 2, weight.shape[1]
            heads, dim = self.n_heads, width // self.n_heads
            w = torch.zeros(heads, dim + 1, d_model, dtype=weight.dtype, device=weight.device)
            b = torch.ones(heads, dim + 1, dtype=bias.dtype, device=bias.device)
            w[:, :dim] = weight[width:].view(heads, dim, d_model)
            b[:, :dim] = bias[width:].view(heads, dim)
            return torch.cat([weight[:width], w.flatten(0, 1)]), torch.cat([bias[:width], b.flatten()])

        return self._cached("key_value_with_ones", (self.key_value,), make)

    def exp_attention_is_safe(self, query_norm, key_value_norm, n_keys):
        """Whether :func:`exp_attention` cannot overflow or underflow for any input of these layer norms.

        With ``Q``, ``K``, ``V`` the largest norms of a head's query, key and value
        (:func:`layer_norm_head_bounds`), every score lies within ``+-Q K / sqrt(D)``, so
        each exponential lies within ``exp(+-Q K / sqrt(D))`` and each row's sums within
        ``n_keys max(1, V) exp(Q K / sqrt(D))``; all must stay inside float32's normal range
        (:data:`EXP_ATTENTION_LOG_LIMIT`). The shipped weights' largest score bound is 61.
        """

        def make():
            heads = self.n_heads
            dim = self.query.out_features // heads
            query = layer_norm_head_bounds(self.query, query_norm, heads)[0]
            key, value = layer_norm_head_bounds(self.key_value, key_value_norm, heads, groups=2)
            score = query * key / dim**0.5
            # log of the largest row sum of exp(score) * |value| for one key
            return float(score.max()), float((score + value.clamp_min(1.0).log()).max())

        largest_score, largest_term = self._cached(
            "score_bounds", (self.query, self.key_value, query_norm, key_value_norm), make
        )
        largest_sum = largest_term + math.log(max(int(n_keys), 1))
        return max(largest_score, largest_sum) <= EXP_ATTENTION_LOG_LIMIT

    def forward(self, x_query, x_key_value, key_valid=None, norms=None):
        """``key_valid`` (B, S) bool, True for keys that may be attended; ``norms`` the layer norms
        (query's, key/value's) whose outputs ``x_query`` and ``x_key_value`` are, if they are."""
        q = self.query(x_query)
        cpu_inference = x_query.device.type == "cpu" and not torch.is_grad_enabled()
        if cpu_inference and not (self.training and self.dropout):
            if (
                USE_EXP_ATTENTION
                and norms is not None
                and key_valid is None
                and q.dtype == x_key_value.dtype == torch.float32  # (CPU autocast makes q bfloat16)
                and self.exp_attention_is_safe(*norms, x_key_value.shape[1])
            ):
                width = self.query.out_features
                key_value = F.linear(x_key_value, *self.key_value_with_ones())
                return self.out(exp_attention(q, key_value[..., :width], key_value[..., width:], self.n_heads))
            k, v = self.key_value(x_key_value).chunk(2, dim=-1)
            return self.out(blocked_attention(q, k, v, self.n_heads, key_valid))
        k, v = self.key_value(x_key_value).chunk(2, dim=-1)
        q, k, v = self._split(q), self._split(k), self._split(v)
        mask = None if key_valid is None else key_valid[:, None, None, :]
        if q.shape[0] != k.shape[0]:  # a shared query (cached AIF) against per-voxel keys
            q = q.expand(k.shape[0], -1, -1, -1)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        b, h, t, dh = out.shape
        return self.out(out.transpose(1, 2).reshape(b, t, h * dh))


class FeedForward(nn.Sequential):
    def __init__(self, d_model, dim_feedforward, dropout=0.0):
        super().__init__(
            nn.Linear(d_model, dim_feedforward), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim_feedforward, d_model)
        )


class EncoderLayer(nn.Module):
    """Pre-norm Transformer encoder layer."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.d_model
        self.norm_attention = nn.LayerNorm(d)
        self.attention = Attention(d, config.n_heads, config.dropout)
        self.norm_feedforward = nn.LayerNorm(d)
        self.feedforward = FeedForward(d, config.dim_feedforward, config.dropout)

    def forward(self, x, valid=None):
        h = self.norm_attention(x)
        x = x + self.attention(h, h, valid, norms=(self.norm_attention, self.norm_attention))
        return x + self.feedforward(self.norm_feedforward(x))


class DecoderLayer(nn.Module):
    """Pre-norm Transformer decoder layer (self-attention, cross-attention to the encoder, feed-forward).

    The self-attention is not causal: the whole global AIF is known.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.d_model
        self.norm_self = nn.LayerNorm(d)
        self.self_attention = Attention(d, config.n_heads, config.dropout)
        self.norm_cross = nn.LayerNorm(d)
        self.cross_attention = Attention(d, config.n_heads, config.dropout)
        self.norm_feedforward = nn.LayerNorm(d)
        self.feedforward = FeedForward(d, config.dim_feedforward, config.dropout)

    def self_block(self, x, valid=None):
        h = self.norm_self(x)
        return x + self.self_attention(h, h, valid, norms=(self.norm_self, self.norm_self))

    def cross_block(self, x, memory, valid=None, memory_norm=None):
        """Cross-attention and feed-forward; ``x`` of batch 1 broadcasts against ``memory``.

        ``memory_norm``: the layer norm whose output ``memory`` is, if it is (the encoder's).
        """
        norms = None if memory_norm is None else (self.norm_cross, memory_norm)
        x = x + self.cross_attention(self.norm_cross(x), memory, valid, norms=norms)
        return x + self.feedforward(self.norm_feedforward(x))

    def forward(self, x, memory, valid=None, memory_norm=None):
        return self.cross_block(self.self_block(x, valid), memory, valid, memory_norm)


class CurveHead(nn.Sequential):
    """Two linear layers applied at every time point: (B, T, d) -> (B, T)."""

    def __init__(self, d_model):
        super().__init__(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, 1))

    def forward(self, x):
        return super().forward(x)[..., 0]


class PerfusionTransformer(nn.Module):
    """Encoder-decoder Transformer estimating local AIF, flow-scaled residue and BAD per voxel.

    See the module docstring for the units of inputs and outputs.

    Examples
    --------
    >>> model = PerfusionTransformer()
    >>> out = model(torch.rand(2, 50), torch.rand(50), torch.arange(50.0))
    >>> sorted(out), tuple(out["residue"].shape), tuple(out["bad"].shape)
    (['bad', 'local_aif', 'residue'], (2, 50), (2,))
    """

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig()
        c = self.config
        self.tissue_embedding = CurveEmbedding(c)
        self.aif_embedding = CurveEmbedding(c)
        self.encoder = nn.ModuleList(EncoderLayer(c) for _ in range(c.n_encoder_layers))
        self.encoder_norm = nn.LayerNorm(c.d_model)
        self.decoder = nn.ModuleList(DecoderLayer(c) for _ in range(c.n_decoder_layers))
        self.decoder_norm = nn.LayerNorm(c.d_model)
        self.local_aif_head = CurveHead(c.d_model)
        self.residue_head = CurveHead(c.d_model)
        self.bad_head = nn.Sequential(nn.Linear(c.d_model, c.d_model), nn.GELU(), nn.Linear(c.d_model, 1))

    def encode_aif(self, aif, frame_times, valid=None):
        """The decoder's voxel-independent part: AIF embedding and the first layer's self-attention.

        Parameters
        ----------
        aif : Tensor, shape (B, T) or (T,)
            Normalised global AIF (``aif / peak``).
        frame_times : Tensor, shape (B, T) or (T,)
            Seconds.
        valid : Tensor of bool, shape (B, T), optional

        Returns
        -------
        Tensor, shape (B, T, d) (B = 1 for a single AIF): pass as ``aif_cache``.
        """
        if aif.dim() == 1:
            aif = aif[None, :]
        if valid is not None and aif.shape[0] == 1 and valid.shape[0] > 1:
            if not torch.equal(valid, valid[:1].expand_as(valid)):
                raise ValueError(
                    "One global AIF is shared by every curve, so its valid frames must be the same in every row "
                    "of `valid`; for curves of different lengths give one AIF per row, shape (B, T)."
                )
            valid = valid[:1]
        x = self.aif_embedding(aif, frame_times)
        return self.decoder[0].self_block(x, valid)

    def forward(self, tissue, aif=None, frame_times=None, valid=None, aif_cache=None):
        """Estimate the three outputs.

        Parameters
        ----------
        tissue : Tensor, shape (B, T)
            The encoder's input (:func:`normalise_tissue`).
        aif : Tensor, shape (B, T) or (T,)
            ``aif / aif_peak``; not needed when ``aif_cache`` is given.
        frame_times : Tensor, shape (B, T) or (T,)
            Frame times in seconds.
        valid : Tensor of bool, shape (B, T), optional
            True for real frames; padded frames must come last.
        aif_cache : Tensor, optional
            :meth:`encode_aif` of the same AIF (one per batch row, or one for all).

        Returns
        -------
        dict of Tensor
            ``local_aif`` (B, T) in units of the AIF peak, ``residue`` (B, T) in
            the units of :func:`normalise_tissue`'s ``residue_unit``, ``bad`` (B,) in seconds. Padded
            frames are 0.
        """
        memory = self.tissue_embedding(tissue, frame_times)
        for layer in self.encoder:
            memory = layer(memory, valid)
        memory = self.encoder_norm(memory)

        x = self.encode_aif(aif, frame_times, valid) if aif_cache is None else aif_cache
        # a shared AIF (batch 1) stays unexpanded: the first cross-attention's query is computed once
        x = self.decoder[0].cross_block(x, memory, valid, self.encoder_norm)
        for layer in self.decoder[1:]:
            x = layer(x, memory, valid, self.encoder_norm)
        x = self.decoder_norm(x)

        local_aif = F.softplus(self.local_aif_head(x))
        residue = F.softplus(self.residue_head(x))
        if valid is not None:
            weights = valid.to(x.dtype)
            pooled = (x * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp_min(1)
            # padded frames sort last and are then zeroed
            residue = torch.where(valid, residue, torch.full_like(residue, -1.0))
        else:
            pooled = x.mean(1)
        residue = torch.sort(residue, dim=-1, descending=True).values
        if valid is not None:
            residue = residue.clamp_min(0) * valid
            local_aif = local_aif * valid
        bad = self.config.bad_scale * F.softplus(self.bad_head(pooled)[..., 0])
        return {"local_aif": local_aif, "residue": residue, "bad": bad}
