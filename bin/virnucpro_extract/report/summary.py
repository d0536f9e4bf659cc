"""The report's summary: everything report.html shows, as plain data (dicts, lists, str, numbers, bools).

The page is a rendering of this and nothing else, so what the report says can be tested without reading
markup, and numbers stay numbers until the template formats them.

Inputs are the small JSON documents the pipeline already writes (validation.json, preflight.json,
each EMBED_PROTEINS task's `*.embed.json`, each MERGE_FEATURES task's `*.merge.json`, params) plus
validate's feature sample (`.pt`). Nextflow's trace is written only when the run ends, after this
report, so throughput comes from the embed tasks' own statistics instead.
"""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import platform
import re
from collections import Counter, defaultdict
from pathlib import Path

PACKAGES = ("torch", "transformers", "tokenizers", "safetensors", "huggingface_hub", "numpy", "click", "jsonschema",
            "biopython", "jinja2")
MAX_LISTED = 500  # dropped ids / failures listed in full up to this many; the JSON files hold them all
MAX_POINTS = 3000  # PCA points drawn
MAX_BARS = 40  # EMBED_PROTEINS tasks drawn one bar pair each; more become a histogram
THROUGHPUT_SERIES = ("whole task", "after model load")


# ----------------------------------------------------------------------------------------------
# Reading and combining the pipeline's documents
# ----------------------------------------------------------------------------------------------
def package_versions() -> dict:
    """This interpreter's versions of the packages that shape the outputs (where no versions.yml is given)."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def combine_validations(documents: list[dict]) -> dict:
    """One validation document from those of the task groups: every check and chunk, passed only if all did."""
    checks = [c for d in documents for c in d.get("checks", [])]
    failed = sum(not c["passed"] for c in checks)
    combined = {"passed": bool(documents) and all(d.get("passed") for d in documents) and bool(checks),
                "checks_run": len(checks), "checks_failed": failed, "checks": checks,
                "chunks": [c for d in documents for c in d.get("chunks", [])]}
    times = [d["_mtime"] for d in documents if "_mtime" in d]
    if times:  # when the last group's validation was written: the end of the run as far as the report knows
        combined["_mtime"] = max(times)
    return combined


def combine_samples(samples: list[dict]) -> dict:
    """One feature sample from the task groups' (a group may have written none)."""
    return {"chunks": [c for s in samples for c in (s or {}).get("chunks", [])]}


def merge_chunk_stats(documents: list[dict]) -> list[dict]:
    """Per-chunk merge statistics from merge tasks' files (`{"chunks": [...]}`; single-chunk files as they are)."""
    rows = []
    for document in documents:
        if isinstance(document.get("chunks"), list):
            rows += [{**chunk, **{k: v for k, v in document.items() if k.startswith("_")}} for chunk in document["chunks"]]
        else:
            rows.append(document)
    return rows


def read_versions(path) -> dict:
    """pipeline_info/versions.yml (nf-core's layout: `PROCESS:` then `    tool: version`) as {tool: version}; a
    tool seen with several versions lists them all."""
    found: dict[str, list[str]] = {}
    for line in Path(path).read_text().splitlines():
        if line.startswith((" ", "\t")) and ":" in line:
            tool, _, version = line.strip().partition(":")
            version = version.strip().strip("'\"")
            if version and version not in found.setdefault(tool.strip(), []):
                found[tool.strip()].append(version)
    return {tool: ", ".join(versions) for tool, versions in sorted(found.items())}


def starting_points(preflight: dict, identify_stats: list[dict], split_stats: list[dict], plan: dict) -> list[dict]:
    """One row per prefix: the stage it started from (chunks as given, unsplit identified FASTA, RefSeq genomes)
    and what each stage gave: genome files, records, reads, reads dropped for ambiguous bases, frames kept, chunk
    files full and short, and the records of short files that were not embedded."""
    rows = {p["prefix"]: {"prefix": p["prefix"], "label": p["label"], "stage": p["stage"], "genome_files": 0,
                          "records": None, "reads": None, "reads_ambiguous": None, "frames_kept": None,
                          "records_not_in_genbank": 0, "records_without_cds": 0, "chunk_files_full": None,
                          "chunk_files_short": None, "records_not_embedded": 0}
            for p in preflight.get("prefixes", [])}
    genome_files = defaultdict(set)
    for job in preflight.get("identify_jobs", []):
        genome_files[job["prefix"]].add(job["fasta"])
    for prefix, fastas in genome_files.items():
        if prefix in rows:
            rows[prefix]["genome_files"] = len(fastas)
    for stats in identify_stats:
        prefix = stats.get("prefix") or (stats.get("_name") or "").split(".shard_")[0]
        row = rows.get(prefix)
        if row is None:
            continue
        for key in ("records", "reads", "reads_ambiguous", "frames_kept"):
            row[key] = (row[key] or 0) + int(stats.get(key, 0))
        row["records_not_in_genbank"] += len(stats.get("records_without_genbank", []))
        row["records_without_cds"] += len(stats.get("records_without_cds", []))
    for stats in split_stats:
        row = rows.get(stats.get("prefix"))
        if row is not None:
            row["chunk_files_full"] = sum(bool(c.get("full")) for c in stats.get("chunks", []))
            row["chunk_files_short"] = sum(not c.get("full") for c in stats.get("chunks", []))
    for short in plan.get("not_embedded", []):
        if short["group"] in rows:
            rows[short["group"]]["records_not_embedded"] += int(short.get("records", 0))
    return [rows[k] for k in sorted(rows)]


def read_stats(path) -> dict:
    """A JSON statistics file with where it came from: `_name` (file name) and `_mtime` (when written, epoch s)."""
    path = Path(path)
    return {**json.loads(path.read_text()), "_name": path.name, "_mtime": path.stat().st_mtime}


# ----------------------------------------------------------------------------------------------
# The feature sample: projections and norms
# ----------------------------------------------------------------------------------------------
def pca_2d(sample: dict, max_points: int = MAX_POINTS) -> tuple[dict, list[float]]:
    """Project the sampled merged features [N, 2048] (centred, not scaled) onto their first two principal
    components; return ({label: [(pc1, pc2)]}, [variance explained by PC1, PC2])."""
    import torch

    rows, labels = [], []
    for chunk in sample.get("chunks", []):
        features = chunk.get("features")
        if features is not None and len(features):
            rows.append(features.float())
            labels += [chunk["label"]] * len(features)
    if not rows:
        return {}, []
    x = torch.cat(rows).double()
    finite = torch.isfinite(x).all(1)  # a failed validation may have NaN rows: they are shown in its table
    x, labels = x[finite], [label for label, ok in zip(labels, finite.tolist()) if ok]
    if len(x) < 3:
        return {}, []
    x = x - x.mean(0)
    v, s = top_components(x, 2)
    variance = (s ** 2) / (x ** 2).sum().clamp_min(1e-300)
    projected = (x @ v).tolist()
    keep = max(1, -(-len(projected) // max_points))
    points = defaultdict(list)
    for k, (label, point) in enumerate(zip(labels, projected)):
        if k % keep == 0:
            points[label].append((point[0], point[1] if len(point) > 1 else 0.0))
    return dict(sorted(points.items())), [float(v) for v in variance[:2]]


def top_components(x, k: int, oversample: int = 6, iterations: int = 10):
    """The top-k right singular vectors [d, k] and singular values [k] of a centred x [n, d], by subspace
    iteration (seeded, so a report is reproducible): a full SVD of [4000, 2048] takes over a minute on two
    CPU cores, this a second or two."""
    import torch

    width = min(k + oversample, *x.shape)
    basis = torch.randn(x.shape[1], width, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    for _ in range(iterations):
        basis, _ = torch.linalg.qr(x.T @ (x @ basis))
    _, s, vh = torch.linalg.svd(x @ basis, full_matrices=False)
    return basis @ vh.T[:, :k], s[:k]


def embedding_norms(sample: dict) -> tuple[dict, dict]:
    """L2 norms by label: (protein vectors from the ESM files, DNABERT-S halves of the merged rows)."""
    protein, dna = defaultdict(list), defaultdict(list)
    for chunk in sample.get("chunks", []):
        if chunk.get("protein_norms") is not None:
            protein[chunk["label"]] += [float(v) for v in chunk["protein_norms"]]
        features = chunk.get("features")
        if features is not None and len(features):
            dna[chunk["label"]] += features[:, :768].float().norm(dim=1).tolist()
    return dict(sorted(protein.items())), dict(sorted(dna.items()))


# ----------------------------------------------------------------------------------------------
# The tasks' statistics
# ----------------------------------------------------------------------------------------------
def task_name(stats: dict, index: int) -> str:
    """A task's name from its stats file (`embed_3.embed.json` -> `embed_3`), or its position where unnamed."""
    name = stats.get("_name") or stats.get("task") or ""
    for suffix in (".embed.json", ".json"):
        name = name.removesuffix(suffix)
    return name or f"task {index + 1}"


def chunk_key(stats: dict) -> str:
    """`<group>/<id>` of a merge statistics file named `<group>__<id>.merge.json` (groups may contain dots)."""
    if stats.get("key"):
        return stats["key"]
    name = (stats.get("_name") or "").removesuffix(".merge.json").removesuffix(".json")
    return name.replace("__", "/", 1)


def throughput(embed_stats: list[dict]) -> list[dict]:
    """Per EMBED_PROTEINS task: proteins, residues, seconds, and proteins/s with and without the model load."""
    tasks = []
    for k, s in enumerate(embed_stats):
        chunks = s.get("chunks") or []
        if not chunks:
            continue
        proteins = sum(c.get("proteins", 0) for c in chunks)
        total, load = float(s.get("total_seconds") or 0), float(s.get("load_seconds") or 0)
        tasks.append({"task": task_name(s, k), "chunks": len(chunks), "proteins": proteins,
                      "residues": sum(c.get("residues", 0) for c in chunks), "load_seconds": load,
                      "total_seconds": total, "per_second": proteins / max(total, 1e-9),
                      "per_second_embedding": proteins / max(total - load, 1e-9), "device": s.get("device", "-")})
    return sorted(tasks, key=lambda t: _natural(t["task"]))


def _natural(text: str) -> list:
    """Sort key putting embed_2 before embed_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def run_wall_seconds(preflight: dict, embed_stats: list[dict], validation: dict) -> float | None:
    """Seconds from the end of PREFLIGHT (or the first embed task's start) to validation.json, from file times.

    The report is written inside the run, before Nextflow knows the run's end: this is the run up to
    its last step. None when the times are not known (documents given without their files).
    """
    starts = [preflight["_mtime"]] if "_mtime" in preflight else []
    starts += [s["_mtime"] - float(s.get("total_seconds") or 0) for s in embed_stats if "_mtime" in s]
    end = validation.get("_mtime")
    if not starts or end is None or end < min(starts):
        return None
    return end - min(starts)


def _hashable(value):
    """Stats values as set members: lists (e.g. one device per worker) become their text."""
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def dna_rows(dna_stats: list[dict], preflight: dict, params: dict) -> dict | None:
    """What the model table's DNABERT-S rows show where EMBED_DNA computed it (model, card, reads/s); None
    where DNABERT-S was given as files."""
    tasks = [s for s in dna_stats if s.get("chunks")]
    if not tasks:
        return None
    reads = sum(c.get("reads", 0) for s in tasks for c in s["chunks"])
    total = sum(float(s.get("total_seconds") or 0) for s in tasks)
    load = sum(float(s.get("load_seconds") or 0) for s in tasks)
    configs = sorted({(s.get("config_hash"), s.get("precision"), s.get("device")) for s in tasks}, key=str)
    return {"model": params.get("dnabert_model") or tasks[0].get("model", "-"),
            "fingerprint": preflight.get("dnabert_model_fingerprint", "-"),
            "configs": [{"config_hash": h, "precision": p, "device": d} for h, p, d in configs],
            "tasks": len(tasks), "chunks": sum(len(s["chunks"]) for s in tasks), "reads": reads,
            "total_seconds": total, "load_seconds": load, "reads_per_second": reads / max(total - load, 1e-9)}


# ----------------------------------------------------------------------------------------------
# The summary, part by part
# ----------------------------------------------------------------------------------------------
def _group_rows(chunks: list[dict], preflight: dict, embed_stats: list[dict], merge_stats: list[dict]):
    """Per group: chunks, proteins, truncated proteins, dropped ids, merged rows; and every dropped id.

    Truncation counts come from PREFLIGHT (it read every FASTA) or else from the embed tasks.
    """
    group_label, per_group = {}, defaultdict(Counter)
    for c in chunks:
        group_label[c["group"]] = c["label"]
        per_group[c["group"]].update(chunks=1, proteins=c.get("proteins", 0), rows=c.get("rows", 0))
    embed_chunks = [c for s in embed_stats for c in s.get("chunks", [])]
    truncated_by_key = ({c["key"]: int(c.get("truncated", 0)) for c in preflight.get("chunks", [])}
                        or {c["key"]: int(c.get("truncated", 0)) for c in embed_chunks})
    group_of_key = {c["key"]: c["group"] for c in chunks}
    for key, n in truncated_by_key.items():
        if key in group_of_key:
            per_group[group_of_key[key]]["truncated"] += n
    dropped = []
    for m in merge_stats:
        key = chunk_key(m)
        dropped += [{"chunk": key, "id": i, "only_in": "dnabert"} for i in m.get("dropped_dnabert_only", [])]
        dropped += [{"chunk": key, "id": i, "only_in": "protein"} for i in m.get("dropped_protein_only", [])]
        if key in group_of_key:
            per_group[group_of_key[key]]["dropped"] += len(m.get("dropped_dnabert_only", [])) + len(
                m.get("dropped_protein_only", []))
    groups = [{"group": g, "label": group_label[g], **_counts(n)} for g, n in sorted(per_group.items())]
    return groups, dropped, sum(truncated_by_key.values())


def _counts(counts) -> dict:
    """A group's (or label's) counts, every one present: a group with nothing dropped shows 0, not a gap."""
    return {k: counts.get(k, 0) for k in ("chunks", "proteins", "truncated", "dropped", "rows")}


def _label_totals(groups: list[dict]) -> list[dict]:
    """The data table's footer: the groups' counts summed per label (viral before host)."""
    by_label = defaultdict(Counter)
    for g in groups:
        by_label[g["label"]].update(_counts(g))
    return [{"label": label, **_counts(n)} for label, n in sorted(by_label.items(), reverse=True)]


def _embed_configs(embed_stats: list[dict]) -> list[dict]:
    """Each distinct model set-up the embed tasks ran with (a run over several cards may have several)."""
    fields = ("config_hash", "precision", "device", "compiled", "token_budget")
    configs = sorted({tuple(_hashable(s.get(k)) for k in fields) for s in embed_stats if s.get("chunks")}, key=str)
    return [dict(zip(fields, config)) for config in configs]


def _stages(stages, not_embedded, preflight: dict, params: dict) -> dict | None:
    """The 'Starting points' block, shown only where some prefix started before the chunk files (genomes or
    unsplit FASTA): otherwise every row would just say "chunks"."""
    if not any(s["stage"] != "chunks" for s in stages):
        return None
    return {"rows": [dict(s) for s in stages],
            "not_embedded": [{"chunk": s["key"], "records": s["records"]} for s in not_embedded],
            "read_length": params.get("read_length", 300),
            "sequences_per_file": params.get("sequences_per_file", 10000),
            "keep_partial_files": bool(params.get("keep_partial_files"))}


def _plot_inputs(groups, chunks, sample, tasks, max_length: int, truncated: int) -> dict:
    """The series each picture draws; throughput as bars per task up to MAX_BARS tasks (more bars would not be
    readable), else as a histogram. Titles, axes and notes are the template's."""
    lengths = defaultdict(Counter)
    for c in chunks:
        lengths[c["label"]].update({int(k): v for k, v in c.get("length_counts", {}).items()})
    protein_norms, dna_norms = embedding_norms(sample)
    points, explained = pca_2d(sample)
    if len(tasks) <= MAX_BARS:
        whole, after_load = THROUGHPUT_SERIES
        speed = {"chart": "bars", "series": {t["task"]: {whole: round(t["per_second"], 1),
                                                         after_load: round(t["per_second_embedding"], 1)}
                                             for t in tasks}}
    else:
        speed = {"chart": "histogram", "series": {"tasks": [round(t["per_second"], 1) for t in tasks]}}
    return {"proteins_per_group": {"proteins": {g["group"]: g["proteins"] for g in groups},
                                   "labels": {g["group"]: g["label"] for g in groups}},
            "throughput": speed,
            "lengths": {"counts": {label: dict(n) for label, n in sorted(lengths.items())},
                        "max_length": max_length, "truncated": truncated},
            "protein_norms": protein_norms,
            "pca": {"points": {label: [list(p) for p in ps] for label, ps in points.items()},
                    "explained": explained, "rows": sum(len(p) for p in points.values())},
            "dna_norms": dna_norms}


def _validation(validation: dict) -> dict:
    """Each check with its chunks passed and failed and the files that failed it, the failures in full (up to
    MAX_LISTED), and the matrix of every check of every chunk (None where a check was not run)."""
    checks = validation.get("checks", [])
    failed = [c for c in checks if not c["passed"]]
    names = list(dict.fromkeys(c["check"] for c in checks))
    rows = []
    for number, name in enumerate(names, 1):
        runs = [c for c in checks if c["check"] == name]
        bad = [c for c in runs if not c["passed"]]
        rows.append({"number": number, "check": name, "passed": not bad, "chunks_passed": len(runs) - len(bad),
                     "chunks_failed": len(bad), "offending_files": sorted({c["file"] for c in bad})})
    result = {(c["chunk"], c["check"]): c["passed"] for c in checks}
    matrix_chunks = list(dict.fromkeys(c["chunk"] for c in checks))
    return {"passed": bool(validation.get("passed")),
            "checks_run": validation.get("checks_run", 0),
            "checks_passed": validation.get("checks_run", 0) - len(failed),
            "checks_failed": len(failed),
            "check_results": len(checks),
            "chunks": len(matrix_chunks),
            "checks": rows,
            "failures": [{k: c[k] for k in ("chunk", "check", "file", "detail", "fix")} for c in failed[:MAX_LISTED]],
            "matrix": [{"chunk": key, "results": [result.get((key, name)) for name in names]}
                       for key in matrix_chunks]}


def _cards(checks: dict, data: dict, wall: float | None, devices: list[str], tasks: int) -> dict:
    """The six numbers under the header, with the tone each card's top edge takes (ok, bad, warn or none)."""
    return {"validation": {"passed": checks["checks_passed"], "run": checks["checks_run"],
                           "tone": "ok" if checks["passed"] else "bad"},
            "proteins": {"proteins": data["proteins"], "chunks": data["chunks"], "groups": len(data["groups"]),
                         "tone": ""},
            "truncated": {"proteins": data["truncated"], "max_length": data["max_length"],
                          "tone": "warn" if data["truncated"] else ""},
            "dropped_ids": {"ids": data["dropped_count"], "allow_missing": data["allow_missing"],
                            "tone": "warn" if data["dropped_count"] else ""},
            "wall_time": {"seconds": wall, "tone": ""},
            "card": {"devices": devices, "embed_tasks": tasks, "tone": ""}}


def build_summary(validation: dict, sample: dict, preflight: dict, embed_stats: list[dict], merge_stats: list[dict],
                  params: dict, nextflow_version: str = "", generated_at: dt.datetime | None = None,
                  dna_stats: list[dict] = (), versions: dict | None = None, stages: list[dict] = (),
                  not_embedded: list[dict] = ()) -> dict:
    """Everything the report shows. Documents are the pipeline's JSON files as dicts (with `_name`/`_mtime` from
    `read_stats` where known); `sample` is validate's feature sample; `dna_stats` are EMBED_DNA's."""
    generated_at = generated_at or dt.datetime.now(dt.timezone.utc)
    chunks = validation.get("chunks", [])
    max_length = preflight.get("max_length", params.get("max_length", 1022))
    groups, dropped, truncated_sum = _group_rows(chunks, preflight, embed_stats, merge_stats)
    truncated = preflight.get("truncated", truncated_sum)
    tasks = throughput(embed_stats)
    configs = _embed_configs(embed_stats)
    wall = run_wall_seconds(preflight, embed_stats, validation)
    model = params.get("esm_model") or next((s.get("model") for s in embed_stats if s.get("model")), "-")
    checks = _validation(validation)
    data = {"proteins": sum(g["proteins"] for g in groups), "chunks": len(chunks), "max_length": max_length,
            "truncated": truncated, "allow_missing": bool(params.get("allow_missing")),
            "groups": groups, "totals": _label_totals(groups),
            "dropped": dropped[:MAX_LISTED], "dropped_count": len(dropped),
            "starting_points": _stages(stages, not_embedded, preflight, params),
            # PREFLIGHT's warnings (files without CDS, unknown parameters...), whatever the starting point
            "warnings": list(preflight.get("warnings", []))}
    run = {"software": {"Nextflow": nextflow_version or "-",
                        **(versions if versions is not None else package_versions())},
           "model": {"model": model, "fingerprint": preflight.get("model_fingerprint", "-"), "configs": configs,
                     "compile_decisions": sorted({s["compile_decision"] for s in embed_stats
                                                  if s.get("chunks") and s.get("compile_decision")}),
                     "dna": dna_rows(list(dna_stats), preflight, params)},
           "timing": {"wall_seconds": wall, "embed_tasks": len(tasks),
                      "embed_seconds": sum(t["total_seconds"] for t in tasks),
                      "load_seconds": sum(t["load_seconds"] for t in tasks)},
           "params": dict(sorted(params.items()))}
    devices = sorted({str(c["device"]) for c in configs}) or ["-"]
    return {"status": "PASSED" if checks["passed"] else "FAILED",
            "generated_at": generated_at.isoformat(),
            "model": model,
            "outdir": params.get("outdir", "-"),
            "cards": _cards(checks, data, wall, devices, len(tasks)),
            "run": run,
            "data": data,
            "plots": _plot_inputs(groups, chunks, sample, tasks, max_length, truncated),
            "embed_tasks": tasks,
            "validation": checks}
