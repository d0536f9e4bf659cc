"""Defaults live in bin/virnucpro_extract/defaults.py; the schema, the recipes and the profiles carry copies for
Nextflow and the container engines. These checks fail when one copy drifts (the rendered config is checked in
test_profiles.py, where it is rendered once)."""
import json
import re

import pytest

from conftest import REPO
from virnucpro_extract import defaults

SCHEMA = json.loads((REPO / "nextflow_schema.json").read_text())
SCHEMA_DEFAULTS = {name: spec.get("default") for group in SCHEMA["definitions"].values()
                   for name, spec in group["properties"].items()}

# parameter -> its value in defaults.py: the CLI's own option defaults come from these names
CLI_DEFAULTS = {
    "esm_model": defaults.DEFAULT_ESM_MODEL,
    "dnabert_model": defaults.DEFAULT_DNABERT_MODEL,
    "max_length": defaults.DEFAULT_MAX_LENGTH,
    "chunks_per_task": defaults.DEFAULT_CHUNKS_PER_TASK,
    "compile_min_tokens": defaults.DEFAULT_COMPILE_MIN_TOKENS,
    "seed": defaults.DEFAULT_SEED,
    "read_length": defaults.DEFAULT_READ_LENGTH,
    "sequences_per_file": defaults.DEFAULT_SEQUENCES_PER_FILE,
}


@pytest.mark.parametrize("name", sorted(CLI_DEFAULTS))
def test_schema_defaults_are_the_cli_defaults(name):
    assert SCHEMA_DEFAULTS[name] == CLI_DEFAULTS[name]


def test_max_length_limit_is_esm2s_positions():
    spec = SCHEMA["definitions"]["embedding_options"]["properties"]["max_length"]
    assert spec["maximum"] == defaults.DEFAULT_MAX_LENGTH


@pytest.mark.parametrize("path", ["containers/Dockerfile", "containers/virnucpro-extract.def", "conf/docker.config",
                                  "conf/singularity.config", "nextflow.config"])
def test_every_recipe_and_profile_names_this_version(path):
    """An image tag or label that names another version would run an old image's code under the new pipeline."""
    text = (REPO / path).read_text()
    named = set(re.findall(r"virnucpro-extract[:_ ](\d[\w.]*?)(?:\.sif|\.tar|[\s:\"'-]|$)", text, re.M))
    named |= set(re.findall(r"(?:image\.version=?|^\s*version\s*=)\s*[\"']?(\d[\w.]*)", text, re.M))
    assert named and named <= {defaults.VERSION}, (path, named)
