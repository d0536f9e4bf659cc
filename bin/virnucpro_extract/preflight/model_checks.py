"""The models a run needs: a local directory that holds a config of the right width (and the packages its own
code imports), or a hub id in the Hugging Face cache; and each model's content key for -resume."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..defaults import ESM_DIM
from ..errors import InputError
from ..models import model_path


def check_model(model: str, source: str = "--esm_model", hidden_size: int = ESM_DIM,
                fix: str = "use a FastESM2_650 / ESM-2 650M model (hidden size 1280)",
                launch_dir: Path = Path("."), staged: Path | None = None) -> list[InputError]:
    """A local model directory must exist and produce `hidden_size`-wide hidden states.

    `staged` is the task's copy of a local model directory (Nextflow stages it); errors still name the user's
    directory. A model that is neither staged nor a path is a hub id, looked up in the Hugging Face cache.
    """
    errors = _check_model(model, source, hidden_size, fix, launch_dir, staged)
    shown = model_path(model, launch_dir)
    if staged is not None and shown is not None:
        for error in errors:
            if error.file.startswith(str(staged)):
                error.file = str(shown) + error.file[len(str(staged)):]
    return errors


def _check_model(model, source, hidden_size, fix, launch_dir, staged) -> list[InputError]:
    local = staged if staged is not None else model_path(model, launch_dir)
    if local is None:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
        if not isinstance(cached, str):
            if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
                return [InputError(source, model, "model not in the Hugging Face cache and HF_HUB_OFFLINE is set",
                                   "pre-fetch it on a node with internet (virnucpro-extract fetch-model) "
                                   "or give a local directory")]
            return []
        config_path = Path(cached)
    else:
        config_path = local / "config.json"
    if not config_path.is_file():
        return [InputError(local or model, "config.json", "model directory missing or has no config.json",
                           "give a directory saved with save_pretrained, or a hub id")]
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return [InputError(config_path, f"line {getattr(exc, 'lineno', '-')}",
                           f"not valid JSON ({getattr(exc, 'msg', type(exc).__name__)})",
                           "restore the model's config.json (save_pretrained writes it)")]
    missing_packages = model_code_errors(config_path.parent, config)
    if missing_packages:
        return missing_packages
    hidden = config.get("hidden_size")
    if hidden != hidden_size:
        return [InputError(config_path, "hidden_size", f"model hidden size is {hidden}, the features need {hidden_size}",
                           fix)]
    return []


def model_code_errors(model_dir: Path, config: dict) -> list[InputError]:
    """A model's own code (config `auto_map`, e.g. DNABERT-S's bert_layers.py) importing packages that are
    not installed: found here rather than when the GPU task loads it. Files not present locally are left
    to the download."""
    import importlib.util

    from transformers.dynamic_module_utils import get_imports

    references = [r for value in (config.get("auto_map") or {}).values()
                  for r in (value if isinstance(value, list) else [value]) if isinstance(r, str)]
    pending = sorted({r.split("--")[-1].split(".")[0] for r in references})
    seen, errors = set(), []
    while pending:
        module = pending.pop()
        code = model_dir / f"{module}.py"
        if module in seen or not code.is_file():
            continue
        seen.add(module)
        missing = sorted(name for name in get_imports(code) if importlib.util.find_spec(name) is None)
        if missing:
            errors.append(InputError(code, "import", f"the model's own code needs {', '.join(missing)}, not installed",
                                     f"pip install {' '.join(missing)} in the pipeline's environment (the "
                                     "container image has what DNABERT-S needs)"))
        text = code.read_text(errors="replace")
        pending += re.findall(r"^\s*from\s+\.(\w+)\s+import", text, re.M)
    return errors


def model_fingerprint(model: str) -> str:
    """Content key of a local model directory (file names, sizes, mtimes); the id itself for hub models.

    Passed to EMBED_PROTEINS so `-resume` recomputes embeddings when the weights change in place.
    """
    import hashlib

    path = Path(model).expanduser()
    if not path.is_dir():
        return model
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return f"{path.resolve()}@{digest.hexdigest()[:16]}"
