"""Triton kernels for the fast ESM-2 forward: the memory-bound passes of each layer and the pooling, fused.

Why: with the GEMMs near peak, what kept the compiled forward at 416k tokens/s on an H200 was the LayerNorms
(15 % of GPU time at about 40 % of memory bandwidth) and the rotary pass, plus ~30 s of Dynamo tracing and
Inductor tuning in every fresh process. These kernels replace both the compile and those passes:

- `offset_layernorm`: the residual stream `x` already holds `x + a @ W^T` (the out-projection and FC2 GEMMs
  accumulate into it in place, `addmm_` with beta = 1) but not those GEMMs' biases, which are constants: their
  running sum is one `[hidden]` vector per LayerNorm, added inside it. One read and one write of
  `[tokens, hidden]`, instead of a GEMM output, a bias and residual add and a LayerNorm (two reads, three
  writes);
- `rotary_`: rotates q and k inside the fused QKV output in place, in float32 as transformers does;
- `pooled_layernorm_mean`: the final LayerNorm and the mean over each protein's residues in one pass, for
  the worker, which needs the means only: one read of the stream, no `[tokens, hidden]` output and no padded
  float32 gather.

Triton compiles each kernel once per machine (its on-disk cache keeps it), in about a second. All run under
`TRITON_INTERPRET=1` on CPU, which is how the tests check them against the reference maths.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# Launch settings, measured on an H200 by benchmarks/bench_forward.py's kernel sweep (131,072 tokens, hidden
# 1280, bf16); see benchmarks/results/forward_h200.json "kernel_sweep".
# LayerNorm (one read, one write): 188 us = 3.57 TB/s, 74 % of the card's bandwidth (block_m 2: 198 us; the
# earlier in-place variant, one read and two writes: 252 us); rotary: 337 us, 85 %.
LAYERNORM_LAUNCH = {"block_m": 4, "num_warps": 4}
ROTARY_LAUNCH = {"block_t": 1, "num_warps": 4}
# Final LayerNorm + residue mean (one read): 258 us per 131,072 x 1,280 (block_m 8: spills; the forward gained
# 0.4 % / 0.2 % over LayerNorm-then-gather, benchmarks/results/forward_h200_rounds.json).
POOLING_LAUNCH = {"block_m": 4, "num_warps": 4}


@triton.jit
def _normalise_rows(x, mask, weight, ln_bias, n_cols, eps):
    """LayerNorm of each row of x [BLOCK_M, BLOCK_N] float32 (masked entries 0), statistics in float32."""
    mean = tl.sum(x, axis=1) / n_cols
    centred = tl.where(mask, x - mean[:, None], 0.0)
    rstd = tl.rsqrt(tl.sum(centred * centred, axis=1) / n_cols + eps)
    return centred * rstd[:, None] * weight[None, :] + ln_bias[None, :]


@triton.jit
def _offset_layernorm_kernel(x_ptr, offset_ptr, weight_ptr, ln_bias_ptr, out_ptr, n_rows, n_cols, eps,
                             HAS_OFFSET: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < n_cols
    mask = (rows < n_rows)[:, None] & col_ok[None, :]
    offsets = rows.to(tl.int64)[:, None] * n_cols + cols[None, :]
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    if HAS_OFFSET:
        x += tl.load(offset_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    weight = tl.load(weight_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    ln_bias = tl.load(ln_bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    y = _normalise_rows(x, mask, weight, ln_bias, n_cols, eps)
    tl.store(out_ptr + offsets, y.to(out_ptr.dtype.element_ty), mask=mask)


def offset_layernorm(x: torch.Tensor, offset: torch.Tensor | None, weight: torch.Tensor, ln_bias: torch.Tensor,
                     eps: float, block_m: int | None = None, num_warps: int | None = None) -> torch.Tensor:
    """LayerNorm(x + offset) -> [tokens, hidden] in x's dtype; x [tokens, hidden] (contiguous) is only read.

    offset [hidden] float32 (or None): the biases the residual stream has not been given (see
    `EsmInferenceEncoder.residual_offsets`). Statistics in float32, so in float32 this is
    `F.layer_norm(x + offset)` up to summation order: one read and one write of the tokens.
    """
    assert x.is_contiguous() and x.dim() == 2
    n_rows, n_cols = x.shape
    block_m = block_m or LAYERNORM_LAUNCH["block_m"]
    out = torch.empty_like(x)
    grid = (triton.cdiv(n_rows, block_m),)
    _offset_layernorm_kernel[grid](
        x, offset if offset is not None else x, weight, ln_bias, out, n_rows, n_cols, eps,
        HAS_OFFSET=offset is not None, BLOCK_M=block_m, BLOCK_N=triton.next_power_of_2(n_cols),
        num_warps=num_warps or LAYERNORM_LAUNCH["num_warps"])
    return out


@triton.jit
def _pooled_layernorm_mean_kernel(x_ptr, offset_ptr, weight_ptr, ln_bias_ptr, cu_ptr, out_ptr, n_cols, eps,
                                  HAS_OFFSET: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                  MAX_BLOCKS: tl.constexpr):
    protein = tl.program_id(0)
    first = tl.load(cu_ptr + protein) + 1          # after BOS
    end = tl.load(cu_ptr + protein + 1) - 1        # EOS excluded
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < n_cols
    weight = tl.load(weight_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    ln_bias = tl.load(ln_bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    if HAS_OFFSET:
        offset = tl.load(offset_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    total = tl.zeros([BLOCK_N], dtype=tl.float32)
    # A constant trip count with a skip, not range(first, end): Triton's interpreter cannot take loaded bounds
    # with numpy >= 2.4 (triton-lang/triton#9171), and the tests run this kernel there.
    for block in range(0, MAX_BLOCKS):
        start = first + block * BLOCK_M
        if start < end:
            rows = start + tl.arange(0, BLOCK_M)
            row_ok = rows < end
            mask = row_ok[:, None] & col_ok[None, :]
            x = tl.load(x_ptr + rows.to(tl.int64)[:, None] * n_cols + cols[None, :], mask=mask, other=0.0)
            x = x.to(tl.float32)
            if HAS_OFFSET:
                x += offset[None, :]
            y = _normalise_rows(x, mask, weight, ln_bias, n_cols, eps)
            # rounded to the stream's dtype first, as the model's last hidden state is, then summed in float32
            y = y.to(x_ptr.dtype.element_ty).to(tl.float32)
            total += tl.sum(tl.where(mask, y, 0.0), axis=0)
    residues = tl.maximum(end - first, 1).to(tl.float32)
    tl.store(out_ptr + protein * n_cols + cols, total / residues, mask=col_ok)


def pooled_layernorm_mean(x: torch.Tensor, offset: torch.Tensor | None, weight: torch.Tensor, ln_bias: torch.Tensor,
                          eps: float, cu_seqlens: torch.Tensor, max_len: int, block_m: int | None = None,
                          num_warps: int | None = None) -> torch.Tensor:
    """Mean over each protein's residues of LayerNorm(x + offset), [batch, hidden] float32.

    x [tokens, hidden] (contiguous): the packed residual stream, each protein BOS, residues, EOS at
    cu_seqlens [batch + 1]; BOS and EOS are left out of the mean (a protein without residues gets zeros).
    max_len: the longest protein in tokens (the loop's trip count, in one compile up to 1,024 residues).
    Each LayerNorm output is rounded to x's dtype before it is summed in float32, so this is the mean of
    `offset_layernorm(x, ...)` over the residues, up to summation order.
    """
    assert x.is_contiguous() and x.dim() == 2
    batch, n_cols = cu_seqlens.numel() - 1, x.shape[1]
    block_m = block_m or POOLING_LAUNCH["block_m"]
    max_blocks = max(triton.next_power_of_2(triton.cdiv(max(max_len - 2, 1), block_m)), triton.cdiv(1024, block_m))
    out = torch.empty(batch, n_cols, device=x.device, dtype=torch.float32)
    _pooled_layernorm_mean_kernel[(batch,)](
        x, offset if offset is not None else x, weight, ln_bias, cu_seqlens, out, n_cols, eps,
        HAS_OFFSET=offset is not None, BLOCK_M=block_m, BLOCK_N=triton.next_power_of_2(n_cols),
        MAX_BLOCKS=max_blocks, num_warps=num_warps or POOLING_LAUNCH["num_warps"])
    return out


@triton.jit
def _rotary_kernel(qkv_ptr, cos_ptr, sin_ptr, n_tokens, row_stride, HALF: tl.constexpr, PAIRS: tl.constexpr,
                   BLOCK_T: tl.constexpr, BLOCK_J: tl.constexpr):
    tokens = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    j = tl.arange(0, BLOCK_J)                      # (q or k, head, d < half) flattened
    head = j // HALF
    d = j % HALF
    mask = (tokens < n_tokens)[:, None] & (j < PAIRS * HALF)[None, :]
    first = tokens.to(tl.int64)[:, None] * row_stride + (head * 2 * HALF + d)[None, :]
    table = tokens.to(tl.int64)[:, None] * HALF + d[None, :]
    x1 = tl.load(qkv_ptr + first, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(qkv_ptr + first + HALF, mask=mask, other=0.0).to(tl.float32)
    cos = tl.load(cos_ptr + table, mask=mask, other=0.0)
    sin = tl.load(sin_ptr + table, mask=mask, other=0.0)
    tl.store(qkv_ptr + first, (x1 * cos - x2 * sin).to(qkv_ptr.dtype.element_ty), mask=mask)
    tl.store(qkv_ptr + first + HALF, (x2 * cos + x1 * sin).to(qkv_ptr.dtype.element_ty), mask=mask)


def rotary_(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_heads: int,
            block_t: int | None = None, num_warps: int | None = None) -> None:
    """Rotary embedding of q and k in place inside qkv [tokens, 3 * hidden] (q, k, v stacked, heads inside each).

    cos/sin [tokens, head_dim / 2] float32: each token's angles (one half; the other half repeats them).
    Per head, (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin), transformers' rotate_half form, in float32.
    """
    assert qkv.is_contiguous() and cos.is_contiguous() and sin.is_contiguous()
    n_tokens, width = qkv.shape
    half = cos.shape[1]
    pairs = 2 * num_heads                           # q and k heads; v is left alone
    block_t = block_t or ROTARY_LAUNCH["block_t"]
    grid = (triton.cdiv(n_tokens, block_t),)
    _rotary_kernel[grid](qkv, cos, sin, n_tokens, width, HALF=half, PAIRS=pairs, BLOCK_T=block_t,
                         BLOCK_J=triton.next_power_of_2(pairs * half), num_warps=num_warps or ROTARY_LAUNCH["num_warps"])
