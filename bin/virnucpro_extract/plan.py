"""`plan`: the chunks a run embeds, once every chunk exists (those given, and those split from identified FASTA or
made from genomes): VirNucPro's rule that only full split files are used (short ones counted and listed), its host
sampling across chunks of every origin, and the task groups of --chunks_per_task chunks."""
from __future__ import annotations

from .preflight.discovery import Chunk, balance_hosts


def plan_chunks(rows: list[dict], balance: bool, seed: int, keep_partial_files: bool, per_task: int) -> dict:
    """rows: one per chunk (key, id, group, label, origin 'given' or 'split', full 'true'/'false', proteins).

    Returns {"groups": {key: task group}, "not_embedded": [short files left out], "balanced_out": [...]}.
    """
    not_embedded = [r for r in rows if r.get("origin") == "split" and r.get("full") != "true" and not keep_partial_files]
    kept = [r for r in rows if r not in not_embedded]
    balanced_out = []
    if balance:
        chunks = [Chunk(r["id"], r["group"], r["label"], r["key"], "") for r in kept]
        sampled = {c.key for c in balance_hosts(chunks, seed)}
        balanced_out = [r for r in kept if r["key"] not in sampled]
        kept = [r for r in kept if r["key"] in sampled]
    kept = sorted(kept, key=lambda r: r["key"])
    for index, row in enumerate(kept):
        row["task_group"] = index // per_task
    groups = {row["key"]: row["task_group"] for row in kept}
    short = lambda r: {"key": r["key"], "group": r["group"], "records": int(r.get("proteins") or 0)}  # noqa: E731
    return {"groups": groups, "rows": kept, "not_embedded": [short(r) for r in not_embedded],
            "records_not_embedded": sum(int(r.get("proteins") or 0) for r in not_embedded),
            "balanced_out": [r["key"] for r in balanced_out]}
