"""`fetch-model`: put a protein model where nodes without internet can read it.

On a login node with internet, download a hub model into a plain directory (give that directory to
`--esm_model`) or into the Hugging Face cache (then run with `HF_HUB_OFFLINE=1` and the same
`HF_HOME`). A local directory is accepted as the source too and copied, so the same command moves a
model between file systems, and is testable offline.

FastESM2's own modeling code (used with `--trust_remote_code`) builds its tokenizer from the hub
repository facebook/esm2_t6_8M_UR50D when it is loaded; that repository's tokenizer files are
fetched into the Hugging Face cache alongside, so remote code finds them offline as well.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import InputError
from .models import FAST_ESM_MODEL_TYPES, model_path, read_config

ESM2_TOKENIZER_REPO = "facebook/esm2_t6_8M_UR50D"
TOKENIZER_PATTERNS = ["*.json", "*.txt"]  # config, tokenizer_config, special_tokens_map, vocab
# Weights for other frameworks: never read here, often as large as the PyTorch ones.
IGNORED_PATTERNS = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "*.tflite", "tf_model*", "flax_model*", "coreml/*"]
HUB_METADATA = ".cache"  # snapshot_download(local_dir=...) bookkeeping, and a copied model's own


def fetch_model(source: str, outdir: str | None = None, revision: str | None = None,
                cache_dir: str | None = None, log=print) -> Path:
    """Fetch `source` (hub id or local directory); return the directory to give to `--esm_model`.

    With `outdir` the model lands there as plain files, complete or absent (written under
    `<outdir>.partial`, renamed at the end; a rerun resumes the partial download). Without it a hub
    model goes into the Hugging Face cache (`cache_dir`, default `$HF_HOME/hub`) and the snapshot
    directory inside the cache is returned.
    """
    local = model_path(source)
    if local is not None and local.is_dir():
        if not outdir:
            raise InputError(source, "-", "a local model directory is copied, not cached",
                             "give --outdir <directory> to copy it to")
        _check_model_dir(local, source)
        model_dir, _ = _publish_dir(outdir, source, lambda partial: _copy_model_dir(local, partial))
        log(f"fetch-model: copied {local} to {model_dir}")
        return model_dir
    if local is not None:
        raise InputError(source, "-", "neither an existing directory nor a hub id (<owner>/<name>)",
                         "give a directory written by save_pretrained or a hub id such as Synthyra/FastESM2_650")

    if outdir:
        model_dir, config = _publish_dir(outdir, source,
                                         lambda partial: _download(source, revision, cache_dir, local_dir=partial))
    else:
        model_dir = _download(source, revision, cache_dir)
        config = _check_model_dir(model_dir, source)
    log(f"fetch-model: {source} in {model_dir}")
    if config.get("model_type") in FAST_ESM_MODEL_TYPES:
        tokenizer_dir = _download(ESM2_TOKENIZER_REPO, None, cache_dir, allow_patterns=TOKENIZER_PATTERNS)
        log(f"fetch-model: {ESM2_TOKENIZER_REPO} tokenizer (FastESM2 remote code) in {tokenizer_dir}")
    return model_dir


def _download(repo_id: str, revision, cache_dir, local_dir=None, allow_patterns=None) -> Path:
    """snapshot_download, with hub, network and cache-miss failures turned into one contract line."""
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_dir=local_dir,
                                 allow_patterns=allow_patterns,
                                 ignore_patterns=None if allow_patterns else IGNORED_PATTERNS)
    except Exception as exc:  # network, auth, unknown repo or revision, offline cache miss
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        fix = ("unset HF_HUB_OFFLINE on a node with internet, or fetch it into this cache there first" if offline
               else "check the hub id, the revision and the network (HF_ENDPOINT, HF_TOKEN for gated models)")
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise InputError(repo_id, revision or "main", f"cannot fetch model ({type(exc).__name__}: {reason})", fix) from None
    if local_dir:
        shutil.rmtree(Path(local_dir) / HUB_METADATA, ignore_errors=True)
    return Path(path)


def _publish_dir(outdir: str, source: str, fill) -> tuple[Path, dict]:
    """Fill `<outdir>.partial`, check it, rename it to `outdir`: the model directory is whole or absent."""
    target = Path(outdir).expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InputError(target, "-", "already exists and is not empty",
                         "remove it or give another --outdir (its model is never overwritten)")
    partial = target.with_name(target.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    fill(partial)
    config = _check_model_dir(partial, source)
    if target.exists():
        target.rmdir()
    partial.rename(target)
    return target.resolve(), config


def _copy_model_dir(source: Path, partial: Path) -> None:
    """Copy file contents, following links (a hub snapshot's files are links into its blob store)."""
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial, symlinks=False, ignore=shutil.ignore_patterns(HUB_METADATA))


def _check_model_dir(model_dir: Path, source: str) -> dict:
    """A model directory has a config.json and PyTorch weights; say so now, not on the GPU node."""
    config = read_config(model_dir)
    if not any(model_dir.glob("*.safetensors")) and not any(model_dir.glob("pytorch_model*.bin")):
        raise InputError(source, "weights", f"no *.safetensors or pytorch_model*.bin in {model_dir}",
                         "give a transformers model with PyTorch weights")
    return config
