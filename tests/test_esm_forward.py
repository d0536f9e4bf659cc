"""The fast ESM-2 forward (packed tokens, exact-length batches, fused QKV) computes what transformers' EsmModel
computes: allclose in fp32, within the cosine bound in bf16, on every layout the worker builds."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import EsmConfig, EsmModel

from conftest import cli, demo_chunks
from virnucpro_extract.esm_forward import EsmInferenceEncoder, esm_model_supported, pack_proteins
from virnucpro_extract.runtime import plan_packed_batches

CLS, PAD, EOS, MASK = 0, 1, 2, 32


def small_esm(emb_layer_norm_before=False, token_dropout=True, seed=0) -> EsmModel:
    """A small rotary ESM-2 with LayerNorms away from the identity and non-zero biases, so a mixed-up LayerNorm or
    a lost bias shows."""
    torch.manual_seed(seed)
    config = EsmConfig(vocab_size=33, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                       intermediate_size=128, max_position_embeddings=1026, position_embedding_type="rotary",
                       token_dropout=token_dropout, emb_layer_norm_before=emb_layer_norm_before,
                       pad_token_id=PAD, mask_token_id=MASK)
    model = EsmModel._from_config(config, attn_implementation="sdpa", add_pooling_layer=False).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.3)
                module.bias.normal_(0.0, 0.3)
            elif isinstance(module, torch.nn.Linear):  # initialised to zero: a dropped or doubled bias would not show
                module.bias.normal_(0.0, 0.3)
    return model


def reference_means(model: EsmModel, rows: list[np.ndarray]) -> torch.Tensor:
    """Residue means the plain way: one padded batch through EsmModel, then the mean over positions 1..len."""
    width = max(len(r) for r in rows) + 2
    input_ids = torch.full((len(rows), width), PAD)
    attention_mask = torch.zeros_like(input_ids)
    for r, row in enumerate(rows):
        input_ids[r, 0], input_ids[r, len(row) + 1] = CLS, EOS
        input_ids[r, 1: len(row) + 1] = torch.from_numpy(row)
        attention_mask[r, : len(row) + 2] = 1
    with torch.inference_mode():
        hidden = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return torch.stack([hidden[r, 1: len(row) + 1].mean(0) for r, row in enumerate(rows)])


def random_rows(lengths, seed=1, with_mask_token=False):
    rng = np.random.default_rng(seed)
    rows = [rng.integers(4, 29, n) for n in lengths]
    if with_mask_token:
        rows[0][min(1, len(rows[0]) - 1)] = MASK
    return rows


LAYOUTS = {"one length (uniform, no mask)": [9, 9, 9, 9],
           "mixed lengths (packed)": [5, 12, 1, 30, 7],
           "a single protein": [17]}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("emb_layer_norm_before", [False, True])
def test_fast_forward_equals_esm_model_in_fp32(layout, emb_layer_norm_before):
    model = small_esm(emb_layer_norm_before=emb_layer_norm_before)
    rows = random_rows(LAYOUTS[layout], with_mask_token=True)  # token dropout rescales rows holding <mask>
    batch = pack_proteins(rows, CLS, EOS, "cpu")
    assert batch.uniform == (len(set(LAYOUTS[layout])) == 1)
    with torch.inference_mode():
        fast = EsmInferenceEncoder(model).eval().pooled_residue_means(batch)
    expected = reference_means(model, rows)
    assert fast.dtype == torch.float32 and fast.shape == expected.shape
    assert torch.allclose(fast, expected, atol=2e-5, rtol=0), (fast - expected).abs().max()


def test_fast_forward_last_hidden_state_matches_at_every_token():
    model = small_esm()
    rows = random_rows([4, 11, 6])
    batch = pack_proteins(rows, CLS, EOS, "cpu")
    with torch.inference_mode():
        packed = EsmInferenceEncoder(model).eval().last_hidden_state(batch)
        for r, row in enumerate(rows):
            ids = torch.tensor([[CLS, *row.tolist(), EOS]])
            alone = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
            start = int(batch.cu_seqlens[r])
            assert torch.allclose(packed[start: start + len(row) + 2], alone, atol=2e-5, rtol=0)


def test_fast_forward_in_bf16_is_within_the_cosine_bound():
    model = small_esm()
    rows = random_rows([20, 20, 20, 33, 8, 50])
    expected = reference_means(model, rows)
    fast = EsmInferenceEncoder(model).to(torch.bfloat16).eval()
    assert fast.inv_freq.dtype == torch.float32, "rotary frequencies must not be rounded to bf16"
    with torch.inference_mode():
        got = fast.pooled_residue_means(pack_proteins(rows, CLS, EOS, "cpu"))
    cosine = torch.nn.functional.cosine_similarity(got, expected, dim=1)
    assert cosine.min() > 0.999, cosine


def test_gelu_epilogue_path_computes_the_same_function_on_cpu():
    # On CPU, torch._addmm_activation's GELU is the exact erf form (the tanh form is cuBLASLt's, on GPU only),
    # so the epilogue code path itself is checked here; the GPU gate is a measured cosine (bench_forward).
    model = small_esm()
    rows = random_rows([7, 13, 7])
    batch = pack_proteins(rows, CLS, EOS, "cpu")
    with torch.inference_mode():
        plain = EsmInferenceEncoder(model).eval().pooled_residue_means(batch)
        epilogue = EsmInferenceEncoder(model, gelu_epilogue=True).eval().pooled_residue_means(batch)
    assert torch.allclose(plain, epilogue, atol=1e-5, rtol=0)


def test_models_the_fast_forward_does_not_cover_are_named():
    model = small_esm()
    assert esm_model_supported(model) is None
    model.config.position_embedding_type = "absolute"
    assert "absolute" in esm_model_supported(model)
    with pytest.raises(ValueError, match="absolute"):
        EsmInferenceEncoder(model)


def test_packed_batch_layout():
    batch = pack_proteins([np.array([5, 6]), np.array([7]), np.array([8, 9, 10])], CLS, EOS, "cpu")
    assert batch.input_ids.tolist() == [CLS, 5, 6, EOS, CLS, 7, EOS, CLS, 8, 9, 10, EOS]
    assert batch.positions.tolist() == [0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 4]
    assert batch.cu_seqlens.tolist() == [0, 4, 7, 12] and batch.max_len == 5 and not batch.uniform
    assert batch.residues.tolist() == [2, 1, 3]
    assert [batch.residue_index[r][batch.residue_valid[r]].tolist() for r in range(3)] == [[1, 2], [5], [8, 9, 10]]


def test_plan_packed_batches_covers_every_protein_once_within_the_budget():
    rng = np.random.default_rng(3)
    lengths = list(rng.integers(40, 167, 3000)) + [100] * 2000
    budget = 8192
    batches = plan_packed_batches(lengths, budget)
    flat = sorted(i for batch in batches for i in batch)
    assert flat == list(range(len(lengths)))
    assert all(sum(lengths[i] + 2 for i in batch) <= budget for batch in batches)
    uniform = [batch for batch in batches if len({lengths[i] for i in batch}) == 1]
    # the 2,000 proteins of length 100 fill whole uniform batches of 8192 // 102 = 80 rows
    assert sum(len(b) for b in uniform if lengths[b[0]] == 100) >= 2000 - 80


def test_plan_packed_batches_keeps_a_protein_longer_than_the_budget_alone():
    assert plan_packed_batches([10, 5000, 10], 1024) in ([[0, 2], [1]], [[1], [0, 2]])


def test_worker_fast_forward_equals_transformers_forward(tmp_path, tiny_model, demo_data):
    chunk = demo_chunks(demo_data)[0]
    outputs = {}
    for fast in ("true", "false"):
        result = cli("embed", f"g/{fast}={chunk['fasta']}", "--outdir", tmp_path, "--esm_model", tiny_model,
                     "--use_gpu", "false", "--precision", "fp32", "--toks_per_batch", 512, "--fast_forward", fast)
        assert result.exit_code == 0, result.stderr
        assert ("fast forward" if fast == "true" else "transformers EsmModel") in result.stderr
        outputs[fast] = torch.load(tmp_path / "g" / f"{fast}_ESM.pt", weights_only=True)
    assert outputs["true"]["proteins"] == outputs["false"]["proteins"]
    assert torch.allclose(outputs["true"]["data"], outputs["false"]["data"], atol=1e-5, rtol=0)
