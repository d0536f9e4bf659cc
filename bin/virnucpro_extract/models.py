"""Loading ESM-2-family protein models from a directory or a hub id, without remote code.

FastESM2_650 ships its own modeling code, but its parameter names and shapes are ESM-2's, so its
weights load into transformers' own `EsmModel`: no remote code runs on users' machines and the
implementation we optimise is the one users run. `--trust_remote_code` stays as the fallback.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from .errors import InputError

# The ESM-2 vocabulary (facebook/esm2_t6_8M_UR50D), in id order: FastESM2 builds its tokenizer from
# this hub repository at import time, so a checkpoint may carry no tokenizer files of its own.
ESM2_VOCAB = ["<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "N",
              "Q", "K", "F", "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>"]
FAST_ESM_MODEL_TYPES = ("fast_esm", "fastesm")
ESM_CONFIG_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                   "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                   "initializer_range", "layer_norm_eps", "position_embedding_type", "emb_layer_norm_before",
                   "token_dropout", "pad_token_id", "mask_token_id")
# FastEsmConfig's own defaults (Synthyra/FastPLMs), where they differ from EsmConfig's: save_pretrained leaves
# out values equal to the class defaults, and EsmConfig's (absolute positions, no token-dropout scaling of the
# embeddings) would silently change the model. Token ids left unset there are ESM-2's vocabulary's.
FAST_ESM_CONFIG_DEFAULTS = {"vocab_size": len(ESM2_VOCAB), "pad_token_id": ESM2_VOCAB.index("<pad>"),
                            "mask_token_id": ESM2_VOCAB.index("<mask>"), "hidden_size": 768,
                            "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
                            "max_position_embeddings": 1026, "layer_norm_eps": 1e-12,
                            "position_embedding_type": "rotary", "token_dropout": True}


def is_hub_id(model: str) -> bool:
    """Whether `model` is a well-formed Hugging Face repo id ('name' or 'namespace/name')."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError:
        return False
    return True


def model_path(model: str, launch_dir: Path = Path(".")) -> Path | None:
    """The local directory `model` names, relative paths taken from the launch directory; None for a hub id.

    'models/FastESM2' is a well-formed hub id too: it counts as a path when it exists or when its first part
    is a folder of the launch directory, so a mistyped local path is reported here rather than sent to the hub.
    """
    path = Path(model).expanduser()
    if not path.is_absolute():
        path = launch_dir / path
    if (model.startswith(("/", ".", "~")) or path.exists() or not is_hub_id(model)
            or (launch_dir / model.split("/")[0]).is_dir()):
        return path
    return None


def resolve_model_dir(model: str) -> Path:
    """A local directory as given, else the hub snapshot (from the cache when HF_HUB_OFFLINE is set)."""
    path = model_path(model)
    if path is not None:
        if path.is_dir():
            return path
        raise InputError(model, "-", "model directory not found", "give an existing directory or a hub id")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model))
    except Exception as exc:  # network, auth and cache misses all end here
        raise InputError(model, "-", f"cannot fetch model ({type(exc).__name__})",
                         "pre-fetch it with `virnucpro-extract fetch-model` on a node with internet, "
                         "then set HF_HUB_OFFLINE=1 or give the local directory") from None


def read_config(model_dir: Path) -> dict:
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise InputError(model_dir, "config.json", "no config.json in model directory",
                         "give a directory written by save_pretrained")
    return json.loads(config_path.read_text())


def config_hash(model_dir: Path) -> str:
    """Short content hash of the model's config, shown in the report to tell models apart."""
    return hashlib.sha256((model_dir / "config.json").read_bytes()).hexdigest()[:12]


def load_esm_model(model_dir: Path, dtype, device, trust_remote_code: bool = False, fast_forward: bool = False,
                   gelu_epilogue: bool = False, fused_kernels: bool = False):
    """Return an eval-mode encoder: transformers' model, whose forward gives `last_hidden_state`
    [batch, length, hidden], or with `fast_forward` our `EsmInferenceEncoder` over the same weights.

    Plain ESM-2 checkpoints go through `AutoModel`; FastESM2 checkpoints (`model_type` `fast_esm`) are
    mapped onto `EsmModel` unless `trust_remote_code` asks for their own classes. The fast forward is built
    before the cast, so its rotary frequencies keep the checkpoint's float32 values; models it does not cover
    (remote code, absolute positions) stay transformers' own.
    """
    from transformers import AutoModel

    config = read_config(model_dir)
    attn = "sdpa"
    if config.get("model_type") in FAST_ESM_MODEL_TYPES and not trust_remote_code:
        model = _fast_esm_as_esm_model(model_dir, config, attn)
    else:
        model = AutoModel.from_pretrained(model_dir, trust_remote_code=trust_remote_code, attn_implementation=attn,
                                          **({"add_pooling_layer": False} if not trust_remote_code else {}))
    if fast_forward:
        from .esm_forward import EsmInferenceEncoder, esm_model_supported

        if esm_model_supported(model) is None:
            model = EsmInferenceEncoder(model, gelu_epilogue=gelu_epilogue, fused_kernels=fused_kernels)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _fast_esm_as_esm_model(model_dir: Path, config: dict, attn: str):
    """A FastESM2 checkpoint loaded into transformers' `EsmModel` by transformers' own loading.

    `from_pretrained` with an `EsmConfig` built from the FastESM2 config strips the `esm.` prefix, maps the legacy
    names transformers 5 itself writes (`LayerNorm.gamma` / `.beta`, one shared rotary buffer under a `*` key),
    reads shards and checks shapes; the LM head is left out. A weight the checkpoint lacks is an error here,
    not a randomly initialised layer.
    """
    from transformers import EsmConfig, EsmModel
    from transformers.utils import logging as hf_logging

    merged = {**FAST_ESM_CONFIG_DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    esm_config = EsmConfig(**{k: merged[k] for k in ESM_CONFIG_KEYS if k in merged})
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report lists the LM head's keys as unexpected: expected here
    try:
        model, info = EsmModel.from_pretrained(model_dir, config=esm_config, attn_implementation=attn,
                                               add_pooling_layer=False, output_loading_info=True)
    except OSError as exc:
        raise InputError(model_dir, "weights", f"cannot read the checkpoint ({str(exc).splitlines()[0][:160]})",
                         "give a directory written by save_pretrained (*.safetensors or pytorch_model*.bin)") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = sorted(k for k in info["missing_keys"] if "position_ids" not in k)
    if missing or info["mismatched_keys"]:
        what = (f"lacks {len(missing)} EsmModel weight(s), e.g. {missing[0]}" if missing
                else f"has {len(info['mismatched_keys'])} weight(s) of the wrong shape, e.g. "
                     f"{sorted(info['mismatched_keys'])[0]}")
        raise InputError(model_dir, "weights", f"FastESM2 checkpoint {what}",
                         "pass --trust_remote_code to use the model's own classes")
    return model


def read_state_dict(model_dir: Path) -> dict:
    """Every tensor of a checkpoint directory's *.safetensors (or pytorch_model*.bin) files, by name."""
    import torch

    safetensors_files = sorted(model_dir.glob("*.safetensors"))
    if safetensors_files:
        from safetensors.torch import load_file

        state = {}
        for file in safetensors_files:
            state.update(load_file(file))
        return state
    bins = sorted(model_dir.glob("pytorch_model*.bin"))
    if not bins:
        raise InputError(model_dir, "weights", "no *.safetensors or pytorch_model*.bin weights",
                         "give a directory written by save_pretrained")
    state = {}
    for file in bins:
        state.update(torch.load(file, map_location="cpu", weights_only=True))
    return state


def load_tokenizer(model_dir: Path, model=None):
    """The model directory's tokenizer, else the model's own (`model.tokenizer`), else ESM-2's vocabulary."""
    from transformers import AutoTokenizer, EsmTokenizer

    if (model_dir / "tokenizer_config.json").is_file() or (model_dir / "vocab.txt").is_file():
        return AutoTokenizer.from_pretrained(model_dir)
    if model is not None and getattr(model, "tokenizer", None) is not None:
        return model.tokenizer
    with tempfile.TemporaryDirectory(prefix="esm2-vocab-") as tmp:
        vocab_file = Path(tmp) / "vocab.txt"
        vocab_file.write_text("\n".join(ESM2_VOCAB) + "\n")
        return EsmTokenizer(vocab_file=str(vocab_file))
