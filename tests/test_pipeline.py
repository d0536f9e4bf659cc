"""Real `nextflow run main.nf -profile test` on CPU. One full --data_dir run is shared by most tests;
the samplesheet, stub, help and bad-input runs are one each, and the -resume test goes last."""
from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from conftest import (
    DNABERT_DIM,
    ESM_DIM,
    MERGED_DIM,
    SCHEMA,
    cli,
    cosine_rows,
    demo_chunks,
    nextflow,
    nextflow_output,
    read_fasta_records,
    write_samplesheet,
)

pytestmark = pytest.mark.pipeline
PROCESSES = ("PREFLIGHT", "PLAN_CHUNKS", "EMBED_PROTEINS", "MERGE_FEATURES", "VALIDATE_OUTPUTS", "REPORT", "PUBLISH",
             "FINALISE_OUTDIR")
UNCACHED = ("PUBLISH", "FINALISE_OUTDIR")  # cache false: they publish on every run
LOG_LINE = re.compile(r"^\[[0-9a-f]{2}/[0-9a-f]{6}\] (Submitted|Cached) process > VIRNUCPRO_EXTRACT:(\w+) ")


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def trace_rows(outdir: Path, newest: bool = True) -> list[dict]:
    traces = sorted((outdir / "pipeline_info").glob("execution_trace_*.txt"))
    assert traces, "no execution trace"
    with open(traces[-1 if newest else 0]) as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def process_name(row: dict) -> str:
    return row["process"].split(":")[-1]


def check_against_inputs(outdir: Path, chunks: list[dict], reference, max_length: int = 1022,
                         group_of=lambda c: c["group"], id_of=lambda c: c["id"]):
    """ESM rows in FASTA order, merged rows in DNABERT-S order; protein halves equal the independent
    reference of the first `max_length` residues (cosine), DNA halves equal the DNABERT-S vector of the
    same id (exactly); labels as train.py reads them."""
    for chunk in chunks:
        group, chunk_id = group_of(chunk), id_of(chunk)
        records = {rid: seq[:max_length] for rid, seq in read_fasta_records(chunk["fasta"])}
        esm = torch.load(outdir / "esm" / group / f"{chunk_id}_ESM.pt", weights_only=True)
        assert esm["proteins"] == list(records)
        assert esm["data"].dtype == torch.float32 and esm["data"].shape == (len(records), ESM_DIM)
        assert cosine_rows(esm["data"], reference.rows(records.values())).min() >= 0.9999

        merged = torch.load(outdir / "data_merge" / f"{group}_merged" / f"{chunk_id}_merged.pt", weights_only=True)
        dnabert = torch.load(chunk["dnabert"], weights_only=True)
        dna = {item["label"]: torch.tensor(item["mean_representation"], dtype=torch.float32) for item in dnabert["data"]}
        assert merged["ids"] == dnabert["nucleotide"]
        data = merged["data"]
        assert data.dtype == torch.float32 and data.shape == (len(records), MERGED_DIM)
        assert torch.equal(data[:, :DNABERT_DIM], torch.stack([dna[i] for i in merged["ids"]]))
        cosine = cosine_rows(data[:, DNABERT_DIM:], reference.rows([records[i] for i in merged["ids"]]))
        assert cosine.min() >= 0.9999, (chunk["key"], cosine.min())
        assert merged["labels"] == [1 if chunk["label"] == "viral" else 0]


# ----------------------------------------------------------------------------------------------
# The shared --data_dir run
# ----------------------------------------------------------------------------------------------
def test_outputs_in_contract_layout(pipeline_run, demo_data, tiny_model):
    outdir = pipeline_run["outdir"]
    chunks = demo_chunks(demo_data)
    assert {p.name for p in outdir.iterdir()} == {"esm", "data_merge", "report.html", "pipeline_info"}
    assert files_under(outdir / "esm") == {f"{c['group']}/{c['id']}_ESM.pt" for c in chunks}
    assert files_under(outdir / "data_merge") == {f"{c['group']}_merged/{c['id']}_merged.pt" for c in chunks}
    assert not [f for f in files_under(outdir) if Path(f).name.startswith(".") or f.endswith(".partial")]

    info = outdir / "pipeline_info"
    validation = json.loads((info / "validation.json").read_text())
    assert validation["passed"] is True and validation["checks_failed"] == 0 and validation["checks_run"] > 0
    params = json.loads((info / "params.json").read_text())
    assert params["data_dir"] == str(demo_data) and params["esm_model"] == str(tiny_model)
    assert params["use_gpu"] is False
    # nf-core's versions.yml from the processes' `topic: versions` outputs
    versions = (info / "versions.yml").read_text()
    assert re.search(r"^EMBED_PROTEINS:\n(    \S+: \S+\n)*    torch: \d+\.\d+", versions, re.M), versions
    assert re.search(r"^PREFLIGHT:\n    virnucpro-extract: 1\.0\.0dev$", versions, re.M), versions
    for pattern in ("execution_trace_*.txt", "execution_timeline_*.html", "execution_report_*.html"):
        assert list(info.glob(pattern)), pattern
    report = (outdir / "report.html").read_text()
    assert "Validation PASSED" in report and "<svg" in report and "80 proteins in 4 chunks" in report
    assert "0 truncated to 1022 residues" in report

    rows = trace_rows(outdir)
    assert {r["status"] for r in rows} == {"COMPLETED"}
    count = {name: sum(process_name(r) == name for r in rows) for name in PROCESSES}
    groups = count["EMBED_PROTEINS"]  # one merge and one validation task per task group, not per chunk
    assert count["PREFLIGHT"] == 1 and count["PLAN_CHUNKS"] == 1 and count["REPORT"] == 1 and count["FINALISE_OUTDIR"] == 1
    assert groups == 2 and count["MERGE_FEATURES"] == groups and count["VALIDATE_OUTPUTS"] == groups
    assert sum(count.values()) == len(rows)


def test_outputs_match_an_independent_reference(pipeline_run, demo_data, reference):
    check_against_inputs(pipeline_run["outdir"], demo_chunks(demo_data), reference, pipeline_run["max_length"])


def test_merged_files_load_the_way_virnucpro_train_py_reads_them(pipeline_run):
    merged_dir = pipeline_run["outdir"] / "data_merge"
    folders = sorted(p.name for p in merged_dir.iterdir())
    assert "viral.1.1_merged" in folders  # train.py's name for the viral folder
    for folder in folders:
        for file in sorted((merged_dir / folder).glob("*_merged.pt")):
            d = torch.load(file, weights_only=True)
            features, label = d["data"], d["labels"][0]
            assert label == (1 if folder == "viral.1.1_merged" else 0)
            assert torch.is_tensor(features) and features.shape[1] == 2048 and torch.isfinite(features).all()
            assert len(d["ids"]) == features.shape[0]


def test_validate_subcommand_passes_on_the_published_outputs(pipeline_run, tmp_path):
    outdir = pipeline_run["outdir"]
    result = cli("validate", "--manifest", outdir / "pipeline_info" / "chunks.csv", "--outdir", outdir,
                 "--out", tmp_path / "validation.json")
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "validation.json").read_text())["passed"] is True


# ----------------------------------------------------------------------------------------------
# Other runs
# ----------------------------------------------------------------------------------------------
def test_samplesheet_run_with_relative_paths_no_group_column_and_truncation(tmp_path, demo_data, tiny_model,
                                                                             reference):
    chunks = {c["key"]: c for c in demo_chunks(demo_data)}
    picked = {"virA": chunks["viral.1.1/output_2"], "hostB": chunks["vertebrate_mammalian/output_1"]}
    sheet_dir = tmp_path / "project" / "sheets"
    (sheet_dir / "chunks").mkdir(parents=True)
    rows = []
    for name, chunk in picked.items():
        shutil.copy(chunk["fasta"], sheet_dir / "chunks" / f"{name}.fa")
        shutil.copy(chunk["dnabert"], sheet_dir / "chunks" / f"{name}_DNABERT_S.pt")
        rows.append((name, chunk["label"], f"chunks/{name}.fa", f"chunks/{name}_DNABERT_S.pt"))
    write_samplesheet(sheet_dir / "samplesheet.csv", rows)
    launch = tmp_path / "project" / "launch"  # not the samplesheet's folder; --input given relative to here
    # --max_length 90 < the longest demo proteins (100): truncation is exercised end to end.
    run = nextflow("-profile", "test", "--input", "../sheets/samplesheet.csv", "--esm_model", tiny_model,
                   "--outdir", "results", "--max_length", 90, cwd=launch)
    assert run.returncode == 0, nextflow_output(run)[-6000:]
    outdir = launch / "results"
    assert files_under(outdir / "esm") == {"viral/virA_ESM.pt", "host/hostB_ESM.pt"}
    assert files_under(outdir / "data_merge") == {"viral_merged/virA_merged.pt", "host_merged/hostB_merged.pt"}
    assert json.loads((outdir / "pipeline_info" / "validation.json").read_text())["passed"] is True
    as_sheet = [{**chunk, "fasta": sheet_dir / "chunks" / f"{name}.fa",
                 "dnabert": sheet_dir / "chunks" / f"{name}_DNABERT_S.pt", "name": name}
                for name, chunk in picked.items()]
    check_against_inputs(outdir, as_sheet, reference, 90, group_of=lambda c: c["label"], id_of=lambda c: c["name"])
    longer = sum(len(seq) > 90 for c in as_sheet for _, seq in read_fasta_records(c["fasta"]))
    assert longer > 0 and f"{longer} truncated to 90 residues" in (outdir / "report.html").read_text()
    assert json.loads((outdir / "pipeline_info" / "preflight.json").read_text())["truncated"] == longer


def test_help_prints_every_parameter_of_the_schema(help_run):
    run = help_run
    assert run.returncode == 0, nextflow_output(run)
    schema = json.loads(SCHEMA.read_text())
    names = [name for group in schema["definitions"].values() for name in group["properties"]]
    assert len(names) >= 14
    missing = [name for name in names if not re.search(rf"^\s+--{re.escape(name)}\s", run.stdout, re.M)]
    assert not missing, f"--help lacks {missing}"
    work = help_run.launch / "work"
    assert not work.exists() or not any(work.iterdir()), "--help ran a task"


def test_bad_input_fails_in_preflight_before_any_embedding(tmp_path, demo_data, tiny_model):
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    bad = data / "bacteria.identified_protein" / "output_1.fa"
    lines = bad.read_text().splitlines()
    lines[1] = lines[1][:5] + "*" + lines[1][5:]
    bad.write_text("\n".join(lines) + "\n")
    # A mistyped local model path (relative to the launch directory) is a well-formed hub id too; it must be
    # named in the same go rather than sent to the hub by the GPU task.
    (tmp_path / "models").mkdir()
    outdir = tmp_path / "results"
    run = nextflow("-profile", "test", "--data_dir", data, "--esm_model", "models/FastEsm2_650", "--outdir", outdir,
                   cwd=tmp_path)
    output = nextflow_output(run)
    assert run.returncode != 0
    pattern = (rf"^\s*error: {re.escape(str(bad))}: record {re.escape(lines[0][1:].split()[0])} \(line 1\): "
               r"stop codon '\*' inside the protein at residue 6 — \S.*$")
    assert re.search(pattern, output, re.M), output[-4000:]
    model_line = (rf"^\s*error: {re.escape(str(tmp_path / 'models' / 'FastEsm2_650'))}: config.json: "
                  r"model directory missing or has no config.json — \S.*$")
    assert re.search(model_line, output, re.M), output[-4000:]
    assert re.search(r"Error executing process > 'VIRNUCPRO_EXTRACT:PREFLIGHT", output)
    processes = [m.group(2) for m in map(LOG_LINE.match, output.splitlines()) if m]
    assert processes == ["PREFLIGHT"], processes
    assert not (outdir / "esm").exists() and not (outdir / "data_merge").exists()


PROGRESS = re.compile(r"^embed: \[#* *\] (\d+)/(\d+) chunks, ([\d,]+)/([\d,]+) proteins \((\d+)%\) \| \S+: "
                      r"[\d,]+ proteins, \d+ truncated, [\d.]+s \| [\d,]+ proteins/s, ETA \d+s$")


def test_embed_tasks_log_progress_lines_with_totals(pipeline_run, demo_data):
    """Each EMBED_PROTEINS task's .command.log has one plain line per chunk: chunks and proteins of the
    task's total, rate and ETA, no carriage returns (readable with cat or tail -f)."""
    launch, outdir = pipeline_run["launch"], pipeline_run["outdir"]
    rows = [r for r in trace_rows(outdir) if process_name(r) == "EMBED_PROTEINS"]
    assert rows
    proteins_seen = 0
    for row in rows:
        log = next((launch / "work").glob(row["hash"] + "*")) / ".command.log"
        text = log.read_text()
        assert "\r" not in text
        lines = [m for m in map(PROGRESS.match, text.splitlines()) if m]
        assert lines, text[-2000:]
        done, total = int(lines[-1][1]), int(lines[-1][2])
        assert [int(m[1]) for m in lines] == list(range(1, total + 1)) and done == total
        task_total = int(lines[-1][4].replace(",", ""))
        assert [int(m[4].replace(",", "")) for m in lines] == [task_total] * len(lines)
        assert int(lines[-1][3].replace(",", "")) == task_total and lines[-1][5] == "100"
        proteins_seen += task_total
    assert proteins_seen == sum(len(read_fasta_records(c["fasta"])) for c in demo_chunks(demo_data))


# ----------------------------------------------------------------------------------------------
# -resume of the shared run (last: it republishes into the shared outdir)
# ----------------------------------------------------------------------------------------------
def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_resume_caches_every_task(pipeline_run):
    outdir, launch = pipeline_run["outdir"], pipeline_run["launch"]
    first = trace_rows(outdir)
    before = {f: digest(outdir / f) for f in files_under(outdir) if f.startswith(("esm/", "data_merge/"))}
    run = nextflow(*pipeline_run["args"], "-resume", cwd=launch)
    assert run.returncode == 0, nextflow_output(run)[-6000:]
    events = [m.groups() for m in map(LOG_LINE.match, run.stdout.splitlines()) if m]
    assert len(events) == len(first), run.stdout
    assert {kind for kind, name in events if name not in UNCACHED} == {"Cached"}, run.stdout
    assert {kind for kind, name in events if name in UNCACHED} == {"Submitted"}, run.stdout
    assert sorted(name for _, name in events) == sorted(process_name(r) for r in first)
    second = trace_rows(outdir)
    assert second != first
    assert {r["status"] for r in second if process_name(r) not in UNCACHED} == {"CACHED"}
    after = {f: digest(outdir / f) for f in files_under(outdir) if f.startswith(("esm/", "data_merge/"))}
    assert after == before


def test_wrong_parameter_type_and_a_malformed_samplesheet_through_nextflow_run(tmp_path, demo_data, tiny_model):
    """Values typed on Nextflow's command line (which types them itself) and a sheet Groovy cannot split
    both end in PREFLIGHT's contract lines, not in a Nextflow stack trace."""
    run = nextflow("-profile", "test", "--data_dir", demo_data, "--esm_model", tiny_model, "--max_length", "long",
                   "--slurm_queue", "1", "--outdir", tmp_path / "a", cwd=tmp_path / "a")
    errors = [line.strip() for line in nextflow_output(run).splitlines() if line.strip().startswith("error:")]
    assert run.returncode != 0
    assert errors == ["error: params: --max_length: invalid value 'long' ('long' is not of type 'integer') — "
                      "give --max_length as integer"], nextflow_output(run)[-4000:]

    chunk = demo_chunks(demo_data)[0]
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f'id,label,protein_fasta,dnabert_embeddings\n"c1,viral,{chunk["fasta"]},{chunk["dnabert"]}\n')
    run = nextflow("-profile", "test", "--input", sheet, "--esm_model", tiny_model, "--outdir", tmp_path / "b",
                   cwd=tmp_path / "b")
    output = nextflow_output(run)
    assert run.returncode != 0
    line = (rf"^\s*error: {re.escape(str(sheet))}: line 2: not valid CSV \(unexpected end of data\) — "
            r"close the quoted field or remove the stray '\"'$")
    assert re.search(line, output, re.M), output[-4000:]
    assert "Exception" not in output, output[-4000:]
