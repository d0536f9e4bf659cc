"""`merge`: join a chunk's DNABERT-S and ESM vectors by id into VirNucPro's 2048-column features.

Rows follow the DNABERT-S order and `ids[i]` is always the id of `data[i]`: the original script
dropped unmatched rows but kept the full id list, silently misaligning ids and rows.
"""
from __future__ import annotations

import torch

from .util import ESM_DIM, MERGED_DIM, InputError, load_dnabert, load_pt, save_pt

LABEL_VALUES = {"viral": 1, "host": 0}


def load_esm(path) -> tuple[list[str], torch.Tensor]:
    """Load an `*_ESM.pt` file: (protein ids, float32 [N, 1280])."""
    obj = load_pt(path)
    fix = "rerun EMBED_PROTEINS for this chunk (delete its work directory or run without -resume)"
    if (not isinstance(obj, dict) or not isinstance(obj.get("proteins"), (list, tuple))
            or not (torch.is_tensor(obj.get("data")) or isinstance(obj.get("data"), list))):
        raise InputError(path, "-", "not an ESM embedding file (expected 'proteins' and 'data')", fix)
    ids, data = list(obj["proteins"]), obj["data"]
    if isinstance(data, list):  # VirNucPro's own files hold a list of [1280] tensors
        data = torch.stack([torch.as_tensor(v) for v in data]) if data else torch.empty(0, ESM_DIM)
    data = data.float()
    if data.ndim != 2 or data.shape[1] != ESM_DIM:
        raise InputError(path, "-", f"embedding width is {tuple(data.shape)}, expected [N, {ESM_DIM}]", fix)
    if data.shape[0] != len(ids):
        raise InputError(path, "-", f"{data.shape[0]} rows but {len(ids)} ids", fix)
    return ids, data


def merge_features(dnabert_path, esm_path, label: str, allow_missing: bool) -> tuple[dict, dict]:
    """Return (merged object, statistics). Unmatched ids are an error unless `allow_missing`."""
    dnabert = load_dnabert(dnabert_path)
    esm_ids, esm_data = load_esm(esm_path)
    esm_row = {record_id: row for row, record_id in enumerate(esm_ids)}
    dna_ids = set(dnabert.ids)
    only_dna = [i for i in dnabert.ids if i not in esm_row]
    only_protein = [i for i in esm_ids if i not in dna_ids]
    if (only_dna or only_protein) and not allow_missing:
        side, missing, where = (("DNABERT-S", only_dna, esm_path) if only_dna else ("protein", only_protein, dnabert_path))
        raise InputError(where, f"record {missing[0]}", f"{len(missing)} {side} id(s) have no partner here",
                         "fix the chunk files, or pass --allow_missing to drop and count them")
    keep = [row for row, record_id in enumerate(dnabert.ids) if record_id in esm_row]
    ids = [dnabert.ids[row] for row in keep]
    data = torch.cat([dnabert.vectors[keep], esm_data[[esm_row[i] for i in ids]]], dim=1).contiguous()
    assert data.shape == (len(ids), MERGED_DIM)
    merged = {"ids": ids, "data": data, "labels": [LABEL_VALUES[label]]}
    stats = {"rows": len(ids), "dropped_dnabert_only": only_dna, "dropped_protein_only": only_protein}
    return merged, stats


def run_merge(dnabert_path, esm_path, label: str, output, allow_missing: bool) -> dict:
    merged, stats = merge_features(dnabert_path, esm_path, label, allow_missing)
    save_pt(merged, output)
    return stats
