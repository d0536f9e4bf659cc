"""DNABERT-S computed from nucleotide FASTA: the worker (`embed-dna`), preflight's marking and checks, and one
pipeline run from FASTA only. The model is a tiny random-weight BERT (hidden 768) with a small DNA tokenizer,
built here; the reference is transformers' BertModel run one read at a time, as VirNucPro did."""
from __future__ import annotations

import csv
import json
import random
import re
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
from test_pipeline import files_under

from conftest import (
    DNABERT_DIM,
    MERGED_DIM,
    cli,
    demo_chunks,
    expect_errors,
    nextflow,
    nextflow_output,
    read_fasta_records,
    write_fasta,
    write_samplesheet,
)
from virnucpro_extract.testdata import make_test_remote_dna_model

BASES = "ACGT"


# ----------------------------------------------------------------------------------------------
# Fixtures and the independent reference
# ----------------------------------------------------------------------------------------------
def random_reads(count: int, seed: int, min_len: int = 30, max_len: int = 400) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(f"NC_00{seed}.1_chunk_{k}F1", "".join(rng.choice(BASES) for _ in range(rng.randint(min_len, max_len))))
            for k in range(count)]


# ----------------------------------------------------------------------------------------------
# The worker
# ----------------------------------------------------------------------------------------------
def test_batched_equals_one_at_a_time(tiny_dna_model, dna_reference):
    """Padded, masked batches (several per chunk, mixed lengths) give VirNucPro's one-at-a-time vectors, fp32 CPU."""
    from virnucpro_extract.embed_dna import DnaEmbedder, ReadEncoder, load_dnabert_model
    from virnucpro_extract.runtime import plan_batches

    model, tokenizer = load_dnabert_model(tiny_dna_model, torch.float32, torch.device("cpu"))
    encoder = ReadEncoder(tokenizer)
    reads = random_reads(24, seed=3) + [("lower_case_read", "acgtnacgt" * 30)]
    tokens = encoder.encode([s.upper() for _, s in reads])
    embedder = DnaEmbedder(model, encoder.pad_id, torch.device("cpu"), token_budget=1200)
    batches = plan_batches([len(t) for t in tokens], 1200, extra=0)
    assert len(batches) > 2 and any(len({len(tokens[i]) for i in b}) > 1 for b in batches)  # padding happens
    rows = embedder.embed(tokens)
    assert rows.dtype == torch.float32 and rows.shape == (len(reads), DNABERT_DIM)
    expected = dna_reference.rows([s.upper() for _, s in reads])
    torch.testing.assert_close(rows, expected, rtol=1e-5, atol=2e-5)


def test_embed_dna_file_format(tmp_path, tiny_dna_model, dna_reference):
    """VirNucPro's layout: ids in FASTA order, 768 floats per read (a float32 tensor row: the contract allows lists
    or tensors), loadable weights-only and by merge."""
    from virnucpro_extract.formats import read_dnabert as load_dnabert

    reads = random_reads(7, seed=5)
    fasta = write_fasta(tmp_path / "output_1.fa", reads)
    result = cli("embed-dna", f"viral.1.1/output_1={fasta}", "--outdir", tmp_path / "dnabert",
                 "--dnabert_model", tiny_dna_model, "--use_gpu", "false", "--toks_per_batch", 300,
                 "--stats", tmp_path / "stats.json")
    assert result.exit_code == 0, result.stderr
    path = tmp_path / "dnabert" / "viral.1.1" / "output_1_DNABERT_S.pt"
    obj = torch.load(path, weights_only=True)
    assert set(obj) == {"nucleotide", "data"}
    assert obj["nucleotide"] == [i for i, _ in reads]
    assert [item["label"] for item in obj["data"]] == obj["nucleotide"]
    for item in obj["data"]:
        vector = item["mean_representation"]
        assert torch.is_tensor(vector) and vector.dtype == torch.float32 and vector.shape == (DNABERT_DIM,)
    torch.testing.assert_close(load_dnabert(path).vectors, dna_reference.rows([s for _, s in reads]),
                               rtol=1e-5, atol=2e-5)
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["precision"] == "fp32" and stats["chunks"][0]["reads"] == len(reads)
    assert not list((tmp_path / "dnabert").rglob("*.partial"))


def test_embed_dna_rejects_bad_reads_and_wrong_width(tmp_path, tiny_dna_model, tiny_model):
    fasta = write_fasta(tmp_path / "bad.fa", [("r1", "ACGT" * 20), ("r2", "ACGUXT")])
    result = cli("embed-dna", fasta, "--outdir", tmp_path, "--dnabert_model", tiny_dna_model, "--use_gpu", "false")
    expect_errors(result, (fasta, r"record r2 \(line 3\)", r"invalid nucleotide letter\(s\) 'UX'"))
    dup = write_fasta(tmp_path / "dup.fa", [("r1", "ACGT"), ("r1", "ACGT")])
    result = cli("embed-dna", dup, "--outdir", tmp_path, "--dnabert_model", tiny_dna_model, "--use_gpu", "false")
    expect_errors(result, (dup, r"record r1 \(line 3\)", r"duplicate id"))
    result = cli("embed-dna", write_fasta(tmp_path / "ok.fa", [("r1", "ACGT")]), "--outdir", tmp_path,
                 "--dnabert_model", tiny_model, "--use_gpu", "false")
    expect_errors(result, (tiny_model, "hidden_size", r"model hidden size is 1280, the features need 768"))


@pytest.fixture(scope="session")
def remote_dna_model(session_dir) -> Path:
    """A trust_remote_code DNA encoder with DNABERT-2's loading hazards (see testdata.REMOTE_DNA_MODEL_CODE)."""
    return make_test_remote_dna_model(session_dir / "remote_dna", seed=0)


def remote_reference_rows(model_dir: Path, reads: list[str]) -> torch.Tensor:
    """One read at a time through the model's own classes, built directly (not by the code under test),
    flash-attention stand-in off: the mean of the last hidden state over every token, as VirNucPro did."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    model_class = get_class_from_dynamic_module("modeling_alibi_dna.AlibiDnaModel", model_dir)
    model = model_class(AutoConfig.from_pretrained(model_dir, trust_remote_code=True)).eval()
    model.load_state_dict(load_file(model_dir / "model.safetensors"))
    sys.modules[model_class.__module__].flash_attn_qkvpacked_func = None
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with torch.inference_mode():
        return torch.stack([model(tokenizer(r, return_tensors="pt")["input_ids"])[0][0].mean(0) for r in reads])


def test_remote_code_model_with_dnabert2_hazards_embeds_like_one_read_at_a_time(tmp_path, remote_dna_model):
    """transformers 5 builds models on the meta device (DNABERT-2's ALiBi table then fails), the Triton
    stand-in raises if called, and half precision needs autocast: the worker handles all three."""
    reads = random_reads(9, seed=11, min_len=20, max_len=90)
    fasta = write_fasta(tmp_path / "reads.fa", reads)
    outputs = {}
    for precision in ("fp32", "bf16"):
        result = cli("embed-dna", f"g/{precision}={fasta}", "--dnabert_model", remote_dna_model, "--use_gpu", "false",
                     "--precision", precision, "--toks_per_batch", 256, "--outdir", tmp_path / "out")
        assert result.exit_code == 0, result.stderr
        saved = torch.load(tmp_path / "out" / "g" / f"{precision}_DNABERT_S.pt", weights_only=True)
        assert saved["nucleotide"] == [i for i, _ in reads]
        outputs[precision] = torch.stack([torch.as_tensor(d["mean_representation"]) for d in saved["data"]])
    reference = remote_reference_rows(remote_dna_model, [s for _, s in reads])
    torch.testing.assert_close(outputs["fp32"], reference, rtol=1e-5, atol=2e-5)
    cosine = torch.nn.functional.cosine_similarity(outputs["bf16"], reference, dim=1)
    assert cosine.min() > 0.999, cosine.min()


def test_model_code_needing_a_missing_package_is_a_preflight_error(tmp_path, remote_dna_model, fasta_only_data,
                                                                    tiny_model):
    """DNABERT-S's code imports einops; a package its code needs and the environment lacks is named in
    PREFLIGHT, before the GPU task would fail on it."""
    import shutil

    model = tmp_path / "needs_package"
    shutil.copytree(remote_dna_model, model)
    code = model / "modeling_alibi_dna.py"
    code.write_text("import a_package_nobody_installed\n" + code.read_text())
    result = cli("preflight", "--data_dir", fasta_only_data, "--esm_model", tiny_model, "--dnabert_model", model,
                 "--outdir", tmp_path / "out")
    expect_errors(result, (code, "import", r"^the model's own code needs a_package_nobody_installed, not installed$"))
    assert not (tmp_path / "out" / "chunks.csv").exists()


def test_remote_code_checkpoint_missing_a_weight_is_an_error_line(tmp_path, remote_dna_model):
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(remote_dna_model, broken)
    state = load_file(broken / "model.safetensors")
    del state["layers.0.qkv.weight"]
    save_file(state, str(broken / "model.safetensors"))
    fasta = write_fasta(tmp_path / "reads.fa", random_reads(2, seed=3))
    result = cli("embed-dna", f"g/c={fasta}", "--dnabert_model", broken, "--use_gpu", "false", "--outdir", tmp_path)
    expect_errors(result, (broken, "weights", r"^checkpoint lacks 1 weight\(s\) of AlibiDnaModel, e\.g\. layers\.0\.qkv\.weight$"))


def test_force_torch_attention_switches_off_flash_attention():
    """DNABERT-2-style code takes its PyTorch path when its module global `flash_attn_qkvpacked_func` is None."""
    from virnucpro_extract.embed_dna import force_torch_attention

    code = types.ModuleType("fake_dnabert_bert_layers")
    exec("import torch\nflash_attn_qkvpacked_func = object()\n"
         "class BertUnpadSelfAttention(torch.nn.Module):\n    pass\n", code.__dict__)
    sys.modules[code.__name__] = code
    try:
        model = torch.nn.Sequential(torch.nn.Linear(2, 2), code.BertUnpadSelfAttention())
        assert force_torch_attention(model) == [code.__name__]
        assert code.flash_attn_qkvpacked_func is None
        assert force_torch_attention(model) == []
    finally:
        del sys.modules[code.__name__]


# ----------------------------------------------------------------------------------------------
# Preflight
# ----------------------------------------------------------------------------------------------
def manifest_rows(outdir: Path) -> dict[str, dict]:
    with open(outdir / "chunks.csv", newline="") as handle:
        return {row["key"]: row for row in csv.DictReader(handle)}


def test_preflight_marks_chunks_to_compute(tmp_path, fasta_only_data, tiny_model, tiny_dna_model):
    data = tmp_path / "data"
    shutil.copytree(fasta_only_data, data)
    # One chunk keeps a DNABERT-S file: used as given, unless --recompute_dnabert.
    given = data / "viral.1.1.identified_nucleotide" / "output_2_DNABERT_S.pt"
    ids = [i for i, _ in read_fasta_records(data / "viral.1.1.identified_protein" / "output_2.fa")]
    torch.save({"nucleotide": ids, "data": [{"label": i, "mean_representation": [0.0] * DNABERT_DIM} for i in ids]},
               given)
    # One chunk has neither reads nor a DNABERT-S file: the existing error.
    (data / "bacteria.identified_nucleotide" / "output_1.fa").unlink()
    base = ("preflight", "--data_dir", data, "--esm_model", tiny_model, "--dnabert_model", tiny_dna_model)
    result = cli(*base, "--outdir", tmp_path / "a")
    expect_errors(result, (data / "bacteria.identified_protein" / "output_1.fa", "output_1", r"^no DNABERT-S file"))
    shutil.rmtree(data / "bacteria.identified_protein")

    result = cli(*base, "--outdir", tmp_path / "b")
    assert result.exit_code == 0, result.stderr
    rows = manifest_rows(tmp_path / "b")
    assert {k: r["compute_dnabert"] for k, r in rows.items()} == {
        "viral.1.1/output_1": "true", "viral.1.1/output_2": "false", "vertebrate_mammalian/output_1": "true"}
    assert rows["viral.1.1/output_2"]["dnabert_embeddings"] == str(given)
    assert rows["viral.1.1/output_1"]["dnabert_embeddings"] == ""
    assert rows["viral.1.1/output_1"]["nucleotide_fasta"] == str(data / "viral.1.1.identified_nucleotide" / "output_1.fa")
    summary = json.loads((tmp_path / "b" / "preflight.json").read_text())
    assert summary["dnabert_chunks_to_compute"] == 2

    result = cli(*base, "--recompute_dnabert", "--outdir", tmp_path / "c")
    assert result.exit_code == 0, result.stderr
    assert {r["compute_dnabert"] for r in manifest_rows(tmp_path / "c").values()} == {"true"}

    # --dnabert_model is checked only when some chunk needs it: a 1280-wide model is rejected ...
    result = cli("preflight", "--data_dir", data, "--esm_model", tiny_model, "--dnabert_model", tiny_model,
                 "--outdir", tmp_path / "d")
    expect_errors(result, (tiny_model / "config.json", "hidden_size", r"the features need 768"))
    # ... a missing directory too, and neither matters once every chunk has its file.
    missing = tmp_path / "no_such_model"
    result = cli("preflight", "--data_dir", data, "--esm_model", tiny_model, "--dnabert_model", missing,
                 "--outdir", tmp_path / "e")
    expect_errors(result, (missing, "config.json", r"model directory missing"))
    for reads in data.glob("*.identified_nucleotide/output_*.fa"):
        reads.unlink()
    shutil.rmtree(data / "vertebrate_mammalian.identified_protein")
    (data / "viral.1.1.identified_protein" / "output_1.fa").unlink()
    result = cli("preflight", "--data_dir", data, "--esm_model", tiny_model, "--dnabert_model", missing,
                 "--outdir", tmp_path / "f")
    assert result.exit_code == 0, result.stderr


def test_preflight_checks_reads_against_proteins(tmp_path, fasta_only_data, tiny_model, tiny_dna_model):
    data = tmp_path / "data"
    shutil.copytree(fasta_only_data, data)
    viral = data / "viral.1.1.identified_nucleotide" / "output_1.fa"
    records = read_fasta_records(viral)
    write_fasta(viral, records[:-1] + [("not_a_protein_id", records[-1][1])])  # one id renamed
    host = data / "bacteria.identified_nucleotide" / "output_1.fa"
    host_records = read_fasta_records(host)
    write_fasta(host, [(host_records[0][0], "ACGTRYACGT")] + host_records[1:])  # bad letters
    protein = data / "viral.1.1.identified_protein" / "output_1.fa"
    base = ("preflight", "--data_dir", data, "--esm_model", tiny_model, "--dnabert_model", tiny_dna_model)
    result = cli(*base, "--outdir", tmp_path / "a")
    expect_errors(result,
                  (viral, rf"record {records[-1][0]}", r"1 id\(s\) of the protein FASTA missing here"),
                  (protein, r"record not_a_protein_id", r"1 id\(s\) of the nucleotide FASTA missing here"),
                  (host, rf"record {host_records[0][0]} \(line 1\)", r"invalid nucleotide letter\(s\) 'RY'"))
    # --allow_missing: mismatched ids pass preflight (the merge drops and counts them); bad letters still fail.
    write_fasta(host, host_records)
    result = cli(*base, "--allow_missing", "--outdir", tmp_path / "b")
    assert result.exit_code == 0, result.stderr


def test_samplesheet_nucleotide_fasta_column(tmp_path, fasta_only_data, tiny_model, tiny_dna_model):
    protein = fasta_only_data / "viral.1.1.identified_protein" / "output_1.fa"
    reads = fasta_only_data / "viral.1.1.identified_nucleotide" / "output_1.fa"
    sheet = write_samplesheet(tmp_path / "sheet.csv", [("c1", "viral", protein, "", reads),
                                                        ("c2", "host", protein, "", "")],
                              columns=("id", "label", "protein_fasta", "dnabert_embeddings", "nucleotide_fasta"))
    result = cli("preflight", "--input", sheet, "--esm_model", tiny_model, "--dnabert_model", tiny_dna_model,
                 "--outdir", tmp_path / "a")
    expect_errors(result, (sheet.resolve(), "line 3", r"dnabert_embeddings '' does not exist"))
    sheet = write_samplesheet(tmp_path / "sheet.csv", [("c1", "viral", protein, reads)],
                              columns=("id", "label", "protein_fasta", "nucleotide_fasta"))
    result = cli("preflight", "--input", sheet, "--esm_model", tiny_model, "--dnabert_model", tiny_dna_model,
                 "--outdir", tmp_path / "b")
    assert result.exit_code == 0, result.stderr
    row = manifest_rows(tmp_path / "b")["viral/c1"]
    assert row["compute_dnabert"] == "true" and row["nucleotide_fasta"] == str(reads)


# ----------------------------------------------------------------------------------------------
# The pipeline from FASTA only
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fasta_only_run(session_dir, fasta_only_data, tiny_model, tiny_dna_model) -> Path:
    """The pipeline on --data_dir with reads and no DNABERT-S files; returns its outdir."""
    launch = session_dir / "nf_fasta_only"
    outdir = launch / "results"
    run = nextflow("-profile", "test", "--data_dir", fasta_only_data, "--esm_model", tiny_model,
                   "--dnabert_model", tiny_dna_model, "--outdir", outdir, cwd=launch)
    assert run.returncode == 0, nextflow_output(run)[-6000:]
    assert "EMBED_DNA" in nextflow_output(run)
    return outdir


@pytest.mark.pipeline
def test_pipeline_from_fasta_only(fasta_only_run, fasta_only_data, dna_reference, pipeline_run, tiny_dna_model):
    """Validated merged features: DNA half = VirNucPro's one-at-a-time vectors of the reads, protein half = the
    run given precomputed DNABERT-S files (the shared pipeline_run, same proteins)."""
    outdir = fasta_only_run
    validation = json.loads((outdir / "pipeline_info" / "validation.json").read_text())
    assert validation["passed"] is True and validation["checks_failed"] == 0
    # The report says DNABERT-S was computed here, by which model, on what, how fast.
    report = re.sub(r"<[^>]+>", " ", (outdir / "report.html").read_text())
    dna_stats = [json.loads(p.read_text()) for p in (outdir / "pipeline_info" / "embed_dna").glob("*.embed_dna.json")]
    assert dna_stats and all(s["chunks"] for s in dna_stats)
    for needed in ("DNABERT-S model (--dnabert_model)", str(tiny_dna_model), "DNABERT-S config.json hash",
                   dna_stats[0]["config_hash"], "EMBED_DNA tasks", "(4 chunks, 80 reads)",
                   "EMBED_DNA reads/s after model load"):
        assert needed in report, needed
    chunks = demo_chunks(fasta_only_data)
    assert len(chunks) == 4
    for chunk in chunks:
        reads = read_fasta_records(fasta_only_data / f"{chunk['group']}.identified_nucleotide" / f"{chunk['id']}.fa")
        assert [i for i, _ in reads] == [i for i, _ in read_fasta_records(chunk["fasta"])]
        published = torch.load(outdir / "dnabert" / chunk["group"] / f"{chunk['id']}_DNABERT_S.pt", weights_only=True)
        assert published["nucleotide"] == [i for i, _ in reads]
        merged = torch.load(outdir / "data_merge" / f"{chunk['group']}_merged" / f"{chunk['id']}_merged.pt",
                            weights_only=True)
        assert merged["ids"] == [i for i, _ in reads] and merged["data"].shape == (len(reads), MERGED_DIM)
        torch.testing.assert_close(merged["data"][:, :DNABERT_DIM], dna_reference.rows([s for _, s in reads]),
                                   rtol=1e-5, atol=2e-5)
        given = torch.load(pipeline_run["outdir"] / "data_merge" / f"{chunk['group']}_merged" / f"{chunk['id']}_merged.pt",
                           weights_only=True)
        row_of = {i: r for r, i in enumerate(given["ids"])}
        assert sorted(row_of) == sorted(merged["ids"])
        torch.testing.assert_close(merged["data"][:, DNABERT_DIM:],
                                   given["data"][[row_of[i] for i in merged["ids"]], DNABERT_DIM:], rtol=1e-5, atol=1e-5)
        assert merged["labels"] == given["labels"]


@pytest.mark.pipeline
def test_samplesheet_run_mixing_computed_and_given_dnabert_equals_the_fasta_only_run(
        fasta_only_run, tmp_path, fasta_only_data, tiny_model, tiny_dna_model):
    """Half the chunks given the DNABERT-S files the FASTA-only run published, half given their reads
    (`nucleotide_fasta`): the same merged features as the FASTA-only run, to the bit."""
    first = fasta_only_run
    chunks = demo_chunks(fasta_only_data)
    rows = []
    for k, chunk in enumerate(chunks):
        reads = fasta_only_data / f"{chunk['group']}.identified_nucleotide" / f"{chunk['id']}.fa"
        given = first / "dnabert" / chunk["group"] / f"{chunk['id']}_DNABERT_S.pt"
        rows.append((chunk["id"], "viral" if chunk["group"].startswith("viral") else "host", chunk["fasta"],
                     given if k % 2 else "", "" if k % 2 else reads, chunk["group"]))
    sheet = write_samplesheet(tmp_path / "sheet.csv", rows, columns=(
        "id", "label", "protein_fasta", "dnabert_embeddings", "nucleotide_fasta", "group"))
    outdir = tmp_path / "results"
    run = nextflow("-profile", "test", "--input", sheet, "--esm_model", tiny_model, "--dnabert_model", tiny_dna_model,
                   "--outdir", outdir, cwd=tmp_path)
    assert run.returncode == 0, nextflow_output(run)[-6000:]
    computed = {f for f in files_under(outdir / "dnabert")}
    assert computed == {f"{c['group']}/{c['id']}_DNABERT_S.pt" for k, c in enumerate(chunks) if not k % 2}
    for chunk in chunks:
        name = Path(f"{chunk['group']}_merged") / f"{chunk['id']}_merged.pt"
        ours, theirs = (torch.load(d / "data_merge" / name, weights_only=True) for d in (outdir, first))
        assert ours["ids"] == theirs["ids"] and ours["labels"] == theirs["labels"], name
        assert torch.equal(ours["data"], theirs["data"]), (name, (ours["data"] - theirs["data"]).abs().max())
