"""`preflight`: check every parameter and input file before the GPU is touched.

Split by job: `params` (the schema), `discovery` (which chunks: samplesheet, data/ folder, host sampling),
`content` (what is inside each chunk's files, ids across chunks), `model_checks` (the models). This module
runs them in order and writes the chunk manifest (`chunks.csv`) the rest of the pipeline runs on, and
`preflight.json`. Every bad file is reported in one go, one contract line each.
"""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from ..defaults import DEFAULT_CHUNKS_PER_TASK, DEFAULT_DNABERT_MODEL, DEFAULT_MAX_LENGTH, DEFAULT_SEED, DNABERT_DIM
from ..errors import InputErrors
from ..files import write_json
from ..formats import write_manifest
from .content import check_chunks, duplicate_id_errors
from .discovery import InputFiles, balance_hosts, discover_data_dir, read_samplesheet
from .model_checks import check_model, model_fingerprint
from .params import input_choice_errors, unknown_params, validate_params

__all__ = ["InputFiles", "run_preflight"]


def run_preflight(params: dict, outdir, schema=None, workers: int = 1, discover_only: bool = False,
                  launch_dir: Path = Path("."), files: InputFiles | None = None,
                  model_dirs: dict[str, Path] | None = None) -> dict:
    """Validate everything; write `chunks.csv` and `preflight.json` into outdir or raise InputErrors.

    `files` says where inputs are read (staged copies under Nextflow); `model_dirs` holds the staged copies of
    local model directories ('esm_model', 'dnabert_model'). `discover_only` (the pipeline's stub run) lists
    the chunks without reading them; relative model paths are taken from `launch_dir`.
    """
    files = files or InputFiles()
    model_dirs = model_dirs or {}
    outdir = Path(outdir)
    errors = validate_params(params, schema) if schema else input_choice_errors(params)
    if errors:
        raise InputErrors(errors)
    for name in unknown_params(params, schema) if schema else []:
        print(f"warning: --{name} is not a parameter of this pipeline (ignored); see --help", file=sys.stderr)
    recompute = bool(params.get("recompute_dnabert", False))
    if params.get("input"):
        chunks, errors = read_samplesheet(params["input"], files, recompute)
    else:
        chunks, errors = discover_data_dir(params["data_dir"], files, recompute)
    esm_model = str(params.get("esm_model") or "")
    dnabert_model = str(params.get("dnabert_model") or DEFAULT_DNABERT_MODEL)
    if not discover_only:
        errors += check_model(esm_model, launch_dir=launch_dir, staged=model_dirs.get("esm_model"))
    discovered = len(chunks)
    if params.get("balance_hosts"):
        sampled = balance_hosts(chunks, int(params.get("seed", DEFAULT_SEED)))
        # VirNucPro samples host files as found; only the sampled ones must be complete
        dropped = {c.protein_fasta for c in chunks} - {c.protein_fasta for c in sampled}
        chunks, errors = sampled, [e for e in errors if e.file not in dropped]
    if not discover_only and any(c.compute_dnabert for c in chunks):
        errors += check_model(dnabert_model, "--dnabert_model", DNABERT_DIM,
                              "use DNABERT-S (zhihan1996/DNABERT-S, hidden size 768)", launch_dir,
                              model_dirs.get("dnabert_model"))
    checkable = [c for c in chunks if files.is_file(c.protein_fasta)
                 and files.is_file(c.nucleotide_fasta if c.compute_dnabert else c.dnabert_embeddings)]
    max_length = int(params.get("max_length") or DEFAULT_MAX_LENGTH)
    allow_missing = bool(params.get("allow_missing", False))
    if discover_only:
        results = [({"proteins": 0, "truncated": 0, "max_residues": 0, "id_lines": []}, None) for _ in checkable]
    else:
        results = check_chunks(checkable, max_length, allow_missing, files, workers)
    rows, checked, id_lines = [], [], []
    for chunk, (counts, chunk_errors) in zip(checkable, results):
        if chunk_errors:
            errors += chunk_errors
            continue
        id_lines.append(counts.pop("id_lines"))
        checked.append(chunk)
        rows.append({"key": chunk.key, **asdict(chunk), **counts})
    errors += duplicate_id_errors(checked, id_lines)
    if errors:
        raise InputErrors(errors)
    per_task = int(params.get("chunks_per_task") or DEFAULT_CHUNKS_PER_TASK)
    for index, row in enumerate(sorted(rows, key=lambda r: r["key"])):
        row["task_group"] = index // per_task
    write_manifest(outdir / "chunks.csv", rows)
    summary = {"chunks_discovered": discovered, "chunks_selected": len(rows),
               "proteins": sum(r["proteins"] for r in rows), "truncated": sum(r["truncated"] for r in rows),
               "max_length": max_length, "balance_hosts": bool(params.get("balance_hosts")),
               "model_fingerprint": model_fingerprint(model_dirs.get("esm_model") or esm_model),
               "dnabert_chunks_to_compute": sum(bool(r["compute_dnabert"]) for r in rows),
               "dnabert_model_fingerprint": model_fingerprint(model_dirs.get("dnabert_model") or dnabert_model),
               "chunks": rows}
    write_json(outdir / "preflight.json", summary)
    return summary
