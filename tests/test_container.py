"""The image, for real: built from containers/Dockerfile by scripts/build_image.sh (podman, a bootstrapped Debian
base, no registry), built again from cache, and the test profile run with every task inside it, giving the same
outputs as the run without containers (the shared pipeline_run: same inputs, same parameters).

Needs podman, runc and debootstrap, and root for the first bootstrap; skipped without them, unless
REQUIRE_CONTAINERS=1 (CI), which makes a missing engine a failure."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import torch
from test_pipeline import files_under, process_name, trace_rows

from conftest import REPO, nextflow, nextflow_output
from virnucpro_extract.defaults import VERSION

pytestmark = pytest.mark.container
IMAGE = f"virnucpro-extract:{VERSION}"
CONTAINERS_CONF = {"CONTAINERS_CONF": str(REPO / "containers" / "containers.conf")}
ON_THE_HOST = ("PUBLISH", "FINALISE_OUTDIR")  # they write --outdir, so they run where it is


def missing_tools() -> str | None:
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    return f"{', '.join(missing)} not installed (apt-get install podman runc debootstrap)" if missing else None


if (why := missing_tools()) is not None:
    if os.environ.get("REQUIRE_CONTAINERS") == "1":
        raise RuntimeError(f"REQUIRE_CONTAINERS=1 but {why}")
    pytestmark = [pytestmark, pytest.mark.skip(reason=why)]


def build() -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "scripts" / "build_image.sh")], capture_output=True, text=True,
                          timeout=3600, env={**os.environ, **CONTAINERS_CONF})


@pytest.fixture(scope="module")
def image() -> str:
    """The image built (or found built: the script is cached) once for this module."""
    run = build()
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    return IMAGE


def test_a_second_build_is_taken_from_the_cache(image):
    run = build()
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    steps = re.split(r"^STEP \d+/\d+: ", run.stdout + run.stderr, flags=re.M)[1:]
    building = [step for step in steps if step.startswith(("RUN ", "COPY "))]
    assert building, run.stdout[-3000:]
    assert all("Using cache" in step for step in building), [s.splitlines()[0] for s in building
                                                             if "Using cache" not in s]


def test_the_image_runs_the_cli_with_its_own_python(image):
    run = subprocess.run(["podman", "run", "--rm", image, "sh", "-c",
                          "command -v python; virnucpro-extract --version; python -c 'import torch; print(torch.__version__)'"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, **CONTAINERS_CONF})
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "/opt/venv/bin/python"
    assert lines[1].endswith(VERSION)
    pinned = next(line.split("==")[1] for line in (REPO / "requirements.txt").read_text().splitlines()
                  if line.startswith("torch=="))
    assert lines[2].split("+")[0] == pinned


def test_test_profile_in_the_image_runs_every_task_there_and_equals_the_run_without_containers(
        image, pipeline_run, demo_data, tiny_model, tmp_path):
    launch = tmp_path / "launch"
    outdir = launch / "results"
    run = nextflow("-profile", "test,podman", "--data_dir", demo_data, "--esm_model", tiny_model, "--outdir", outdir,
                   cwd=launch, timeout=1800, env=CONTAINERS_CONF)
    assert run.returncode == 0, nextflow_output(run)[-6000:]

    rows = trace_rows(outdir)
    assert {process_name(r) for r in rows} >= {"PREFLIGHT", "EMBED_PROTEINS", "MERGE_FEATURES", "VALIDATE_OUTPUTS"}
    for row in rows:
        command_run = next((launch / "work").glob(row["hash"] + "*")) / ".command.run"
        launched = re.search(r"^\s*podman run .*$", command_run.read_text(), re.M)
        if process_name(row) in ON_THE_HOST:
            assert launched is None, row["name"]
        else:
            assert launched and f" {image} " in launched.group(0) + " ", (row["name"], command_run.read_text()[-2000:])

    local = pipeline_run["outdir"]
    for folder in ("esm", "data_merge"):
        names = files_under(local / folder)
        assert names and files_under(outdir / folder) == names, folder
        for name in names:
            ours = torch.load(outdir / folder / name, weights_only=True)
            theirs = torch.load(local / folder / name, weights_only=True)
            assert ours.keys() == theirs.keys() and torch.equal(ours["data"], theirs["data"]), name
