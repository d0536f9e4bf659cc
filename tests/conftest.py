"""Shared fixtures: one tiny model, one demo data folder, one CLI-built and one Nextflow-built set of outputs.

Everything expensive is session-scoped and built once in a tmp_path_factory folder, once for the whole run even
when pytest-xdist spreads the tests over workers (`built_once`). Tests that need a broken variant copy what they
need into their own tmp_path; the shared inputs are never modified.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    # The fast forward's Triton kernels run through Triton's interpreter on CPU. The switch is read when
    # triton.language is first imported, so it is set here, before anything (transformers, Inductor) imports it.
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / "bin"
SCHEMA = REPO / "nextflow_schema.json"
sys.path.insert(0, str(BIN))

from click.testing import CliRunner  # noqa: E402

from virnucpro_extract.cli import main as cli_main  # noqa: E402
from virnucpro_extract.testdata import make_demo_data, make_test_dna_model, make_test_model  # noqa: E402

# The contract's error line: `error: <file>: <record or line>: <what is wrong> — <how to fix it>`.
ERROR_LINE = re.compile(r"^error: (?P<file>[^:]+): (?P<where>[^:]+?): (?P<problem>.+?) — (?P<fix>\S.*)$")
ESM_DIM, DNABERT_DIM, MERGED_DIM = 1280, 768, 2048


TIERS = ("pipeline", "slurm", "browser", "container")


def pytest_collection_modifyitems(items):
    """A test with no tier marker is a unit test (pyproject.toml lists the tiers)."""
    for item in items:
        if not any(item.get_closest_marker(tier) for tier in TIERS):
            item.add_marker(pytest.mark.unit)


# ----------------------------------------------------------------------------------------------
# CLI helpers
# ----------------------------------------------------------------------------------------------
def cli(*args):
    """Run a subcommand in-process; unexpected exceptions propagate (a crash is not an error line)."""
    return CliRunner().invoke(cli_main, [str(a) for a in args], catch_exceptions=False)


class CliProcess:
    """`bin/virnucpro-extract` run as its own process, with the CliRunner result's attribute names."""

    def __init__(self, completed: subprocess.CompletedProcess):
        self.exit_code, self.stdout, self.stderr = completed.returncode, completed.stdout, completed.stderr


def cli_process(*args, timeout: int = 300) -> CliProcess:
    """Run the real entry point (fresh interpreter: needed where the CLI forks worker processes)."""
    return CliProcess(subprocess.run([sys.executable, str(BIN / "virnucpro-extract"), *map(str, args)],
                                     capture_output=True, text=True, timeout=timeout))


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def expect_errors(result, *expected, exact: bool = True) -> list[re.Match]:
    """Assert a non-zero exit and one contract-shaped error line per `(file, where, problem regex)`.

    Every `error:` line must have the contract shape; with `exact` there are no other error lines.
    """
    assert result.exit_code != 0, f"expected failure, got exit 0; stderr:\n{result.stderr}"
    lines = error_lines(result)
    assert lines, f"no error line on stderr:\n{result.stderr}"
    matches = []
    for line in lines:
        match = ERROR_LINE.match(line)
        assert match, f"error line not in the contract shape: {line!r}"
        assert match["fix"].strip() and match["problem"].strip()
        matches.append(match)
    for file, where, problem in expected:
        hits = [m for m in matches if m["file"] == str(file) and re.fullmatch(where, m["where"])
                and re.search(problem, m["problem"])]
        assert hits, (f"no error line for file={file} where~{where} problem~{problem}; got:\n" + "\n".join(lines))
    if exact:
        assert len(lines) == len(expected), "unexpected extra error lines:\n" + "\n".join(lines)
    return matches


# ----------------------------------------------------------------------------------------------
# Input builders (real formats: protein FASTA, DNABERT-S dict with Python-list vectors)
# ----------------------------------------------------------------------------------------------
def write_fasta(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f">{rid}\n{seq}\n" for rid, seq in records))
    return path


def dnabert_object(ids, seed: int = 0, vectors=None) -> dict:
    gen = torch.Generator().manual_seed(seed)
    if vectors is None:
        vectors = [torch.randn(DNABERT_DIM, generator=gen).tolist() for _ in ids]
    return {"nucleotide": list(ids),
            "data": [{"label": rid, "mean_representation": vec} for rid, vec in zip(ids, vectors)]}


def write_dnabert(path: Path, ids, seed: int = 0, vectors=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dnabert_object(ids, seed, vectors), path)
    return path


def write_samplesheet(path: Path, rows, columns=("id", "label", "protein_fasta", "dnabert_embeddings")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(",".join(columns) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def read_fasta_records(path) -> list[tuple[str, str]]:
    records, rid = [], None
    for line in Path(path).read_text().splitlines():
        if line.startswith(">"):
            rid = line[1:].split()[0]
            records.append([rid, ""])
        elif line.strip():
            records[-1][1] += line.strip()
    return [tuple(r) for r in records]


def cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1)


def demo_chunks(data_dir: Path) -> list[dict]:
    """The chunks of a VirNucPro data/ folder, found here by plain globbing (not by the code under test)."""
    chunks = []
    for fasta in sorted(data_dir.glob("*.identified_protein/output_*.fa")):
        group = fasta.parent.name[: -len(".identified_protein")]
        chunk_id = fasta.stem
        chunks.append({"group": group, "id": chunk_id, "key": f"{group}/{chunk_id}",
                       "label": "viral" if group.startswith("viral") else "host", "fasta": fasta,
                       "dnabert": data_dir / f"{group}.identified_nucleotide" / f"{chunk_id}_DNABERT_S.pt"})
    return chunks


# ----------------------------------------------------------------------------------------------
# Independent reference: transformers directly, fp32, one protein at a time
# ----------------------------------------------------------------------------------------------
class ReferenceEmbedder:
    """tokenizer -> EsmModel -> last_hidden_state[0, 1:len+1].mean(0), nothing from the code under test."""

    def __init__(self, model_dir: Path):
        from transformers import AutoTokenizer, EsmModel

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = EsmModel.from_pretrained(model_dir, dtype=torch.float32, add_pooling_layer=False).eval()
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, sequence: str) -> torch.Tensor:
        if sequence not in self.cache:
            encoded = self.tokenizer(sequence, return_tensors="pt")
            assert encoded["input_ids"].shape[1] == len(sequence) + 2  # BOS + residues + EOS
            with torch.inference_mode():
                hidden = self.model(**encoded).last_hidden_state
            self.cache[sequence] = hidden[0, 1: len(sequence) + 1].mean(0).float()
        return self.cache[sequence]

    def rows(self, sequences) -> torch.Tensor:
        return torch.stack([self(s) for s in sequences])


# ----------------------------------------------------------------------------------------------
# Session fixtures
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    """One folder for the run's shared inputs and outputs: under pytest-xdist, every worker's is the same."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent   # the run's basetemp; each worker's own is a folder in it
    folder = root / "session"
    folder.mkdir(exist_ok=True)
    return folder


def built_once(session_dir: Path, name: str, build):
    """`build()`'s JSON-able result, computed by the first worker that asks and read back by the others: the
    workers of one run wait on a lock in session_dir, so a shared model or pipeline run is made once."""
    from filelock import FileLock

    done = session_dir / f"{name}.built.json"
    with FileLock(str(session_dir / f"{name}.lock")):
        if not done.exists():
            done.write_text(json.dumps(build()))
        return json.loads(done.read_text())


@pytest.fixture(scope="session")
def tiny_model(session_dir) -> Path:
    """Random-weight EsmModel, hidden 1280, ESM-2 vocabulary, tokenizer files (seed 0)."""
    return Path(built_once(session_dir, "tiny_esm",
                           lambda: str(make_test_model(session_dir / "tiny_esm", layers=1, seed=0))))


@pytest.fixture(scope="session")
def demo_data(session_dir) -> Path:
    """A VirNucPro data/ folder: 2 viral + 2 host chunks of 20 proteins; DNABERT-S ids shuffled."""
    return Path(built_once(session_dir, "data", lambda: str(
        make_demo_data(session_dir / "data", viral_chunks=2, host_chunks=2, proteins_per_chunk=20, seed=1))))


@pytest.fixture(scope="session")
def fasta_only_data(session_dir) -> Path:
    """The demo_data fixture's proteins (same seed and sizes) with nucleotide FASTA and no DNABERT-S files."""
    return Path(built_once(session_dir, "fasta_only_data", lambda: str(
        make_demo_data(session_dir / "fasta_only_data", viral_chunks=2, host_chunks=2, proteins_per_chunk=20,
                       seed=1, nucleotides=True, dnabert=False))))


@pytest.fixture(scope="session")
def reference(tiny_model) -> ReferenceEmbedder:
    return ReferenceEmbedder(tiny_model)


@pytest.fixture(scope="session")
def tiny_dna_model(session_dir) -> Path:
    """Random-weight transformers BertModel, hidden 768, two layers, WordPiece DNA tokenizer (seed 0)."""
    return Path(built_once(session_dir, "tiny_dnabert",
                           lambda: str(make_test_dna_model(session_dir / "tiny_dnabert", layers=2, seed=0))))


class DnaReference:
    """VirNucPro's loop: `hidden_states = model(input_ids)[0]; torch.mean(hidden_states[0], dim=0)`, one read
    at a time, fp32, transformers' BertModel directly: nothing from the code under test."""

    def __init__(self, model_dir: Path):
        from transformers import AutoTokenizer, BertModel

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = BertModel.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, read: str) -> torch.Tensor:
        if read not in self.cache:
            input_ids = self.tokenizer(read, return_tensors="pt")["input_ids"]
            assert self.tokenizer.unk_token_id not in input_ids[0].tolist()
            with torch.inference_mode():
                hidden_states = self.model(input_ids)[0]
            self.cache[read] = torch.mean(hidden_states[0], dim=0)
        return self.cache[read]

    def rows(self, reads) -> torch.Tensor:
        return torch.stack([self(r) for r in reads])


@pytest.fixture(scope="session")
def dna_reference(tiny_dna_model) -> DnaReference:
    return DnaReference(tiny_dna_model)


@pytest.fixture(scope="session")
def cli_outputs(session_dir, demo_data, tiny_model) -> Path:
    """The pipeline's steps run by hand with the CLI (no Nextflow) into a contract-layout outdir.

    Returns the outdir; its preflight manifest is <outdir>/pipeline_info/chunks.csv.
    """
    def build():
        outdir = session_dir / "cli_results"
        info = outdir / "pipeline_info"
        result = cli("preflight", "--data_dir", demo_data, "--esm_model", tiny_model, "--outdir", info)
        assert result.exit_code == 0, result.stderr
        chunks = demo_chunks(demo_data)
        result = cli("embed", *[f"{c['key']}={c['fasta']}" for c in chunks], "--outdir", outdir / "esm",
                     "--esm_model", tiny_model, "--use_gpu", "false", "--precision", "fp32", "--toks_per_batch", 1024,
                     "--stats", info / "embed.json")
        assert result.exit_code == 0, result.stderr
        for c in chunks:
            result = cli("merge", "--dnabert", c["dnabert"], "--esm", outdir / "esm" / c["group"] / f"{c['id']}_ESM.pt",
                         "--label", c["label"], "--output",
                         outdir / "data_merge" / f"{c['group']}_merged" / f"{c['id']}_merged.pt",
                         "--stats", info / f"{c['group']}__{c['id']}.merge.json")
            assert result.exit_code == 0, result.stderr
        return str(outdir)

    return Path(built_once(session_dir, "cli_results", build))


# ----------------------------------------------------------------------------------------------
# Nextflow
# ----------------------------------------------------------------------------------------------
def nextflow(*args, cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`nextflow run main.nf <args>` on the test profile's CPU settings, offline, plain log lines; `env` adds to
    (or replaces) variables of this process's environment."""
    if shutil.which("nextflow") is None:
        pytest.fail("nextflow is not on PATH: run the suite with scripts/test.sh (or select -m 'not pipeline')")
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "NXF_OFFLINE": "true", "NXF_ANSI_LOG": "false", **(env or {})}
    return run_nextflow(["nextflow", "run", str(REPO / "main.nf"), "-ansi-log", "false", *map(str, args)],
                        cwd=cwd, env=env, timeout=timeout)


# Nextflow's last log line before its JVM exits; after it, only shutdown is left.
SESSION_DONE = "Session await > all barriers passed"
SHUTDOWN_GRACE_S = 90


def run_nextflow(command: list[str], cwd: Path, env: dict, timeout: int = 600,
                 preexec_fn=None) -> subprocess.CompletedProcess:
    """`subprocess.run(command)` for a Nextflow command, run once more if the JVM hangs in its own shutdown.

    Nextflow's JVM sometimes fails to exit after a run has finished (nextflow-io/nextflow#1457; seen here once in
    CI after a PREFLIGHT error: the log ended with an InterruptedException in an actor thread). Once this run's
    `.nextflow.log` (a new file: Nextflow rotates the old one) says every process has finished and the JVM is
    still there SHUTDOWN_GRACE_S later, it is killed and the command run again, once; a run that hangs before
    that point, or twice, still fails on `timeout`.
    """
    log = Path(cwd) / ".nextflow.log"
    for attempt in (1, 2):
        previous_log = log.stat().st_ino if log.exists() else None
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, preexec_fn=preexec_fn)
        deadline, done_at = time.monotonic() + timeout, None
        while True:
            try:
                stdout, stderr = process.communicate(timeout=5)
                return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if done_at is None and log.exists() and log.stat().st_ino != previous_log \
                    and SESSION_DONE in log.read_text(errors="replace"):
                done_at = now
            hung = done_at is not None and now - done_at > SHUTDOWN_GRACE_S
            if now > deadline or hung:
                process.kill()
                stdout, stderr = process.communicate()
                if hung and attempt == 1:
                    print(f"nextflow finished but did not exit within {SHUTDOWN_GRACE_S} s: killed, run again",
                          file=sys.stderr)
                    break
                raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr)
    raise AssertionError("unreachable")


def nextflow_output(run: subprocess.CompletedProcess) -> str:
    return run.stdout + "\n" + run.stderr


def nextflow_once(session_dir: Path, name: str, *args, cwd: Path, must_pass: bool = False) -> subprocess.CompletedProcess:
    """`nextflow(*args, cwd=cwd)` launched by the first worker that asks (`built_once`), its result read back by
    the others; `must_pass`: a failed run fails the fixture, with the end of its log."""
    def launch():
        run = nextflow(*args, cwd=cwd)
        assert not must_pass or run.returncode == 0, nextflow_output(run)[-6000:]
        return [run.returncode, run.stdout, run.stderr]

    returncode, stdout, stderr = built_once(session_dir, name, launch)
    return subprocess.CompletedProcess(["nextflow", *map(str, args)], returncode, stdout, stderr)


@pytest.fixture(scope="session")
def pipeline_run(session_dir, demo_data, tiny_model):
    """One real `nextflow run -profile test --data_dir ...` whose outputs several tests check."""
    launch = session_dir / "nf_data_dir"
    outdir = launch / "results"
    # Default parameters: other tests (e.g. test_slurm.py) compare their runs with this one.
    args = ["-profile", "test", "--data_dir", demo_data, "--esm_model", tiny_model, "--outdir", outdir]

    run = nextflow_once(session_dir, "nf_data_dir", *args, cwd=launch, must_pass=True)
    return {"launch": launch, "outdir": outdir, "run": run, "args": args, "max_length": 1022}


@pytest.fixture(scope="session")
def help_run(session_dir) -> subprocess.CompletedProcess:
    """`nextflow run main.nf --help`, launched once for the tests that read it (`.launch`: where it ran)."""
    run = nextflow_once(session_dir, "help", "--help", cwd=session_dir / "help")
    run.launch = session_dir / "help"
    return run
