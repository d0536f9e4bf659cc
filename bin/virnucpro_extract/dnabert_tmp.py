@dataclass
class DnabertChunk:
    """The DNABERT-S vectors of one chunk: `ids` and a float32 `[N, 768]` tensor in file order."""

    ids: list[str]
    vectors: "object"  # torch.Tensor [N, 768]


def load_dnabert(path) -> DnabertChunk:
    """Load and check a DNABERT-S file (VirNucPro's format; vectors as lists or tensors)."""
    import torch

    obj = load_pt(path)
    fix = "regenerate it with VirNucPro's DNABERT-S step (768 floats per read)"
    if (not isinstance(obj, dict) or not isinstance(obj.get("data"), (list, tuple))
            or not isinstance(obj.get("nucleotide"), (list, tuple))):
        raise InputError(path, "-", "not a DNABERT-S file (expected a dict with 'nucleotide' and 'data' lists)", fix)
    ids, rows, seen = [], [], set()
    for index, item in enumerate(obj["data"]):
        record_id = item.get("label") if isinstance(item, dict) else None
        if not isinstance(record_id, str) or "mean_representation" not in item:
            raise InputError(path, f"entry {index}", "entry lacks 'label' or 'mean_representation'", fix)
        if record_id in seen:
            raise InputError(path, f"record {record_id}", "duplicate id", "make every read id unique in this file")
        seen.add(record_id)
        try:
            vector = torch.as_tensor(item["mean_representation"], dtype=torch.float32).flatten()
        except (TypeError, ValueError, RuntimeError):
            raise InputError(path, f"record {record_id}", "vector is not a list or tensor of numbers", fix)
        if vector.numel() != DNABERT_DIM:
            raise InputError(path, f"record {record_id}", f"vector has {vector.numel()} values, expected {DNABERT_DIM}", fix)
        if not torch.isfinite(vector).all():
            raise InputError(path, f"record {record_id}", "vector contains NaN or Inf", fix)
        ids.append(record_id)
        rows.append(vector)
    if list(obj["nucleotide"]) != ids:
        raise InputError(path, "-", "'nucleotide' id list does not match the ids of 'data'", fix)
    if not ids:
        raise InputError(path, "-", "no vectors in file", "remove this chunk or regenerate its DNABERT-S file")
    return DnabertChunk(ids, torch.stack(rows))


