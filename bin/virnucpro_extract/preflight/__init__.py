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
from .discovery import EarlierStage, InputFiles, balance_hosts, discover_data_dir, read_samplesheet
from .genome_checks import check_genbank, check_genome_fasta, check_unsplit
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
        chunks, earlier, errors = read_samplesheet(params["input"], files, recompute)
    else:
        chunks, earlier, errors = discover_data_dir(params["data_dir"], files, recompute)
    esm_model = str(params.get("esm_model") or "")
    dnabert_model = str(params.get("dnabert_model") or DEFAULT_DNABERT_MODEL)
    if not discover_only:
        errors += check_model(esm_model, launch_dir=launch_dir, staged=model_dirs.get("esm_model"))
    discovered = len(chunks)
    # VirNucPro samples host files as found: with earlier-stage prefixes their chunk files exist only later, so
    # the sampling waits for them (the plan step); with chunks alone it happens here, and only the sampled
    # files must be complete.
    balanced_here = bool(params.get("balance_hosts")) and not earlier
    if balanced_here:
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
    jobs, warnings = [], []
    if not discover_only:
        jobs, earlier_errors, warnings = check_earlier(earlier, files, workers)
        errors += earlier_errors
    else:
        jobs = [dict(_job_base(stage), shard=1, shards=1, first=0, last=None, genbank_reader="scan")
                for stage in earlier]
    for line in warnings:
        print(line, file=sys.stderr)
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
               "balanced_here": balanced_here,
               "prefixes": prefix_stages(rows, earlier),
               "identify_jobs": [j for j in jobs if j["stage"] == "genomes"],
               "split_jobs": [j for j in jobs if j["stage"] == "unsplit"],
               "warnings": warnings,
               "chunks": rows}
    write_json(outdir / "preflight.json", summary)
    return summary


def _job_base(stage: EarlierStage) -> dict:
    return {"prefix": stage.prefix, "label": stage.label, "stage": stage.stage, "fasta": stage.fasta,
            "genbank": stage.genbank, "protein": stage.protein, "nucleotide": stage.nucleotide}


def _check_file(args):
    kind, origin, local, extra = args
    if kind == "genbank":
        return check_genbank(origin, local)
    if kind == "fasta":
        return check_genome_fasta(origin, local)
    return check_unsplit(origin, extra[0], local, extra[1])


def check_earlier(earlier: list[EarlierStage], files: InputFiles, workers: int = 1):
    """Read every genome and unsplit file to its end (in `workers` processes); the tasks they give: one
    identification task per shard of each genome FASTA, one split task per unsplit prefix; warnings for FASTA
    records the GenBank file lacks and GenBank records without CDS translations."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    work = {}
    for stage in earlier:
        if stage.stage == "genomes":
            work[("genbank", stage.genbank)] = ("genbank", stage.genbank, files.local(stage.genbank), None)
            work[("fasta", stage.fasta)] = ("fasta", stage.fasta, files.local(stage.fasta), None)
        else:
            work[("unsplit", stage.protein)] = ("unsplit", stage.protein, files.local(stage.protein),
                                                (stage.nucleotide, files.local(stage.nucleotide)))
    keys = list(work)
    if workers > 1 and len(keys) > 1:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = dict(zip(keys, pool.map(_check_file, [work[k] for k in keys])))
    else:
        results = {k: _check_file(work[k]) for k in keys}
    errors = [e for _, found in results.values() for e in found]
    jobs, warnings, slow_genbanks = [], [], set()
    for stage in earlier:
        base = _job_base(stage)
        if stage.stage == "unsplit":
            summary, _ = results[("unsplit", stage.protein)]
            if summary is not None:
                jobs.append({**base, "records": summary.records})
            continue
        genbank, _ = results[("genbank", stage.genbank)]
        fasta, _ = results[("fasta", stage.fasta)]
        if genbank is None or fasta is None:
            continue
        if genbank.scan_differs_at is not None and stage.genbank not in slow_genbanks:
            slow_genbanks.add(stage.genbank)
            warnings.append(f"warning: {stage.genbank}: {genbank.scan_differs_at}: laid out otherwise than NCBI "
                            "writes GenBank files (the fast scan reads its CDS translations otherwise than Biopython "
                            "does), so it is identified with Biopython: the same output, more slowly")
        absent = [i for i in fasta.ids if i.split("_chunk_")[0] not in genbank.cds_per_record]
        without = [i for i in fasta.ids if genbank.cds_per_record.get(i.split("_chunk_")[0]) == 0]
        if absent:
            warnings.append(f"warning: {stage.fasta}: {len(absent)} of {len(fasta.ids)} record(s) not in {stage.genbank} "
                            f"(e.g. {absent[0]}): VirNucPro keeps no frame of them")
        if without:
            warnings.append(f"warning: {stage.genbank}: {len(without)} record(s) of {stage.fasta} have no CDS translation "
                            f"(e.g. {without[0]}): VirNucPro keeps no frame of them")
        shards = fasta.shards()
        for number, (first, last) in enumerate(shards, start=1):
            jobs.append({**base, "shard": number, "shards": len(shards), "first": first, "last": last,
                         "genbank_reader": genbank.genbank_reader,
                         "records": last - first, "bases": sum(fasta.lengths[first:last]),
                         "records_not_in_genbank": len(absent), "records_without_cds": len(without)})
    return jobs, errors, warnings


def prefix_stages(rows: list[dict], earlier: list[EarlierStage]) -> list[dict]:
    """Each prefix with the stage it starts from: chunks (as given), unsplit (split here) or genomes."""
    stages = {row["group"]: {"prefix": row["group"], "label": row["label"], "stage": "chunks"} for row in rows}
    for stage in earlier:
        stages[stage.prefix] = {"prefix": stage.prefix, "label": stage.label, "stage": stage.stage}
    return sorted(stages.values(), key=lambda s: s["prefix"])
