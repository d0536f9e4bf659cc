"""Every bad input of issue 4 gets one contract line (`error: <file>: <where>: <problem> — <fix>`) and a
non-zero exit, mostly caught by `preflight` before any model is loaded; nothing of a rejected run is written."""
from __future__ import annotations

import csv
import gzip
import json
import math

import pytest
import torch

from conftest import SCHEMA, cli, cli_process, demo_chunks, dnabert_object, expect_errors, write_dnabert, write_fasta, write_samplesheet
from virnucpro_extract.errors import InputError

GOOD = [("NC_000001.1_chunk_1F1", "MKVLAAGIVGLLLAVSTAQA"),
        ("NC_000001.1_chunk_1R2", "MSTNPKPQRKTKRNTNRRPQDVKFPGG"),
        ("NC_000001.1_chunk_2F3", "MADEFGHIKLMNPQRSTVWYXBZUO")]
IDS = [rid for rid, _ in GOOD]


def chunk(tmp_path, records=GOOD, fasta_text=None, dna_ids=None, dna=None, name="c1"):
    """A protein FASTA and its DNABERT-S file (ids reversed against the FASTA, as in real data)."""
    fasta = tmp_path / "in" / f"{name}.fa"
    if fasta_text is None:
        write_fasta(fasta, records)
    else:
        fasta.parent.mkdir(parents=True, exist_ok=True)
        (fasta.write_bytes if isinstance(fasta_text, bytes) else fasta.write_text)(fasta_text)
    dnabert = tmp_path / "in" / f"{name}_DNABERT_S.pt"
    if isinstance(dna, bytes):
        dnabert.write_bytes(dna)
    elif dna is not None:
        torch.save(dna, dnabert)
    else:
        write_dnabert(dnabert, dna_ids if dna_ids is not None else [rid for rid, _ in records][::-1])
    return fasta, dnabert


def preflight_sheet(tmp_path, model, *chunks, extra=()):
    """preflight --input on a samplesheet listing `chunks`; returns (result, outdir)."""
    sheet = write_samplesheet(tmp_path / "sheet.csv",
                              [(f"c{k}", "viral", fasta, dnabert) for k, (fasta, dnabert) in enumerate(chunks, 1)])
    out = tmp_path / "out"
    return cli("preflight", "--input", sheet, "--esm_model", model, "--outdir", out, *extra), out


def rejected(tmp_path, model, *expected, exact=True, **chunk_args):
    """One chunk built from `chunk_args` must be rejected by preflight with exactly `expected` lines."""
    result, out = preflight_sheet(tmp_path, model, chunk(tmp_path, **chunk_args))
    matches = expect_errors(result, *expected, exact=exact)
    assert not (out / "chunks.csv").exists() and not (out / "preflight.json").exists()
    return result, matches


def fasta_path(tmp_path, name="c1"):
    return (tmp_path / "in" / f"{name}.fa").resolve()


def dnabert_path(tmp_path, name="c1"):
    return (tmp_path / "in" / f"{name}_DNABERT_S.pt").resolve()


# ----------------------------------------------------------------------------------------------
# FASTA
# ----------------------------------------------------------------------------------------------
def test_good_chunk_passes(tmp_path, tiny_model):
    result, out = preflight_sheet(tmp_path, tiny_model, chunk(tmp_path))
    assert result.exit_code == 0 and not result.stderr.count("error:"), result.stderr
    assert [r["proteins"] for r in csv.DictReader(open(out / "chunks.csv"))] == ["3"]


def test_missing_file_is_named(tmp_path, tiny_model):
    missing = tmp_path / "nowhere.fa"
    result = cli("embed", f"g/x={missing}", "--outdir", tmp_path / "esm", "--esm_model", tiny_model,
                 "--use_gpu", "false")
    expect_errors(result, (missing, "-", r"^file not found$"))
    result = cli("merge", "--dnabert", tmp_path / "none.pt", "--esm", tmp_path / "none_ESM.pt", "--label", "viral",
                 "--output", tmp_path / "m.pt")
    expect_errors(result, (tmp_path / "none.pt", "-", r"^file not found$"))
    assert not (tmp_path / "esm").exists() and not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("text", ["", "\n\n  \n"], ids=["zero-bytes", "blank-lines"])
def test_empty_fasta(tmp_path, tiny_model, text):
    rejected(tmp_path, tiny_model, (fasta_path(tmp_path), "-", r"^empty FASTA \(no records\)$"), fasta_text=text,
             dna_ids=IDS)


def test_text_that_is_not_fasta(tmp_path, tiny_model):
    rejected(tmp_path, tiny_model,
             (fasta_path(tmp_path), "line 1", r"^not a FASTA file \(text before the first '>' header\)$"),
             fasta_text="id,sequence\nNC_000001.1_chunk_1F1,MKV\n", dna_ids=IDS)


def test_binary_file_that_is_not_fasta(tmp_path, tiny_model):
    rejected(tmp_path, tiny_model, (fasta_path(tmp_path), r"line \d+, byte \d+", r"^not a FASTA file"),
             fasta_text=gzip.compress(b">NC_000001.1_chunk_1F1\nMKV\n"), dna_ids=IDS)


def test_non_ascii_byte_deep_in_a_fasta_names_its_line(tmp_path, tiny_model):
    records = "".join(f">NC_000001.1_chunk_{k}F1\n{'MKV' * 30}\n" for k in range(400))  # ~40 KB, past any buffer
    text = records.encode() + ">NC_000001.1_chunk_999F1\nMK\xc3\xa9V\n".encode("latin-1")
    rejected(tmp_path, tiny_model, (fasta_path(tmp_path), "line 802, byte 3", r"^not a FASTA file"),
             fasta_text=text, dna_ids=IDS)


def test_record_without_id(tmp_path, tiny_model):
    rejected(tmp_path, tiny_model, (fasta_path(tmp_path), "line 3", r"^record has no id after '>'$"),
             fasta_text=f">{IDS[0]}\nMKV\n>\nMKVL\n", dna_ids=IDS[:1])


def test_record_without_sequence(tmp_path, tiny_model):
    rejected(tmp_path, tiny_model, (fasta_path(tmp_path), rf"record {IDS[0]} \(line 1\)", r"^record has no sequence$"),
             fasta_text=f">{IDS[0]}\n>{IDS[1]}\nMKVL\n", dna_ids=IDS[:2])


def test_invalid_residue_letters(tmp_path, tiny_model):
    records = [GOOD[0], (IDS[1], "MKV1LJ"), GOOD[2]]
    rejected(tmp_path, tiny_model, (fasta_path(tmp_path), rf"record {IDS[1]} \(line 3\)",
                                    r"^invalid residue letter\(s\) '1J'$"), records=records)


def test_stop_inside_protein(tmp_path, tiny_model):
    records = [GOOD[0], GOOD[1], (IDS[2], "MKV*LAA")]
    _, matches = rejected(tmp_path, tiny_model, (fasta_path(tmp_path), rf"record {IDS[2]} \(line 5\)",
                                                 r"^stop codon '\*' inside the protein at residue 4$"), records=records)
    assert "internal stops" in matches[0]["fix"]


def test_a_protein_of_only_a_stop_is_rejected(tmp_path, tiny_model):
    """'*' alone leaves no residue once the trailing stop is dropped: embedded, it would be a row of zeros (fast
    forward) or of NaN (EsmModel) that validation would not catch."""
    records = [GOOD[0], (IDS[1], "*"), GOOD[2]]
    rejected(tmp_path, tiny_model, (fasta_path(tmp_path), rf"record {IDS[1]} \(line 3\)",
                                    r"^record has no residues, only a stop codon '\*'$"), records=records)


@pytest.mark.parametrize("option, value", [("--max_length", 0), ("--max_length", -3), ("--toks_per_batch", 0)])
def test_embed_refuses_a_length_or_budget_below_one(tmp_path, demo_data, tiny_model, option, value):
    """--max_length -3 would cut three residues off every protein (Python's negative slice), 0 embed nothing."""
    chunk = demo_chunks(demo_data)[0]
    result = cli("embed", f"{chunk['key']}={chunk['fasta']}", "--esm_model", tiny_model, "--use_gpu", "false",
                 option, value, "--outdir", tmp_path)
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.stderr, result.stderr
    assert not list(tmp_path.glob("**/*.pt"))


def test_trailing_stop_is_accepted(tmp_path, tiny_model):
    result, _ = preflight_sheet(tmp_path, tiny_model, chunk(tmp_path, records=[GOOD[0], (IDS[1], "MKVLAA*")]))
    assert result.exit_code == 0, result.stderr


def test_duplicate_id_in_fasta(tmp_path, tiny_model):
    records = [GOOD[0], GOOD[1], (IDS[0], "MKVL")]
    rejected(tmp_path, tiny_model, (fasta_path(tmp_path), rf"record {IDS[0]} \(line 5\)",
                                    r"^duplicate id \(first at line 1\)$"), records=records, dna_ids=IDS[:2])


# ----------------------------------------------------------------------------------------------
# DNABERT-S files and the join
# ----------------------------------------------------------------------------------------------
def test_duplicate_id_in_dnabert(tmp_path, tiny_model):
    rejected(tmp_path, tiny_model, (dnabert_path(tmp_path), f"record {IDS[1]}", r"^duplicate id$"),
             dna_ids=[IDS[0], IDS[1], IDS[2], IDS[1]])


def test_ids_on_one_side_only_are_errors_by_default(tmp_path, tiny_model):
    extra = "NC_000009.1_chunk_9R1"
    rejected(tmp_path, tiny_model,
             (dnabert_path(tmp_path), f"record {IDS[2]}", r"^1 id\(s\) of the protein FASTA missing here"),
             (fasta_path(tmp_path), f"record {extra}", r"^1 id\(s\) of the DNABERT-S file missing here"),
             dna_ids=[IDS[1], extra, IDS[0]])


def test_allow_missing_passes_preflight_and_merge_drops_and_counts(tmp_path, tiny_model):
    extra = "NC_000009.1_chunk_9R1"
    fasta, dnabert = chunk(tmp_path, dna_ids=[IDS[1], extra, IDS[0]])
    result, _ = preflight_sheet(tmp_path, tiny_model, (fasta, dnabert), extra=["--allow_missing"])
    assert result.exit_code == 0, result.stderr
    embedded = cli("embed", f"g/c1={fasta}", "--outdir", tmp_path / "esm", "--esm_model", tiny_model,
                   "--use_gpu", "false")
    assert embedded.exit_code == 0, embedded.stderr
    esm = tmp_path / "esm" / "g" / "c1_ESM.pt"
    strict = cli("merge", "--dnabert", dnabert, "--esm", esm, "--label", "host", "--output", tmp_path / "m.pt")
    expect_errors(strict, (esm, f"record {extra}", r"^1 DNABERT-S id\(s\) have no partner here$"))
    assert not (tmp_path / "m.pt").exists()
    result = cli("merge", "--dnabert", dnabert, "--esm", esm, "--label", "host", "--output", tmp_path / "m.pt",
                 "--allow_missing", "true", "--stats", tmp_path / "m.json")
    assert result.exit_code == 0, result.stderr
    [stats] = json.loads((tmp_path / "m.json").read_text())["chunks"]
    assert {k: stats[k] for k in ("rows", "dropped_dnabert_only", "dropped_protein_only")} == \
        {"rows": 2, "dropped_dnabert_only": [extra], "dropped_protein_only": [IDS[2]]}
    merged = torch.load(tmp_path / "m.pt", weights_only=True)
    assert merged["ids"] == [IDS[1], IDS[0]] and merged["data"].shape == (2, 2048) and merged["labels"] == [0]


def test_allow_missing_with_no_common_id_is_an_error_not_an_empty_chunk(tmp_path, tiny_model):
    """Dropping unmatched ids must not drop all of them: a chunk whose two sides share no id would merge 0 rows
    and validate green. PREFLIGHT refuses it before any embedding, and MERGE would too."""
    others = [f"NC_000009.1_chunk_{k}F1" for k in range(1, 4)]
    fasta, dnabert = chunk(tmp_path, dna_ids=others)
    result, _ = preflight_sheet(tmp_path, tiny_model, (fasta, dnabert), extra=["--allow_missing"])
    expect_errors(result, (dnabert, f"record {others[0]}",
                           r"^no id of the DNABERT-S file is in the chunk's protein FASTA, so --allow_missing would "
                           r"merge 0 rows$"))
    embedded = cli("embed", f"g/c1={fasta}", "--outdir", tmp_path / "esm", "--esm_model", tiny_model,
                   "--use_gpu", "false")
    assert embedded.exit_code == 0, embedded.stderr
    merged = cli("merge", "--dnabert", dnabert, "--esm", tmp_path / "esm" / "g" / "c1_ESM.pt", "--label", "host",
                 "--output", tmp_path / "m.pt", "--allow_missing", "true")
    expect_errors(merged, (dnabert, f"record {others[0]}", r"^no id of the DNABERT-S file is in the chunk's protein"))
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("bad, problem", [
    ([0.0] * 767, r"^vector has 767 values, expected 768$"),
    ([0.0] * 769, r"^vector has 769 values, expected 768$"),
    ([0.0] * 100 + [math.nan] + [0.0] * 667, r"^vector contains NaN or Inf$"),
    ([0.0] * 767 + [math.inf], r"^vector contains NaN or Inf$"),
    ([0.0] * 767 + [-math.inf], r"^vector contains NaN or Inf$"),
    ("not numbers", r"^vector is not a list or tensor of numbers$"),
], ids=["767", "769", "nan", "inf", "-inf", "str"])
def test_bad_dnabert_vector(tmp_path, tiny_model, bad, problem):
    ids = IDS[::-1]
    vectors = [[0.5] * 768, bad, [0.25] * 768]
    rejected(tmp_path, tiny_model, (dnabert_path(tmp_path), f"record {ids[1]}", problem),
             dna=dnabert_object(ids, vectors=vectors))


def test_dnabert_tensor_of_another_shape_is_rejected_though_it_holds_768_values(tmp_path, tiny_model):
    ids = IDS[::-1]
    vectors = [torch.randn(768), torch.randn(2, 384), torch.randn(1, 768)]
    rejected(tmp_path, tiny_model, (dnabert_path(tmp_path), f"record {ids[1]}", r"^vector has shape \[2, 384\], expected \[768\]$"),
             dna=dnabert_object(ids, vectors=vectors))


def test_merge_refuses_esm_rows_that_are_not_finite(tmp_path):
    """An ESM file with a NaN row (a model that overflowed) is not merged into features train.py would read."""
    from virnucpro_extract.formats import write_dnabert, write_esm
    from virnucpro_extract.merge import merge_features

    vectors = torch.randn(3, 1280)
    vectors[1, 7] = math.nan
    write_esm(tmp_path / "c_ESM.pt", IDS, vectors)
    write_dnabert(tmp_path / "c_DNABERT_S.pt", IDS, torch.randn(3, 768))
    with pytest.raises(InputError) as caught:
        merge_features(tmp_path / "c_DNABERT_S.pt", tmp_path / "c_ESM.pt", "viral", False)
    assert f"record {IDS[1]}" in str(caught.value) and "NaN or Inf" in str(caught.value)


def test_a_worker_refuses_to_write_embeddings_that_are_not_finite():
    from types import SimpleNamespace

    from virnucpro_extract.runtime import require_finite

    chunk = SimpleNamespace(fasta="in/c1.fa", ids=IDS)
    require_finite(torch.zeros(3, 4), chunk, "fp16")
    rows = torch.zeros(3, 4)
    rows[2, 0] = math.inf
    with pytest.raises(InputError) as caught:
        require_finite(rows, chunk, "fp16")
    assert f"record {IDS[2]}" in str(caught.value) and "--precision bf16 or fp32" in str(caught.value)


def test_dnabert_vectors_as_tensors_are_accepted(tmp_path, tiny_model):
    ids = IDS[::-1]
    dna = dnabert_object(ids, vectors=[torch.randn(768) for _ in ids])
    result, _ = preflight_sheet(tmp_path, tiny_model, chunk(tmp_path, dna=dna))
    assert result.exit_code == 0, result.stderr


def test_not_a_dnabert_dict(tmp_path, tiny_model):
    rejected(tmp_path, tiny_model, (dnabert_path(tmp_path), "-", r"^not a DNABERT-S file"),
             dna={"ids": IDS, "vectors": torch.zeros(3, 768)})


def good_pt_bytes(tmp_path) -> bytes:
    write_dnabert(tmp_path / "good.pt", IDS)
    return (tmp_path / "good.pt").read_bytes()


@pytest.mark.parametrize("damage, problem", [
    ("truncated", r"a torch\.save file cut off or damaged, [\d,]+ bytes"),
    ("empty", r"empty: 0 bytes"),
    ("random-bytes", r"unknown binary content, 3,000 bytes"),
    ("text", r"text, not a torch\.save file: starts 'this is not a torch file'"),
    ("gzip", r"gzip-compressed, not a torch\.save file")])
def test_truncated_or_corrupt_pt(tmp_path, tiny_model, damage, problem):
    good = good_pt_bytes(tmp_path)
    content = {"truncated": good[: len(good) // 2], "empty": b"",
               "random-bytes": bytes(torch.randint(0, 256, (3000,), generator=torch.Generator().manual_seed(1))
                                     .to(torch.uint8).tolist()),
               "text": b"this is not a torch file\n" * 20,
               "gzip": gzip.compress(good)}[damage]
    rejected(tmp_path, tiny_model, (dnabert_path(tmp_path), "-", rf"^truncated or corrupt \.pt file \({problem}\)$"),
             dna=content)


class CreatesMarkerWhenUnpickled:
    """A pickle payload: unpickling calls open(marker, 'w'), i.e. runs code that leaves a file behind."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pt_that_would_run_code_is_rejected_and_never_run(tmp_path, tiny_model):
    marker = tmp_path / "code-ran.marker"
    payload = dnabert_object(IDS[::-1])
    payload["data"][0]["mean_representation"] = CreatesMarkerWhenUnpickled(marker)
    _, matches = rejected(tmp_path, tiny_model,
                          (dnabert_path(tmp_path), "-", r"^unsafe or unsupported pickle content, not loaded "
                                                        r"\(Unsupported global: GLOBAL \S*open\)$"),
                          dna=payload)
    assert not marker.exists(), "preflight ran code from a .pt file"
    for command in (["merge", "--dnabert", dnabert_path(tmp_path), "--esm", dnabert_path(tmp_path), "--label", "viral",
                     "--output", tmp_path / "m.pt"],):
        expect_errors(cli(*command), (dnabert_path(tmp_path), "-", r"^unsafe or unsupported pickle content"))
    assert not marker.exists(), "merge ran code from a .pt file"
    # The payload is real: an unsafe load does run it (this is what the pipeline must never do).
    torch.load(dnabert_path(tmp_path), weights_only=False)
    assert marker.exists()


# ----------------------------------------------------------------------------------------------
# --data_dir discovery
# ----------------------------------------------------------------------------------------------
def data_dir_with(tmp_path, prefixes):
    data = tmp_path / "data"
    for prefix in prefixes:
        write_fasta(data / f"{prefix}.identified_protein" / "output_1.fa", GOOD)
        write_dnabert(data / f"{prefix}.identified_nucleotide" / "output_1_DNABERT_S.pt", IDS[::-1])
    return data


def test_unknown_category_prefix(tmp_path, tiny_model):
    data = data_dir_with(tmp_path, ["viral.1.1", "mystery_things"])
    result = cli("preflight", "--data_dir", data, "--esm_model", tiny_model, "--outdir", tmp_path / "out")
    _ = expect_errors(result, (data / "mystery_things.identified_protein", "-",
                               r"^unknown category prefix 'mystery_things'$"))
    assert not (tmp_path / "out" / "chunks.csv").exists()


def test_protein_chunk_without_dnabert_file_names_both_paths(tmp_path, tiny_model):
    data = data_dir_with(tmp_path, ["viral.1.1"])
    write_fasta(data / "bacteria.identified_protein" / "output_2.fa", GOOD)
    expected = data / "bacteria.identified_nucleotide" / "output_2_DNABERT_S.pt"
    result = cli("preflight", "--data_dir", data, "--esm_model", tiny_model, "--outdir", tmp_path / "out")
    expect_errors(result, (data / "bacteria.identified_protein" / "output_2.fa", "output_2",
                           rf"^no DNABERT-S file \(expected {expected}\)$"))


def test_data_dir_that_does_not_exist(tmp_path, tiny_model):
    result = cli("preflight", "--data_dir", tmp_path / "nope", "--esm_model", tiny_model, "--outdir", tmp_path / "o")
    expect_errors(result, (tmp_path / "nope", "-", r"^--data_dir is not a directory$"))


def test_several_bad_files_are_reported_in_one_go(tmp_path, tiny_model):
    data = data_dir_with(tmp_path, ["viral.1.1", "bacteria", "fungi", "unknown_stuff"])
    write_fasta(data / "viral.1.1.identified_protein" / "output_2.fa", [GOOD[0], (IDS[1], "MK*VL")])
    write_dnabert(data / "viral.1.1.identified_nucleotide" / "output_2_DNABERT_S.pt", IDS[:2])
    write_dnabert(data / "bacteria.identified_nucleotide" / "output_1_DNABERT_S.pt", IDS,
                  vectors=[[0.0] * 768, [math.nan] * 768, [0.0] * 768])
    (data / "fungi.identified_nucleotide" / "output_1_DNABERT_S.pt").unlink()
    # A separate process: --workers forks, which is unsafe from a pytest process that already ran torch.
    result = cli_process("preflight", "--data_dir", data, "--esm_model", tiny_model, "--outdir", tmp_path / "out",
                         "--workers", 2)
    expect_errors(result,
                  (data / "viral.1.1.identified_protein" / "output_2.fa", rf"record {IDS[1]} \(line 3\)", r"stop codon"),
                  (data / "bacteria.identified_nucleotide" / "output_1_DNABERT_S.pt", f"record {IDS[1]}", r"NaN"),
                  (data / "fungi.identified_protein" / "output_1.fa", "output_1", r"^no DNABERT-S file"),
                  (data / "unknown_stuff.identified_protein", "-", r"^unknown category prefix"))
    assert not (tmp_path / "out" / "chunks.csv").exists()


# ----------------------------------------------------------------------------------------------
# Samplesheet
# ----------------------------------------------------------------------------------------------
def sheet_preflight(tmp_path, model, rows, columns=("id", "label", "protein_fasta", "dnabert_embeddings", "group")):
    sheet = write_samplesheet(tmp_path / "sheets" / "sheet.csv", rows, columns)
    return cli("preflight", "--input", sheet, "--esm_model", model, "--outdir", tmp_path / "out"), sheet.resolve()


def test_samplesheet_missing_column(tmp_path, tiny_model):
    fasta, _ = chunk(tmp_path)
    result, sheet = sheet_preflight(tmp_path, tiny_model, [("c1", "viral", fasta)], ("id", "label", "protein_fasta"))
    expect_errors(result, (sheet, "line 1", r"^missing column\(s\) dnabert_embeddings$"))


def test_samplesheet_unknown_label(tmp_path, tiny_model):
    fasta, dnabert = chunk(tmp_path)
    result, sheet = sheet_preflight(tmp_path, tiny_model, [("c1", "viral", fasta, dnabert, ""),
                                                           ("c2", "virus", fasta, dnabert, "")])
    expect_errors(result, (sheet, "line 3", r"^unknown label 'virus'$"))


def test_samplesheet_duplicate_id(tmp_path, tiny_model):
    fasta, dnabert = chunk(tmp_path)
    result, sheet = sheet_preflight(tmp_path, tiny_model, [("c1", "host", fasta, dnabert, "bacteria"),
                                                           ("c1", "host", fasta, dnabert, "bacteria")])
    expect_errors(result, (sheet, "line 3", r"^duplicate id 'c1' in group 'bacteria' \(first at line 2\)$"))


def test_samplesheet_path_that_does_not_exist_is_resolved_against_its_folder(tmp_path, tiny_model):
    _, dnabert = chunk(tmp_path)
    result, sheet = sheet_preflight(tmp_path, tiny_model, [("c1", "viral", "in/missing.fa", dnabert, "")])
    expected = sheet.parent / "in" / "missing.fa"
    expect_errors(result, (sheet, "line 2", rf"^protein_fasta 'in/missing.fa' does not exist \(resolved to {expected}\)$"))


def test_samplesheet_that_is_not_text(tmp_path, tiny_model):
    sheet = tmp_path / "sheet.csv"
    sheet.write_bytes(b"id,label,protein_fasta,dnabert_embeddings\n\xff\xfe,viral,a.fa,b.pt\n")
    result = cli("preflight", "--input", sheet, "--esm_model", tiny_model, "--outdir", tmp_path / "out")
    expect_errors(result, (sheet.resolve(), "byte 42", r"^not a text CSV file \(binary or non-UTF-8 content\)$"))


@pytest.mark.parametrize("body, where, problem", [
    ('"c1,viral,{fasta},{dnabert}\n', "line 3", r"not valid CSV \(unexpected end of data\)"),
    ('c1,viral,"{fasta}"x,{dnabert}\n', "line 3", r"not valid CSV \(',' expected after '\"'\)"),
    ("c1,viral,{fasta},{dnabert},surplus\n", "line 3", r"5 fields, the header has 4")])
def test_samplesheet_that_is_not_valid_csv(tmp_path, tiny_model, body, where, problem):
    fasta, dnabert = chunk(tmp_path)
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"id,label,protein_fasta,dnabert_embeddings\nc0,viral,{fasta},{dnabert}\n"
                     + body.format(fasta=fasta, dnabert=dnabert))
    result = cli("preflight", "--input", sheet, "--esm_model", tiny_model, "--outdir", tmp_path / "out")
    expect_errors(result, (sheet.resolve(), where, rf"^{problem}$"))
    assert not (tmp_path / "out" / "chunks.csv").exists()


def test_numbers_typed_on_the_command_line_are_accepted_for_text_parameters(tmp_path, tiny_model):
    params = tmp_path / "params.json"
    fasta, dnabert = chunk(tmp_path)
    sheet = write_samplesheet(tmp_path / "sheet.csv", [("c1", "viral", fasta, dnabert)])
    params.write_text(json.dumps({"input": str(sheet), "esm_model": str(tiny_model), "slurm_queue": 1,
                                  "max_length": "long"}))
    result = cli("preflight", "--params_json", params, "--schema", SCHEMA, "--outdir", tmp_path / "out")
    expect_errors(result, ("params", "--max_length", r"^invalid value 'long' .*"))


def test_samplesheet_with_byte_order_mark_is_accepted(tmp_path, tiny_model):
    fasta, dnabert = chunk(tmp_path)
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"\ufeffid,label,protein_fasta,dnabert_embeddings\nc1,host,{fasta},{dnabert}\n", encoding="utf-8")
    result = cli("preflight", "--input", sheet, "--esm_model", tiny_model, "--outdir", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert next(csv.DictReader(open(tmp_path / "out" / "chunks.csv")))["key"] == "host/c1"


# ----------------------------------------------------------------------------------------------
# Parameters and model
# ----------------------------------------------------------------------------------------------
def test_both_or_neither_of_input_and_data_dir(tmp_path, tiny_model, demo_data):
    fasta, dnabert = chunk(tmp_path)
    sheet = write_samplesheet(tmp_path / "s.csv", [("c1", "viral", fasta, dnabert)])
    both = cli("preflight", "--input", sheet, "--data_dir", demo_data, "--esm_model", tiny_model,
               "--outdir", tmp_path / "o")
    expect_errors(both, ("params", "--input/--data_dir", r"^both given$"))
    neither = cli("preflight", "--esm_model", tiny_model, "--outdir", tmp_path / "o")
    expect_errors(neither, ("params", "--input/--data_dir", r"^neither given$"))
    assert not (tmp_path / "o" / "chunks.csv").exists()


def test_parameters_of_the_wrong_type_via_params_json_and_schema(tmp_path, tiny_model, demo_data):
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"data_dir": str(demo_data), "esm_model": str(tiny_model), "max_length": "long",
                                  "use_gpu": "yes", "precision": "fp64", "toks_per_batch": 8}))
    result = cli("preflight", "--params_json", params, "--schema", SCHEMA, "--outdir", tmp_path / "out")
    matches = expect_errors(result, ("params", "--max_length", r"^invalid value 'long'"),
                            ("params", "--use_gpu", r"^invalid value 'yes'"),
                            ("params", "--precision", r"^invalid value 'fp64'"),
                            ("params", "--toks_per_batch", r"^invalid value 8"))
    precision = next(m for m in matches if m["where"] == "--precision")
    assert precision["fix"] == "use one of fp32, fp16, bf16"
    budget = next(m for m in matches if m["where"] == "--toks_per_batch")
    assert budget["fix"] == "give --toks_per_batch at least 64"
    assert not (tmp_path / "out" / "chunks.csv").exists()


def test_model_directory_missing(tmp_path, demo_data):
    missing = tmp_path / "no_model"
    result = cli("preflight", "--data_dir", demo_data, "--esm_model", missing, "--outdir", tmp_path / "out")
    expect_errors(result, (missing, "config.json", r"^model directory missing or has no config.json$"))


def test_mistyped_relative_model_path_is_not_taken_for_a_hub_id(tmp_path, demo_data):
    # 'models/FastEsm2_650' is also a well-formed hub id; the existing 'models' folder shows it was meant as a path
    (tmp_path / "models").mkdir()
    result = cli("preflight", "--data_dir", demo_data, "--esm_model", "models/FastEsm2_650",
                 "--launch_dir", tmp_path, "--outdir", tmp_path / "out")
    expect_errors(result, (tmp_path / "models" / "FastEsm2_650", "config.json",
                           r"^model directory missing or has no config.json$"))
    assert not (tmp_path / "out" / "chunks.csv").exists()


def test_hub_id_not_in_cache_is_left_to_the_download_unless_offline(tmp_path, demo_data, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    args = ("preflight", "--data_dir", demo_data, "--esm_model", "Synthyra/FastESM2_650", "--launch_dir", tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    result = cli(*args, "--outdir", tmp_path / "online")
    assert result.exit_code == 0, result.stderr
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = cli(*args, "--outdir", tmp_path / "offline")
    expect_errors(result, ("--esm_model", "Synthyra/FastESM2_650",
                           r"^model not in the Hugging Face cache and HF_HUB_OFFLINE is set$"))


def test_model_hidden_size_not_1280(tmp_path, demo_data):
    model = tmp_path / "small_model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "esm", "hidden_size": 320}))
    result = cli("preflight", "--data_dir", demo_data, "--esm_model", model, "--outdir", tmp_path / "out")
    expect_errors(result, (model / "config.json", "hidden_size", r"^model hidden size is 320, the features need 1280$"))
    assert not (tmp_path / "out" / "chunks.csv").exists()


def test_model_config_that_is_not_json(tmp_path, demo_data):
    model = tmp_path / "broken_model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "esm", "hidden_size": 1280\n')
    result = cli("preflight", "--data_dir", demo_data, "--esm_model", model, "--outdir", tmp_path / "out")
    expect_errors(result, (model / "config.json", "line 2", r"^not valid JSON \(.+\)$"))


def test_embed_refuses_a_real_model_of_the_wrong_width(tmp_path):
    from transformers import EsmConfig, EsmModel

    model = tmp_path / "esm320"
    EsmModel(EsmConfig(vocab_size=33, hidden_size=320, num_hidden_layers=1, num_attention_heads=4,
                       intermediate_size=64, position_embedding_type="rotary", pad_token_id=1,
                       mask_token_id=32), add_pooling_layer=False).save_pretrained(model)
    fasta = write_fasta(tmp_path / "p.fa", GOOD)
    result = cli("embed", f"g/p={fasta}", "--outdir", tmp_path / "esm", "--esm_model", model, "--use_gpu", "false")
    expect_errors(result, (model, "hidden_size", r"^model hidden size is 320, the features need 1280$"))
    assert not (tmp_path / "esm").exists()


def test_longer_than_max_length_is_truncated_and_counted_not_an_error(tmp_path, tiny_model):
    records = [(IDS[0], "M" * 30), (IDS[1], "A" * 41), (IDS[2], "G" * 2000)]
    result, out = preflight_sheet(tmp_path, tiny_model, chunk(tmp_path, records=records),
                                  extra=["--max_length", 40])
    assert result.exit_code == 0 and "error:" not in result.stderr, result.stderr
    assert "2 longer than 40 residues" in result.stderr
    summary = json.loads((out / "preflight.json").read_text())
    assert summary["truncated"] == 2 and summary["max_length"] == 40
    row = next(csv.DictReader(open(out / "chunks.csv")))
    assert (row["truncated"], row["max_residues"]) == ("2", "2000")


def test_embed_errors_name_the_users_file_not_the_tasks_staged_link(tmp_path, tiny_model):
    real = write_fasta(tmp_path / "data" / "output_1.fa", [("NC_000001.1_chunk_1F1", "MKV*LL")]).resolve()
    staged = tmp_path / "work" / "input" / "1" / "output_1.fa"  # how Nextflow stages a task's input
    staged.parent.mkdir(parents=True)
    staged.symlink_to(real)
    result = cli("embed", f"viral/output_1={staged}", "--esm_model", tiny_model, "--use_gpu", "false",
                 "--outdir", tmp_path / "esm")
    expect_errors(result, (real, r"record NC_000001.1_chunk_1F1 \(line 1\)", "stop codon"))
