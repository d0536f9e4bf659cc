"""One owner for each file format the pipeline reads or writes, with typed readers and writers.

- DNABERT-S, `<id>_DNABERT_S.pt`: VirNucPro's `{'nucleotide': [ids], 'data': [{'label': id,
  'mean_representation': [768 floats]}]}`; vectors may be lists or tensors.      -> DnabertEmbeddings [N, 768]
- ESM, `<id>_ESM.pt`: `{'proteins': [ids], 'data': float32 [N, 1280]}` in FASTA order (VirNucPro's own
  files hold a list of [1280] tensors).                                          -> EsmEmbeddings [N, 1280]
- merged features, `<id>_merged.pt`: `{'ids': [ids], 'data': float32 [N, 2048], 'labels': [1 or 0]}`,
  columns 0..767 DNABERT-S, 768..2047 protein; what VirNucPro's train.py loads.  -> MergedFeatures [N, 2048]
- the chunk manifest, `chunks.csv`: one row per chunk (MANIFEST_COLUMNS).

Every `.pt` goes through `files.load_pt` (safe) and `files.save_pt` (atomic). Readers check what they read and
raise the contract's error line naming the file and the record.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from .defaults import DNABERT_DIM, ESM_DIM, LABEL_VALUES, MERGED_DIM
from .errors import InputError
from .files import load_pt, save_pt, write_text

MANIFEST_COLUMNS = ("key", "id", "group", "label", "protein_fasta", "dnabert_embeddings", "task_group",
                    "proteins", "truncated", "max_residues", "nucleotide_fasta", "compute_dnabert")


@dataclass
class DnabertEmbeddings:
    """The DNABERT-S vectors of one chunk: `ids` and a float32 `vectors` tensor [N, 768], in file order."""

    ids: list[str]
    vectors: object


@dataclass
class EsmEmbeddings:
    """The protein vectors of one chunk: `ids` (FASTA order) and a float32 `vectors` tensor [N, 1280]."""

    ids: list[str]
    vectors: object


@dataclass
class MergedFeatures:
    """One chunk's training features: `ids`, float32 `data` [N, 2048] (row i is ids[i]) and `labels` ([1] / [0])."""

    ids: list[str]
    data: object
    labels: list[int]


# ----------------------------------------------------------------------------------------------
# DNABERT-S
# ----------------------------------------------------------------------------------------------
def read_dnabert(path) -> DnabertEmbeddings:
    """Load and check a DNABERT-S file: unique ids, 768 finite floats each, 'nucleotide' equal to the ids."""
    obj = load_pt(path)
    fix = "regenerate it with VirNucPro's DNABERT-S step (768 floats per read)"
    if (not isinstance(obj, dict) or not isinstance(obj.get("data"), (list, tuple))
            or not isinstance(obj.get("nucleotide"), (list, tuple))):
        raise InputError(path, "-", "not a DNABERT-S file (expected a dict with 'nucleotide' and 'data' lists)", fix)
    ids, raw, seen = [], [], set()
    for index, item in enumerate(obj["data"]):
        record_id = item.get("label") if isinstance(item, dict) else None
        if not isinstance(record_id, str) or "mean_representation" not in item:
            raise InputError(path, f"entry {index}", "entry lacks 'label' or 'mean_representation'", fix)
        if record_id in seen:
            raise InputError(path, f"record {record_id}", "duplicate id", "make every read id unique in this file")
        seen.add(record_id)
        ids.append(record_id)
        raw.append(item["mean_representation"])
    if list(obj["nucleotide"]) != ids:
        raise InputError(path, "-", "'nucleotide' id list does not match the ids of 'data'", fix)
    if not ids:
        raise InputError(path, "-", "no vectors in file", "remove this chunk or regenerate its DNABERT-S file")
    vectors = _stack_vectors(path, ids, raw, fix)
    bad = non_finite_rows(ids, vectors)
    if bad:
        raise InputError(path, f"record {bad[0]}", "vector contains NaN or Inf", fix)
    return DnabertEmbeddings(ids, vectors)


def non_finite_rows(ids: list[str], vectors) -> tuple[str, int] | None:
    """(the id of the first row of vectors [N, D] holding NaN or Inf, how many rows do), or None if none does."""
    import torch

    finite = torch.isfinite(vectors).all(1)
    if bool(finite.all()):
        return None
    return ids[int((~finite).nonzero()[0])], int((~finite).sum())


# A read's vector: [768], or [1, 768] as a batch of one; [2, 384] holds 768 values but is not one.
DNABERT_VECTOR_SHAPES = ((DNABERT_DIM,), (1, DNABERT_DIM))


def _stack_vectors(path, ids, raw, fix):
    """[N, 768] float32 from per-read lists or tensors: in one call when all are well formed (fast), else
    row by row to name the first bad record."""
    import torch

    try:
        if all(torch.is_tensor(v) and tuple(v.shape) in DNABERT_VECTOR_SHAPES for v in raw):
            stacked = torch.stack([v.float().flatten() for v in raw])
        else:
            stacked = torch.as_tensor(raw, dtype=torch.float32)
        if stacked.ndim == 2 and stacked.shape[1] == DNABERT_DIM:
            return stacked
    except (TypeError, ValueError, RuntimeError):
        pass
    for record_id, value in zip(ids, raw):
        try:
            vector = torch.as_tensor(value, dtype=torch.float32).flatten()
        except (TypeError, ValueError, RuntimeError):
            raise InputError(path, f"record {record_id}", "vector is not a list or tensor of numbers", fix) from None
        if vector.numel() != DNABERT_DIM:
            raise InputError(path, f"record {record_id}", f"vector has {vector.numel()} values, expected {DNABERT_DIM}",
                             fix)
        shape = tuple(torch.as_tensor(value).shape)
        if shape not in DNABERT_VECTOR_SHAPES:   # [2, 384] has 768 values but is not one vector
            raise InputError(path, f"record {record_id}", f"vector has shape {list(shape)}, expected [{DNABERT_DIM}]", fix)
    raise InputError(path, "-", "vectors could not be read as one [N, 768] matrix", fix)


def write_dnabert(path, ids: list[str], vectors) -> None:
    """VirNucPro's DNABERT-S layout. Each 'mean_representation' is a [768] tensor, a row of one float32 matrix:
    torch.save keeps one storage, so the file is half the size of Python floats and loads ~10x faster; the
    contract allows lists or tensors, and VirNucPro's scripts read either."""
    matrix = vectors.float().contiguous()
    save_pt({"nucleotide": list(ids),
             "data": [{"label": record_id, "mean_representation": matrix[row]} for row, record_id in enumerate(ids)]},
            path)


# ----------------------------------------------------------------------------------------------
# ESM
# ----------------------------------------------------------------------------------------------
def read_esm(path) -> EsmEmbeddings:
    """Load an `*_ESM.pt` file: ids and float32 [N, 1280] (a tensor, or VirNucPro's list of [1280] tensors)."""
    import torch

    obj = load_pt(path)
    fix = "rerun EMBED_PROTEINS for this chunk (delete its work directory or run without -resume)"
    if (not isinstance(obj, dict) or not isinstance(obj.get("proteins"), (list, tuple))
            or not (torch.is_tensor(obj.get("data")) or isinstance(obj.get("data"), list))):
        raise InputError(path, "-", "not an ESM embedding file (expected 'proteins' and 'data')", fix)
    ids, data = list(obj["proteins"]), obj["data"]
    if isinstance(data, list):
        data = torch.stack([torch.as_tensor(v) for v in data]) if data else torch.empty(0, ESM_DIM)
    data = data.float()
    if data.ndim != 2 or data.shape[1] != ESM_DIM:
        raise InputError(path, "-", f"embedding width is {tuple(data.shape)}, expected [N, {ESM_DIM}]", fix)
    if data.shape[0] != len(ids):
        raise InputError(path, "-", f"{data.shape[0]} rows but {len(ids)} ids", fix)
    return EsmEmbeddings(ids, data)


def require_finite_esm(path, esm: EsmEmbeddings) -> None:
    """Merging refuses NaN or Inf rows (validation reports them as its 'esm rows finite' check instead)."""
    bad = non_finite_rows(esm.ids, esm.vectors)
    if bad:
        raise InputError(path, f"record {bad[0]}", "embedding contains NaN or Inf",
                         "rerun EMBED_PROTEINS for this chunk (with --precision bf16 or fp32 if it ran in fp16)")


def write_esm(path, ids: list[str], vectors) -> None:
    """`{'proteins': ids, 'data': float32 [N, 1280]}`, rows in the order of `ids` (the FASTA's)."""
    save_pt({"proteins": list(ids), "data": vectors}, path)


# ----------------------------------------------------------------------------------------------
# Merged features
# ----------------------------------------------------------------------------------------------
def merged_object(ids: list[str], data, label: str) -> dict:
    return {"ids": list(ids), "data": data, "labels": [LABEL_VALUES[label]]}


def write_merged(path, ids: list[str], data, label: str) -> None:
    """What train.py loads: ids, float32 [N, 2048] (row i for ids[i]) and one label for the file."""
    assert data.ndim == 2 and data.shape == (len(ids), MERGED_DIM), data.shape
    save_pt(merged_object(ids, data, label), path)


def read_merged(path) -> MergedFeatures:
    """A merged file's ids, data and labels; raises if the keys are missing or data is not a tensor
    (widths, counts and alignment are validate's checks, which report rather than raise)."""
    import torch

    obj = load_pt(path)
    if not (isinstance(obj, dict) and {"ids", "data", "labels"} <= set(obj) and torch.is_tensor(obj["data"])):
        raise InputError(path, "-", "not a merged features file (needs ids, data as a tensor, labels)",
                         "rerun MERGE_FEATURES for this chunk")
    return MergedFeatures(list(obj["ids"]), obj["data"], list(obj["labels"]))


# ----------------------------------------------------------------------------------------------
# The chunk manifest
# ----------------------------------------------------------------------------------------------
def write_manifest(path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: str(r[c]).lower() if isinstance(r[c], bool) else r[c] for c in MANIFEST_COLUMNS} for r in rows)
    write_text(path, buffer.getvalue())


def read_manifest(path) -> list[dict]:
    """The rows of a manifest or of any CSV table of chunks (merge's and validate's tables too)."""
    with open(Path(path), newline="") as handle:
        return list(csv.DictReader(handle))
