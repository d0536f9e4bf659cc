"""The Python packages the CLI needs, checked before any of them is imported (standard library only).

Run from Nextflow without the project's environment or a container, the first import would fail with a
traceback inside Nextflow's failure dump; this turns it into the contract's one line with both fixes.
"""
from __future__ import annotations

import importlib.util
import sys

# import name -> the name pip installs it by
REQUIRED_PACKAGES = {"click": "click", "numpy": "numpy", "torch": "torch", "transformers": "transformers",
                     "tokenizers": "tokenizers", "safetensors": "safetensors", "huggingface_hub": "huggingface_hub",
                     "jsonschema": "jsonschema", "Bio": "biopython", "jinja2": "jinja2"}


def missing_packages(names: dict = REQUIRED_PACKAGES) -> list[str]:
    """The required packages this interpreter cannot import (found without importing them), by pip name."""
    return [package for module, package in names.items() if importlib.util.find_spec(module) is None]


def environment_error_line(missing: list[str]) -> str:
    return (f"error: {sys.executable}: -: Python package(s) {', '.join(missing)} not installed for this interpreter "
            "— run `source scripts/setup_env.sh` before `nextflow run` (it puts the project's .venv on PATH), "
            "or run with -profile docker, podman or singularity")


def exit_if_incomplete() -> None:
    missing = missing_packages()
    if missing:
        print(environment_error_line(missing), file=sys.stderr)
        sys.exit(1)
