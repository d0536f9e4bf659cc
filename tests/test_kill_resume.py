"""A run killed with SIGKILL mid-way, then resumed: finished chunks are reused, the rest run again, and the
published outputs are byte-identical to an uninterrupted run's; no partial file is ever visible."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, nextflow, nextflow_output
from test_pipeline import files_under, process_name, trace_rows
from virnucpro_extract.testdata import make_demo_data

pytestmark = pytest.mark.pipeline


def published(outdir: Path) -> set[str]:
    return {f for f in files_under(outdir) if f.startswith(("esm/", "data_merge/"))}


def merges_recorded(outdir: Path) -> set[str]:
    """Tags of the chunks whose merge the running (first) execution trace lists as completed."""
    if not list((outdir / "pipeline_info").glob("execution_trace_*.txt")):
        return set()
    return {r["tag"] for r in trace_rows(outdir, newest=False)
            if process_name(r) == "MERGE_FEATURES" and r.get("status") == "COMPLETED"}


def test_sigkill_then_resume_reruns_only_unfinished_chunks(tmp_path, tiny_model):
    # Six chunks, one per task, large enough that the run is still busy when the first chunk is published.
    data = make_demo_data(tmp_path / "data", viral_chunks=3, host_chunks=3, proteins_per_chunk=300, seed=5)
    args = ["-profile", "test", "--data_dir", data, "--esm_model", tiny_model, "--chunks_per_task", 1]
    reference = nextflow(*args, "--outdir", tmp_path / "uninterrupted", cwd=tmp_path / "run_a")
    assert reference.returncode == 0, nextflow_output(reference)[-4000:]

    launch, outdir = tmp_path / "run_b", tmp_path / "results"
    launch.mkdir()
    env = {**os.environ, "NXF_OFFLINE": "true", "NXF_ANSI_LOG": "false"}
    run = subprocess.Popen(["nextflow", "run", str(REPO / "main.nf"), "-ansi-log", "false", *map(str, args),
                            "--outdir", str(outdir)], cwd=launch, env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 400
    while time.time() < deadline and not merges_recorded(outdir):
        time.sleep(0.2)
    # Nextflow publishes a task's outputs and queues its cache record just before it writes the trace row; a
    # kill in between loses the record and that chunk, correctly, runs again. A chunk whose trace row is a
    # second old is finished in Nextflow's own books too.
    settled = merges_recorded(outdir)
    time.sleep(1.0)
    os.killpg(run.pid, signal.SIGKILL)  # the whole run: Nextflow and every task it started
    run.wait()
    finished = merges_recorded(outdir)
    assert settled, "no chunk finished before the deadline"
    assert len(finished) < 6, "the run finished before it could be killed: the test proves nothing"
    assert not [f for f in files_under(outdir) if ".partial" in f or f.startswith(".")], files_under(outdir)

    resumed = nextflow(*args, "--outdir", outdir, "-resume", cwd=launch)
    assert resumed.returncode == 0, nextflow_output(resumed)[-4000:]
    merges = {r["tag"]: r["status"] for r in trace_rows(outdir) if process_name(r) == "MERGE_FEATURES"}
    assert len(merges) == 6, merges
    reused = {tag for tag, status in merges.items() if status == "CACHED"}
    assert settled <= reused <= finished, (settled, merges)
    assert {status for tag, status in merges.items() if tag not in finished} == {"COMPLETED"}, merges

    expected = published(tmp_path / "uninterrupted")
    assert published(outdir) == expected
    for name in expected:
        a = torch.load(tmp_path / "uninterrupted" / name, weights_only=True)
        b = torch.load(outdir / name, weights_only=True)
        ids = "ids" if "ids" in a else "proteins"
        assert a[ids] == b[ids], name
        assert a["data"].numpy().tobytes() == b["data"].numpy().tobytes(), name
        assert a.get("labels") == b.get("labels")
