"""FastESM2 checkpoints (model_type fast_esm, `esm.`-prefixed FastEsmForMaskedLM keys, no tokenizer files)
embed exactly like the same weights in transformers' plain EsmModel layout."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import cli, demo_chunks

TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json")


@pytest.fixture(scope="module")
def fast_model(session_dir):
    """The session's tiny model (seed 0) laid out as a FastESM2 checkpoint, built through the CLI."""
    outdir = session_dir / "tiny_fast_esm"
    result = cli("make-test-model", outdir, "--fast_esm_layout", "--seed", 0)
    assert result.exit_code == 0, result.stderr
    return outdir


def test_fast_esm_layout_looks_like_fastesm2(fast_model):
    config = json.loads((fast_model / "config.json").read_text())
    assert config["model_type"] == "fast_esm" and "attn_backend" in config
    assert config["architectures"] == ["FastEsmForMaskedLM"] and config["hidden_size"] == 1280
    keys = set(load_file(fast_model / "model.safetensors"))
    assert keys and all(k.startswith(("esm.", "lm_head.")) for k in keys)
    assert {"esm.embeddings.word_embeddings.weight", "esm.encoder.emb_layer_norm_after.weight",
            "esm.encoder.layer.0.attention.self.query.weight", "lm_head.dense.weight"} <= keys
    assert not [name for name in TOKENIZER_FILES if (fast_model / name).exists()]


def test_fast_esm_layout_holds_the_same_weights_as_the_plain_layout(fast_model, tiny_model):
    from transformers import EsmModel

    plain = EsmModel.from_pretrained(tiny_model, add_pooling_layer=False).state_dict()
    fast = {k[len("esm."):]: v for k, v in load_file(fast_model / "model.safetensors").items() if k.startswith("esm.")}
    plain = {k: v for k, v in plain.items() if "position_ids" not in k}
    assert sorted(plain) == sorted(fast)
    different = [k for k in plain if not torch.equal(plain[k], fast[k])]
    assert not different, f"weights differ between layouts of the same seed: {different}"


def assert_embeds_like(model, plain_model, chunk, tmp_path):
    """The same chunk embedded with `model` and `plain_model` (fp32, CPU): same ids, same rows (1e-5)."""
    outputs = []
    for name, directory in (("model", model), ("plain", plain_model)):
        result = cli("embed", f"g/{name}={chunk['fasta']}", "--outdir", tmp_path, "--esm_model", directory,
                     "--use_gpu", "false", "--precision", "fp32", "--toks_per_batch", 1024)
        assert result.exit_code == 0, result.stderr
        outputs.append(torch.load(tmp_path / "g" / f"{name}_ESM.pt", weights_only=True))
    ours, plain = outputs
    assert ours["proteins"] == plain["proteins"]
    assert torch.allclose(ours["data"], plain["data"], atol=1e-5, rtol=0), (ours["data"] - plain["data"]).abs().max()


def test_fast_esm_layout_embeds_like_the_plain_layout(tmp_path, fast_model, tiny_model, demo_data):
    assert_embeds_like(fast_model, tiny_model, demo_chunks(demo_data)[0], tmp_path)


def test_fast_esm_config_without_the_keys_save_pretrained_leaves_out(tmp_path, fast_model, tiny_model, demo_data):
    # FastEsmConfig.save_pretrained omits values equal to its class defaults (rotary positions, token dropout);
    # EsmConfig's defaults for them (absolute, off) would fail to load or silently scale the embeddings.
    import shutil

    sparse = tmp_path / "sparse_fast_esm"
    shutil.copytree(fast_model, sparse)
    config = json.loads((sparse / "config.json").read_text())
    assert config["token_dropout"] is True and config["position_embedding_type"] == "rotary"
    for key in ("token_dropout", "position_embedding_type", "vocab_size", "pad_token_id", "mask_token_id"):
        del config[key]
    (sparse / "config.json").write_text(json.dumps(config))
    assert_embeds_like(sparse, tiny_model, demo_chunks(demo_data)[0], tmp_path)


def test_fast_esm_checkpoint_saved_by_transformers_5_embeds_like_the_plain_layout(tmp_path, session_dir, tiny_model,
                                                                                demo_data):
    # transformers 5's save_pretrained writes ESM LayerNorms as LayerNorm.gamma/.beta and one rotary buffer
    # under a `*` key; its from_pretrained maps them back, and so must the worker (no remote code present).
    saved = session_dir / "tiny_fast_esm_saved_by_transformers"
    result = cli("make-test-model", saved, "--fast_esm_layout", "--saved_by_transformers", "--seed", 0)
    assert result.exit_code == 0, result.stderr
    keys = set(load_file(saved / "model.safetensors"))
    assert "esm.encoder.layer.0.attention.LayerNorm.gamma" in keys and any("*" in k for k in keys)
    assert json.loads((saved / "config.json").read_text())["model_type"] == "fast_esm"
    assert not list(saved.glob("*.py")), "no remote code: the weights must load into EsmModel"
    assert_embeds_like(saved, tiny_model, demo_chunks(demo_data)[0], tmp_path)


def test_fast_esm_checkpoint_lacking_a_weight_is_an_error_line(tmp_path, fast_model, demo_data):
    import shutil

    from safetensors.torch import save_file

    from conftest import expect_errors

    broken = tmp_path / "broken_fast_esm"
    shutil.copytree(fast_model, broken)
    state = load_file(broken / "model.safetensors")
    del state["esm.encoder.layer.0.attention.self.query.weight"]
    save_file(state, str(broken / "model.safetensors"))
    chunk = demo_chunks(demo_data)[0]
    result = cli("embed", f"g/x={chunk['fasta']}", "--outdir", tmp_path, "--esm_model", broken, "--use_gpu", "false")
    expect_errors(result, (broken, "weights", r"FastESM2 checkpoint lacks 1 EsmModel weight\(s\), "
                                              r"e\.g\. encoder\.layer\.0\.attention\.self\.query\.weight"))
