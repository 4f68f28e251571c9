"""The perfusion Transformer's CPU inference path: the same network in fewer, larger operations.

:class:`FusedInference` runs :meth:`PerfusionTransformer.forward <ctp_nipype.nn.model.PerfusionTransformer.forward>`
(float32, no padded frames, no gradients) with the weights repacked once per call of
:func:`ctp_nipype.nn.inference.run_network`:

* every attention works on all heads of a block of voxels at once, in numpy on views of the
  projections' memory: the scores of every (voxel, head) pair by one broadcast matrix product,
  one in-place exponential, one product with the values (a row of ones appended to each head's
  values gives each row's sum, as :func:`~ctp_nipype.nn.model.exp_attention` does), one
  division. The scores are made in base 2 (``log2(e)`` folded into the query weights) for the
  faster ``exp2``. The paper's 16 heads of dimension 4 made the per-head products of
  :func:`~ctp_nipype.nn.model.exp_attention` spend their time on tiny, strided matrices;
* the projections come out feature-major, ``(heads x rows, voxels x frames)``, one product for the
  whole batch: a head's queries, keys and values are then strided views that the products read as
  they are (no copies; the three cross-attentions' keys and values of the encoder's output are one
  product), and the attention's output (heads x D, voxels x frames) feeds the output projection, one
  product too;
* a self-attention's query, key and value projections are one product (their weights
  stacked head by head), the two curve heads' first layers are one, the residual additions
  are made in place, and the scores are made, exponentiated and used a block of voxels at a
  time (:data:`SCORE_BLOCK_ELEMENTS`) while they are in the CPU's cache;
* with one AIF for all voxels (a scan), the decoder's AIF part (``aif_cache``) and the first
  cross-attention's queries are computed once;
* the tissue embedding's part that depends on the frame times only (position, temporal embedding
  and the convolution's bias) is computed once per frame times, and the convolution of the curve
  is one product of its shifted copies (``unfold``) with the kernel, added onto it
  (:meth:`FusedInference.tissue_embedding`).

The exponential has no shift, so, as for :func:`~ctp_nipype.nn.model.exp_attention`, the path
is used only when :meth:`Attention.exp_attention_is_safe
<ctp_nipype.nn.model.Attention.exp_attention_is_safe>` proves from the weights that no score
can leave float32's range (:meth:`FusedInference.applies`); the module forward is the
reference, and the tests hold the two equal to 1e-5 (float rounding: the same sums in
another order).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

#: score elements (voxels x heads x keys x queries) exponentiated per block: 1 MiB of float32, 4 voxels
#: at 60 frames, so that a block's scores stay in a core's L2 cache between the three operations that use them
SCORE_BLOCK_ELEMENTS = 1 << 18

#: log2(e): the queries' factor that puts the scores in base 2 for ``exp2``
LOG2_E = 1.4426950408889634


def _self_attention_weights(attention):
    """Query, key and value projections stacked per head: rows ``[q_h * scale, k_h, v_h, 0]``, bias 1 on the last.

    Returns (weight, bias) of shape (H (3 D + 1), d) and (H (3 D + 1), 1): each head's
    ``3 D + 1`` rows are together, so that a head's query, key or value rows of the
    feature-major product are a strided view with one batch stride.
    """
    query_weight, query_bias = _query_weights(attention)
    heads = attention.n_heads
    dim = query_weight.shape[0] // heads
    kv_weight, kv_bias = _key_value_weights(attention)
    d_model = query_weight.shape[1]
    weight = torch.cat([query_weight.view(heads, dim, d_model), kv_weight.view(heads, 2 * dim + 1, d_model)], 1)
    bias = torch.cat([query_bias.view(heads, dim), kv_bias.view(heads, 2 * dim + 1)], 1)
    return weight.flatten(0, 1).contiguous(), bias.reshape(-1, 1).contiguous()


def _query_weights(attention):
    """The query projection times the scores' factor ``D ** -0.5`` and ``log2(e)``: (H D, d) and (H D,).

    The scores then come out in base 2 (``exp(s) = exp2(s log2(e))``): on one core of an AMD EPYC, numpy's
    float32 ``exp2`` ran at 3.1 G values/s, torch's at 2.6 and torch's ``exp`` at 1.1 (MKL's vector library
    there), 2026-12-07; the factor's rounding adds a relative error of about 6e-8 times the score to each
    weight, the order of the score's own rounding.
    """
    scale = (attention.query.out_features // attention.n_heads) ** -0.5 * LOG2_E
    return attention.query.weight.detach() * scale, attention.query.bias.detach() * scale


def _key_value_weights(attention):
    """Keys and values per head, rows ``[k_h, v_h, 0]`` with bias 1 on the last: (H (2 D + 1), d), (H (2 D + 1),)."""
    weight, bias = attention.key_value.weight.detach(), attention.key_value.bias.detach()
    heads = attention.n_heads
    width, d_model = weight.shape[0] // 2, weight.shape[1]
    dim = width // heads
    w = torch.zeros(heads, 2 * dim + 1, d_model, dtype=weight.dtype)
    b = torch.ones(heads, 2 * dim + 1, dtype=bias.dtype)
    w[:, :dim], b[:, :dim] = weight[:width].view(heads, dim, d_model), bias[:width].view(heads, dim)
    w[:, dim : 2 * dim] = weight[width:].view(heads, dim, d_model)
    b[:, dim : 2 * dim] = bias[width:].view(heads, dim)
    return w.flatten(0, 1), b.flatten()


def _feature_major(weight, x, bias):
    """``weight @ x.T + bias`` over every frame of every voxel in one product: (rows, B * T) from ``x`` (B, T, d).

    Feature-major, so that each head's 4-deep score product reads its queries and keys with unit stride
    (numpy's products took 7.1 us per voxel's 16 heads so, 16.2 us from token-major projections), and one
    product for the whole batch (16.5 us per voxel for the 208 rows of a self-attention, against 22.5 us for one
    product per voxel; AMD EPYC, one core, 2026-12-07).
    """
    return torch.addmm(bias, weight, x.reshape(-1, x.shape[-1]).t())


def _heads(projection, heads, batch):
    """A feature-major projection (H * rows, B * T) as a numpy view (B, H, rows, T)."""
    width, columns = projection.shape
    return projection.numpy().reshape(heads, width // heads, batch, columns // batch).transpose(2, 0, 1, 3)


class FusedInference:
    """A :class:`~ctp_nipype.nn.model.PerfusionTransformer`'s weights repacked for the fused CPU path.

    Parameters
    ----------
    model : PerfusionTransformer
        Read once: repack (make a new instance) after its weights change.

    Examples
    --------
    >>> from ctp_nipype.nn.model import PerfusionTransformer
    >>> model = PerfusionTransformer().eval()
    >>> tissue, aif, times = torch.rand(3, 40), torch.rand(40), torch.arange(40.0)
    >>> with torch.inference_mode():
    ...     fused = FusedInference(model)(tissue, aif, times)
    ...     reference = model(tissue, aif, times)
    >>> all(torch.allclose(fused[k], reference[k], atol=1e-5) for k in reference)
    True
    """

    def __init__(self, model):
        self.model = model
        config = model.config
        self.n_heads = config.n_heads
        self.dim = config.d_model // config.n_heads
        self._frame_part = None  # (frame_times, their embedding): see tissue_embedding
        with torch.no_grad():
            self.encoder = [
                (layer.norm_attention, *_self_attention_weights(layer.attention), *self._output(layer.attention),
                 layer.norm_feedforward, *self._feedforward(layer.feedforward))
                for layer in model.encoder
            ]
            self.decoder = []
            for layer in model.decoder:
                query_weight, query_bias = _query_weights(layer.cross_attention)
                self.decoder.append(
                    (layer.norm_self, *_self_attention_weights(layer.self_attention), *self._output(layer.self_attention),
                     layer.norm_cross, query_weight.contiguous(), query_bias[:, None].contiguous(),
                     *self._output(layer.cross_attention), layer.norm_feedforward, *self._feedforward(layer.feedforward))
                )
            # every cross-attention's keys and values come from the encoder's output: one product for all layers
            key_values = [_key_value_weights(layer.cross_attention) for layer in model.decoder]
            self.memory_keys_values = (torch.cat([w for w, _ in key_values]).contiguous(),
                                       torch.cat([b for _, b in key_values])[:, None].contiguous())
            local, residue = model.local_aif_head, model.residue_head
            self.curve_hidden = (
                torch.cat([local[0].weight, residue[0].weight]).t().contiguous(),
                torch.cat([local[0].bias, residue[0].bias]),
            )
            d = config.d_model
            out = torch.zeros(2 * d, 2)
            out[:d, 0], out[d:, 1] = local[2].weight[0], residue[2].weight[0]
            self.curve_out = (out, torch.cat([local[2].bias, residue[2].bias]))

    def tissue_embedding(self, tissue, frame_times):
        """``model.tissue_embedding(tissue, frame_times)`` (B, T, d), contiguous.

        The embedding is the curve's convolution plus a part that depends on the frame times only
        (position, temporal embedding, the convolution's bias: the module's output for a curve of
        zeros). That part is computed once for the frame times of a scan (one ``frame_times`` (T,) for
        every batch) and kept; each batch adds its convolution onto a copy, as one product of the
        curve's ``conv_kernel`` shifted copies (edges replicated, as the module pads) with the kernel.
        Per-curve frame times (B, T) go through the module. Batches of 16 curves of 60 frames, one
        core: 41 us against the module's 308 (AMD EPYC, 2026-12-07).
        """
        embedding = self.model.tissue_embedding
        if frame_times.dim() != 1:
            return embedding(tissue, frame_times).contiguous()
        cached = self._frame_part
        if cached is None or not (cached[0] is frame_times or torch.equal(cached[0], frame_times)):
            zeros = tissue.new_zeros(1, frame_times.shape[-1])
            cached = (frame_times, embedding(zeros, frame_times).contiguous())
            self._frame_part = cached  # one assignment: threads sharing this instance see either value
        kernel = embedding.value.weight  # (d, 1, k)
        width = kernel.shape[-1]
        padded = F.pad(tissue[:, None, :], (width // 2, width // 2), mode="replicate")[:, 0]
        x = cached[1].repeat(tissue.shape[0], 1, 1)
        x.view(-1, x.shape[-1]).addmm_(padded.unfold(1, width, 1).reshape(-1, width), kernel[:, 0].t())
        return x

    @staticmethod
    def _output(attention):
        return attention.out.weight.detach().t().contiguous(), attention.out.bias.detach()

    @staticmethod
    def _feedforward(feedforward):
        first, last = feedforward[0], feedforward[3]
        return (first.weight.detach().t().contiguous(), first.bias.detach(),
                last.weight.detach().t().contiguous(), last.bias.detach())

    @staticmethod
    def applies(model, tissue, aif_cache=None, valid=None):
        """Whether the fused path computes ``model``'s forward for these inputs: CPU, float32, eval mode (or no
        dropout), no padded frames, no autocast, no gradients, and every attention's scores bounded."""
        if (
            tissue.device.type != "cpu"
            or tissue.dtype != torch.float32
            or valid is not None
            or torch.is_grad_enabled()
            or (model.training and model.config.dropout)
            or _cpu_autocast_enabled()
            or (aif_cache is not None and aif_cache.dtype != torch.float32)
        ):
            return False
        n_frames = tissue.shape[-1]
        pairs = [(layer.attention, layer.norm_attention, layer.norm_attention) for layer in model.encoder]
        for layer in model.decoder:
            pairs += [(layer.self_attention, layer.norm_self, layer.norm_self),
                      (layer.cross_attention, layer.norm_cross, model.encoder_norm)]
        return all(attention.exp_attention_is_safe(q, kv, n_frames) for attention, q, kv in pairs)

    def _attend(self, queries, blocks, key_rows, value_rows):
        """All heads' attention: numpy views in, the output (H * D, B * T) out, feature-major.

        ``queries`` (B or 1, H, D, T) and ``blocks`` (B, H, rows, S) are views of projections
        (:func:`_heads`); a head's keys and values are the rows ``key_rows`` and ``value_rows`` (the values
        followed by a row of ones) of its block.

        The products and the exponential run in numpy, on views of the projections' memory: its matrix
        products (OpenBLAS, one call per head) took half the time of torch's batched ones (MKL) for these
        4-deep (60 x 4 by 4 x 60) and 5-row products, and its float32 ``exp2`` 0.85x the time of torch's
        (AMD EPYC, one core, 2026-12-07: 6.9 against 14.0 us and 10.1 against 16.8 us per voxel's 16 heads).
        A shared query (the scan's AIF, batch 1) is broadcast, not copied.
        """
        batch, heads, _, n_keys = blocks.shape
        dim, n_queries = queries.shape[2], queries.shape[3]
        keys, values = blocks[:, :, key_rows].transpose(0, 1, 3, 2), blocks[:, :, value_rows]
        products = torch.empty(heads, dim + 1, batch, n_queries)
        out = products.numpy().transpose(2, 0, 1, 3)  # (B, H, D + 1, T) view
        voxels = max(1, SCORE_BLOCK_ELEMENTS // (heads * n_keys * n_queries))
        scores = np.empty((min(voxels, batch), heads, n_keys, n_queries), np.float32)
        shared = queries.shape[0] == 1
        for start in range(0, batch, voxels):
            block = slice(start, min(start + voxels, batch))
            block_scores = scores[: block.stop - block.start]
            np.matmul(keys[block], queries if shared else queries[block], out=block_scores)
            np.exp2(block_scores, out=block_scores)
            np.matmul(values[block], block_scores, out=out[block])
        attended = products[:, :dim] / products[:, dim:]
        return attended.view(heads * dim, batch * n_queries)

    def _self_attention(self, x, norm, weight, bias, out_weight, out_bias):
        """``x + attention(norm(x))`` in place of ``x`` (B, T, d)."""
        dim = self.dim
        blocks = _heads(_feature_major(weight, _layer_norm(x, norm), bias), self.n_heads, x.shape[0])
        out = self._attend(blocks[:, :, :dim], blocks, slice(dim, 2 * dim), slice(2 * dim, 3 * dim + 1))
        x.view(-1, x.shape[-1]).addmm_(out.t(), out_weight).add_(out_bias)
        return x

    def _feedforward_block(self, x, norm, first_weight, first_bias, last_weight, last_bias):
        """``x + feedforward(norm(x))`` in place of ``x`` (B, T, d)."""
        flat = x.view(-1, x.shape[-1])
        hidden = torch.addmm(first_bias, _layer_norm(flat, norm), first_weight)
        torch.ops.aten.gelu_(hidden)
        flat.addmm_(hidden, last_weight).add_(last_bias)
        return x

    def shared_queries(self, aif_cache):
        """The first cross-attention's queries of ``aif_cache`` (1 or B, T, d): (H D, (1 or B) T)."""
        norm, query_weight, query_bias = self.decoder[0][5:8]
        return _feature_major(query_weight, _layer_norm(aif_cache, norm), query_bias)

    def __call__(self, tissue, aif=None, frame_times=None, aif_cache=None, first_queries=None):
        """The three outputs of :meth:`PerfusionTransformer.forward` (same arguments, no ``valid``).

        ``first_queries``: :meth:`shared_queries` of ``aif_cache``, if already computed.
        """
        model = self.model
        if aif_cache is None:
            aif_cache = model.encode_aif(aif, frame_times)
        if first_queries is None:
            first_queries = self.shared_queries(aif_cache)
        batch, dim = tissue.shape[0], self.dim

        x = self.tissue_embedding(tissue, frame_times)
        for norm, weight, bias, out_weight, out_bias, ff_norm, *feedforward in self.encoder:
            x = self._self_attention(x, norm, weight, bias, out_weight, out_bias)
            x = self._feedforward_block(x, ff_norm, *feedforward)
        memory = _layer_norm(x, model.encoder_norm)
        # (layers, H, 2 D + 1, B, T): each decoder layer's keys and values of the memory
        weight, bias = self.memory_keys_values
        memory_blocks = _feature_major(weight, memory, bias).numpy().reshape(
            len(self.decoder), self.n_heads, -1, batch, memory.shape[1])

        x = None
        for index, (self_norm, weight, bias, out_weight, out_bias, cross_norm, query_weight, query_bias,
                    cross_out_weight, cross_out_bias, ff_norm, *feedforward) in enumerate(self.decoder):
            if index == 0:  # the self-attention is in aif_cache
                queries = first_queries
            else:
                x = self._self_attention(x, self_norm, weight, bias, out_weight, out_bias)
                queries = _feature_major(query_weight, _layer_norm(x, cross_norm), query_bias)
            out = self._attend(_heads(queries, self.n_heads, queries.shape[1] // memory.shape[1]),
                               memory_blocks[index].transpose(2, 0, 1, 3), slice(0, dim), slice(dim, 2 * dim + 1))
            if index == 0:
                x = torch.mm(out.t(), cross_out_weight).view(batch, -1, cross_out_weight.shape[1])
                x.add_(aif_cache + cross_out_bias)
            else:
                x.view(-1, x.shape[-1]).addmm_(out.t(), cross_out_weight).add_(cross_out_bias)
            x = self._feedforward_block(x, ff_norm, *feedforward)

        x = _layer_norm(x, model.decoder_norm)
        hidden = torch.addmm(self.curve_hidden[1], x.view(-1, x.shape[-1]), self.curve_hidden[0])
        torch.ops.aten.gelu_(hidden)
        curves = F.softplus(torch.addmm(self.curve_out[1], hidden, self.curve_out[0])).view(batch, -1, 2)
        local_aif = curves[..., 0].contiguous()
        residue = torch.sort(curves[..., 1], dim=-1, descending=True).values
        bad = model.config.bad_scale * F.softplus(model.bad_head(x.mean(1))[..., 0])
        return {"local_aif": local_aif, "residue": residue, "bad": bad}


def _layer_norm(x, norm):
    """``norm(x)`` for a :class:`torch.nn.LayerNorm` ``norm``, without the module call."""
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _cpu_autocast_enabled():
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()
