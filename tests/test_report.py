"""`report` on real CLI outputs: the run, the data, every check, the pictures; failed and --allow_missing runs.

`make_report` is shared with test_report_browser.py, which loads what it writes in headless Chromium.
"""
from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import torch

from conftest import cli, write_dnabert, write_fasta

FIGURES = ("Proteins per group", "EMBED_PROTEINS throughput per task", "Protein length",
           "Protein embedding norm by label", "PCA of merged features (sample)", "DNABERT-S embedding norm by label")


def make_report(tmp_path: Path, outdir: Path, allow_missing: bool = False, table: Path | None = None,
                extra_params: dict | None = None) -> tuple[Path, dict]:
    """validate + report on a contract-layout outdir (as the cli_outputs fixture lays it out); return
    (report.html, validation document). The report is written whether or not validation passes."""
    info = outdir / "pipeline_info"
    inputs = ["--table", table] if table else ["--manifest", info / "chunks.csv", "--outdir", outdir]
    cli("validate", *inputs, "--allow_missing", str(allow_missing).lower(), "--out", tmp_path / "validation.json",
        "--sample", tmp_path / "sample.pt")
    params = {"max_length": 1022, "esm_model": "tiny_esm", "allow_missing": allow_missing, "outdir": str(outdir),
              "use_gpu": False, **(extra_params or {})}
    (tmp_path / "params.json").write_text(json.dumps(params))
    preflight = ["--preflight", info / "preflight.json"] if (info / "preflight.json").is_file() else []
    result = cli("report", "--validation", tmp_path / "validation.json", "--sample", tmp_path / "sample.pt",
                 *preflight, *[a for p in sorted(info.glob("*embed*.json")) for a in ("--embed_stats", p)],
                 *[a for p in sorted(info.glob("*.merge.json")) for a in ("--merge_stats", p)],
                 "--params_json", tmp_path / "params.json", "--nextflow_version", "25.04.4",
                 "--versions_out", tmp_path / "versions.json", "--out", tmp_path / "report.html")
    assert result.exit_code == 0, result.stderr
    return tmp_path / "report.html", json.loads((tmp_path / "validation.json").read_text())


def text_of(page: str) -> str:
    """The page's visible text, tags dropped, entities decoded: what a reader sees."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def assert_self_contained(page: str):
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower() and "@import" not in page and "url(" not in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # Nothing to fetch: the only links are in-page anchors; the only URL is SVG's namespace name.
    assert re.findall(r"""\b(?:src|href)\s*=\s*(?!["']?#)""", page) == []
    assert re.findall(r"(?:https?:)?//[\w.-]+", page.replace('xmlns="http://www.w3.org/2000/svg"', "")) == []


def test_report_shows_the_run_the_data_the_pictures_and_every_check(tmp_path, cli_outputs):
    report, validation = make_report(tmp_path, cli_outputs)
    page = report.read_text()
    text = text_of(page)
    assert_self_contained(page)
    assert "Validation PASSED" in text and "80 proteins in 4 chunks" in text
    assert "0 truncated to 1022 residues" in text and "0 ids dropped (--allow_missing off)" in text

    # The run: params, versions (Nextflow included), model and its config hash, wall time, card.
    embed_stats = json.loads((cli_outputs / "pipeline_info" / "embed.json").read_text())
    versions = json.loads((tmp_path / "versions.json").read_text())
    for needed in ("Nextflow", "25.04.4", "torch", versions["torch"], "transformers", versions["transformers"],
                   "tiny_esm", "config.json hash", embed_stats["config_hash"], "card", "cpu", "run wall time",
                   "max_length", "allow_missing"):
        assert needed in text, needed
    assert re.search(r"run wall time \(≈\)\s+\d", text), "wall time from the stats files' times"
    assert re.search(r"DNABERT-S\s+given as files \(none computed in this run\)", text)
    assert re.search(r"compile decision\s+eager on CPU", text)  # why the model was (not) compiled

    # The data: chunks and proteins per group and label.
    for group, label, chunks, proteins in (("bacteria", "host", 1, 20), ("vertebrate_mammalian", "host", 1, 20),
                                           ("viral.1.1", "viral", 2, 40)):
        assert re.search(rf"<td>{re.escape(group)}</td><td>{label}</td><td class='num'>{chunks}</td>"
                         rf"<td class='num'>{proteins}</td>", page), group

    # Pictures: every figure is an SVG with a title, axis labels and a legend.
    assert page.count("<svg") == len(FIGURES)
    for title in FIGURES:
        assert f"<h3>{title}</h3><svg" in page, title
    for axis_label in ("proteins", "length (residues)", "L2 norm of the 1280-d protein vector",
                       "L2 norm of the 768-d DNABERT-S vector", "proteins per second", "of variance)"):
        assert axis_label in text, axis_label
    assert "host (n=40)" in text and "viral (n=40)" in text
    assert "not from the Nextflow trace" in text  # throughput's source is said

    # Validation: every check by name with its status.
    for name in {c["check"] for c in validation["checks"]}:
        assert html.escape(name) in page, name
    assert page.count("<span class='ok'>✓</span>") == validation["checks_run"]


def test_report_of_a_failed_validation_names_the_check_and_the_offending_file(tmp_path, cli_outputs):
    outdir = tmp_path / "results"
    shutil.copytree(cli_outputs, outdir)
    damaged = outdir / "data_merge" / "bacteria_merged" / "output_1_merged.pt"
    merged = torch.load(damaged, weights_only=True)
    merged["data"][2, 5] = float("nan")
    torch.save(merged, damaged)

    report, validation = make_report(tmp_path, outdir)
    page = report.read_text()
    assert validation["passed"] is False
    assert "Validation FAILED" in text_of(page) and "<span class='pill bad'>FAIL</span>" in page
    row = re.search(r"<tr><td class='num'>\d+</td><td>merged rows finite</td>.*?</tr>", page)
    assert row and str(damaged) in row[0] and "<td class='num'>1</td>" in row[0]
    failed = [c for c in validation["checks"] if not c["passed"]]
    failures = page[page.index(f"<h3>Failures ({len(failed)})</h3>"):]
    assert "bacteria/output_1" in failures and str(damaged) in failures and "rows with NaN/Inf" in failures
    assert page.count("<span class='bad'>✗</span>") == len(failed)
    assert_self_contained(page)


def test_report_lists_the_ids_dropped_with_allow_missing(tmp_path, tiny_model):
    proteins = [(f"NC_0000{k}.1_chunk_1F1", "MKTAYIAKQRQISFVKSHFSRQ"[: 10 + k]) for k in range(6)]
    fasta = write_fasta(tmp_path / "in" / "output_1.fa", proteins)
    protein_only, dnabert_only = proteins[0][0], "NC_000099.1_chunk_1F1"
    dnabert = write_dnabert(tmp_path / "in" / "output_1_DNABERT_S.pt",
                            [rid for rid, _ in proteins[1:]] + [dnabert_only])
    outdir, info = tmp_path / "results", tmp_path / "results" / "pipeline_info"
    esm = outdir / "esm" / "viral.1.1" / "output_1_ESM.pt"
    merged = outdir / "data_merge" / "viral.1.1_merged" / "output_1_merged.pt"
    assert cli("embed", f"viral.1.1/output_1={fasta}", "--outdir", outdir / "esm", "--esm_model", tiny_model,
               "--use_gpu", "false", "--stats", info / "embed_0.embed.json").exit_code == 0
    assert cli("merge", "--dnabert", dnabert, "--esm", esm, "--label", "viral", "--output", merged,
               "--allow_missing", "true", "--stats", info / "viral.1.1__output_1.merge.json").exit_code == 0
    table = tmp_path / "outputs.csv"
    table.write_text("key,group,id,label,protein_fasta,dnabert_embeddings,esm,merged\n"
                     f"viral.1.1/output_1,viral.1.1,output_1,viral,{fasta},{dnabert},{esm},{merged}\n")

    report, validation = make_report(tmp_path, outdir, allow_missing=True, table=table)
    page = report.read_text()
    assert validation["passed"] is True
    text = text_of(page)
    assert "2 ids dropped (--allow_missing on)" in text
    dropped = page[page.index("<h3>Dropped ids</h3>"):]
    assert f"<td>viral.1.1/output_1</td><td>{protein_only}</td><td>protein FASTA only</td>" in dropped
    assert f"<td>viral.1.1/output_1</td><td>{dnabert_only}</td><td>DNABERT-S file only</td>" in dropped
    # Throughput per task is named after the task's stats file.
    assert ">embed_0<" in page


def test_report_without_optional_inputs_still_renders(tmp_path):
    from virnucpro_extract.report import build_report

    page = build_report({"passed": True, "checks_run": 0, "checks": [], "chunks": []}, {}, {}, [], [], {})
    assert "Validation PASSED" in page and page.count("No data.") >= 4
    assert_self_contained(page)


def test_report_helpers():
    from virnucpro_extract.report import chunk_key, nice_ticks, task_name, throughput

    assert nice_ticks(0, 93) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(33.2, 34.7) == [33.0, 33.5, 34.0, 34.5, 35.0]
    assert nice_ticks(5, 5)[0] <= 5 <= nice_ticks(5, 5)[-1]
    # Group names contain dots: the chunk key is everything before `.merge.json`.
    assert chunk_key({"_name": "viral.1.1__output_12.merge.json"}) == "viral.1.1/output_12"
    assert task_name({"_name": "embed_3.embed.json"}, 0) == "embed_3" and task_name({}, 2) == "task 3"
    tasks = throughput([{"_name": f"embed_{k}.embed.json", "total_seconds": 2.0, "load_seconds": 1.0,
                         "chunks": [{"proteins": 10}]} for k in (10, 2, 1)])
    assert [t["task"] for t in tasks] == ["embed_1", "embed_2", "embed_10"]
    assert tasks[0]["per_second"] == 5 and tasks[0]["per_second_embedding"] == 10
