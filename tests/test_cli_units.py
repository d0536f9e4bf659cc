"""Each subcommand on its own, outside Nextflow, on the session's tiny model and demo data."""
from __future__ import annotations

import csv
import importlib.metadata
import json
import re
from pathlib import Path

import pytest
import torch

from conftest import (
    BIN,
    DNABERT_DIM,
    ESM_DIM,
    MERGED_DIM,
    cli,
    cosine_rows,
    demo_chunks,
    expect_errors,
    read_fasta_records,
    write_fasta,
    write_samplesheet,
)

# The ESM-2 vocabulary (facebook/esm2_t6_8M_UR50D), in id order: the spec the test model must follow.
ESM2_VOCAB = ["<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "N",
              "Q", "K", "F", "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>"]
FRAME_ID = re.compile(r"^NC_\d+\.1_chunk_\d+[FR][123]$")


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------------------------
# make-test-model, make-demo-data
# ----------------------------------------------------------------------------------------------
def test_make_test_model_is_a_loadable_esm2_model(tmp_path, tiny_model):
    from transformers import AutoTokenizer, EsmModel

    result = cli("make-test-model", tmp_path / "m")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "esm" and config["hidden_size"] == ESM_DIM
    assert config["vocab_size"] == len(ESM2_VOCAB) and config["position_embedding_type"] == "rotary"
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert [tokenizer.convert_ids_to_tokens(i) for i in range(len(ESM2_VOCAB))] == ESM2_VOCAB

    model, info = EsmModel.from_pretrained(tmp_path / "m", add_pooling_layer=False, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    # The LayerNorms were randomised before saving; default ones here would mean they were not loaded.
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(not torch.allclose(m.weight, torch.ones_like(m.weight)) for m in norms)

    # Same seed, same weights: the session's model was built with seed 0 too.
    same = EsmModel.from_pretrained(tiny_model, add_pooling_layer=False).state_dict()
    assert all(torch.equal(v, same[k]) for k, v in model.state_dict().items())


def test_make_demo_data_writes_virnucpro_layout(tmp_path):
    result = cli("make-demo-data", tmp_path / "data", "--viral_chunks", 1, "--host_chunks", 2,
                 "--proteins_per_chunk", 7)
    assert result.exit_code == 0, result.stderr
    files = sorted(str(p.relative_to(tmp_path / "data")) for p in (tmp_path / "data").rglob("*") if p.is_file())
    assert files == ["bacteria.identified_nucleotide/output_1_DNABERT_S.pt", "bacteria.identified_protein/output_1.fa",
                     "vertebrate_mammalian.identified_nucleotide/output_1_DNABERT_S.pt",
                     "vertebrate_mammalian.identified_protein/output_1.fa",
                     "viral.1.1.identified_nucleotide/output_1_DNABERT_S.pt", "viral.1.1.identified_protein/output_1.fa"]
    reordered = 0
    for chunk in demo_chunks(tmp_path / "data"):
        records = read_fasta_records(chunk["fasta"])
        assert len(records) == 7 and all(FRAME_ID.match(rid) for rid, _ in records)
        assert all(set(seq) <= set("ACDEFGHIKLMNPQRSTVWY") for _, seq in records)
        dnabert = load(chunk["dnabert"])
        assert dnabert["nucleotide"] == [item["label"] for item in dnabert["data"]]
        assert sorted(dnabert["nucleotide"]) == sorted(rid for rid, _ in records)
        for item in dnabert["data"]:  # VirNucPro's format: Python lists of 768 floats
            vector = item["mean_representation"]
            assert isinstance(vector, list) and len(vector) == DNABERT_DIM and isinstance(vector[0], float)
        reordered += dnabert["nucleotide"] != [rid for rid, _ in records]
    assert reordered, "DNABERT-S ids should come in a different order than the FASTA"


# ----------------------------------------------------------------------------------------------
# preflight
# ----------------------------------------------------------------------------------------------
def test_preflight_discovers_data_dir(tmp_path, demo_data, tiny_model):
    result = cli("preflight", "--data_dir", demo_data, "--esm_model", tiny_model, "--outdir", tmp_path)
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(open(tmp_path / "chunks.csv")))
    expected = {c["key"]: c for c in demo_chunks(demo_data)}
    assert sorted(r["key"] for r in rows) == sorted(expected)
    for row in rows:
        chunk = expected[row["key"]]
        assert (row["group"], row["id"], row["label"]) == (chunk["group"], chunk["id"], chunk["label"])
        assert row["protein_fasta"] == str(chunk["fasta"]) and row["dnabert_embeddings"] == str(chunk["dnabert"])
        assert int(row["proteins"]) == 20 and int(row["truncated"]) == 0
    summary = json.loads((tmp_path / "preflight.json").read_text())
    assert summary["chunks_selected"] == 4 and summary["proteins"] == 80 and summary["truncated"] == 0


def test_preflight_samplesheet_relative_paths_and_optional_group(tmp_path, demo_data, tiny_model):
    chunks = {c["key"]: c for c in demo_chunks(demo_data)}
    viral, host = chunks["viral.1.1/output_1"], chunks["bacteria/output_1"]
    sheet_dir = tmp_path / "sheets"
    for chunk in (viral, host):  # copies beside the samplesheet, named relatively
        (sheet_dir / "in").mkdir(parents=True, exist_ok=True)
        (sheet_dir / "in" / f"{chunk['group']}.fa").write_bytes(chunk["fasta"].read_bytes())
        (sheet_dir / "in" / f"{chunk['group']}.pt").write_bytes(chunk["dnabert"].read_bytes())
    sheet = write_samplesheet(sheet_dir / "sheet.csv", [
        ("v1", viral["label"], f"in/{viral['group']}.fa", f"in/{viral['group']}.pt", "viral.1.1"),
        ("h1", host["label"], f"in/{host['group']}.fa", f"in/{host['group']}.pt", ""),
    ], columns=("id", "label", "protein_fasta", "dnabert_embeddings", "group"))
    result = cli("preflight", "--input", sheet, "--esm_model", tiny_model, "--outdir", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    rows = {r["key"]: r for r in csv.DictReader(open(tmp_path / "out" / "chunks.csv"))}
    assert sorted(rows) == ["host/h1", "viral.1.1/v1"]  # an empty group defaults to the label
    assert rows["host/h1"]["label"] == "host" and rows["viral.1.1/v1"]["label"] == "viral"
    assert rows["viral.1.1/v1"]["protein_fasta"] == str((sheet_dir / "in" / "viral.1.1.fa").resolve())
    assert rows["host/h1"]["dnabert_embeddings"] == str((sheet_dir / "in" / "bacteria.pt").resolve())


def test_preflight_validates_params_json_against_schema(tmp_path, demo_data, tiny_model):
    from conftest import SCHEMA

    params = tmp_path / "params.json"
    params.write_text(json.dumps({"data_dir": str(demo_data), "esm_model": str(tiny_model), "max_length": 1022,
                                  "precision": "fp32", "use_gpu": False, "toks_per_batch": 2048,
                                  "chunks_per_task": 3, "outdir": "results"}))
    result = cli("preflight", "--params_json", params, "--schema", SCHEMA, "--outdir", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(open(tmp_path / "out" / "chunks.csv")))
    # chunks_per_task groups the sorted chunks into embedding tasks
    assert sorted(int(r["task_group"]) for r in rows) == [0, 0, 0, 1]


def test_preflight_balance_hosts_samples_like_virnucpro(tmp_path, tiny_model):
    from virnucpro_extract.testdata import make_demo_data

    data = make_demo_data(tmp_path / "data", viral_chunks=2, host_chunks=4, proteins_per_chunk=3, seed=5)
    result = cli("preflight", "--data_dir", data, "--esm_model", tiny_model, "--balance_hosts", "--seed", 42,
                 "--outdir", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(open(tmp_path / "out" / "chunks.csv")))
    viral = [r for r in rows if r["label"] == "viral"]
    host_groups = sorted(r["group"] for r in rows if r["label"] == "host")
    # ceil(2 viral / 7) = 1 file per host category (2 categories), then at most n_viral = 2 in all
    assert len(viral) == 2 and host_groups == ["bacteria", "vertebrate_mammalian"]
    again = cli("preflight", "--data_dir", data, "--esm_model", tiny_model, "--balance_hosts", "--seed", 42,
                "--outdir", tmp_path / "again")
    assert (tmp_path / "again" / "chunks.csv").read_text() == (tmp_path / "out" / "chunks.csv").read_text(), again.stderr


def test_balance_hosts_pools_the_prefixes_of_a_category_samples_only_hosts_and_ignores_listing_order():
    """ceil(n_viral / 7) files per host category, a category being the host name a prefix starts with (seven
    RefSeq bacteria prefixes are one category), only host files drawn, the same files however they are listed."""
    import random as stdlib_random

    from virnucpro_extract.preflight.discovery import Chunk, balance_hosts

    def files(group, label, count):
        return [Chunk(f"output_{n}", group, label, "", "") for n in range(1, count + 1)]

    viral = files("viral.1.1", "viral", 14)                                  # ceil(14 / 7) = 2 per category
    bacteria = [c for k in range(1, 8) for c in files(f"bacteria.{k}.1", "host", 2)]
    vertebrates = files("vertebrate_mammalian.1.1", "host", 2) + files("vertebrate_other.1.1", "host", 2)
    archaea = files("archaea.1.1", "host", 2)
    chunks = viral + bacteria + vertebrates + archaea
    kept = balance_hosts(chunks, 42)
    hosts = [c for c in kept if c.label == "host"]
    assert [c for c in kept if c.label == "viral"] == viral
    assert sum(c.group.startswith("bacteria") for c in hosts) == 2
    assert sum(c.group.startswith("vertebrate") for c in hosts) == 2       # mammalian and other: one category
    assert sum(c.group.startswith("archaea") for c in hosts) == 2
    for seed in range(5):
        shuffled = chunks[:]
        stdlib_random.Random(seed).shuffle(shuffled)
        assert {c.key for c in balance_hosts(shuffled, 42)} == {c.key for c in kept}

    shared = files("mixed", "viral", 7) + [Chunk(f"host_{n}", "mixed", "host", "", "") for n in range(3)]
    for seed in range(5):                                                 # ceil(7 / 7) = 1 host file, every seed
        assert sum(c.label == "host" for c in balance_hosts(shared, seed)) == 1


def test_balance_hosts_samples_down_to_n_viral_and_checks_only_the_sampled_files(tmp_path, tiny_model):
    from virnucpro_extract.testdata import make_demo_data

    data = make_demo_data(tmp_path / "data", viral_chunks=1, host_chunks=4, proteins_per_chunk=3, seed=5)
    args = ["preflight", "--data_dir", data, "--esm_model", tiny_model, "--balance_hosts", "--seed", 42]
    result = cli(*args, "--outdir", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(open(tmp_path / "out" / "chunks.csv")))
    # ceil(1/7) = 1 file from each of the 2 host categories, then down to n_viral = 1
    hosts = [r for r in rows if r["label"] == "host"]
    assert len(hosts) == 1 and len(rows) == 2
    host_fastas = sorted(data.glob("*.identified_protein/output_*.fa"))
    host_fastas = [f for f in host_fastas if not f.parent.name.startswith("viral")]
    unsampled = next(f for f in host_fastas if str(f) != hosts[0]["protein_fasta"])
    (unsampled.parent.parent / unsampled.parent.name.replace("protein", "nucleotide")
     / f"{unsampled.stem}_DNABERT_S.pt").unlink()
    result = cli(*args, "--outdir", tmp_path / "unsampled_broken")
    assert result.exit_code == 0, result.stderr  # a file VirNucPro would not use is not an error
    sampled = Path(hosts[0]["protein_fasta"])
    (sampled.parent.parent / sampled.parent.name.replace("protein", "nucleotide")
     / f"{sampled.stem}_DNABERT_S.pt").unlink()
    result = cli(*args, "--outdir", tmp_path / "sampled_broken")
    expect_errors(result, (sampled, sampled.stem, r"^no DNABERT-S file \(expected .+\)$"))


# ----------------------------------------------------------------------------------------------
# embed
# ----------------------------------------------------------------------------------------------
def test_embed_writes_fasta_order_float32(cli_outputs, demo_data, reference):
    for chunk in demo_chunks(demo_data):
        obj = load(cli_outputs / "esm" / chunk["group"] / f"{chunk['id']}_ESM.pt")
        records = read_fasta_records(chunk["fasta"])
        assert set(obj) == {"proteins", "data"}
        assert obj["proteins"] == [rid for rid, _ in records]
        data = obj["data"]
        assert torch.is_tensor(data) and data.dtype == torch.float32 and data.shape == (len(records), ESM_DIM)
        assert torch.isfinite(data).all()
        cosine = cosine_rows(data, reference.rows([seq for _, seq in records]))
        assert cosine.min() >= 0.9999, cosine


def test_embed_batched_equals_one_at_a_time(tmp_path, demo_data, tiny_model):
    chunk = demo_chunks(demo_data)[0]
    records = read_fasta_records(chunk["fasta"])
    lengths = [len(s) for _, s in records]
    budget = 256
    # Every batch holds at least two proteins of (mostly) different lengths: padding is exercised.
    assert 2 * (max(lengths) + 2) <= budget and len(set(lengths)) > len(lengths) // 2
    batched = cli("embed", f"g/batched={chunk['fasta']}", "--outdir", tmp_path, "--esm_model", tiny_model,
                  "--use_gpu", "false", "--precision", "fp32", "--toks_per_batch", budget)
    assert batched.exit_code == 0, batched.stderr
    singles = [f"g/single_{k}={write_fasta(tmp_path / 'singles' / f'{k}.fa', [record])}"
               for k, record in enumerate(records)]
    alone = cli("embed", *singles, "--outdir", tmp_path, "--esm_model", tiny_model, "--use_gpu", "false",
                "--precision", "fp32")
    assert alone.exit_code == 0, alone.stderr
    together = load(tmp_path / "g" / "batched_ESM.pt")["data"]
    one_by_one = torch.cat([load(tmp_path / "g" / f"single_{k}_ESM.pt")["data"] for k in range(len(records))])
    assert torch.allclose(together, one_by_one, atol=1e-5, rtol=0), (together - one_by_one).abs().max()


def test_protein_encoder_equals_tokenizer_without_bos_eos(tiny_model):
    import random

    from transformers import AutoTokenizer

    from virnucpro_extract.embed import ProteinEncoder

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rng = random.Random(3)
    letters = "ACDEFGHIKLMNPQRSTVWYXBZUO"
    sequences = [letters, "M", "MKV" * 40] + ["".join(rng.choice(letters) for _ in range(rng.randint(1, 200)))
                                               for _ in range(50)]
    encoder = ProteinEncoder(tokenizer, max_length=1022)
    for sequence in sequences:
        expected = tokenizer(sequence)["input_ids"]
        assert expected[0] == tokenizer.cls_token_id and expected[-1] == tokenizer.eos_token_id
        assert list(encoder.encode(sequence)) == expected[1:-1], sequence
    short = ProteinEncoder(tokenizer, max_length=5)
    assert list(short.encode(letters)) == tokenizer(letters[:5])["input_ids"][1:-1]


def test_embed_truncates_to_max_length_and_counts(tmp_path, tiny_model, reference):
    records = [("p_short", "MKVLAAGIVGLLLAVSTAQAEDFGHIKLMN"),  # 30
               ("p_mid", "MSTNPKPQRKTKRNTNRRPQDVKFPGGGQIVGGVYLLPRRGPRLGVRATR"),  # 50
               ("p_long", ("ACDEFGHIKLMNPQRSTVWY" * 6))]  # 120
    fasta = write_fasta(tmp_path / "t.fa", records)
    result = cli("embed", f"g/t={fasta}", "--outdir", tmp_path / "esm", "--esm_model", tiny_model, "--use_gpu", "false",
                 "--precision", "fp32", "--max_length", 40, "--stats", tmp_path / "stats.json")
    assert result.exit_code == 0, result.stderr
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert [(c["key"], c["proteins"], c["truncated"]) for c in stats["chunks"]] == [("g/t", 3, 2)]
    data = load(tmp_path / "esm" / "g" / "t_ESM.pt")["data"]
    expected = reference.rows([seq[:40] for _, seq in records])
    assert cosine_rows(data, expected).min() >= 0.9999
    full = reference.rows([seq for _, seq in records])
    assert cosine_rows(data[1:], full[1:]).max() < 0.9999  # the long ones really were cut


# ----------------------------------------------------------------------------------------------
# merge
# ----------------------------------------------------------------------------------------------
def test_merge_strict_join_follows_dnabert_order(cli_outputs, demo_data):
    for chunk in demo_chunks(demo_data):
        merged = load(cli_outputs / "data_merge" / f"{chunk['group']}_merged" / f"{chunk['id']}_merged.pt")
        dnabert = load(chunk["dnabert"])
        esm = load(cli_outputs / "esm" / chunk["group"] / f"{chunk['id']}_ESM.pt")
        assert set(merged) == {"ids", "data", "labels"}
        assert merged["ids"] == dnabert["nucleotide"] != esm["proteins"]  # DNABERT-S order, not FASTA order
        assert merged["data"].dtype == torch.float32 and merged["data"].shape == (20, MERGED_DIM)
        assert merged["labels"] == [1 if chunk["label"] == "viral" else 0]
        dna = {item["label"]: torch.tensor(item["mean_representation"], dtype=torch.float32) for item in dnabert["data"]}
        protein = dict(zip(esm["proteins"], esm["data"]))
        for row, rid in enumerate(merged["ids"]):
            assert torch.equal(merged["data"][row, :DNABERT_DIM], dna[rid])
            assert torch.equal(merged["data"][row, DNABERT_DIM:], protein[rid])


def test_merge_allow_missing_drops_and_counts(tmp_path, cli_outputs, demo_data):
    chunk = demo_chunks(demo_data)[0]
    esm = load(cli_outputs / "esm" / chunk["group"] / f"{chunk['id']}_ESM.pt")
    dnabert = load(chunk["dnabert"])
    protein_only, dnabert_only = esm["proteins"][0], dnabert["nucleotide"][-1]
    if protein_only == dnabert_only:
        dnabert_only = dnabert["nucleotide"][-2]
    keep_dna = [k for k, rid in enumerate(dnabert["nucleotide"]) if rid != protein_only]
    torch.save({"nucleotide": [dnabert["nucleotide"][k] for k in keep_dna],
                "data": [dnabert["data"][k] for k in keep_dna]}, tmp_path / "dna.pt")
    keep_esm = [k for k, rid in enumerate(esm["proteins"]) if rid != dnabert_only]
    torch.save({"proteins": [esm["proteins"][k] for k in keep_esm], "data": esm["data"][keep_esm]}, tmp_path / "esm.pt")

    strict = cli("merge", "--dnabert", tmp_path / "dna.pt", "--esm", tmp_path / "esm.pt", "--label", "viral",
                 "--output", tmp_path / "strict.pt")
    assert strict.exit_code != 0 and not (tmp_path / "strict.pt").exists()
    assert re.search(r"--allow_missing", strict.stderr)

    result = cli("merge", "--dnabert", tmp_path / "dna.pt", "--esm", tmp_path / "esm.pt", "--label", "viral",
                 "--output", tmp_path / "m.pt", "--allow_missing", "true", "--stats", tmp_path / "m.json")
    assert result.exit_code == 0, result.stderr
    [stats] = json.loads((tmp_path / "m.json").read_text())["chunks"]
    assert stats["dropped_dnabert_only"] == [dnabert_only] and stats["dropped_protein_only"] == [protein_only]
    merged = load(tmp_path / "m.pt")
    expected_ids = [rid for rid in dnabert["nucleotide"] if rid not in (protein_only, dnabert_only)]
    assert merged["ids"] == expected_ids and stats["rows"] == len(expected_ids) == 18
    protein = dict(zip(esm["proteins"], esm["data"]))
    for row, rid in enumerate(merged["ids"]):
        assert torch.equal(merged["data"][row, DNABERT_DIM:], protein[rid])


# ----------------------------------------------------------------------------------------------
# validate, report
# ----------------------------------------------------------------------------------------------
def test_validate_passes_on_good_outputs(tmp_path, cli_outputs):
    result = cli("validate", "--manifest", cli_outputs / "pipeline_info" / "chunks.csv", "--outdir", cli_outputs,
                 "--out", tmp_path / "v.json", "--sample", tmp_path / "sample.pt")
    assert result.exit_code == 0, result.stderr
    document = json.loads((tmp_path / "v.json").read_text())
    assert document["passed"] is True and document["checks_failed"] == 0
    names = {c["check"] for c in document["checks"]}
    for needed in ("merged width is 2048", "merged rows equal ids", "merged rows finite", "label matches group",
                   "merged rows match their ids (DNA half)", "merged rows match their ids (protein half)",
                   "esm ids equal FASTA ids in FASTA order"):
        assert needed in names
    assert {c["chunk"] for c in document["checks"]} == {c["key"] for c in document["chunks"]}
    assert len(document["chunks"]) == 4
    assert (tmp_path / "sample.pt").is_file()


def test_report_writes_self_contained_html(tmp_path, cli_outputs):
    info = cli_outputs / "pipeline_info"
    validated = cli("validate", "--manifest", info / "chunks.csv", "--outdir", cli_outputs,
                    "--out", tmp_path / "validation.json", "--sample", tmp_path / "sample.pt")
    assert validated.exit_code == 0, validated.stderr
    (tmp_path / "params.json").write_text(json.dumps({"max_length": 1022, "esm_model": "tiny"}))
    merge_stats = sorted(info.glob("*.merge.json"))
    assert len(merge_stats) == 4
    result = cli("report", "--validation", tmp_path / "validation.json", "--sample", tmp_path / "sample.pt",
                 "--preflight", info / "preflight.json", "--embed_stats", info / "embed.json",
                 *[arg for p in merge_stats for arg in ("--merge_stats", p)], "--params_json", tmp_path / "params.json",
                 "--nextflow_version", "25.04.4", "--versions_out", tmp_path / "versions.json",
                 "--out", tmp_path / "report.html")
    assert result.exit_code == 0, result.stderr
    html = (tmp_path / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "Validation PASSED" in html
    assert html.count("<svg") >= 3 and "<script" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    for group in ("viral.1.1", "vertebrate_mammalian", "bacteria"):
        assert group in html
    versions = json.loads((tmp_path / "versions.json").read_text())
    assert versions["nextflow"] == "25.04.4" and versions["torch"] == importlib.metadata.version("torch")


@pytest.mark.parametrize("command", ["preflight", "embed", "merge", "validate", "report", "make-test-model",
                                     "make-demo-data"])
def test_every_subcommand_has_help_with_an_example(command):
    result = cli(command, "--help")
    assert result.exit_code == 0 and "Example:" in result.stdout and f"virnucpro-extract {command}" in result.stdout


@pytest.mark.parametrize("existing", [False, True])
def test_a_writer_killed_mid_write_leaves_the_old_file_or_none(tmp_path, existing):
    """SIGKILL inside atomic_path after half the bytes: the target is absent (or still the old, whole file);
    the only leftover is a hidden '.partial' file, which no output glob of the pipeline matches."""
    import signal
    import subprocess
    import sys

    target = tmp_path / "out" / "output_1_ESM.pt"
    if existing:
        target.parent.mkdir(parents=True)
        target.write_bytes(b"old and whole")
    script = (f"import os, signal, sys; sys.path.insert(0, {str(BIN)!r})\n"
              "from virnucpro_extract.files import atomic_path\n"
              f"with atomic_path({str(target)!r}) as tmp:\n"
              "    with open(tmp, 'wb') as handle:\n"
              "        handle.write(b'x' * 500_000); handle.flush()\n"
              "        os.kill(os.getpid(), signal.SIGKILL)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert run.returncode == -signal.SIGKILL
    if existing:
        assert target.read_bytes() == b"old and whole"
    else:
        assert not target.exists()
    leftovers = [p.name for p in target.parent.iterdir() if p != target]
    assert len(leftovers) == 1 and leftovers[0].startswith(".") and leftovers[0].endswith(".partial"), leftovers
    assert (target.parent / leftovers[0]).stat().st_size == 500_000  # it did die mid-write
