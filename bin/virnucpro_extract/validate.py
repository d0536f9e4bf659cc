"""`validate`: check every published output against its inputs, not only its shape.

Per chunk: widths (1280 / 2048), NaN/Inf, row and id counts, unique ids, ESM rows in FASTA order,
merged rows equal to the DNABERT-S and ESM vectors of the id they claim (so ids and rows cannot
drift apart), rows in DNABERT-S order, and the label VirNucPro's `train.py` reads.
"""
from __future__ import annotations

import multiprocessing
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from .defaults import DNABERT_DIM, LABEL_VALUES, MERGED_DIM
from .errors import InputError
from .fasta import read_proteins
from .formats import read_dnabert, read_esm, read_merged

TABLE_COLUMNS = ("key", "group", "id", "label", "protein_fasta", "dnabert_embeddings", "esm", "merged")


def dnabert_computed(row: dict) -> bool:
    """Whether EMBED_DNA wrote this chunk's DNABERT-S file (the manifest's compute_dnabert column)."""
    return str(row.get("compute_dnabert", "")).lower() == "true"


def outputs_table(manifest_rows: list[dict], outdir) -> list[dict]:
    """Rows of TABLE_COLUMNS for chunks published under `outdir` in the contract's layout."""
    outdir = Path(outdir)
    return [{**row, **({"dnabert_embeddings": str(outdir / "dnabert" / row["group"] / f"{row['id']}_DNABERT_S.pt")}
                       if dnabert_computed(row) else {}),
             "esm": str(outdir / "esm" / row["group"] / f"{row['id']}_ESM.pt"),
             "merged": str(outdir / "data_merge" / f"{row['group']}_merged" / f"{row['id']}_merged.pt")}
            for row in manifest_rows]


class ChunkChecks:
    """Collects named pass/fail checks for one chunk; a check that raises counts as failed."""

    def __init__(self, key: str):
        self.key, self.results = key, []

    def check(self, name: str, file, ok: bool, detail: str = "", fix: str = ""):
        self.results.append({"chunk": self.key, "check": name, "file": str(file), "passed": bool(ok),
                             "detail": detail if not ok else "", "fix": fix if not ok else ""})
        return ok


def validate_chunk(row: dict, allow_missing: bool, sample_rows: int = 50) -> tuple[list[dict], dict, dict]:
    """Run every check of one chunk; return (check results, counts, a small sample for the report's plots)."""
    checks = ChunkChecks(row["key"])
    rerun = "rerun the pipeline for this chunk without -resume (delete the file first)"
    counts = {"key": row["key"], "group": row["group"], "label": row["label"]}
    sample = {}
    try:
        fasta_ids, sequences = read_proteins(row["protein_fasta"])
        dnabert = read_dnabert(row["dnabert_embeddings"])
        esm_read = read_esm(row["esm"])
        esm_ids, esm = esm_read.ids, esm_read.vectors
    except InputError as exc:
        checks.check("inputs readable", exc.file, False, f"{exc.where}: {exc.problem}", exc.fix)
        return checks.results, counts, sample
    lengths = Counter(len(s) for s in sequences)
    counts.update(proteins=len(fasta_ids), dnabert=len(dnabert.ids),
                  length_counts={str(k): v for k, v in sorted(lengths.items())})
    sample["protein_norms"] = esm.norm(dim=1)[:: max(1, len(esm_ids) // 500)]

    checks.check("esm ids equal FASTA ids in FASTA order", row["esm"], esm_ids == fasta_ids,
                 f"{len(esm_ids)} ids vs {len(fasta_ids)} in the FASTA", rerun)
    checks.check("esm rows finite", row["esm"], bool(torch.isfinite(esm).all()),
                 f"{int((~torch.isfinite(esm)).any(1).sum())} rows with NaN/Inf", rerun)

    merged = _load_merged(row["merged"], checks, rerun)
    if merged is None:
        return checks.results, counts, sample
    ids, data, labels = merged
    counts["rows"] = len(ids)
    checks.check("merged width is 2048", row["merged"], data.ndim == 2 and data.shape[1] == MERGED_DIM,
                 f"shape {tuple(data.shape)}", rerun)
    # train.py stacks the files as they are: one float64 or float16 file changes every batch it lands in
    checks.check("merged data is float32", row["merged"], data.dtype == torch.float32, f"dtype {data.dtype}", rerun)
    checks.check("merged rows equal ids", row["merged"], data.shape[0] == len(ids),
                 f"{data.shape[0]} rows, {len(ids)} ids", rerun)
    checks.check("merged ids unique", row["merged"], len(set(ids)) == len(ids), "duplicate ids", rerun)
    checks.check("merged rows finite", row["merged"], bool(torch.isfinite(data).all()),
                 f"{int((~torch.isfinite(data)).any(1).sum()) if data.ndim == 2 else '?'} rows with NaN/Inf", rerun)
    expected_label = [LABEL_VALUES[row["label"]]]
    checks.check("label matches group", row["merged"], labels == expected_label,
                 f"labels {labels!r}, expected {expected_label} for {row['label']}", rerun)

    dna_row = {i: r for r, i in enumerate(dnabert.ids)}
    esm_row = {i: r for r, i in enumerate(esm_ids)}
    common = [i for i in dnabert.ids if i in esm_row]
    expected_ids = common if allow_missing else dnabert.ids
    checks.check("merged ids follow DNABERT-S order" + (" (unmatched dropped)" if allow_missing else ""),
                 row["merged"], ids == expected_ids,
                 f"{len(ids)} ids, expected {len(expected_ids)}; first difference at "
                 f"{next((k for k, (a, b) in enumerate(zip(ids, expected_ids)) if a != b), min(len(ids), len(expected_ids)))}",
                 rerun)
    if data.ndim == 2 and data.shape == (len(ids), MERGED_DIM) and data.dtype == torch.float32 \
            and all(i in dna_row and i in esm_row for i in ids):
        dna_ok = torch.equal(data[:, :DNABERT_DIM], dnabert.vectors[[dna_row[i] for i in ids]])
        esm_ok = torch.equal(data[:, DNABERT_DIM:], esm[[esm_row[i] for i in ids]])
        checks.check("merged rows match their ids (DNA half)", row["merged"], dna_ok,
                     "a row's DNABERT-S half is not the vector of its id", rerun)
        checks.check("merged rows match their ids (protein half)", row["merged"], esm_ok,
                     "a row's protein half is not the ESM vector of its id", rerun)
        sample["features"] = data[:: max(1, -(-len(ids) // sample_rows))].clone()
    counts["dropped_dnabert_only"] = len(dnabert.ids) - len(common)
    counts["dropped_protein_only"] = len(esm_ids) - len(common)
    return checks.results, counts, sample


def _load_merged(path, checks: ChunkChecks, fix: str):
    try:
        merged = read_merged(path)
    except InputError as exc:
        readable = "not a merged features file" not in exc.problem
        checks.check("merged file readable" if readable else "merged file has ids, data, labels", path, False,
                     exc.problem if readable else "missing keys or data not a tensor", exc.fix if readable else fix)
        return None
    return merged.ids, merged.data, merged.labels


def _validate_chunk_star(args):
    return validate_chunk(*args)


def run_validate(rows: list[dict], allow_missing: bool, sample_total: int = 4000, workers: int = 1) -> tuple[dict, dict]:
    """Validate every chunk (in `workers` processes); return (validation document, plot sample for the report)."""
    checks, chunks, samples = [], [], []
    per_chunk = max(1, sample_total // max(1, len(rows)))
    jobs = [(row, allow_missing, per_chunk) for row in rows]
    if workers > 1 and len(jobs) > 1:
        # spawn, not fork: forking a process that already imported torch can hang its workers
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_validate_chunk_star, jobs))
    else:
        results = [_validate_chunk_star(job) for job in jobs]
    for row, (chunk_checks, counts, sample) in zip(rows, results):
        checks += chunk_checks
        chunks.append(counts)
        samples.append({"key": row["key"], "label": row["label"], **sample})
    failed = [c for c in checks if not c["passed"]]
    document = {"passed": not failed and bool(checks), "checks_run": len(checks), "checks_failed": len(failed),
                "checks": checks, "chunks": chunks}
    return document, {"chunks": samples}


def failure_lines(document: dict) -> list[str]:
    return [str(InputError(c["file"], c["chunk"], f"validation failed: {c['check']} ({c['detail']})", c["fix"]))
            for c in document["checks"] if not c["passed"]]
