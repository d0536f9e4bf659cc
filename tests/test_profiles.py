"""The docker, singularity, slurm and test profiles, the container recipes and `fetch-model`.

No Docker or Apptainer engine runs here, so the container profiles are checked twice: as rendered by
`nextflow config -profile ...`, and per task, in the `.command.run` files that Nextflow writes for a
stub run where a stand-in `docker`/`singularity` on PATH logs its command line and runs the task's
command without a container. The Slurm profile's per-task options go through a real Slurm in
tests/test_slurm.py.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, cli, expect_errors, nextflow, nextflow_output
from virnucpro_extract.defaults import VERSION


def needs_nextflow(test):
    """Rendering a config launches Nextflow: the pipeline tier."""
    skip = pytest.mark.skipif(shutil.which("nextflow") is None,
                              reason="nextflow not on PATH (run the suite with scripts/test.sh)")
    return pytest.mark.pipeline(skip(test))


# ----------------------------------------------------------------------------------------------
# Rendered configuration
# ----------------------------------------------------------------------------------------------
def rendered_config(profile: str, cwd: Path, java_user: str | None = None) -> dict[str, str]:
    """`nextflow config -flat -profile <profile>` as {dotted name: value text}; closures keep their source.
    `java_user` renders it as if another user ran Nextflow (the JVM's user.name)."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "NXF_OFFLINE": "true"}
    if java_user:
        env["NXF_OPTS"] = f"{env.get('NXF_OPTS', '')} -Duser.name={java_user}".strip()
    run = subprocess.run(["nextflow", "config", str(REPO), "-flat", "-profile", profile], cwd=cwd,
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    config, key = {}, None
    for line in run.stdout.splitlines():
        match = re.match(r"^(\S+) = (.*)$", line)
        if match:
            key = match.group(1)
            config[key] = match.group(2)
        elif key:
            config[key] += "\n" + line
    return config


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    """Each profile rendered once, launched from its own folder (the default --cache_dir is under it)."""
    rendered = {}
    for profile in ("standard", "test", "docker", "podman", "singularity", "slurm", "test,slurm"):
        launch = tmp_path_factory.mktemp(profile.replace(",", "_"))
        rendered[profile] = (rendered_config(profile, launch), launch)
    launch = tmp_path_factory.mktemp("podman_rootless")
    rendered["podman as a user"] = (rendered_config("podman", launch, java_user="alice"), launch)
    return rendered


GPU_BLOCK = ("process.'withLabel:process_gpu'.accelerator", "process.'withLabel:process_gpu'.memory",
             "process.'withLabel:process_gpu'.maxForks")
PUBLISHERS = "process.'withName:PUBLISH|FINALISE_OUTDIR'"


@needs_nextflow
@pytest.mark.parametrize("profile", ["docker", "podman", "singularity", "slurm"])
def test_profiles_keep_the_base_resources_and_publishing(configs, profile):
    """A profile's selector block would replace the base config's block of the same name."""
    base, _ = configs["standard"]
    config, _ = configs[profile]
    for key in (*GPU_BLOCK, f"{PUBLISHERS}.executor", "process.'withLabel:process_medium'.cpus"):
        assert config.get(key) == base[key], f"-profile {profile} changed {key}"


@needs_nextflow
def test_publishers_run_on_the_head_without_a_container(configs):
    for profile in ("standard", "docker", "slurm"):
        config, _ = configs[profile]
        assert config[f"{PUBLISHERS}.executor"] == "'local'"
        assert config[f"{PUBLISHERS}.container"] == "null"


@needs_nextflow
def test_transient_failures_are_retried_with_more_resources_and_bad_input_is_not(configs):
    config, _ = configs["standard"]
    strategy = config["process.errorStrategy"]
    # 130 (the user's Ctrl-C) is not retried; kills for memory or time, pre-emption and 75 (CUDA OOM) are
    assert "(131..145) + 104 + 175 + 75" in strategy and "'retry'" in strategy and "'finish'" in strategy
    assert config["process.maxRetries"] == "2"
    for key in ("process.'withLabel:process_gpu'.memory", "process.'withLabel:process_medium'.memory"):
        assert "task.attempt" in config[key], key


@needs_nextflow
def test_docker_profile(configs):
    config, launch = configs["docker"]
    cache = launch / ".cache"
    assert config["docker.enabled"] == "true"
    assert "singularity.enabled" not in config
    assert config["process.container"] == f"'virnucpro-extract:{VERSION}'"
    run_options = config["docker.runOptions"]
    assert "-u $(id -u):$(id -g)" in run_options
    assert f"-v '{cache}':'{cache}'" in run_options
    assert "--gpus" not in run_options and "--nv" not in run_options  # GPU tasks only: containerOptions
    for name in ("CUDA_VISIBLE_DEVICES", "HF_HUB_OFFLINE"):
        assert f"'{name}'" in config["docker.envWhitelist"]
    assert config["params.container_gpu_options"] == "null"
    assert_writable_caches(config, cache)


@needs_nextflow
def test_podman_profile_maps_users_for_rootful_and_rootless_podman(configs):
    for name, keep_id in (("podman", os.geteuid() != 0), ("podman as a user", True)):
        config, launch = configs[name]
        cache = launch / ".cache"
        assert config["podman.enabled"] == "true" and "docker.enabled" not in config, name
        assert config["process.container"] == f"'virnucpro-extract:{VERSION}'"
        run_options = config["podman.runOptions"]
        assert ("--userns=keep-id" in run_options) == keep_id, (name, run_options)
        assert "-u " not in run_options and "--gpus" not in run_options, run_options
        assert run_options.replace("\\'", "'").endswith(f"-v '{cache}':'{cache}''"), run_options
        assert "'CUDA_VISIBLE_DEVICES'" in config["podman.envWhitelist"]
        assert_writable_caches(config, cache)


@needs_nextflow
def test_singularity_profile(configs):
    config, launch = configs["singularity"]
    cache = launch / ".cache"
    assert config["singularity.enabled"] == "true"
    assert "docker.enabled" not in config
    assert config["process.container"] == f"'{REPO}/containers/virnucpro-extract_{VERSION}.sif'"
    assert f"-B '{cache}'" in config["singularity.runOptions"]
    assert "--nv" not in config["singularity.runOptions"]
    for name in ("CUDA_VISIBLE_DEVICES", "HF_HUB_OFFLINE"):
        assert f"'{name}'" in config["singularity.envWhitelist"]
    assert_writable_caches(config, cache)


def assert_writable_caches(config: dict, cache: Path) -> None:
    """Every cache a task writes is under --cache_dir, which exists before the container mounts it."""
    assert config["params.cache_dir"] == f"'{cache}'"
    assert config["env.HF_HOME"] == f"'{cache}/huggingface'"
    assert config["env.TRITON_CACHE_DIR"] == f"'{cache}/triton'"
    assert config["env.TORCHINDUCTOR_CACHE_DIR"] == f"'{cache}/torchinductor'"
    assert config["process.beforeScript"] == f"'mkdir -p '{cache}''"


@needs_nextflow
def test_slurm_profile(configs):
    config, _ = configs["slurm"]
    assert config["process.executor"] == "'slurm'"
    assert "docker.enabled" not in config and "singularity.enabled" not in config
    assert config["process.'withName:.*:EMBED_PROTEINS|.*:EMBED_DNA'.maxForks"] == "4"  # params.max_gpu_jobs
    assert config["process.'withName:.*:PREFLIGHT'.executor"] == "'local'"  # typos reported before any queue wait
    assert config["executor.$slurm.queueSize"] == "100"
    assert config["executor.$slurm.submitRateLimit"] == "'20/1min'"
    assert config["executor.$slurm.pollInterval"] == "'30 sec'"
    for name in ("slurm_queue", "slurm_gpu_queue", "slurm_options"):
        assert config[f"params.{name}"] == "null"


@needs_nextflow
def test_test_profile_runs_locally_on_cpu(configs):
    config, _ = configs["test"]
    assert config["params.use_gpu"] == "false"
    assert "process.executor" not in config
    assert not any(key.startswith(("docker.", "singularity.")) for key in config)
    combined, _ = configs["test,slurm"]
    assert combined["process.executor"] == "'slurm'" and combined["params.use_gpu"] == "false"


@needs_nextflow
def test_every_parameter_is_in_the_schema(configs):
    import json

    schema = json.loads((REPO / "nextflow_schema.json").read_text())
    documented = {name for group in schema["definitions"].values() for name in group["properties"]}
    config, _ = configs["standard"]
    params = {key.split(".", 1)[1] for key in config if key.startswith("params.")}
    assert params - documented == set()


@needs_nextflow
def test_rendered_defaults_are_the_schemas(configs):
    """nextflow.config's params are what the schema (and so --help and defaults.py) say they are."""
    import json

    schema = json.loads((REPO / "nextflow_schema.json").read_text())
    config, _ = configs["standard"]
    for group in schema["definitions"].values():
        for name, spec in group["properties"].items():
            if "default" not in spec:
                continue
            rendered = config.get(f"params.{name}", "null").strip("'")
            expected = spec["default"]
            assert rendered == (str(expected).lower() if isinstance(expected, bool) else str(expected)), name
    assert config["manifest.version"].strip("'") == VERSION


# ----------------------------------------------------------------------------------------------
# Per task: a stub run through stand-in container engines
# ----------------------------------------------------------------------------------------------
def stand_in_engine(folder: Path, engine: str, image: str, log: Path) -> None:
    """An executable `engine` that logs its command line and runs what follows `image` on the host.

    Singularity is started with a clean environment (`env - PATH=...`), so the log path and the
    image are written into the script rather than passed in variables.
    """
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / engine
    script.write_text(f"""#!/bin/bash
printf '%s\\n' "$*" >> '{log}'
case "$1" in run|exec) ;; *) exit 0 ;; esac
while [ $# -gt 0 ] && [ "$1" != '{image}' ]; do shift; done
[ $# -gt 0 ] || {{ echo "stand-in {engine}: image {image} not on the command line" >&2; exit 125; }}
shift
cd "$NXF_TASK_WORKDIR"
exec "$@"
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def task_launches(work: Path, engine: str) -> dict[str, list[str]]:
    """{process name: [the engine's command line of each task]} from the .command.run files Nextflow wrote."""
    launches: dict[str, list[str]] = {}
    for command_run in work.glob("*/*/.command.run"):
        text = command_run.read_text()
        process = re.search(r"^### name: '(?:\w+:)*(\w+)", text, re.M).group(1)
        line = next((row for row in text.splitlines() if re.search(rf"\b{engine} (run|exec) ", row)), None)
        if line is None:  # PUBLISH and FINALISE_OUTDIR run on the host, where --outdir is
            assert process in ("PUBLISH", "FINALISE_OUTDIR"), process
            continue
        launches.setdefault(process, []).append(line + "\n" + container_env(text))
    return launches


def container_env(command_run: str) -> str:
    match = re.search(r"nxf_container_env\(\) \{\ncat << EOF\n(.*?)\nEOF", command_run, re.S)
    return match.group(1) if match else ""


def stub_run_in(engine_profile: str, engine: str, tmp_path: Path, demo_data: Path, monkeypatch, *args):
    """`-stub -profile test,<engine>` with the stand-in engine first on PATH; returns (launches, cache)."""
    launch = tmp_path / "launch"
    image = "virnucpro-extract:stand-in" if engine in ("docker", "podman") else str(tmp_path / "stand-in.sif")
    if engine == "singularity":
        Path(image).touch()
    log = tmp_path / f"{engine}.log"
    stand_in_engine(tmp_path / "bin", engine, image, log)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    run = nextflow("-stub", "-profile", f"test,{engine_profile}", "--data_dir", demo_data, "--esm_model", model,
                   "--outdir", launch / "results", "--container", image, "-w", tmp_path / "work", *args, cwd=launch)
    assert run.returncode == 0, nextflow_output(run)[-6000:]
    launches = task_launches(tmp_path / "work", engine)
    assert set(launches) == {"PREFLIGHT", "PLAN_CHUNKS", "EMBED_PROTEINS", "MERGE_FEATURES", "VALIDATE_OUTPUTS", "REPORT"}
    assert len(log.read_text().splitlines()) >= sum(map(len, launches.values())), "the stand-in did not run"
    return launches, launch / ".cache"


@needs_nextflow
@pytest.mark.pipeline
def test_docker_gives_gpus_to_gpu_tasks_only(tmp_path, demo_data, monkeypatch):
    use_gpu = True
    launches, cache = stub_run_in("docker", "docker", tmp_path, demo_data, monkeypatch, "--use_gpu", "true")
    assert cache.is_dir(), "the cache mount's source was not created before the container started"
    for process, lines in launches.items():
        for line in lines:
            assert "-u $(id -u):$(id -g)" in line
            assert f"-v '{cache}':'{cache}'" in line
            assert '-e "CUDA_VISIBLE_DEVICES"' in line and '-e "HF_HUB_OFFLINE"' in line
            assert f'export HF_HOME="{cache}/huggingface"' in line
            assert f'export TRITON_CACHE_DIR="{cache}/triton"' in line
            assert f'export TORCHINDUCTOR_CACHE_DIR="{cache}/torchinductor"' in line
            assert ("--gpus all" in line) == (use_gpu and process == "EMBED_PROTEINS"), (process, line)
            assert "--nv" not in line


@needs_nextflow
@pytest.mark.pipeline
def test_podman_gives_the_cdi_gpu_device_to_gpu_tasks_only(tmp_path, demo_data, monkeypatch):
    """Podman takes Docker's `--gpus all` and ignores it; the CDI device is what gives the task a GPU."""
    launches, cache = stub_run_in("podman", "podman", tmp_path, demo_data, monkeypatch, "--use_gpu", "true")
    assert cache.is_dir()
    for process, lines in launches.items():
        for line in lines:
            assert f"-v '{cache}':'{cache}'" in line
            assert "-u $(id -u)" not in line  # rootless podman would map it to a subordinate uid
            assert ("--userns=keep-id" in line) == (os.geteuid() != 0), line  # rootful podman refuses keep-id
            assert '-e "CUDA_VISIBLE_DEVICES"' in line and f'export HF_HOME="{cache}/huggingface"' in line
            assert ("--device nvidia.com/gpu=all" in line) == (process == "EMBED_PROTEINS"), (process, line)
            assert "--gpus" not in line


@needs_nextflow
@pytest.mark.pipeline
def test_singularity_gives_nv_to_gpu_tasks_only(tmp_path, demo_data, monkeypatch):
    launches, cache = stub_run_in("singularity", "singularity", tmp_path, demo_data, monkeypatch, "--use_gpu", "true")
    assert cache.is_dir()
    for process, lines in launches.items():
        for line in lines:
            assert f"-B '{cache}'" in line
            assert "SINGULARITYENV_CUDA_VISIBLE_DEVICES" in line and "SINGULARITYENV_HF_HUB_OFFLINE" in line
            assert f'export HF_HOME="{cache}/huggingface"' in line
            assert re.search(r" --nv ", line) if process == "EMBED_PROTEINS" else " --nv " not in line, (process, line)
            assert "--gpus" not in line


@needs_nextflow
@pytest.mark.pipeline
def test_container_gpu_options_replace_the_engine_default(tmp_path, demo_data, monkeypatch):
    launches, _ = stub_run_in("docker", "docker", tmp_path / "gpu", demo_data, monkeypatch, "--use_gpu", "true",
                              "--container_gpu_options=--gpus device=1", "--cache_dir", tmp_path / "hf")
    assert (tmp_path / "hf").is_dir()
    for process, lines in launches.items():
        for line in lines:
            assert ("--gpus device=1" in line) == (process == "EMBED_PROTEINS")
            assert "--gpus all" not in line
            assert f"export HF_HOME=\"{tmp_path / 'hf'}/huggingface\"" in line


# ----------------------------------------------------------------------------------------------
# Container recipes
# ----------------------------------------------------------------------------------------------
def test_container_recipes_install_exactly_the_project_pins():
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "check_containers.py"), str(REPO)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    # hadolint comes with the test requirements: the Dockerfile is linted, not skipped
    assert run.stdout.strip() == "check_containers: ok", run.stdout


def test_container_check_catches_drift(tmp_path):
    """The checker itself: a pin that differs, an extra package, another base, an unconditional fetch, SHELL, the
    model argument at the top, a .def with a recipe of its own, a context that carries everything."""
    for path in ("requirements.txt", "nextflow.config", "conf/docker.config", "conf/podman.config",
                 "conf/singularity.config", "containers/Dockerfile", "containers/virnucpro-extract.def",
                 "scripts/build_image.sh", ".dockerignore"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / path, tmp_path / path)
    dockerfile = tmp_path / "containers" / "Dockerfile"
    text = dockerfile.read_text().replace('ARG PREFETCH_MODEL=""\n', "")
    text = (text.replace('RUN if [ -n "$PREFETCH_MODEL" ]; then', "RUN if true; then")
            .replace("ARG BASE_IMAGE=debian:bookworm-slim", 'ARG BASE_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04\n'
                     'ARG PREFETCH_MODEL=""\nSHELL ["/bin/bash", "-o", "pipefail", "-c"]')
            .replace(" && pip check", " && pip install scipy torch==2.9.0 && pip check"))
    dockerfile.write_text(text + "WORKDIR relative/dir\n")  # hadolint DL3000: WORKDIR must be absolute
    definition = tmp_path / "containers" / "virnucpro-extract.def"
    definition.write_text(definition.read_text().replace("Bootstrap: docker-archive", "Bootstrap: docker")
                          + "%post\n    pip install numpy\n")
    (tmp_path / ".dockerignore").write_text("work/\n")
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "check_containers.py"), str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode == 1
    for expected in ("downloads model weights unconditionally", "torch==2.9.0 but requirements.txt pins torch==",
                     "pip installs scipy", "is not debian:bookworm", "SHELL is ignored", "comes before the pip install",
                     "Bootstrap: docker —", "%post: the .def builds nothing", ".dockerignore: -: does not keep",
                     "hadolint: ", "DL3000"):
        assert expected in run.stderr, run.stderr


def test_requirements_pin_every_package():
    lines = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][\w.+-]*", line) for line in lines if line), lines


# ----------------------------------------------------------------------------------------------
# fetch-model (offline: local directories and a prepared Hugging Face cache)
# ----------------------------------------------------------------------------------------------
def test_fetch_model_copies_a_local_directory(tmp_path, tiny_model):
    result = cli("fetch-model", tiny_model, "--outdir", tmp_path / "models" / "tiny")
    assert result.exit_code == 0, result.stderr
    target = tmp_path / "models" / "tiny"
    assert result.stdout.strip().splitlines()[-1] == str(target.resolve())
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in tiny_model.iterdir())
    for file in tiny_model.iterdir():
        assert (target / file.name).read_bytes() == file.read_bytes()
    assert not (tmp_path / "models" / "tiny.partial").exists()


def test_fetched_directory_is_a_usable_esm_model(tmp_path, tiny_model, demo_data):
    target = tmp_path / "fetched"
    assert cli("fetch-model", tiny_model, "--outdir", target).exit_code == 0
    fasta = next(demo_data.glob("viral*.identified_protein/output_1.fa"))
    for model, out in ((tiny_model, "a"), (target, "b")):
        result = cli("embed", f"x/output_1={fasta}", "--outdir", tmp_path / out, "--esm_model", model,
                     "--use_gpu", "false", "--precision", "fp32")
        assert result.exit_code == 0, result.stderr
    import torch

    a = torch.load(tmp_path / "a" / "x" / "output_1_ESM.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "x" / "output_1_ESM.pt", weights_only=True)
    assert a["proteins"] == b["proteins"] and torch.equal(a["data"], b["data"])


def test_fetch_model_never_overwrites(tmp_path, tiny_model):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    result = cli("fetch-model", tiny_model, "--outdir", target)
    expect_errors(result, (target, "-", "already exists and is not empty"))
    assert (target / "keep.txt").read_text() == "mine"


def test_fetch_model_rejects_bad_sources(tmp_path, tiny_model):
    expect_errors(cli("fetch-model", tiny_model), (tiny_model, "-", "a local model directory is copied"))
    missing = tmp_path / "no_such_model"
    expect_errors(cli("fetch-model", missing, "--outdir", tmp_path / "x"),
                  (missing, "-", "neither an existing directory nor a hub id"))
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    expect_errors(cli("fetch-model", not_a_model, "--outdir", tmp_path / "y"),
                  (not_a_model, "config.json", "no config.json"))
    assert not (tmp_path / "y").exists()


def hub_cache(root: Path, repo: str, files: dict[str, bytes | Path]) -> Path:
    """A Hugging Face hub cache entry as snapshot_download leaves it (refs/main -> snapshots/<sha>/)."""
    sha = "0" * 40
    entry = root / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = entry / "snapshots" / sha
    snapshot.mkdir(parents=True)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(sha)
    for name, content in files.items():
        (snapshot / name).write_bytes(content.read_bytes() if isinstance(content, Path) else content)
    return snapshot


def test_fetch_model_offline_from_the_hf_cache_with_the_fastesm2_tokenizer(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 with a filled cache: the snapshot is found, and FastESM2's tokenizer repo too."""
    from virnucpro_extract.testdata import make_test_model

    fast_esm = make_test_model(tmp_path / "fast_esm", layers=1, seed=0, fast_esm_layout=True)
    hf_home = tmp_path / "hf"
    snapshot = hub_cache(hf_home, "Synthyra/FastESM2_650", {p.name: p for p in fast_esm.iterdir()})
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    entry = [sys.executable, str(REPO / "bin" / "virnucpro-extract"), "fetch-model", "Synthyra/FastESM2_650"]

    run = subprocess.run(entry, env=env, capture_output=True, text=True)
    assert run.returncode == 1, "FastESM2 without its tokenizer repo in the cache should fail offline"
    assert "error: facebook/esm2_t6_8M_UR50D: main: cannot fetch model" in run.stderr
    assert "unset HF_HUB_OFFLINE" in run.stderr

    hub_cache(hf_home, "facebook/esm2_t6_8M_UR50D", {"vocab.txt": b"<cls>\n", "tokenizer_config.json": b"{}"})
    run = subprocess.run(entry, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == str(snapshot)
    assert "facebook/esm2_t6_8M_UR50D tokenizer" in run.stderr

    run = subprocess.run(entry[:-1] + ["someone/not_cached"], env=env, capture_output=True, text=True)
    assert run.returncode == 1 and "error: someone/not_cached: main: cannot fetch model" in run.stderr
