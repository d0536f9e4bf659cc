"""`-profile test,slurm` through a real Slurm: scripts/start_slurm.sh starts a one-node cluster here.

The tasks must really go through `sbatch` (their Slurm job ids are the trace's native_id, and the
controller's job-completion log lists each of them as COMPLETED in the task's work directory), and
the merged features must equal, bit for bit, those of the local run of the same inputs.
"""
from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import nextflow, nextflow_output

pytestmark = [pytest.mark.slurm, pytest.mark.pipeline]
PROCESSES = {"PLAN_CHUNKS", "EMBED_PROTEINS", "MERGE_FEATURES", "VALIDATE_OUTPUTS", "REPORT"}
ON_THE_HEAD = {"PREFLIGHT", "PUBLISH", "FINALISE_OUTDIR"}  # the local executor: typos before any queue wait; --outdir

# The profile's pollInterval (30 s) and queueStatInterval suit a busy cluster; here they would only
# make the run wait. Everything else is the profile as users get it.
FAST_POLLING = """
executor {
    $slurm {
        pollInterval      = '1 sec'
        queueStatInterval = '5 sec'
        submitRateLimit   = '100/1s'
    }
}
"""


def slurm_answers() -> str | None:
    """None when a cluster takes jobs here, else why not (the reason the tests are skipped)."""
    if shutil.which("sbatch") is None:
        return "sbatch not on PATH: no Slurm here (CI starts one with scripts/start_slurm.sh)"
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: slurmctld does not answer (start it with scripts/start_slurm.sh)"
    if states.returncode != 0:
        return f"sinfo failed ({states.stderr.strip()}): start the cluster with scripts/start_slurm.sh"
    if not {"idle", "mixed"} & set(states.stdout.split()):
        return f"no idle Slurm node (states: {' '.join(sorted(set(states.stdout.split()))) or 'none'})"
    return None


# CI starts the cluster first and sets REQUIRE_SLURM=1, so that a cluster that did not come up
# fails these tests instead of skipping them.
if (why := slurm_answers()) is not None:
    if os.environ.get("REQUIRE_SLURM") == "1":
        raise RuntimeError(f"REQUIRE_SLURM=1 but {why}")
    pytestmark.append(pytest.mark.skip(reason=why))


def scontrol_config() -> dict[str, str]:
    run = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=20, check=True)
    return dict(re.findall(r"^(\w+)\s+= (.*)$", run.stdout, re.M))


def partitions() -> tuple[str, set[str]]:
    """(the default partition, all partitions)."""
    names = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=True).stdout.split()
    default = next((n.rstrip("*") for n in names if n.endswith("*")), names[0])
    return default, {n.rstrip("*") for n in names}


def completed_jobs() -> dict[str, dict[str, str]]:
    """{job id: fields} from the controller's job-completion log (jobcomp/filetxt), if it keeps one."""
    config = scontrol_config()
    log = Path(config.get("JobCompLoc", ""))
    if config.get("JobCompType") != "jobcomp/filetxt" or not log.is_file():
        return {}
    jobs = {}
    for line in log.read_text().splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobId" in fields:
            jobs[fields["JobId"]] = fields
    return jobs


def trace_rows(outdir: Path) -> list[dict]:
    traces = sorted((outdir / "pipeline_info").glob("execution_trace_*.txt"))
    assert traces, "no execution trace"
    with open(traces[-1]) as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def work_dir(work: Path, task_hash: str) -> Path:
    prefix, rest = task_hash.split("/")
    matches = list((work / prefix).glob(f"{rest}*"))
    assert len(matches) == 1, f"work dir of {task_hash}"
    return matches[0]


def assert_went_through_sbatch(outdir: Path, work: Path) -> list[dict]:
    """Every task has a Slurm job id, and Slurm's own log has that job COMPLETED in the task's work dir."""
    rows = trace_rows(outdir)
    assert {row["process"].split(":")[-1] for row in rows} == PROCESSES | ON_THE_HEAD
    rows = [row for row in rows if row["process"].split(":")[-1] in PROCESSES]
    jobs = completed_jobs()
    for row in rows:
        assert row["status"] == "COMPLETED" and row["exit"] == "0", row
        assert re.fullmatch(r"\d+", row["native_id"]), f"not a Slurm job id: {row['native_id']!r} ({row['name']})"
        task_dir = work_dir(work, row["hash"])
        assert re.search(r"^#SBATCH ", (task_dir / ".command.run").read_text(), re.M), "not a Slurm job script"
        if jobs:
            job = jobs.get(row["native_id"])
            assert job, f"job {row['native_id']} ({row['name']}) is not in Slurm's job-completion log"
            assert job["JobState"] == "COMPLETED" and Path(job["WorkDir"]) == task_dir, job
    return rows


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def test_test_profile_through_slurm_equals_the_local_run(tmp_path, demo_data, tiny_model, pipeline_run):
    """The shared local run (pipeline_run: the same inputs and default parameters) is the reference."""
    default_queue, _ = partitions()
    (tmp_path / "polling.config").write_text(FAST_POLLING)
    inputs = ("--data_dir", demo_data, "--esm_model", tiny_model)
    local = pipeline_run["outdir"]
    outdir, work = tmp_path / "results", tmp_path / "work"
    run = nextflow("-profile", "test,slurm", "-c", tmp_path / "polling.config", "--slurm_queue", default_queue,
                   *inputs, "--outdir", outdir, "-w", work, cwd=tmp_path, timeout=900)
    assert run.returncode == 0, nextflow_output(run)[-6000:]
    rows = assert_went_through_sbatch(outdir, work)
    for row in rows:
        assert f"#SBATCH -p {default_queue}\n" in (work_dir(work, row["hash"]) / ".command.run").read_text()

    local_files = sorted(p.relative_to(local) for p in (local / "data_merge").rglob("*.pt"))
    slurm_files = sorted(p.relative_to(outdir) for p in (outdir / "data_merge").rglob("*.pt"))
    assert local_files and slurm_files == local_files
    for name in local_files:
        ours, theirs = load(outdir / name), load(local / name)
        assert ours["ids"] == theirs["ids"] and ours["labels"] == theirs["labels"], name
        assert torch.equal(ours["data"], theirs["data"]), name
    for name in sorted(p.relative_to(local) for p in (local / "esm").rglob("*_ESM.pt")):
        ours, theirs = load(outdir / name), load(local / name)
        assert ours["proteins"] == theirs["proteins"] and torch.equal(ours["data"], theirs["data"]), name


def test_gpu_tasks_ask_slurm_for_a_gpu_on_the_gpu_queue(tmp_path, demo_data, tiny_model):
    """Stub run with --use_gpu true: Slurm must accept and run `--gres=gpu:1` jobs on the GPU partition.

    The test cluster's node advertises one GPU backed by /dev/null (scripts/start_slurm.sh); a stub
    task needs no device. A wrong gres request is refused by sbatch, and the run fails.
    """
    default_queue, names = partitions()
    if "gpu" not in names:
        pytest.skip("no 'gpu' partition (scripts/start_slurm.sh makes one)")
    (tmp_path / "polling.config").write_text(FAST_POLLING)
    outdir, work = tmp_path / "results", tmp_path / "work"
    run = nextflow("-stub", "-profile", "test,slurm", "-c", tmp_path / "polling.config", "--use_gpu", "true",
                   "--slurm_queue", default_queue, "--slurm_gpu_queue", "gpu", "--data_dir", demo_data,
                   "--esm_model", tiny_model, "--outdir", outdir, "-w", work, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, nextflow_output(run)[-6000:]
    rows = assert_went_through_sbatch(outdir, work)
    jobs = completed_jobs()
    for row in rows:
        script = (work_dir(work, row["hash"]) / ".command.run").read_text()
        gpu_task = row["process"].endswith(":EMBED_PROTEINS")
        assert ("#SBATCH --gres=gpu:1\n" in script) == gpu_task, (row["name"], script[:800])
        assert f"#SBATCH -p {'gpu' if gpu_task else default_queue}\n" in script, row["name"]
        if jobs:
            assert jobs[row["native_id"]]["Partition"] == ("gpu" if gpu_task else default_queue)
