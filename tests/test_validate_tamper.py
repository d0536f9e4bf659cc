"""`validate` catches tampered outputs: copies of good outputs are damaged one way each, then
`virnucpro-extract validate --manifest ... --outdir ...` must fail naming the file, the chunk and the check."""
from __future__ import annotations

import json
import math
import re
import shutil

import pytest
import torch

from conftest import cli, expect_errors

CHUNK = ("viral.1.1", "output_1")  # the chunk every test damages; the other three must still pass


def merged_path(outdir, group=CHUNK[0], chunk_id=CHUNK[1]):
    return outdir / "data_merge" / f"{group}_merged" / f"{chunk_id}_merged.pt"


def esm_path(outdir, group=CHUNK[0], chunk_id=CHUNK[1]):
    return outdir / "esm" / group / f"{chunk_id}_ESM.pt"


def swap_first_two_rows(obj):
    obj["data"][[0, 1]] = obj["data"][[1, 0]]


def set_nan(obj):
    obj["data"][3, 1000] = math.nan


TAMPERS = {
    # name: (file, change, the check that must fail)
    "rows and ids of different lengths": (merged_path, lambda o: o.update(ids=o["ids"][:-1]), "merged rows equal ids"),
    "NaN in merged": (merged_path, set_nan, "merged rows finite"),
    "width 2047": (merged_path, lambda o: o.update(data=o["data"][:, :2047].clone()), "merged width is 2048"),
    "host label on viral": (merged_path, lambda o: o.update(labels=[0]), "label matches group"),
    "rows swapped under their ids": (merged_path, swap_first_two_rows, "merged rows match their ids (DNA half)"),
    "ids reordered": (merged_path, lambda o: o.update(ids=o["ids"][::-1], data=o["data"].flip(0).clone()),
                      "merged ids follow DNABERT-S order"),
    "merged saved as float64": (merged_path, lambda o: o.update(data=o["data"].double()), "merged data is float32"),
    "NaN in ESM": (esm_path, set_nan, "esm rows finite"),
    "ESM in sorted order": (esm_path, lambda o: o.update(proteins=sorted(o["proteins"])),
                            "esm ids equal FASTA ids in FASTA order"),
}


@pytest.mark.parametrize("name", list(TAMPERS))
def test_validate_catches_tampered_output(tmp_path, cli_outputs, name):
    outdir = tmp_path / "results"
    shutil.copytree(cli_outputs, outdir)
    where, change, check = TAMPERS[name]
    target = where(outdir)
    obj = torch.load(target, weights_only=True)
    change(obj)
    torch.save(obj, target)

    result = cli("validate", "--manifest", outdir / "pipeline_info" / "chunks.csv", "--outdir", outdir,
                 "--out", tmp_path / "validation.json")
    expect_errors(result, (target, "/".join(CHUNK), rf"^validation failed: {re.escape(check)} \("),
                  exact=False)
    document = json.loads((tmp_path / "validation.json").read_text())
    assert document["passed"] is False and document["checks_failed"] >= 1
    failed = [c for c in document["checks"] if not c["passed"]]
    assert {c["chunk"] for c in failed} == {"/".join(CHUNK)}, "only the tampered chunk may fail"
    assert check in {c["check"] for c in failed}
    assert all(c["fix"] for c in failed)


def test_validate_catches_a_missing_and_a_corrupt_output(tmp_path, cli_outputs):
    outdir = tmp_path / "results"
    shutil.copytree(cli_outputs, outdir)
    merged_path(outdir).unlink()
    corrupt = merged_path(outdir, "bacteria", "output_1")
    corrupt.write_bytes(corrupt.read_bytes()[:1000])
    result = cli("validate", "--manifest", outdir / "pipeline_info" / "chunks.csv", "--outdir", outdir,
                 "--out", tmp_path / "validation.json")
    expect_errors(result, (merged_path(outdir), "/".join(CHUNK), r"^validation failed: merged file readable \(file not found\)"),
                  (corrupt, "bacteria/output_1", r"^validation failed: merged file readable \(truncated or corrupt"))
