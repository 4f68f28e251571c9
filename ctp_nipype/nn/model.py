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
With ``s`` the global AIF's peak in HU above baseline:

* decoder input ``aif / s``; encoder input ``TISSUE_GAIN * tissue / s``;
* ``local_aif`` output in units of ``s`` (multiply by ``s`` for HU);
* ``residue`` output in units of ``1 / RESIDUE_SCALE`` per second
  (``K [1/s] = residue / RESIDUE_SCALE``); ``K`` does not depend on ``s``
  because ``C / s = (Ca_local / s) (x) K``;
* ``bad`` output in seconds.

So the physics closes in the network's units: ``TISSUE_GAIN * tissue / s ==
(TISSUE_GAIN / RESIDUE_SCALE) * (local_aif (x) residue)``, the convolution being
the trapezoidal rule of :mod:`ctp_nipype.perfusion.convolution`
(:func:`trapezoid_convolve`, its torch twin).

Embedding (Informer-style): a 1D-convolution projection of the values +
fixed sinusoidal position of the frame index + a learnable temporal embedding
of the real frame times (a linear map of sines and cosines of ``t`` in seconds
at fixed periods), so that one network serves frame intervals of 1-2 s and
45-120 frames. Curves of different lengths share a batch through a boolean
``valid`` mask (True for real frames, padded frames at the end).

Attention uses :func:`torch.nn.functional.scaled_dot_product_attention`
(fused kernels) for training and on GPUs, and :func:`blocked_attention` for
inference on the CPU. The decoder's input depends on the global AIF only, so its
embedding and the first decoder layer's self-attention are the same for all
voxels of a scan: :meth:`PerfusionTransformer.encode_aif` computes them once
and :meth:`PerfusionTransformer.forward` accepts the result as ``aif_cache``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: encoder input = TISSUE_GAIN * tissue / (global AIF peak): tissue curves are ~1-10% of the AIF
TISSUE_GAIN = 10.0
#: the residue head returns RESIDUE_SCALE * K, K in 1/s (K max ~0.05/s at CBF 200 ml/100 g/min)
RESIDUE_SCALE = 100.0


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


def blocked_attention(query, key, value, n_heads, key_valid=None, block_elements=ATTENTION_BLOCK_ELEMENTS):
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
    rows = max(1, int(block_elements) // (n_queries * n_keys))
    query = query * dim**-0.5
    shared = query.shape[0] == 1
    if shared:  # the shared query, repeated once for a whole block
        query = query.expand(min(rows, batch), -1, -1).contiguous()
    keys_t, values_t = key.transpose(1, 2), value.transpose(1, 2)
    # feature-major output (B, H * D, T): each head's (D, T) block is then written whole, as v^T p^T
    out_t = torch.empty(batch, width, n_queries, dtype=value.dtype, device=value.device)
    for start in range(0, batch, rows):
        stop = min(start + rows, batch)
        block = slice(start, stop)
        block_query = query[: stop - start] if shared else query[block]
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


class Attention(nn.Module):
    """Multi-head attention: :func:`F.scaled_dot_product_attention` for training and on GPUs,
    :func:`blocked_attention` for inference on the CPU (faster for the paper's heads of dimension 4).
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

    def _split(self, x):
        b, t, d = x.shape
        return x.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)

    def forward(self, x_query, x_key_value, key_valid=None):
        """``key_valid`` (B, S) bool, True for keys that may be attended."""
        q = self.query(x_query)
        k, v = self.key_value(x_key_value).chunk(2, dim=-1)
        if q.device.type == "cpu" and not torch.is_grad_enabled() and not (self.training and self.dropout):
            return self.out(blocked_attention(q, k, v, self.n_heads, key_valid))
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
        x = x + self.attention(h, h, valid)
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
        return x + self.self_attention(h, h, valid)

    def cross_block(self, x, memory, valid=None):
        """Cross-attention and feed-forward; ``x`` of batch 1 broadcasts against ``memory``."""
        x = x + self.cross_attention(self.norm_cross(x), memory, valid)
        return x + self.feedforward(self.norm_feedforward(x))

    def forward(self, x, memory, valid=None):
        return self.cross_block(self.self_block(x, valid), memory, valid)


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
            ``TISSUE_GAIN * tissue / aif_peak``.
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
            ``1 / RESIDUE_SCALE`` per second, ``bad`` (B,) in seconds. Padded
            frames are 0.
        """
        memory = self.tissue_embedding(tissue, frame_times)
        for layer in self.encoder:
            memory = layer(memory, valid)
        memory = self.encoder_norm(memory)

        x = self.encode_aif(aif, frame_times, valid) if aif_cache is None else aif_cache
        # a shared AIF (batch 1) stays unexpanded: the first cross-attention's query is computed once
        x = self.decoder[0].cross_block(x, memory, valid)
        for layer in self.decoder[1:]:
            x = layer(x, memory, valid)
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
