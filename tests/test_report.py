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


# ----------------------------------------------------------------------------------------------
# The summary: what the page shows, as data (no markup)
# ----------------------------------------------------------------------------------------------
CHUNKS = (("viral.1.1/output_1", "viral", 20, 20, 1), ("viral.1.1/output_2", "viral", 15, 14, 2),
          ("bacteria/output_1", "host", 10, 10, 0))  # key, label, proteins, merged rows, truncated
CHECKS = ("esm rows finite", "merged rows finite")


def documents(failing: tuple[str, str] | None = None) -> dict:
    """Hand-written pipeline documents for `build_summary`: three chunks in two groups, two checks each;
    `failing` = (chunk, check) fails that check (and, as validate does, skips the chunk's later ones)."""
    checks = []
    for key, *_ in CHUNKS:
        for name in CHECKS:
            passed = (key, name) != failing
            checks.append({"chunk": key, "check": name, "passed": passed, "file": f"/out/{key}_merged.pt",
                           "detail": "" if passed else "rows with NaN/Inf: 1", "fix": "re-run MERGE_FEATURES"})
            if not passed:
                break
    validation = {"passed": failing is None, "checks_run": len(checks), "checks": checks,
                  "chunks": [{"key": key, "group": key.split("/")[0], "label": label, "proteins": proteins,
                              "rows": rows, "length_counts": {"100": proteins}}
                             for key, label, proteins, rows, _ in CHUNKS]}
    preflight = {"max_length": 1022, "truncated": sum(c[4] for c in CHUNKS),
                 "chunks": [{"key": key, "truncated": truncated} for key, *_, truncated in CHUNKS]}
    return {"validation": validation, "sample": {}, "preflight": preflight, "embed_stats": [], "merge_stats": [],
            "params": {"max_length": 1022, "allow_missing": False}, "versions": {"python": "3"}}


def summary_of(**changes) -> dict:
    from virnucpro_extract.report import build_summary

    return build_summary(**{**documents(), **changes})


def assert_plain(value, where="summary"):
    """Dicts (str or int keys), lists, str, numbers, bools and None only: no markup, no objects."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, (str, int)), f"{where}: key {key!r}"
            assert_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, list):
        for k, item in enumerate(value):
            assert_plain(item, f"{where}[{k}]")
    else:
        assert value is None or type(value) in (str, int, float, bool), f"{where}: {type(value).__name__}"


def test_summary_is_plain_data_with_numbers_as_numbers():
    summary = summary_of()
    assert_plain(summary)
    assert summary["data"]["proteins"] == 45 and summary["run"]["timing"]["embed_tasks"] == 0


def test_summary_cards_count_the_checks():
    passed = summary_of()
    assert passed["status"] == "PASSED"
    assert passed["cards"]["validation"] == {"passed": 6, "run": 6, "tone": "ok"}
    failed = summary_of(**documents(failing=("viral.1.1/output_2", "esm rows finite")))
    assert failed["status"] == "FAILED"
    assert failed["cards"]["validation"] == {"passed": 4, "run": 5, "tone": "bad"}
    assert failed["validation"]["checks_passed"] == 4 and failed["validation"]["chunks"] == 3


def test_summary_groups_sum_proteins_and_truncated_counts():
    summary = summary_of()
    assert summary["data"]["groups"] == [
        {"group": "bacteria", "label": "host", "chunks": 1, "proteins": 10, "truncated": 0, "dropped": 0, "rows": 10},
        {"group": "viral.1.1", "label": "viral", "chunks": 2, "proteins": 35, "truncated": 3, "dropped": 0,
         "rows": 34}]
    assert [(t["label"], t["proteins"], t["truncated"]) for t in summary["data"]["totals"]] == [
        ("viral", 35, 3), ("host", 10, 0)]
    assert summary["cards"]["proteins"] == {"proteins": 45, "chunks": 3, "groups": 2, "tone": ""}
    assert summary["cards"]["truncated"] == {"proteins": 3, "max_length": 1022, "tone": "warn"}
    assert summary["plots"]["proteins_per_group"]["proteins"] == {"bacteria": 10, "viral.1.1": 35}


def test_summary_lists_dropped_ids_with_where_they_were_present():
    from virnucpro_extract.report.summary import MAX_LISTED

    merge = [{"_name": "viral.1.1__output_2.merge.json", "dropped_dnabert_only": ["NC_9.1"],
              "dropped_protein_only": ["NC_1.1", "NC_2.1"]}]
    data = summary_of(merge_stats=merge, params={"allow_missing": True})["data"]
    assert data["dropped"] == [{"chunk": "viral.1.1/output_2", "id": "NC_9.1", "only_in": "dnabert"},
                               {"chunk": "viral.1.1/output_2", "id": "NC_1.1", "only_in": "protein"},
                               {"chunk": "viral.1.1/output_2", "id": "NC_2.1", "only_in": "protein"}]
    assert data["dropped_count"] == 3 and data["allow_missing"] is True
    assert [g["dropped"] for g in data["groups"]] == [0, 3]
    # Past MAX_LISTED the page lists the first ones; the count stays the whole.
    many = [{"_name": "bacteria__output_1.merge.json",
             "dropped_protein_only": [f"id{k}" for k in range(MAX_LISTED + 7)]}]
    data = summary_of(merge_stats=many)["data"]
    assert len(data["dropped"]) == MAX_LISTED and data["dropped_count"] == MAX_LISTED + 7


def test_summary_failures_name_the_check_and_the_file():
    summary = summary_of(**documents(failing=("bacteria/output_1", "merged rows finite")))
    validation = summary["validation"]
    assert validation["failures"] == [{"chunk": "bacteria/output_1", "check": "merged rows finite",
                                       "file": "/out/bacteria/output_1_merged.pt", "detail": "rows with NaN/Inf: 1",
                                       "fix": "re-run MERGE_FEATURES"}]
    by_name = {c["check"]: c for c in validation["checks"]}
    assert by_name["merged rows finite"] == {"number": 2, "check": "merged rows finite", "passed": False,
                                             "chunks_passed": 2, "chunks_failed": 1,
                                             "offending_files": ["/out/bacteria/output_1_merged.pt"]}
    assert by_name["esm rows finite"]["passed"] is True
    assert {r["chunk"]: r["results"] for r in validation["matrix"]}["bacteria/output_1"] == [True, False]


def test_summary_shows_starting_points_only_when_a_prefix_started_before_the_chunk_files():
    from virnucpro_extract.report import starting_points

    prefixes = [{"prefix": "viral.1", "label": "viral", "stage": "genomes"},
                {"prefix": "bacteria", "label": "host", "stage": "chunks"}]
    as_chunks = starting_points({"prefixes": [{**prefixes[1]}]}, [], [], {})
    chunks_only = summary_of(preflight={**documents()["preflight"], "warnings": ["a warning"]}, stages=as_chunks)
    assert chunks_only["data"]["starting_points"] is None
    assert chunks_only["data"]["warnings"] == ["a warning"]  # shown whatever the starting point

    preflight = {**documents()["preflight"], "prefixes": prefixes, "warnings": ["2 genomes have no CDS"],
                 "identify_jobs": [{"prefix": "viral.1", "fasta": "viral.1.1.genomic.fna.gz"}]}
    plan = {"not_embedded": [{"key": "viral.1/output_3", "group": "viral.1", "records": 12}]}
    stages = starting_points(preflight, [{"prefix": "viral.1", "records": 4, "reads": 90, "frames_kept": 80}],
                             [{"prefix": "viral.1", "chunks": [{"full": True}, {"full": False}]}], plan)
    shown = summary_of(preflight=preflight, stages=stages, not_embedded=plan["not_embedded"])["data"]["starting_points"]
    assert [(r["prefix"], r["stage"], r["genome_files"], r["reads"], r["chunk_files_short"], r["records_not_embedded"])
            for r in shown["rows"]] == [("bacteria", "chunks", 0, None, None, 0), ("viral.1", "genomes", 1, 90, 1, 12)]
    assert shown["not_embedded"] == [{"chunk": "viral.1/output_3", "records": 12}]
    assert summary_of(preflight=preflight, stages=stages)["data"]["warnings"] == ["2 genomes have no CDS"]


def test_hostile_input_text_is_escaped_in_the_page_and_its_pictures():
    """Group names, labels, check details and params come from files: they reach the page as text, never markup
    (autoescape in the template, markupsafe in the SVG charts)."""
    from virnucpro_extract.report import build_report

    script, tag = "<script>alert(1)</script>", "\"'><img src=x>"
    inputs = documents(failing=("viral.1.1/output_1", "esm rows finite"))
    validation = inputs["validation"]
    validation["chunks"][2].update(group=script, label=tag)
    for check in validation["checks"]:
        check.update(detail=f"{check['detail']} {script}", file=f"/out/{tag}.pt")
    validation["checks"][0]["check"] = f"esm {script}"
    page = build_report(**{**inputs, "params": {**inputs["params"], "outdir": tag, tag: script}})

    assert "<script" not in page.lower() and "<img" not in page  # (the text "src=x" stays: not a tag)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&#34;&#39;&gt;&lt;img src=x&gt;" in page
    text = text_of(page)
    assert script in text and tag in text and "&lt;" not in text  # escaped exactly once
    pictures = page[page.index("<section id='pictures'>"):page.index("<section id='validation'>")]
    proteins_svg = pictures[pictures.index("<h3>Proteins per group</h3>"):].split("</svg>")[0]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in proteins_svg  # the bar's category label
    lengths_svg = pictures[pictures.index("<h3>Protein length</h3>"):].split("</svg>")[0]
    assert "&#34;&#39;&gt;&lt;img src=x&gt; (n=10)" in lengths_svg  # the legend's label
