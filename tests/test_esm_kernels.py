"""The Triton kernels of the fast forward (LayerNorm of the residual plus its pending biases, in-place rotary) compute the maths
they replace, checked under Triton's interpreter on CPU (conftest sets TRITON_INTERPRET=1 there; on a GPU machine,
on the GPU), and the forward built on them equals transformers' EsmModel in fp32 on every layout the worker builds."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_esm_forward import CLS, EOS, LAYOUTS, random_rows, reference_means, small_esm

from virnucpro_extract.esm_forward import EsmInferenceEncoder, pack_proteins, rotate

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Triton's interpreter rounds float32 -> bfloat16 toward zero (the GPU rounds to nearest): one bf16 ulp apart.
BF16_ULP = 2.0 ** -7


def within_rounding(got: torch.Tensor, expected: torch.Tensor, atol: float) -> bool:
    """Equal up to `atol`, plus one bf16 ulp of the value where the result is bf16."""
    rtol = BF16_ULP if got.dtype == torch.bfloat16 else 0.0
    return torch.allclose(got.float(), expected.float(), atol=atol, rtol=rtol)


@pytest.mark.parametrize("with_offset", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("block_m", [1, 4])
def test_offset_layernorm_normalises_x_plus_the_offset_and_leaves_x_alone(with_offset, dtype, block_m):
    from virnucpro_extract.esm_kernels import offset_layernorm

    torch.manual_seed(0)
    rows, hidden = 37, 80                          # neither a power of two: the masks are exercised
    x = (torch.randn(rows, hidden) * 3 + 1).to(DEVICE, dtype)
    before = x.clone()
    offset = torch.randn(hidden, device=DEVICE) * 2 if with_offset else None
    weight, ln_bias = (torch.randn(hidden, device=DEVICE, dtype=dtype) for _ in range(2))
    expected = F.layer_norm(x.float() + (offset if with_offset else 0), (hidden,), weight.float(), ln_bias.float(), 1e-5)
    got = offset_layernorm(x, offset, weight, ln_bias, 1e-5, block_m=block_m)
    assert torch.equal(x, before), "the residual stream is only read"
    assert got.dtype == dtype and got.shape == x.shape
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    assert within_rounding(got, expected, atol=tolerance), (got.float() - expected).abs().max()


@pytest.mark.parametrize("with_offset", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pooled_layernorm_mean_is_the_residue_mean_of_the_final_layernorm(with_offset, dtype):
    from virnucpro_extract.esm_kernels import offset_layernorm, pooled_layernorm_mean

    torch.manual_seed(2)
    lengths = [7, 2, 12, 3, 9, 1100]               # tokens with BOS and EOS; no residues; past 1,024
    hidden = 80
    x = (torch.randn(sum(lengths), hidden) * 3 + 1).to(DEVICE, dtype)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    offset = torch.randn(hidden, device=DEVICE) * 2 if with_offset else None
    weight, ln_bias = (torch.randn(hidden, device=DEVICE, dtype=dtype) for _ in range(2))
    normed = offset_layernorm(x, offset, weight, ln_bias, 1e-5).float()
    expected = torch.stack([normed[a + 1: b - 1].sum(0) / max(b - a - 2, 1) for a, b in zip(cu[:-1], cu[1:])])
    got = pooled_layernorm_mean(x, offset, weight, ln_bias, 1e-5, cu, max(lengths), block_m=4)
    assert got.dtype == torch.float32 and got.shape == (len(lengths), hidden)
    assert torch.equal(got[1], torch.zeros(hidden, device=DEVICE)), "no residues: zeros"
    assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got - expected).abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_in_place_equals_the_reference_rotation_and_leaves_v_alone(dtype):
    from virnucpro_extract.esm_kernels import rotary_

    torch.manual_seed(1)
    tokens, heads, head_dim = 13, 3, 16
    qkv = torch.randn(tokens, 3 * heads * head_dim).to(DEVICE, dtype)
    angles = torch.arange(tokens, device=DEVICE).float()[:, None] * torch.rand(head_dim // 2, device=DEVICE)[None, :]
    full = torch.cat((angles, angles), dim=-1)
    view = qkv.view(tokens, 3, heads, head_dim)
    expected_qk = rotate(view[:, :2].clone(), full.cos(), full.sin())
    expected_v = view[:, 2].clone()
    rotary_(qkv, angles.cos(), angles.sin(), heads, block_t=4)
    assert within_rounding(view[:, :2], expected_qk, atol=1e-6)
    assert torch.equal(view[:, 2], expected_v)


@pytest.mark.parametrize("layout, gelu_epilogue, fused_pooling",
                         [(layout, False, True) for layout in LAYOUTS]
                         + [("mixed lengths (packed)", True, True), ("mixed lengths (packed)", False, False),
                            ("one length (uniform, no mask)", False, False)])
def test_fused_forward_equals_esm_model_in_fp32(layout, gelu_epilogue, fused_pooling):
    """Both routes for the pooling: the final LayerNorm and the mean in one kernel (the default), or the
    LayerNorm, then a gather and a masked sum."""
    model = small_esm()
    rows = random_rows(LAYOUTS[layout], with_mask_token=True)
    batch = pack_proteins(rows, CLS, EOS, DEVICE)
    with torch.inference_mode():
        fused = EsmInferenceEncoder(model, gelu_epilogue=gelu_epilogue, fused_kernels=True).to(DEVICE).eval()
        assert fused.fused_pooling, "the default"
        fused.fused_pooling = fused_pooling
        got = fused.pooled_residue_means(batch).cpu()
    expected = reference_means(model, rows)
    # On CUDA cuBLASLt's GELU epilogue is the tanh form (2.6e-5 from erf on an H200); on the CPU it is erf itself.
    tolerance = 1e-4 if gelu_epilogue and DEVICE == "cuda" else 2e-5
    assert torch.allclose(got, expected, atol=tolerance, rtol=0), (got - expected).abs().max()


def test_fused_forward_with_fc1_in_token_slices_equals_esm_model_in_fp32():
    """FC1 (GELU epilogue) on slices of 7 tokens (ragged last slice) writes the same rows as on the whole batch."""
    model = small_esm()
    rows = random_rows(LAYOUTS["mixed lengths (packed)"], with_mask_token=True)
    with torch.inference_mode():
        fused = EsmInferenceEncoder(model, gelu_epilogue=True, fused_kernels=True).to(DEVICE).eval()
        for layer in fused.layers:
            layer.fc1_slice_tokens = 7
        got = fused.pooled_residue_means(pack_proteins(rows, CLS, EOS, DEVICE)).cpu()
    expected = reference_means(model, rows)
    tolerance = 1e-4 if DEVICE == "cuda" else 2e-5   # the epilogue's tanh GELU on CUDA, erf on the CPU
    assert torch.allclose(got, expected, atol=tolerance, rtol=0), (got - expected).abs().max()


def test_fused_forward_in_bf16_is_within_the_cosine_bound():
    model = small_esm()
    rows = random_rows([20, 20, 20, 33, 8, 50])
    expected = reference_means(model, rows)
    fused = EsmInferenceEncoder(model, fused_kernels=True).to(DEVICE, torch.bfloat16).eval()
    with torch.inference_mode():
        got = fused.pooled_residue_means(pack_proteins(rows, CLS, EOS, DEVICE)).cpu()
    assert torch.nn.functional.cosine_similarity(got, expected, dim=1).min() > 0.999
