"""Steady-state embedding throughput of the fast ESM-2 forward against the references, same process, same card.

ESM-2 650M architecture (EsmConfig as in shared/performance.md), random weights: the compute is the real model's.
Two sets of 20,000 proteins: 99-100 residues (300-bp reads) and 40-166 (500-bp reads). Methods:
  3. the plain length-sorted bf16 batcher (65,536 tokens, transformers' EsmModel, pooled on the GPU);
  4. the previous worker: transformers' EsmModel under torch.compile (whole model, dynamic shapes), 131,072 tokens;
  5. the worker's fast forward (bin/virnucpro_extract/esm_forward.py: packed tokens, exact-length batches
     without a mask, varlen flash attention for the rest, fused QKV), eager and with one layer compiled for all
     (regional compilation), with erf-GELU and with cuBLASLt's tanh-GELU epilogue, and at other budgets;
  6. the fast forward through our Triton kernels (esm_kernels.py: LayerNorm of the residual plus its pending
     biases, in-place rotary; the out-projection and FC2 GEMMs accumulate into the residual stream without their
     biases), eager, nothing compiled.
Linear biases are drawn from N(0, 0.02) (transformers initialises them to zero, which would hide a lost bias).
A sweep of the two kernels' launch settings (GB/s and share of the card's memory bandwidth) comes first; the
variants then run with the fastest.
Each row: tokens/s, proteins/s, peak GPU memory, warm-up seconds (compile included, in this process), the card's
energy for the run (tokens per joule, mean watts, whether the clocks were held at the power cap at its end: an H200
runs this forward at its 700 W limit, so energy per token is what sets the steady state), and the
minimum cosine / maximum absolute difference to an fp32 EsmModel computation of 512 sampled proteins. Ratios
(`x_vs_3`, `x_vs_4`) are against the references measured here. A kernel profile of the chosen variant follows.

Usage (GPU machine): python benchmarks/bench_forward.py --out benchmarks/results/forward_h200.json
Plumbing on CPU: BENCH_SMOKE=1 python benchmarks/bench_forward.py --out /tmp/forward.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import EsmModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bin"))
from bench_embed import (  # noqa: E402
    LENGTH_SETS,
    REFERENCE_SAMPLE,
    esm2_650m_config,
    faithfulness,
    plain_batcher,
    random_proteins,  # noqa: E402
)

from bench_common import (  # noqa: E402
    DEVICE,
    SMOKE,
    energy_timed,
    joules_per_call,
    kernel_profile,
    seconds_per_call,
)
from virnucpro_extract.embed import EsmEmbedder, ProteinEncoder, plan_packed_batches  # noqa: E402
from virnucpro_extract.esm_forward import EsmInferenceEncoder  # noqa: E402
from virnucpro_extract.models import load_tokenizer  # noqa: E402

# name -> (forward, token budget, compiled, gelu epilogue, min_uniform_share, inductor options)
VARIANTS = {
    "6_fused_kernels_tanh_epilogue_131072": ("fused", 131072, False, True, 0.25, None),
    "6_fused_kernels_erf_131072": ("fused", 131072, False, False, 0.25, None),
    "6_fused_kernels_tanh_epilogue_fc1_whole_131072": ("fused", 131072, False, True, 0.25, None),
    "6_fused_kernels_tanh_epilogue_fc1_in_65536_131072": ("fused", 131072, False, True, 0.25, None),
    "6_fused_kernels_tanh_epilogue_gather_pooling_131072": ("fused", 131072, False, True, 0.25, None),
    "6_fused_kernels_tanh_epilogue_fc1_in_16384_131072": ("fused", 131072, False, True, 0.25, None),
    "6_fused_kernels_tanh_epilogue_cublaslt_131072": ("fused_cublaslt", 131072, False, True, 0.25, None),
    "6_fused_kernels_tanh_epilogue_262144": ("fused", 262144, False, True, 0.25, None),
    "7_fused_kernels_fp8_ffn_131072": ("fused_fp8", 131072, False, False, 0.25, None),
    "6_fused_kernels_tanh_epilogue_sdpa_flash_131072": ("fused_flash", 131072, False, True, 0.25, None),
    "6_fused_kernels_tanh_epilogue_sdpa_efficient_131072": ("fused_efficient", 131072, False, True, 0.25, None),
    "4_esmmodel_compiled_131072": ("esmmodel", 131072, True, False, None, None),
    "5_fast_eager_131072": ("fast", 131072, False, False, 0.25, None),
    "5_fast_compiled_131072": ("fast", 131072, True, False, 0.25, None),
    "5_fast_compiled_tanh_epilogue_131072": ("fast", 131072, True, True, 0.25, None),
    "5_fast_compiled_tanh_epilogue_cdt_131072": ("fast", 131072, True, True, 0.25, {"coordinate_descent_tuning": True}),
    "5_fast_compiled_varlen_only_131072": ("fast", 131072, True, False, float("inf"), None),
    "5_fast_compiled_262144": ("fast", 262144, True, False, 0.25, None),
}
# Fused variants that differ from the default in a setting of EsmInferenceEncoder or of its layers (the
# default: FC1 on slices of esm_forward.FC1_SLICE_TOKENS, the pooling kernel).
LAYER_SETTINGS = {
    "6_fused_kernels_tanh_epilogue_fc1_whole_131072": {"fc1_slice_tokens": None},
    "6_fused_kernels_tanh_epilogue_fc1_in_65536_131072": {"fc1_slice_tokens": 65536},
    "6_fused_kernels_tanh_epilogue_gather_pooling_131072": {"fused_pooling": False},
    "6_fused_kernels_tanh_epilogue_fc1_in_16384_131072": {"fc1_slice_tokens": 16384},
}
if SMOKE:
    VARIANTS = {k: (f, 4096, False, e, s, o) for k, (f, _, _, e, s, o) in VARIANTS.items()}


class FixedShareEmbedder(EsmEmbedder):
    """The worker's embedder with another uniform-batch threshold (to measure varlen-only batches) and,
    optionally, the exact-length attention (SDPA) on one backend only (None: PyTorch's choice, cuDNN here) and
    the GEMMs on another BLAS library (torch.backends.cuda.preferred_blas_library: "cublaslt" also for the
    GEMMs without a bias epilogue, which PyTorch otherwise sends to cuBLAS)."""

    def __init__(self, *args, min_uniform_share=0.25, sdpa_backend: str | None = None,
                 blas_library: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.min_uniform_share = min_uniform_share
        self.sdpa_backend = sdpa_backend
        self.blas_library = blas_library

    def forward(self, *batch):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        previous = torch.backends.cuda.preferred_blas_library()
        if self.blas_library:
            torch.backends.cuda.preferred_blas_library(self.blas_library)
        try:
            with (sdpa_kernel([getattr(SDPBackend, self.sdpa_backend)]) if self.sdpa_backend
                  else contextlib.nullcontext()):
                return super().forward(*batch)
        finally:
            torch.backends.cuda.preferred_blas_library(previous)

    def embed_async(self, tokens, fasta="-", ids=None):
        import virnucpro_extract.embed as embed_module

        original = embed_module.plan_packed_batches
        embed_module.plan_packed_batches = lambda lengths, budget: original(lengths, budget,
                                                                            min_uniform_share=self.min_uniform_share)
        try:
            return super().embed_async(tokens, fasta, ids)
        finally:
            embed_module.plan_packed_batches = original


def fp8_linear(a: torch.Tensor, weight_fp8: torch.Tensor, weight_scale: torch.Tensor, bias=None) -> torch.Tensor:
    """a [tokens, in] bf16 @ weight^T through an FP8 GEMM: a quantised per token (unfused: torch ops), the weight
    per output channel beforehand ([out, in] float8_e4m3fn, scale [1, out] float32). -> [tokens, out] bf16."""
    a_scale = a.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / 448.0
    a_fp8 = (a.float() / a_scale).to(torch.float8_e4m3fn)
    return torch._scaled_mm(a_fp8, weight_fp8.t(), scale_a=a_scale, scale_b=weight_scale, bias=bias,
                            out_dtype=torch.bfloat16)


def fp8_feed_forward(model) -> None:
    """Route 4 as a measurement: FC1 and FC2 of every layer in FP8 (rowwise scales), erf-GELU between them.
    The activation quantisation is unfused here, so the speed is a lower bound; the cosine is the finding."""
    import types

    from virnucpro_extract.esm_forward import erf_gelu

    def quantised(weight):
        w = weight.float()
        scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 448.0
        return (w / scale).to(torch.float8_e4m3fn), scale.t().contiguous()

    def feed_forward_(layer, x, h):
        f = erf_gelu(fp8_linear(h, *layer.fc1_fp8, layer.fc1_bias))
        x += fp8_linear(f, *layer.fc2_fp8)

    for layer in model.layers:
        layer.fc1_fp8, layer.fc2_fp8 = quantised(layer.fc1_weight), quantised(layer.fc2_weight)
        layer.feed_forward_ = types.MethodType(feed_forward_, layer)


def gemm_probe(tokens: int = 131072, hidden: int = 1280, inner: int = 5120) -> dict:
    """TFLOP/s of the feed-forward GEMMs at the worker's batch size: bf16 (cuBLAS) against FP8 rowwise
    (torch._scaled_mm), weights pre-quantised, activations already FP8: the most FP8 could give these GEMMs."""
    out = {}
    for name, (k, n) in {"fc1": (hidden, inner), "fc2": (inner, hidden)}.items():
        a = torch.randn(tokens, k, device=DEVICE, dtype=torch.bfloat16)
        w = torch.randn(n, k, device=DEVICE, dtype=torch.bfloat16)
        a8, w8 = a.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn)
        sa = torch.ones(tokens, 1, device=DEVICE)
        sb = torch.ones(1, n, device=DEVICE)
        calls = {"bf16": lambda: a @ w.t(),
                 "fp8_rowwise": lambda: torch._scaled_mm(a8, w8.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)}
        for kind, call in calls.items():
            try:
                seconds = seconds_per_call(call, 20)
                out[f"{name}_{kind}"] = {"ms": round(seconds * 1e3, 3), "tflops": round(2 * tokens * k * n / seconds / 1e12, 1)}
            except Exception as exc:
                out[f"{name}_{kind}"] = {"error": repr(exc)[:200]}
    print(f"gemm probe: {out}", flush=True)
    return out


def ffn_probe(tokens: int = 131072, hidden: int = 1280, inner: int = 5120) -> dict:
    """TFLOP/s of FC1 with cuBLASLt's GELU epilogue (what the worker runs), FC1 with its bias only, FC2
    accumulating into the residual stream, and the QKV GEMM with its bias and without (what moving it out would gain),
    on slices of the batch: whether a slice size or the lack of a bias epilogue gets a faster kernel."""
    out = {}
    h = torch.randn(tokens, hidden, device=DEVICE, dtype=torch.bfloat16)
    w1, b1 = torch.randn(inner, hidden, device=DEVICE, dtype=torch.bfloat16), torch.randn(inner, device=DEVICE, dtype=torch.bfloat16)
    w2 = torch.randn(hidden, inner, device=DEVICE, dtype=torch.bfloat16)
    f = torch.randn(tokens, inner, device=DEVICE, dtype=torch.bfloat16)
    x = torch.randn(tokens, hidden, device=DEVICE, dtype=torch.bfloat16)
    w_qkv, b_qkv = (torch.randn(3 * hidden, hidden, device=DEVICE, dtype=torch.bfloat16),
                    torch.randn(3 * hidden, device=DEVICE, dtype=torch.bfloat16))
    flops = 2 * tokens * hidden * inner
    qkv_flops = 2 * tokens * hidden * 3 * hidden
    for rows in (131072, 65536, 32768, 16384):
        slices = [slice(s, s + rows) for s in range(0, tokens, rows)]
        calls = {"fc1_gelu_epilogue": lambda: [torch._addmm_activation(b1, h[r], w1.t(), use_gelu=True) for r in slices],
                 "fc1_bias_only": lambda: [F.linear(h[r], w1, b1) for r in slices],
                 "fc2_accumulate": lambda: [x[r].addmm_(f[r], w2.t()) for r in slices],
                 "qkv_bias": lambda: [F.linear(h[r], w_qkv, b_qkv) for r in slices],
                 "qkv_no_bias": lambda: [torch.mm(h[r], w_qkv.t()) for r in slices]}
        for name, call in calls.items():
            seconds = seconds_per_call(call, 10)
            work = qkv_flops if name.startswith("qkv") else flops
            out[f"{name}_{rows}"] = {"ms": round(seconds * 1e3, 3), "tflops": round(work / seconds / 1e12, 1)}
    print(f"ffn probe: {out}", flush=True)
    return out


def attention_probe(tokens: int = 131072, heads: int = 20, head_dim: int = 64) -> dict:
    """ms per attention call at the worker's batch size, per SDPA backend, on the layouts the worker builds:
    one exact length (102 tokens: 100 residues) as a [batch, heads, length, head_dim] view of packed q, k, v
    (strided, as from the fused QKV GEMM), and varlen flash attention on mixed lengths (42-168 tokens)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.varlen import varlen_attn

    out = {}
    length = 102
    batch = tokens // length
    qkv = torch.randn(batch * length, 3, heads, head_dim, device=DEVICE, dtype=torch.bfloat16)
    shape = (batch, length, heads, head_dim)
    q, k, v = (qkv[:, i].reshape(shape).transpose(1, 2) for i in range(3))
    lengths = torch.randint(42, 169, (tokens // 105,), generator=torch.Generator().manual_seed(0))
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = lengths.cumsum(0)
    packed = torch.randn(int(cu[-1]), 3, heads, head_dim, device=DEVICE, dtype=torch.bfloat16)
    cu = cu.to(DEVICE)
    calls = {f"uniform_{b.name.lower()}": (lambda: F.scaled_dot_product_attention(q, k, v))
             for b in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION)}
    calls["varlen_flash"] = lambda: varlen_attn(packed[:, 0], packed[:, 1], packed[:, 2], cu, cu, 168, 168)
    for name, call in calls.items():
        try:
            with sdpa_kernel([getattr(SDPBackend, name.split("_", 1)[1].upper())]) if name.startswith("uniform") \
                    else contextlib.nullcontext():
                out[name] = {"ms": round(seconds_per_call(call, 20) * 1e3, 3)}
        except Exception as exc:
            out[name] = {"error": repr(exc)[:200]}
    print(f"attention probe: {out}", flush=True)
    return out


def gemm_energy_probe(dtype, tokens: int = 131072, hidden: int = 1280, inner: int = 5120) -> dict:
    """ms and mJ per call of each GEMM of a layer as the worker runs it, at the card's power limit
    (joules_per_call): on an H200 the forward runs capped at 700 W, where a kernel's energy, not its time at boost
    clock, sets its share. (Session 8's Triton GEMMs, 1.14x cuBLAS at boost clock on QKV, used 1.7 % more energy
    per call there, and the forward lost: benchmarks/results/forward_h200_energy.json.)"""
    h = torch.randn(tokens, hidden, device=DEVICE, dtype=dtype)
    w1 = (torch.randn(inner, hidden, device=DEVICE) / hidden ** 0.5).to(dtype)
    b1 = (torch.randn(inner, device=DEVICE) * 0.02).to(dtype)
    w2 = (torch.randn(hidden, inner, device=DEVICE) / inner ** 0.5).to(dtype)
    w_qkv = (torch.randn(3 * hidden, hidden, device=DEVICE) / hidden ** 0.5).to(dtype)
    b_qkv = (torch.randn(3 * hidden, device=DEVICE) * 0.02).to(dtype)
    w_out = (torch.randn(hidden, hidden, device=DEVICE) / hidden ** 0.5).to(dtype)
    f = torch.randn(tokens, inner, device=DEVICE, dtype=dtype)
    x = torch.randn(tokens, hidden, device=DEVICE, dtype=dtype)
    slices = [slice(s, s + 32768) for s in range(0, tokens, 32768)]
    calls = {
        "qkv": lambda: F.linear(h, w_qkv, b_qkv),
        "out_projection_accumulate": lambda: x.addmm_(h, w_out.t()),
        "fc1_tanh_epilogue_32768": lambda: [torch._addmm_activation(b1, h[r], w1.t(), use_gelu=True) for r in slices],
        "fc1_bias_only_32768": lambda: [F.linear(h[r], w1, b1) for r in slices],
        "fc2_accumulate": lambda: x.addmm_(f, w2.t()),
    }
    out = {}
    for name, call in calls.items():
        out[name] = joules_per_call(call)
        print(f"gemm energy {name}: {out[name]}", flush=True)
    return out


def kernel_sweep(dtype, bandwidth_gbs: float, tokens: int = 131072, hidden: int = 1280, heads: int = 20) -> dict:
    """Time each Triton kernel's launch settings on a batch of the worker's size; set the fastest as the default
    for this process (and report them, to be fixed in esm_kernels.py). Bytes moved per call: LayerNorm reads x
    and writes its output (2 x tokens x hidden); rotary reads and writes q and k and reads cos/sin; the pooling
    reads x (proteins of 100 residues)."""
    from virnucpro_extract import esm_kernels

    x = torch.randn(tokens, hidden, device=DEVICE, dtype=dtype)
    bias, weight, ln_bias = (torch.randn(hidden, device=DEVICE, dtype=dtype) for _ in range(3))
    qkv = torch.randn(tokens, 3 * hidden, device=DEVICE, dtype=dtype)
    half = hidden // heads // 2
    cos, sin = (torch.rand(tokens, half, device=DEVICE) for _ in range(2))
    length = 102                                    # 100 residues, BOS and EOS
    cu = torch.arange(0, tokens + 1, length, device=DEVICE, dtype=torch.int32)
    size = torch.finfo(dtype).bits // 8
    jobs = {
        "layernorm": (esm_kernels.LAYERNORM_LAUNCH, 2 * tokens * hidden * size,
                      lambda cfg: esm_kernels.offset_layernorm(x, bias.float(), weight, ln_bias, 1e-5, **cfg),
                      [{"block_m": m, "num_warps": w} for m in (1, 2, 4, 8) for w in (2, 4, 8, 16)]),
        "rotary": (esm_kernels.ROTARY_LAUNCH, 2 * 2 * tokens * hidden * size + 2 * tokens * half * 4,
                   lambda cfg: esm_kernels.rotary_(qkv, cos, sin, heads, **cfg),
                   [{"block_t": t, "num_warps": w} for t in (1, 2, 4, 8) for w in (2, 4, 8, 16)]),
        "pooling": (esm_kernels.POOLING_LAUNCH, tokens * hidden * size,
                    lambda cfg: esm_kernels.pooled_layernorm_mean(x, bias.float(), weight, ln_bias, 1e-5, cu, length,
                                                                  **cfg),
                    [{"block_m": m, "num_warps": w} for m in (1, 2, 4, 8, 16) for w in (2, 4, 8, 16)]),
    }
    out = {}
    for name, (default, bytes_moved, call, configs) in jobs.items():
        rows = []
        for cfg in configs:
            try:
                seconds = seconds_per_call(lambda: call(cfg), 50)
                rows.append({**cfg, "us": round(seconds * 1e6, 1), "gb_per_s": round(bytes_moved / seconds / 1e9, 1),
                             "share_of_bandwidth": round(bytes_moved / seconds / 1e9 / bandwidth_gbs, 3)})
            except Exception as exc:  # a launch setting the card refuses is a finding, not a failure
                rows.append({**cfg, "error": repr(exc)[:200]})
        timed_rows = [r for r in rows if "us" in r]
        best = min(timed_rows, key=lambda r: r["us"])
        was = next((r for r in timed_rows if all(r[k] == v for k, v in default.items())), None)
        default.update({k: best[k] for k in default})
        out[name] = {"best": best, "previous_default": was, "configs": rows}
        print(f"kernel sweep {name}: best {best} (default was {was})", flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--sets", default=",".join(LENGTH_SETS))
    parser.add_argument("--skip_probes", action="store_true", help="no kernel sweep, no GEMM/attention probes")
    parser.add_argument("--probes", default="kernels,energy,gemm,ffn,attention", help="which probes run (comma list)")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each variant, interleaved")
    parser.add_argument("--profile", default="6_fused_kernels_tanh_epilogue_131072")
    parser.add_argument("--probes_only", action="store_true", help="only the kernel sweep and the GEMM/attention probes")
    parser.add_argument("--bandwidth_gbs", type=float, default=4800.0, help="the card's memory bandwidth (H200: 4.8 TB/s)")
    args = parser.parse_args()
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(tempfile.gettempdir()) / "inductor-cache-forward"))
    doc = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
           "transformers": __import__("transformers").__version__,
           "model": "ESM-2 650M architecture, random weights", "sets": {}}
    torch.manual_seed(0)
    with torch.device(DEVICE):
        fp32 = EsmModel(esm2_650m_config(), add_pooling_layer=False).eval()
    fp32.config._attn_implementation = "sdpa"
    with torch.no_grad():  # transformers initialises biases to zero; a trained model's are not, and the fused
        for module in fp32.modules():  # forward adds the GEMMs' biases in the LayerNorms: measure with real ones
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.normal_(0.0, 0.02)
    state = {k: v.clone() for k, v in fp32.state_dict().items()}
    encoder = ProteinEncoder(load_tokenizer(Path(tempfile.mkdtemp())), 1022)

    def hf_model(dtype):
        with torch.device(DEVICE):
            model = EsmModel(esm2_650m_config(), add_pooling_layer=False).eval()
        model.config._attn_implementation = "sdpa"
        model.load_state_dict(state)
        return model.to(dtype).requires_grad_(False)

    dtype = torch.float32 if SMOKE else torch.bfloat16

    def fast_model(gelu_epilogue, fused=False):
        # built from the float32 model, then cast: what load_esm_model does
        return EsmInferenceEncoder(fp32, gelu_epilogue=gelu_epilogue, fused_kernels=fused).to(DEVICE, dtype).eval()

    if not SMOKE and not args.skip_probes:
        probes = {"kernels": ("kernel_sweep", lambda: kernel_sweep(dtype, args.bandwidth_gbs)),
                  "energy": ("gemm_energy", lambda: gemm_energy_probe(dtype)), "gemm": ("gemm_probe", gemm_probe),
                  "ffn": ("ffn_probe", ffn_probe), "attention": ("attention_probe", attention_probe)}
        chosen = args.probes.split(",")
        for key, (doc_key, probe) in probes.items():
            if key in chosen:
                doc[doc_key] = probe()
        if args.probes_only:
            Path(args.out).write_text(json.dumps(doc, indent=1))
            return

    def build_variant(name):
        """(the variant's embedder, warmed up; its warm-up seconds, compile included)."""
        forward, budget, compiled, epilogue, share, options = VARIANTS[name]
        model = hf_model(dtype) if forward == "esmmodel" else fast_model(epilogue, forward.startswith("fused"))
        if forward == "fused_fp8":
            fp8_feed_forward(model)
        for setting, value in LAYER_SETTINGS.get(name, {}).items():  # on the model, or on each of its layers
            for target in [model] if hasattr(model, setting) else model.layers:
                assert hasattr(target, setting), setting
                setattr(target, setting, value)
        backend = {"fused_flash": "FLASH_ATTENTION", "fused_efficient": "EFFICIENT_ATTENTION"}.get(forward)
        if forward == "esmmodel":
            embedder = EsmEmbedder(model, encoder, DEVICE, budget, compile_model=compiled)
        else:
            if compiled and options:  # compiled here with the variant's inductor options
                model.compile_layers(options=options)
            embedder = FixedShareEmbedder(model, encoder, DEVICE, budget, compile_model=compiled and not options,
                                          min_uniform_share=share, sdpa_backend=backend,
                                          blas_library="cublaslt" if forward == "fused_cublaslt" else None)
        t0 = time.perf_counter()
        embedder.embed(tokens[:3000 if not SMOKE else 40])  # warm-up: compile included
        torch.cuda.synchronize()
        return embedder, time.perf_counter() - t0

    for set_name in args.sets.split(","):
        lo, hi, count = LENGTH_SETS[set_name]
        count = 120 if SMOKE else count
        tokens = [encoder.encode(s) for s in random_proteins(count, lo, hi, seed=len(set_name))]
        n_tokens = sum(len(t) + 2 for t in tokens)
        sample = sorted(random.Random(1).sample(range(count), min(count, REFERENCE_SAMPLE)))
        with torch.inference_mode():
            reference = plain_batcher(fp32, encoder, [tokens[i] for i in sample], budget=16384)
        results = {}
        print(f"{set_name}: {count} proteins, {n_tokens:,} tokens", flush=True)

        def record(name, fn, warm_s=None):
            embeddings, seconds, peak, joules, capped = energy_timed(lambda: fn(tokens))
            row = {"tokens_per_s": round(n_tokens / seconds), "proteins_per_s": round(count / seconds, 1),
                   "seconds": round(seconds, 3), "peak_gpu_gib": round(peak, 2),
                   **faithfulness(embeddings, reference, sample)}
            if joules:
                row.update(tokens_per_joule=round(n_tokens / joules, 1), watts=round(joules / seconds, 1),
                           power_capped=capped)
            if warm_s is not None:
                row["warmup_s"] = round(warm_s, 1)
            print(f"  {name:<42} {row['tokens_per_s']:>9,} tok/s  cos_min {row['cosine_min']:.6f}  "
                  f"max_abs {row['max_abs_diff']:.2e}  peak {peak:.1f} GiB  warm-up {row.get('warmup_s', '-')} s  "
                  f"{row.get('watts', '-')} W  {row.get('tokens_per_joule', '-')} tok/J",
                  flush=True)
            return row

        bf16 = hf_model(dtype)
        plain_batcher(bf16, encoder, tokens[:2000 if not SMOKE else 40])
        results["3_plain_bf16_65536"] = record("3_plain_bf16_65536", lambda t: plain_batcher(bf16, encoder, t))
        del bf16
        embedders = {}
        for name in args.variants.split(","):
            try:
                embedders[name] = build_variant(name)
            except Exception as exc:  # a failing variant is a finding; keep the others
                results[name] = {"error": repr(exc)[:600]}
                print(f"  {name}: FAILED {exc!r}"[:600], flush=True)
        # Rounds over all variants, the order rotated each round, so that no variant is always the first (or
        # last) to run after another; each variant's figure is its median round.
        rounds: dict[str, list[dict]] = {name: [] for name in embedders}
        names = list(embedders)
        for r in range(args.rounds if names else 0):
            for name in names[r % len(names):] + names[:r % len(names)]:
                embedder, warm_s = embedders[name]
                try:
                    rounds[name].append(record(f"{name} (round {r + 1})", embedder.embed, warm_s))
                except Exception as exc:
                    results[name] = {"error": repr(exc)[:600]}
                    print(f"  {name}: FAILED {exc!r}"[:600], flush=True)
        for name, rows in rounds.items():
            if not rows:
                continue
            median = sorted(rows, key=lambda row: row["tokens_per_s"])[len(rows) // 2]
            results[name] = {**median, "rounds_tokens_per_s": [row["tokens_per_s"] for row in rows]}
            if name == args.profile and set_name == "300bp_99_100" and not SMOKE:
                doc["profile"] = kernel_profile(embedders[name][0], tokens[:6000])
        embedders = None
        torch.cuda.empty_cache()
        for row in results.values():
            for ref in ("3_plain_bf16_65536", "4_esmmodel_compiled_131072"):
                if "tokens_per_s" in row and "tokens_per_s" in results.get(ref, {}):
                    row[f"x_vs_{ref[0]}"] = round(row["tokens_per_s"] / results[ref]["tokens_per_s"], 3)
        batches = plan_packed_batches([len(t) for t in tokens[:10000]], 131072)
        results["_batches_of_a_10000_chunk"] = {"batches": len(batches),
                                                "uniform": sum(len({len(tokens[i]) for i in b}) == 1 for b in batches)}
        doc["sets"][set_name] = results
        Path(args.out).write_text(json.dumps(doc, indent=1))
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print(json.dumps({s: {k: v.get("tokens_per_s", v) for k, v in r.items()} for s, r in doc["sets"].items()}, indent=1))


if __name__ == "__main__":
    main()
