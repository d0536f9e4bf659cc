"""`merge`: join each chunk's DNABERT-S and ESM vectors by id into VirNucPro's 2048-column features.

Rows follow the DNABERT-S order and `ids[i]` is always the id of `data[i]`: the original script
dropped unmatched rows but kept the full id list, silently misaligning ids and rows. One call merges
a whole task group of chunks (a table of them), in parallel worker processes.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from .defaults import MERGED_DIM
from .errors import InputError, InputErrors, no_common_id
from .formats import read_dnabert, read_esm, require_finite_esm, write_merged

TABLE_COLUMNS = ("key", "group", "id", "label", "dnabert_embeddings", "esm", "merged")


def merge_features(dnabert_path, esm_path, label: str, allow_missing: bool):
    """(ids, data [N, 2048] float32, statistics). Unmatched ids are an error unless `allow_missing`."""
    import torch

    dnabert = read_dnabert(dnabert_path)
    esm = read_esm(esm_path)
    require_finite_esm(esm_path, esm)
    esm_row = {record_id: row for row, record_id in enumerate(esm.ids)}
    dna_ids = set(dnabert.ids)
    only_dna = [i for i in dnabert.ids if i not in esm_row]
    only_protein = [i for i in esm.ids if i not in dna_ids]
    if (only_dna or only_protein) and not allow_missing:
        side, missing, where = (("DNABERT-S", only_dna, esm_path) if only_dna else ("protein", only_protein, dnabert_path))
        raise InputError(where, f"record {missing[0]}", f"{len(missing)} {side} id(s) have no partner here",
                         "fix the chunk files, or pass --allow_missing to drop and count them")
    keep = [row for row, record_id in enumerate(dnabert.ids) if record_id in esm_row]
    if not keep and dnabert.ids and esm.ids:   # --allow_missing would drop every row: a chunk of no features
        raise no_common_id(dnabert_path, "DNABERT-S file", dnabert.ids[0])
    ids = [dnabert.ids[row] for row in keep]
    data = torch.cat([dnabert.vectors[keep], esm.vectors[[esm_row[i] for i in ids]]], dim=1).contiguous()
    assert data.shape == (len(ids), MERGED_DIM)
    return ids, data, {"rows": len(ids), "dropped_dnabert_only": only_dna, "dropped_protein_only": only_protein}


def merge_chunk(row: dict, allow_missing: bool) -> dict:
    """Merge one table row into its output file; its statistics, keyed by chunk."""
    ids, data, stats = merge_features(row["dnabert_embeddings"], row["esm"], row["label"], allow_missing)
    write_merged(row["merged"], ids, data, row["label"])
    return {"key": row["key"], "group": row["group"], "id": row["id"], **stats}


def _merge_chunk_or_errors(args):
    try:
        return merge_chunk(*args), None
    except InputError as exc:
        return None, exc


def run_merge(rows: list[dict], allow_missing: bool, workers: int = 1) -> dict:
    """Merge every chunk of `rows` (TABLE_COLUMNS); every bad chunk is reported, the good ones are written."""
    jobs = [(row, allow_missing) for row in rows]
    if workers > 1 and len(jobs) > 1:
        # spawn, not fork: forking a process that already imported torch can hang its workers
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_merge_chunk_or_errors, jobs))
    else:
        results = [_merge_chunk_or_errors(job) for job in jobs]
    errors = [error for _, error in results if error is not None]
    if errors:
        raise InputErrors(errors)
    return {"chunks": [stats for stats, _ in results]}
