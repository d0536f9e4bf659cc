"""What a new user found running the pipeline, each through `nextflow run` with its exact message: a re-run into
an --outdir of another run, mistyped parameters, a chunk copied into the data, files only their owner can read,
no Python environment, and Ctrl-C."""
from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_pipeline import LOG_LINE, digest, files_under, process_name, trace_rows

from conftest import REPO, demo_chunks, nextflow, nextflow_output, run_nextflow
from virnucpro_extract.testdata import make_demo_data

pytestmark = pytest.mark.pipeline


def with_umask(mask: int):
    return lambda: os.umask(mask)


def run_as(tmp_path, *args, cwd, umask=0o002, env=None):
    """nextflow run under a group-friendly umask (a shared cluster's usual 002)."""
    env = {**os.environ, "NXF_OFFLINE": "true", "NXF_ANSI_LOG": "false", **(env or {})}
    return run_nextflow(["nextflow", "run", str(REPO / "main.nf"), "-ansi-log", "false", *map(str, args)], cwd=cwd,
                        env=env, timeout=600, preexec_fn=with_umask(umask))


def task_dir(launch: Path, outdir: Path, process: str, tag_part: str = "") -> list[Path]:
    rows = [r for r in trace_rows(outdir) if process_name(r) == process and tag_part in r["tag"]]
    return [next((launch / "work").glob(r["hash"] + "*")) for r in rows]


def published_pt(outdir: Path) -> set[str]:
    return {f for f in files_under(outdir) if f.startswith(("esm/", "data_merge/"))}


# ----------------------------------------------------------------------------------------------
# 1. A second run into the same --outdir
# ----------------------------------------------------------------------------------------------
def test_outdir_of_a_run_with_other_parameters_is_refused_then_replaced_whole(tmp_path, demo_data, tiny_model):
    """Link mode, with -resume: the refusal names the parameter; with --replace_outdir every published file is
    this run's (the same inode as its task's output), reports and params say so, and the files of a chunk this
    run no longer has are removed, not left looking current."""
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    launch, outdir = tmp_path / "launch", tmp_path / "launch" / "results"
    launch.mkdir()
    args = ["-profile", "test", "--data_dir", data, "--esm_model", tiny_model, "--outdir", outdir]
    first = run_as(tmp_path, *args, cwd=launch)
    assert first.returncode == 0, nextflow_output(first)[-4000:]
    before = {name: digest(outdir / name) for name in published_pt(outdir)}
    for name in before:  # published files follow the umask (002 here): lab-mates can read them
        assert stat.S_IMODE((outdir / name).stat().st_mode) == 0o664, name

    refused = run_as(tmp_path, *args, "-resume", "--max_length", 8, cwd=launch)
    lines = [line for line in nextflow_output(refused).splitlines() if line.startswith("error:")]
    assert refused.returncode == 1
    assert lines == [f"error: {outdir}/pipeline_info/params.json: --max_length: this --outdir holds the outputs of a "
                     "run with --max_length 1022, this run has 8 — give a new --outdir, or pass --replace_outdir to "
                     "replace them (earlier outputs this run does not make are removed at its end)"], lines
    assert not LOG_LINE.search(refused.stdout), "nothing may be submitted"
    assert {name: digest(outdir / name) for name in published_pt(outdir)} == before

    dropped = demo_chunks(data)[-1]
    dropped["fasta"].unlink()
    dropped["dnabert"].unlink()
    replaced = run_as(tmp_path, *args, "-resume", "--max_length", 8, "--replace_outdir", cwd=launch)
    assert replaced.returncode == 0, nextflow_output(replaced)[-4000:]
    assert f"removed 2 file(s) of an earlier run from {outdir}" in replaced.stdout
    kept = [c for c in demo_chunks(data)]
    assert published_pt(outdir) == ({f"esm/{c['key']}_ESM.pt" for c in kept}
                                    | {f"data_merge/{c['group']}_merged/{c['id']}_merged.pt" for c in kept})
    removed = (outdir / "pipeline_info" / "removed_files.txt").read_text().split()
    assert sorted(removed) == sorted([f"esm/{dropped['key']}_ESM.pt",
                                      f"data_merge/{dropped['group']}_merged/{dropped['id']}_merged.pt"])
    for task in task_dir(launch, outdir, "EMBED_PROTEINS"):
        for produced in (task / "esm").rglob("*_ESM.pt"):
            published = outdir / "esm" / produced.relative_to(task / "esm")
            assert published.stat().st_ino == produced.resolve().stat().st_ino, published  # this run's file
            assert digest(published) != before[f"esm/{produced.relative_to(task / 'esm')}"]
    assert '"max_length": 8' in (outdir / "pipeline_info" / "params.json").read_text()
    assert '"max_length": 8' in (outdir / "pipeline_info" / "preflight.json").read_text()
    assert "truncated to 8 residues" in (outdir / "report.html").read_text()
    assert not [f for f in files_under(outdir) if Path(f).name.startswith(".")]


def test_copy_mode_rerun_without_resume_republishes_whole_copies_and_warns_of_unknown_names(tmp_path, demo_data,
                                                                                           tiny_model):
    """Copy mode, no -resume: a published copy that is not this run's (here cut short, as a kill mid-copy left it
    before publishing was atomic) and a hidden temporary name a killed publish left are both repaired."""
    launch, outdir = tmp_path / "launch", tmp_path / "launch" / "results"
    launch.mkdir()
    args = ["-profile", "test", "--data_dir", demo_data, "--esm_model", tiny_model, "--outdir", outdir,
            "--publish_dir_mode", "copy"]
    first = run_as(tmp_path, *args, "--config_profile_name", "my-institute", "--frobnicate", 3, cwd=launch)
    assert first.returncode == 0, nextflow_output(first)[-4000:]
    output = nextflow_output(first)
    assert "WARN: --frobnicate is not a parameter of this pipeline (ignored); see --help" in output
    assert "WARN: --config_profile_name (an institutional config's parameter) is not used by this pipeline" in output
    names = sorted(published_pt(outdir))
    assert all((outdir / n).stat().st_nlink == 1 and stat.S_IMODE((outdir / n).stat().st_mode) == 0o664 for n in names)
    whole = {n: (outdir / n).read_bytes() for n in names}
    victim = outdir / names[0]
    victim.write_bytes(whole[names[0]][: len(whole[names[0]]) // 3])
    leftover = victim.parent / f".{victim.name}.publishing"
    leftover.write_bytes(b"half a copy")

    again = run_as(tmp_path, *args, cwd=launch)
    assert again.returncode == 0, nextflow_output(again)[-4000:]
    assert victim.read_bytes() != whole[names[0]][: len(whole[names[0]]) // 3]
    torch.load(victim, weights_only=True)  # whole again
    assert not leftover.exists()
    assert sorted(published_pt(outdir)) == names


def task_outputs(launch: Path, outdir: Path) -> dict[str, str]:
    """{published name: digest} of the .pt files the run's EMBED_PROTEINS and MERGE_FEATURES tasks wrote, named
    as they are published (esm/<group>/<id>_ESM.pt, data_merge/<group>_merged/<id>_merged.pt)."""
    made = {}
    for process, folder in (("EMBED_PROTEINS", "esm"), ("MERGE_FEATURES", "data_merge")):
        for task in task_dir(launch, outdir, process):
            for produced in (task / folder).rglob("*.pt"):
                made[f"{folder}/{produced.relative_to(task / folder)}"] = digest(produced)
    return made


def test_a_run_killed_mid_publish_leaves_whole_files_and_resume_publishes_the_same_bytes(tmp_path, tiny_model):
    """SIGKILL to the whole run once PUBLISH tasks are running: every published file is whole (old or new,
    never a part); -resume then publishes every chunk's files, each the bytes of the task that made it."""
    data = make_demo_data(tmp_path / "data", viral_chunks=2, host_chunks=2, proteins_per_chunk=120, seed=5)
    chunks = demo_chunks(data)
    expected = ({f"esm/{c['key']}_ESM.pt" for c in chunks}
                | {f"data_merge/{c['group']}_merged/{c['id']}_merged.pt" for c in chunks})
    args = ["-profile", "test", "--data_dir", data, "--esm_model", tiny_model, "--chunks_per_task", 1]
    launch, outdir = tmp_path / "run", tmp_path / "results"
    launch.mkdir()
    env = {**os.environ, "NXF_OFFLINE": "true", "NXF_ANSI_LOG": "false"}
    run = subprocess.Popen(["nextflow", "run", str(REPO / "main.nf"), "-ansi-log", "false", *map(str, args),
                            "--outdir", str(outdir)], cwd=launch, env=env, start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, merged_published = time.time() + 400, 0
    for line in run.stdout:
        if "Submitted process > VIRNUCPRO_EXTRACT:PUBLISH (merged_" in line:
            merged_published += 1
            if merged_published == 2:
                break
        if time.time() > deadline:
            break
    os.killpg(run.pid, signal.SIGKILL)  # the whole run: Nextflow and every task it started
    run.wait()
    assert merged_published == 2, "the run never reached its second merge publish"
    partly = published_pt(outdir)
    assert partly and partly < expected, "killed too late: the test proves nothing"
    for name in partly:
        torch.load(outdir / name, weights_only=True)  # whole: a kill leaves a hidden temporary name at most

    resumed = nextflow(*args, "--outdir", outdir, "-resume", cwd=launch)
    assert resumed.returncode == 0, nextflow_output(resumed)[-4000:]
    assert published_pt(outdir) == expected
    made = task_outputs(launch, outdir)
    assert set(made) == expected
    assert {name: digest(outdir / name) for name in expected} == made
    assert not [f for f in files_under(outdir) if Path(f).name.startswith(".")]


OTHER_FS = Path("/dev/shm")


@pytest.mark.skipif(not OTHER_FS.is_dir() or os.stat(OTHER_FS).st_dev == os.stat(Path.cwd()).st_dev,
                    reason="needs /dev/shm on another file system than the work directory")
def test_hard_links_across_file_systems_are_refused_by_the_head(tmp_path, demo_data, tiny_model):
    outdir = OTHER_FS / f"virnucpro-test-{os.getpid()}" / "results"
    run = nextflow("-profile", "test", "--data_dir", demo_data, "--esm_model", tiny_model, "--outdir", outdir,
                   cwd=tmp_path)
    lines = [line for line in nextflow_output(run).splitlines() if line.startswith("error:")]
    assert run.returncode == 1 and len(lines) == 1, nextflow_output(run)[-3000:]
    assert lines[0].startswith(f"error: {outdir}: --publish_dir_mode link: outdir (")
    assert "another file system" in lines[0] and "— pass --publish_dir_mode copy" in lines[0]
    assert not LOG_LINE.search(run.stdout)
    # Nextflow itself opens its trace files under --outdir/pipeline_info at start; nothing of the pipeline's
    assert not (outdir / "esm").exists() and not (outdir / "pipeline_info" / "params.json").exists()
    shutil.rmtree(outdir.parent, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# 2. Misspelt parameters, and 8. --help's columns
# ----------------------------------------------------------------------------------------------
def test_near_misses_of_parameters_stop_the_run_before_any_task(tmp_path, tiny_model):
    """A case slip, a transposition and '-' for '_' in one command: one line each, and nothing submitted."""
    typed = {"--outDir": "outdir", "--max_lenght": "max_length", "--data-dir": "data_dir"}
    run = nextflow("-profile", "test", "--esm_model", tiny_model, "--outDir", tmp_path / "X", "--max_lenght", 50,
                   "--data-dir", tmp_path / "X", cwd=tmp_path)
    lines = [line for line in nextflow_output(run).splitlines() if line.startswith("error:")]
    assert run.returncode == 1
    assert sorted(lines) == sorted(f"error: params: {name}: unknown parameter — did you mean --{meant}?"
                                   for name, meant in typed.items()), nextflow_output(run)
    assert not LOG_LINE.search(run.stdout) and not (tmp_path / "results" / "esm").exists()


def test_help_rows_line_up(help_run):
    rows = [line for line in help_run.stdout.splitlines() if re.match(r"^  --\w", line)]
    assert len(rows) >= 20
    type_columns = {re.match(r"^  --\w+\s+", line).end() for line in rows}
    assert len(type_columns) == 1, [line[:60] for line in rows]
    assert any(line.startswith("  --publish_dir_mode ") for line in rows)
    assert any(line.startswith("  --container_gpu_options ") for line in rows)


# ----------------------------------------------------------------------------------------------
# 3. The same protein id in two chunks
# ----------------------------------------------------------------------------------------------
def test_a_copied_chunk_is_a_preflight_error_naming_both_files_and_lines(tmp_path, demo_data, tiny_model):
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    source = next(c for c in demo_chunks(data) if c["key"] == "viral.1.1/output_1")
    shutil.copy(source["fasta"], data / "viral.1.1.identified_protein" / "output_3.fa")
    shutil.copy(source["dnabert"], data / "viral.1.1.identified_nucleotide" / "output_3_DNABERT_S.pt")
    run = nextflow("-profile", "test", "--data_dir", data, "--esm_model", tiny_model, "--outdir", tmp_path / "results",
                   cwd=tmp_path)
    output = nextflow_output(run)
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith("error:")]
    assert run.returncode != 0
    copy, original = data / "viral.1.1.identified_protein" / "output_3.fa", source["fasta"]
    first_id = source["fasta"].read_text().splitlines()[0][1:]
    assert lines[0] == (f"error: {copy}: record {first_id} (line 1): id also in {original} (line 1) — every protein id "
                        "must be unique across the run's chunks (the same record twice gives duplicated training rows): "
                        "remove the copied chunk, or rename its records"), lines
    assert len(lines) == 6 and re.match(rf"^error: {re.escape(str(copy))}: -: 15 more id\(s\) found in more than one "
                                        r"chunk \(in ", lines[-1]), lines
    processes = [m.group(2) for m in map(LOG_LINE.match, output.splitlines()) if m]
    assert processes == ["PREFLIGHT"], processes


# ----------------------------------------------------------------------------------------------
# 5. No Python environment
# ----------------------------------------------------------------------------------------------
def test_no_python_environment_is_one_line_with_both_fixes(tmp_path, demo_data, tiny_model):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    path = os.pathsep.join([str(bare / "bin")] + [p for p in os.environ["PATH"].split(os.pathsep)
                                                   if ".venv" not in p])
    run = nextflow("-profile", "test", "--data_dir", demo_data, "--esm_model", tiny_model, "--outdir",
                   tmp_path / "results", cwd=tmp_path, env={"PATH": path})
    output = nextflow_output(run)
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith("error:")]
    assert run.returncode != 0
    assert lines == [f"error: {bare}/bin/python3: -: Python package(s) click, numpy, torch, transformers, tokenizers, "
                     "safetensors, huggingface_hub, jsonschema, biopython, jinja2 not installed for this interpreter — run `source "
                     "scripts/setup_env.sh` before `nextflow run` (it puts the project's .venv on PATH), or run with "
                     "-profile docker, podman or singularity"], output[-3000:]
    assert "Traceback" not in output and "ModuleNotFoundError" not in output


# ----------------------------------------------------------------------------------------------
# 7. Ctrl-C
# ----------------------------------------------------------------------------------------------
def test_ctrl_c_ends_with_one_line_saying_resume_continues(tmp_path, tiny_model):
    data = make_demo_data(tmp_path / "data", viral_chunks=2, host_chunks=2, proteins_per_chunk=400, seed=3)
    env = {**os.environ, "NXF_OFFLINE": "true", "NXF_ANSI_LOG": "false"}
    # a terminal's Ctrl-C goes to the foreground process group: Nextflow and the tasks it started
    run = subprocess.Popen(["nextflow", "run", str(REPO / "main.nf"), "-ansi-log", "false", "-profile", "test",
                            "--data_dir", str(data), "--esm_model", str(tiny_model), "--outdir",
                            str(tmp_path / "results")], cwd=tmp_path, env=env, start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           # as in a terminal's foreground job: a suite started in the background (`cmd &` in a
                           # script) hands its children SIGINT ignored, and the JVM then keeps it ignored
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    for line in run.stdout:
        seen.append(line)
        if "Submitted process > VIRNUCPRO_EXTRACT:EMBED_PROTEINS" in line:
            break
    # interrupt once the task's script has begun: it then has seconds of imports and embedding still to do (a
    # fixed sleep raced the task on a quiet machine, which finished the whole run first)
    task = re.search(r"\[([0-9a-f]{2})/([0-9a-f]{6})\]", seen[-1])
    deadline = time.monotonic() + 120
    while not list((tmp_path / "work" / task.group(1)).glob(f"{task.group(2)}*/.command.begin")):
        assert time.monotonic() < deadline and run.poll() is None, "".join(seen)
        time.sleep(0.1)
    os.killpg(run.pid, signal.SIGINT)
    rest, _ = run.communicate(timeout=120)
    output = "".join(seen) + rest
    assert "Submitted process > VIRNUCPRO_EXTRACT:EMBED_PROTEINS" in output
    assert "virnucpro-extract: stopped (SIGINT); finished tasks are kept — run the same command with -resume to " \
           "continue" in output, output[-3000:]
    assert "Execution is retried" not in output and "Join mismatch" not in output, output[-3000:]
    assert "terminated with an error exit status (130)" not in output, output[-3000:]
