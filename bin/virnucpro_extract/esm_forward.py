"""An inference forward of our own for ESM-2 (FastESM2_650's architecture), over the weights of a transformers
`EsmModel`, computing the same maths.

Why not `EsmModel` itself: under `torch.compile` it reached 338k tokens/s on an H100, with 41 % of the GPU time
outside the GEMMs (attention masks and rotary tables rebuilt per batch, erf-GELU, LayerNorms, padding) and about
41 s of Dynamo tracing in every new process. Here:

- tokens are *packed*: a batch is the concatenation of its proteins, `[tokens, hidden]`, with no padding at all,
  so every GEMM, LayerNorm and GELU runs on real tokens only;
- attention runs per protein through variable-length flash attention (`torch.nn.attention.varlen`) on packed
  tokens, or, for a batch of proteins of one exact length, through `scaled_dot_product_attention` on a
  `[batch, heads, length, head_dim]` view of the same memory with no mask at all;
- Q, K and V come from one fused GEMM, and rotary is applied once to q and k together, from cos/sin tables
  gathered once per batch (not per layer);
- optionally the FC1 GEMM applies GELU in cuBLASLt's epilogue (`torch._addmm_activation`; tanh form on CUDA,
  gated on measured cosine to the erf model), on slices of FC1_SLICE_TOKENS tokens on the fused path;
- on GPU (`fused_kernels`, the default there) the layers run eager through Triton kernels
  (`esm_kernels.py`: LayerNorm with the pending biases added, rotary in place, the final LayerNorm and the
  residue mean in one pass) with the out-projection and FC2
  GEMMs accumulating into the residual stream, so nothing is compiled; otherwise one layer is compiled
  (`regional compilation`) and reused by all 33, so a new process traces one layer, not the model.

transformers' `EsmModel` stays the reference in tests (fp32 allclose) and the fallback (`--fast_forward false`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ESM's token-dropout constant: the embeddings were trained with 15 % of tokens masked, 80 % of those zeroed.
MASK_RATIO_TRAIN = 0.15 * 0.8
# On the fused path, FC1 with cuBLASLt's GELU epilogue runs on slices of this many tokens: on an H200 that GEMM
# ran at 532-564 TFLOP/s on 131,072 tokens, 599-622 on 32,768 (553-584 on 65,536, 527-554 on 16,384); the
# forward gained 0.4 % / 0.4 % (99-100 / 40-166 residues, medians of five interleaved rounds,
# benchmarks/results/forward_h200_rounds.json); slicing FC2 as well lost it (forward_h200_ffn_slices.json).
FC1_SLICE_TOKENS = 32768


def esm_model_supported(model) -> str | None:
    """None when `model` (a transformers EsmModel) can run through this forward, else why not."""
    config = model.config
    if type(model).__name__ != "EsmModel":
        return f"{type(model).__name__} is not transformers' EsmModel"
    if getattr(config, "position_embedding_type", "absolute") != "rotary":
        return "absolute position embeddings (ESM-1 style)"
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return "decoder / cross-attention configuration"
    return None


@dataclass
class PackedBatch:
    """A batch of proteins laid end to end, as the fast forward takes it.

    input_ids  [tokens]      every protein's tokens (BOS, residues, EOS), one protein after the other
    positions  [tokens]      position of each token within its protein (0 = BOS), for rotary
    seq_index  [tokens]      which protein each token belongs to
    cu_seqlens [batch + 1]   int32 offsets of the proteins in the packed tokens (flash attention's layout)
    max_len    int           longest protein in tokens
    uniform    bool          every protein has the same length: attention on a [batch, length] view, no mask
    residue_index [batch, max_residues]  packed index of each protein's residues (BOS/EOS excluded), 0-padded
    residue_valid [batch, max_residues]  which entries of residue_index are real residues
    residues   [batch]       residue count of each protein (the mean's divisor)
    """

    input_ids: torch.Tensor
    positions: torch.Tensor
    seq_index: torch.Tensor
    cu_seqlens: torch.Tensor
    max_len: int
    uniform: bool
    residue_index: torch.Tensor
    residue_valid: torch.Tensor
    residues: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.cu_seqlens.numel() - 1


def pack_proteins(rows: list[np.ndarray], cls_id: int, eos_id: int, device) -> PackedBatch:
    """Pack residue token arrays (no specials) into one PackedBatch on `device`, BOS/EOS added.

    Built on the host with numpy (cheap, vectorised) and copied in one pinned, non-blocking transfer per array.
    """
    lengths = np.fromiter((len(r) + 2 for r in rows), dtype=np.int64, count=len(rows))
    total = int(lengths.sum())
    starts = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    input_ids = np.empty(total, dtype=np.int64)
    input_ids[starts[:-1]] = cls_id
    input_ids[starts[1:] - 1] = eos_id
    for start, row in zip(starts[:-1], rows):
        input_ids[start + 1: start + 1 + len(row)] = row
    seq_index = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    positions = np.arange(total, dtype=np.int64) - np.repeat(starts[:-1], lengths)
    residues = lengths - 2
    width = max(1, int(residues.max()))
    offsets = np.arange(width, dtype=np.int64)
    residue_valid = offsets[None, :] < residues[:, None]
    residue_index = np.where(residue_valid, starts[:-1, None] + 1 + offsets[None, :], 0)
    uniform = bool((lengths == lengths[0]).all())
    host = [input_ids, positions, seq_index, starts.astype(np.int32), residue_index, residue_valid, residues]
    tensors = [torch.from_numpy(a) for a in host]
    if torch.device(device).type == "cuda":
        tensors = [t.pin_memory() for t in tensors]
    ids_t, pos_t, seq_t, cu_t, rindex_t, rvalid_t, res_t = (t.to(device, non_blocking=True) for t in tensors)
    return PackedBatch(ids_t, pos_t, seq_t, cu_t, int(lengths.max()), uniform, rindex_t, rvalid_t, res_t)


class EsmLayerWeights(nn.Module):
    """One ESM-2 encoder layer in the fused layout: Q, K and V stacked into one `[3 hidden, hidden]` GEMM.

    Holds the weights as plain parameters (no sub-modules to initialise); all but the stacked QKV share the
    storage of the layer they come from until the module is moved or cast.
    """

    def __init__(self, layer, num_heads: int, eps: float, gelu_epilogue: bool):
        super().__init__()
        attention = layer.attention.self
        self.num_heads, self.eps, self.gelu_epilogue = num_heads, eps, gelu_epilogue
        self.fc1_slice_tokens: int | None = None    # see feed_forward_
        take = lambda t: nn.Parameter(t.detach(), requires_grad=False)  # noqa: E731
        self.ln1_weight, self.ln1_bias = take(layer.attention.LayerNorm.weight), take(layer.attention.LayerNorm.bias)
        self.qkv_weight = take(torch.cat([attention.query.weight, attention.key.weight, attention.value.weight]))
        self.qkv_bias = take(torch.cat([attention.query.bias, attention.key.bias, attention.value.bias]))
        dense = layer.attention.output.dense
        self.out_weight, self.out_bias = take(dense.weight), take(dense.bias)
        self.ln2_weight, self.ln2_bias = take(layer.LayerNorm.weight), take(layer.LayerNorm.bias)
        self.fc1_weight, self.fc1_bias = take(layer.intermediate.dense.weight), take(layer.intermediate.dense.bias)
        self.fc2_weight, self.fc2_bias = take(layer.output.dense.weight), take(layer.output.dense.bias)

    def forward(self, x: torch.Tensor, ffn_out: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cu_seqlens: torch.Tensor, max_len: int, batch: int, uniform: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, ffn_out) [tokens, hidden] -> this layer's (x, ffn_out); the layer's input is `x + ffn_out`.

        The residual add of each layer's feed-forward is left to the next layer, so that under regional
        compilation it fuses with that layer's first LayerNorm (one pass over the tokens instead of two).
        cos/sin [tokens, head_dim] float32: the rotary angles of each token.
        """
        tokens, hidden = x.shape
        head_dim = hidden // self.num_heads
        x = x + ffn_out
        h = F.layer_norm(x, (hidden,), self.ln1_weight, self.ln1_bias, self.eps)
        qkv = F.linear(h, self.qkv_weight, self.qkv_bias).view(tokens, 3, self.num_heads, head_dim)
        qk = rotate(qkv[:, :2], cos, sin)                       # [tokens, 2, heads, head_dim]
        attended = attend(qk[:, 0], qk[:, 1], qkv[:, 2], cu_seqlens, max_len, batch, uniform)
        x = x + F.linear(attended.reshape(tokens, hidden), self.out_weight, self.out_bias)
        h = F.layer_norm(x, (hidden,), self.ln2_weight, self.ln2_bias, self.eps)
        if self.gelu_epilogue:  # cuBLASLt's GELU epilogue (tanh form on CUDA; exact erf on CPU)
            f = torch._addmm_activation(self.fc1_bias, h, self.fc1_weight.t(), use_gelu=True)
        else:
            f = erf_gelu(F.linear(h, self.fc1_weight, self.fc1_bias))
        return x, F.linear(f, self.fc2_weight, self.fc2_bias)

    def forward_fused(self, x: torch.Tensor, offsets: tuple[torch.Tensor | None, torch.Tensor], cos_half: torch.Tensor,
                      sin_half: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int, batch: int,
                      uniform: bool) -> None:
        """The same layer through the Triton kernels, eager, updating the residual stream x [tokens, hidden] in place.

        The out-projection and FC2 GEMMs accumulate into x (`addmm_`, beta = 1) without their biases; `offsets`
        are the running sums of the biases x lacks before each LayerNorm (`EsmInferenceEncoder.residual_offsets`),
        which the LayerNorm kernel adds. cos_half/sin_half [tokens, head_dim / 2] float32.
        """
        from .esm_kernels import offset_layernorm, rotary_

        tokens, hidden = x.shape
        head_dim = hidden // self.num_heads
        h = offset_layernorm(x, offsets[0], self.ln1_weight, self.ln1_bias, self.eps)
        qkv = F.linear(h, self.qkv_weight, self.qkv_bias)                      # [tokens, 3 hidden]
        rotary_(qkv, cos_half, sin_half, self.num_heads)
        qkv = qkv.view(tokens, 3, self.num_heads, head_dim)
        attended = attend(qkv[:, 0], qkv[:, 1], qkv[:, 2], cu_seqlens, max_len, batch, uniform)
        x.addmm_(attended.reshape(tokens, hidden), self.out_weight.t())
        h = offset_layernorm(x, offsets[1], self.ln2_weight, self.ln2_bias, self.eps)
        self.feed_forward_(x, h)

    def feed_forward_(self, x: torch.Tensor, h: torch.Tensor) -> None:
        """x [tokens, hidden] += FC2(GELU(FC1(h))) without FC2's bias (a residual offset); FC2 accumulates into x.

        With `fc1_slice_tokens` and the GELU epilogue, FC1 runs on slices of that many tokens, each written into
        its rows of one [tokens, intermediate] output (rows are independent: the same result), and FC2 on the
        whole batch: cuBLASLt picks another kernel for the epilogue GEMM at another size.
        """
        if self.gelu_epilogue:
            slice_tokens = self.fc1_slice_tokens or x.shape[0]
            f = h.new_empty(x.shape[0], self.fc1_weight.shape[0])
            for start in range(0, x.shape[0], slice_tokens):
                rows = slice(start, start + slice_tokens)
                torch._addmm_activation(self.fc1_bias, h[rows], self.fc1_weight.t(), use_gelu=True, out=f[rows])
        else:
            f = erf_gelu(F.linear(h, self.fc1_weight, self.fc1_bias))
        x.addmm_(f, self.fc2_weight.t())


def erf_gelu(x: torch.Tensor) -> torch.Tensor:
    """ESM's exact GELU, written as transformers' `modeling_esm.gelu` writes it (F.gelu differs in the last bit)."""
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def rotate(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of q and k at once: qk [tokens, 2, heads, head_dim], cos/sin [tokens, head_dim] float32.

    Computed in float32 and cast back, as transformers does (its rotate_half: second half negated, then first).
    """
    dtype = qk.dtype
    x = qk.float()
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos[:, None, None, :] + rotated * sin[:, None, None, :]).to(dtype)


def attend(q, k, v, cu_seqlens, max_len: int, batch: int, uniform: bool) -> torch.Tensor:
    """Attention within each protein: q, k, v [tokens, heads, head_dim] -> [tokens, heads, head_dim].

    One length for all proteins: SDPA on a [batch, heads, length, head_dim] view, no mask. Mixed lengths where
    flash attention runs (`varlen_flash_applies`): variable-length flash attention on the packed tokens.
    Elsewhere (CPU, `--precision fp32`, cards before Ampere): SDPA over a padded copy with a key mask; the same
    maths.
    """
    tokens, heads, head_dim = q.shape
    if uniform:
        shape = (batch, tokens // batch, heads, head_dim)
        out = F.scaled_dot_product_attention(*(t.reshape(shape).transpose(1, 2) for t in (q, k, v)))
        return out.transpose(1, 2).reshape(tokens, heads, head_dim)
    if varlen_flash_applies(q):
        from torch.nn.attention.varlen import varlen_attn

        return varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_len, max_len)
    return padded_attention(q, k, v, cu_seqlens, max_len)


def varlen_flash_applies(q) -> bool:
    """Whether variable-length flash attention takes q: CUDA, fp16 or bf16, compute capability 8.0 or later
    (FlashAttention raises otherwise: 'only supports Ampere GPUs or newer', 'only support fp16 and bf16')."""
    return (q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)
            and torch.cuda.get_device_capability(q.device)[0] >= 8)


def padded_attention(q, k, v, cu_seqlens, max_len: int) -> torch.Tensor:
    """Reference attention for mixed lengths without flash attention: pad, mask the keys, SDPA, unpad."""
    tokens, heads, head_dim = q.shape
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    offsets = torch.arange(max_len, device=q.device)
    valid = offsets[None, :] < lengths[:, None]                                  # [batch, max_len]
    index = (cu_seqlens[:-1, None].long() + offsets[None, :]).clamp(max=tokens - 1)
    def padded(t):
        return (t[index] * valid[..., None, None]).transpose(1, 2)                # [batch, heads, max_len, hd]
    out = F.scaled_dot_product_attention(padded(q), padded(k), padded(v), attn_mask=valid[:, None, None, :])
    return out.transpose(1, 2)[valid]


class EsmInferenceEncoder(nn.Module):
    """ESM-2's encoder for inference on packed proteins; `pooled_residue_means` is what the worker needs.

    Built from a loaded transformers `EsmModel` (any dtype; build before casting so the rotary frequencies keep
    the checkpoint's values), then moved and cast like any module.
    """

    def __init__(self, model, gelu_epilogue: bool = False, fused_kernels: bool = False):
        super().__init__()
        reason = esm_model_supported(model)
        if reason:
            raise ValueError(f"the fast ESM forward cannot run this model: {reason}")
        config = model.config
        self.config = config
        self.hidden_size = config.hidden_size
        self.eps = config.layer_norm_eps
        self.token_dropout = bool(config.token_dropout)
        self.fused_kernels = fused_kernels
        self.fused_pooling = fused_kernels          # see pooled_residue_means
        self.mask_token_id, self.pad_token_id = config.mask_token_id, config.pad_token_id
        take = lambda t: nn.Parameter(t.detach(), requires_grad=False)  # noqa: E731
        self.word_embeddings = take(model.embeddings.word_embeddings.weight)
        norm = model.embeddings.layer_norm
        self.emb_ln_weight, self.emb_ln_bias = (take(norm.weight), take(norm.bias)) if norm is not None else (None, None)
        self.layers = nn.ModuleList(EsmLayerWeights(layer, config.num_attention_heads, self.eps, gelu_epilogue)
                                    for layer in model.encoder.layer)
        if fused_kernels:
            for layer in self.layers:
                layer.fc1_slice_tokens = FC1_SLICE_TOKENS
        final = model.encoder.emb_layer_norm_after
        self.final_ln_weight, self.final_ln_bias = take(final.weight), take(final.bias)
        # Not a buffer: .to(bfloat16) would round it. cos/sin are computed in float32 from the checkpoint's
        # frequencies, as transformers computes them.
        self.inv_freq = model.rotary_embeddings.inv_freq.detach().float().clone()

    @property
    def dtype(self) -> torch.dtype:
        return self.word_embeddings.dtype

    def compile_layers(self, options: dict | None = None) -> None:
        """Regional compilation (PyTorch's recipe against compile cold starts): every layer compiled, one graph.

        The layers share their code and differ only in weights, which Dynamo treats as inputs, so it traces one
        layer (seconds) instead of the whole model (~40 s); shapes are dynamic, so packed batches of any size and
        both attention layouts (uniform, varlen) need at most two graphs.

        Inductor's coordinate-descent tuning of the fused kernels' block sizes is on: on an H200 it took the
        compiled forward from 397k to 416k tokens/s (99-100 residues) for ~23 s of tuning in the first process,
        whose results the on-disk cache (TORCHINDUCTOR_CACHE_DIR) keeps for every later one.
        """
        options = {"coordinate_descent_tuning": True} if options is None else options
        for layer in self.layers:
            layer.compile(dynamic=True, options=options)

    def embed(self, batch: PackedBatch) -> torch.Tensor:
        """input_ids [tokens] -> input embeddings [tokens, hidden], as EsmEmbeddings computes them (rotary: none)."""
        x = F.embedding(batch.input_ids, self.word_embeddings)
        if self.token_dropout:
            is_mask = batch.input_ids.eq(self.mask_token_id)
            x = x.masked_fill(is_mask[:, None], 0.0)
            lengths = (batch.cu_seqlens[1:] - batch.cu_seqlens[:-1]).float()
            masked = torch.zeros(batch.batch_size, device=x.device).index_add_(0, batch.seq_index, is_mask.float())
            scale = (1 - MASK_RATIO_TRAIN) / (1 - masked / lengths)                # [batch] float32
            x = (x * scale[batch.seq_index][:, None]).to(x.dtype)
        if self.emb_ln_weight is not None:
            x = F.layer_norm(x, (self.hidden_size,), self.emb_ln_weight, self.emb_ln_bias, self.eps)
        return x

    def rotary_tables(self, batch: PackedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [tokens, head_dim / 2] float32: each token's rotary angles (one half; the other repeats it)."""
        if self.inv_freq.device != batch.positions.device:
            self.inv_freq = self.inv_freq.to(batch.positions.device)
        angles = batch.positions.float()[:, None] * self.inv_freq[None, :]
        return angles.cos(), angles.sin()

    def last_hidden_state(self, batch: PackedBatch) -> torch.Tensor:
        """[tokens, hidden] in the model's dtype: EsmModel's last_hidden_state at each packed token."""
        if self.fused_kernels:
            from .esm_kernels import offset_layernorm

            x, final_offset = self._residual_stream_fused(batch)
            return offset_layernorm(x, final_offset, self.final_ln_weight, self.final_ln_bias, self.eps)
        x = self.embed(batch)
        cos_half, sin_half = self.rotary_tables(batch)
        cos, sin = torch.cat((cos_half, cos_half), dim=-1), torch.cat((sin_half, sin_half), dim=-1)
        ffn_out = torch.zeros_like(x)
        for layer in self.layers:
            x, ffn_out = layer(x, ffn_out, cos, sin, batch.cu_seqlens, batch.max_len, batch.batch_size, batch.uniform)
        return F.layer_norm(x + ffn_out, (self.hidden_size,), self.final_ln_weight, self.final_ln_bias, self.eps)

    def residual_offsets(self) -> list[tuple[torch.Tensor | None, torch.Tensor]]:
        """Per layer, the biases the residual stream lacks before its two LayerNorms, and before the final one:
        [(before LN1, before LN2)] + [(before the final LayerNorm, None)], [hidden] float32.

        In the fused forward the out-projection and FC2 GEMMs add a @ W^T to the stream and not their bias b: the
        stream then differs from EsmModel's by the sum of the biases so far, a constant per position in the layer
        stack, added inside each LayerNorm. Computed from the weights as they are (66 additions of [hidden]
        vectors a batch, nothing beside the tokens' work), so a cast or move of the module cannot leave it stale.
        """
        offsets, running = [], None
        for layer in self.layers:
            before_ln1 = running
            running = layer.out_bias.float() if running is None else running + layer.out_bias.float()
            offsets.append((before_ln1, running))
            running = running + layer.fc2_bias.float()
        return offsets + [(running, None)]

    def _residual_stream_fused(self, batch: PackedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The layers through the Triton kernels (see EsmLayerWeights.forward_fused), updating one stream in place:
        (x [tokens, hidden] before the final LayerNorm, the biases x lacks there [hidden] float32)."""
        x = self.embed(batch).contiguous()
        cos_half, sin_half = self.rotary_tables(batch)
        offsets = self.residual_offsets()
        for layer, layer_offsets in zip(self.layers, offsets):
            layer.forward_fused(x, layer_offsets, cos_half, sin_half, batch.cu_seqlens, batch.max_len,
                                batch.batch_size, batch.uniform)
        return x, offsets[-1][0]

    def pooled_residue_means(self, batch: PackedBatch) -> torch.Tensor:
        """[batch, hidden] float32: mean of the last hidden state over each protein's residues (BOS/EOS excluded).

        Fused path (`fused_pooling`): the final LayerNorm and the mean in one kernel, one read of the stream.
        Otherwise a gather to `[batch, max_residues, hidden]` and a masked sum. Both deterministic, unlike a
        scattered add.
        """
        if self.fused_kernels and self.fused_pooling:
            from .esm_kernels import pooled_layernorm_mean

            x, final_offset = self._residual_stream_fused(batch)
            return pooled_layernorm_mean(x, final_offset, self.final_ln_weight, self.final_ln_bias, self.eps,
                                         batch.cu_seqlens, batch.max_len)
        hidden = self.last_hidden_state(batch)
        gathered = hidden[batch.residue_index].float() * batch.residue_valid[..., None]
        return gathered.sum(1) / batch.residues.clamp(min=1)[:, None].float()
