"""`preflight`: check every parameter and input file before the GPU is touched.

Discovers the chunks (samplesheet or VirNucPro `data/` layout), validates parameters against
`nextflow_schema.json`, reads every protein FASTA and DNABERT-S file, checks the model
directory, and writes the chunk manifest (`chunks.csv`) the rest of the pipeline runs on.
Every bad file is reported in one go, one contract line each.
"""
from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
import os
import random
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from .models import model_path
from .util import (DNABERT_DIM, ESM_DIM, InputError, InputErrors, label_for_prefix, load_dnabert, read_nucleotides,
                   read_proteins, write_json, write_text)

SAMPLESHEET_COLUMNS = ("id", "label", "protein_fasta", "dnabert_embeddings")
DEFAULT_DNABERT_MODEL = "zhihan1996/DNABERT-S"
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
PROTEIN_DIR_SUFFIX = ".identified_protein"
NUCLEOTIDE_DIR_SUFFIX = ".identified_nucleotide"
CHUNK_FASTA = re.compile(r"^(output_\d+)\.fa$")
MANIFEST_COLUMNS = ("key", "id", "group", "label", "protein_fasta", "dnabert_embeddings", "task_group",
                    "proteins", "truncated", "max_residues", "nucleotide_fasta", "compute_dnabert")


@dataclass
class Chunk:
    id: str
    group: str
    label: str
    protein_fasta: str
    dnabert_embeddings: str
    nucleotide_fasta: str = ""
    compute_dnabert: bool = False  # EMBED_DNA computes the DNABERT-S file from nucleotide_fasta

    @property
    def key(self) -> str:
        return f"{self.group}/{self.id}"


# ----------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------
def validate_params(params: dict, schema_path, source: str = "params") -> list[InputError]:
    """Check params against nextflow_schema.json (types, enums, ranges) and the cross-field rules."""
    import jsonschema

    schema = json.loads(Path(schema_path).read_text())
    flat = {"type": "object", "properties": {}}
    for definition in schema.get("$defs", schema.get("definitions", {})).values():
        flat["properties"].update(definition.get("properties", {}))
    flat["properties"].update(schema.get("properties", {}))
    given = {k: v for k, v in params.items() if v is not None}  # null: not given, the default applies
    for name, value in given.items():
        # Nextflow types command-line values itself: `--slurm_queue 1` arrives as the number 1
        if type(value) in (int, float) and flat["properties"].get(name, {}).get("type") == "string":
            given[name] = str(value)
    errors = []
    validator = jsonschema.Draft7Validator(flat)
    for problem in sorted(validator.iter_errors(given), key=lambda e: list(e.path)):
        name = ".".join(str(p) for p in problem.path) or "-"
        expected = flat["properties"].get(name, {})
        hint = f"give --{name} as {expected.get('type', 'the documented type')}"
        if "enum" in expected:
            hint = f"use one of {', '.join(map(str, expected['enum']))}"
        elif problem.validator in ("minimum", "maximum"):
            bounds = [f"at least {expected['minimum']}" if "minimum" in expected else "",
                      f"at most {expected['maximum']}" if "maximum" in expected else ""]
            hint = f"give --{name} {' and '.join(b for b in bounds if b)}"
        errors.append(InputError(source, f"--{name}", f"invalid value {problem.instance!r} ({problem.message})", hint))
    return errors + input_choice_errors(params, source)


def input_choice_errors(params: dict, source: str = "params") -> list[InputError]:
    """Exactly one of --input / --data_dir, with or without a schema to check types against."""
    has_input, has_data_dir = bool(params.get("input")), bool(params.get("data_dir"))
    if has_input == has_data_dir:
        return [InputError(source, "--input/--data_dir", "both given" if has_input else "neither given",
                           "give exactly one of --input <samplesheet.csv> or --data_dir <VirNucPro data/>")]
    return []


# ----------------------------------------------------------------------------------------------
# Discovery
# ----------------------------------------------------------------------------------------------
def read_samplesheet(path, recompute_dnabert: bool = False) -> tuple[list[Chunk], list[InputError]]:
    """Parse a samplesheet; relative paths are resolved against the samplesheet's folder.

    An optional `nucleotide_fasta` column names the reads of a chunk: where `dnabert_embeddings` is
    empty (or `recompute_dnabert`), its DNABERT-S file is computed from them.
    """
    path = Path(path).resolve()
    if not path.is_file():
        return [], [InputError(path, "-", "samplesheet not found", "check --input")]
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets often save a byte-order mark
    except UnicodeDecodeError as exc:
        return [], [InputError(path, f"byte {exc.start}", "not a text CSV file (binary or non-UTF-8 content)",
                               "save the samplesheet as a UTF-8 CSV")]
    chunks, errors, seen = [], [], {}
    strict = csv.reader(io.StringIO(text, newline=""), strict=True)
    row_start = 1
    try:
        for _ in strict:
            row_start = strict.line_num + 1
    except csv.Error as exc:  # the quoting is broken in the row that starts on row_start
        return [], [InputError(path, f"line {row_start}", f"not valid CSV ({exc})",
                               "close the quoted field or remove the stray '\"'")]
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        required = [c for c in SAMPLESHEET_COLUMNS if c != "dnabert_embeddings" or "nucleotide_fasta" not in columns]
        missing = [c for c in required if c not in columns]
        if missing:
            return [], [InputError(path, "line 1", f"missing column(s) {', '.join(missing)}",
                                   f"the header must be {','.join(SAMPLESHEET_COLUMNS)}[,group][,nucleotide_fasta]")]
        for lineno, row in enumerate(reader, start=2):
            where = f"line {lineno}"
            if None in row:
                errors.append(InputError(path, where, f"{len(columns) + len(row[None])} fields, the header has "
                                         f"{len(columns)}", "quote fields that contain commas, or fix the header"))
                continue
            row = {k: (v or "").strip() for k, v in row.items()}
            label, group = row["label"], row.get("group") or row["label"]
            if label not in ("viral", "host"):
                errors.append(InputError(path, where, f"unknown label {label!r}", "use 'viral' or 'host'"))
                continue
            bad_name = next((n for n in (row["id"], group) if not SAFE_NAME.match(n)), None)
            if bad_name is not None:
                errors.append(InputError(path, where, f"id/group {bad_name!r} is empty or not a safe file name",
                                         "use letters, digits, '.', '_' and '-' only"))
                continue
            key = f"{group}/{row['id']}"
            if key in seen:
                errors.append(InputError(path, where, f"duplicate id {row['id']!r} in group {group!r} "
                                         f"(first at line {seen[key]})", "give every chunk a unique id"))
                continue
            seen[key] = lineno
            files = {}
            compute = bool(row.get("nucleotide_fasta")) and (recompute_dnabert or not row.get("dnabert_embeddings"))
            file_columns = ("protein_fasta", "nucleotide_fasta" if compute else "dnabert_embeddings")
            for column in file_columns + (("nucleotide_fasta",) if row.get("nucleotide_fasta") and not compute else ()):
                row.setdefault(column, "")
                file = Path(row[column]) if row[column] else None
                if file is not None and not file.is_absolute():
                    file = path.parent / file
                if file is None or not file.is_file():
                    errors.append(InputError(path, where, f"{column} {row[column]!r} does not exist"
                                             + (f" (resolved to {file})" if file else ""),
                                             "fix the path; relative paths are resolved against the samplesheet's folder"))
                files[column] = str(file.resolve()) if file else ""
            chunks.append(Chunk(row["id"], group, label, files["protein_fasta"], files.get("dnabert_embeddings", ""),
                                files.get("nucleotide_fasta", ""), compute))
    if not chunks and not errors:
        errors.append(InputError(path, "-", "samplesheet has no rows", "add one row per chunk"))
    return chunks, errors


def discover_data_dir(data_dir, recompute_dnabert: bool = False) -> tuple[list[Chunk], list[InputError]]:
    """Find `<prefix>.identified_protein/output_<n>.fa` chunks and their DNABERT-S files.

    A chunk whose DNABERT-S file is missing but whose reads `<prefix>.identified_nucleotide/output_<n>.fa`
    exist (every chunk with reads, with `recompute_dnabert`) is marked for EMBED_DNA to compute.
    """
    data_dir = Path(data_dir).resolve()
    if not data_dir.is_dir():
        return [], [InputError(data_dir, "-", "--data_dir is not a directory", "give VirNucPro's data/ folder")]
    chunks, errors = [], []
    for protein_dir in sorted(data_dir.glob(f"*{PROTEIN_DIR_SUFFIX}")):
        prefix = protein_dir.name[: -len(PROTEIN_DIR_SUFFIX)]
        label = label_for_prefix(prefix)
        if label is None:
            errors.append(InputError(protein_dir, "-", f"unknown category prefix {prefix!r}",
                                     "name it viral* or vertebrate*/protozoa*/plant*/invertebrate*/fungi*/"
                                     "bacteria*/archaea*, or list the chunks in a samplesheet with --input"))
            continue
        nucleotide_dir = data_dir / f"{prefix}{NUCLEOTIDE_DIR_SUFFIX}"
        for fasta in sorted(protein_dir.iterdir(), key=_chunk_sort_key):
            match = CHUNK_FASTA.match(fasta.name)
            if not match:
                continue
            dnabert = nucleotide_dir / f"{match.group(1)}_DNABERT_S.pt"
            reads = nucleotide_dir / f"{match.group(1)}.fa"
            compute = reads.is_file() and (recompute_dnabert or not dnabert.is_file())
            if not dnabert.is_file() and not compute:
                # still listed: --balance_hosts may drop the chunk, and with it this error
                errors.append(InputError(fasta, match.group(1), f"no DNABERT-S file (expected {dnabert})",
                                         f"add the chunk's reads as {reads} (the pipeline then computes it), "
                                         "run VirNucPro's DNABERT-S step for this chunk or remove the chunk"))
            chunks.append(Chunk(match.group(1), prefix, label, str(fasta), "" if compute else str(dnabert),
                                str(reads) if reads.is_file() else "", compute))
    if not chunks and not errors:
        errors.append(InputError(data_dir, "-", f"no <prefix>{PROTEIN_DIR_SUFFIX}/output_<n>.fa chunks found",
                                 "point --data_dir at VirNucPro's data/ folder"))
    return chunks, errors


def _chunk_sort_key(path: Path):
    numbers = re.findall(r"\d+", path.name)
    return (int(numbers[-1]) if numbers else -1, path.name)


def balance_hosts(chunks: list[Chunk], seed: int) -> list[Chunk]:
    """VirNucPro's host sampling: ceil(n_viral/7) files per host category, then down to n_viral."""
    viral = [c for c in chunks if c.label == "viral"]
    rng = random.Random(seed)
    per_category = math.ceil(len(viral) / 7)
    picked = []
    for group in sorted({c.group for c in chunks if c.label == "host"}):
        files = [c for c in chunks if c.group == group]
        picked += rng.sample(files, min(per_category, len(files)))
    if len(picked) > len(viral):
        picked = rng.sample(picked, len(viral))
    kept = {c.key for c in picked}
    return viral + [c for c in chunks if c.label == "host" and c.key in kept]


# ----------------------------------------------------------------------------------------------
# Per-chunk checks
# ----------------------------------------------------------------------------------------------
def check_chunk(chunk: Chunk, max_length: int, allow_missing: bool) -> dict:
    """Read both files of a chunk; return its counts, or raise InputError(s) for what is wrong."""
    errors, proteins, dnabert = [], None, None
    try:
        ids, seqs = read_proteins(chunk.protein_fasta)
        proteins = dict(zip(ids, seqs))
    except InputError as exc:
        errors.append(exc)
    dna_ids, dna_file, dna_side = None, chunk.dnabert_embeddings, "DNABERT-S file"
    try:
        if chunk.compute_dnabert:
            dna_file, dna_side = chunk.nucleotide_fasta, "nucleotide FASTA"
            dna_ids = read_nucleotides(chunk.nucleotide_fasta)[0]
        else:
            dna_ids = load_dnabert(chunk.dnabert_embeddings).ids
    except InputError as exc:
        errors.append(exc)
    if proteins is not None and dna_ids is not None and not allow_missing:
        dna_set = set(dna_ids)
        only_protein = [i for i in proteins if i not in dna_set]
        only_dna = [i for i in dna_ids if i not in proteins]
        for side, missing, other in (("protein FASTA", only_protein, dna_file),
                                     (dna_side, only_dna, chunk.protein_fasta)):
            if missing:
                example = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
                errors.append(InputError(other, f"record {missing[0]}",
                                         f"{len(missing)} id(s) of the {side} missing here ({example})",
                                         "fix the chunk files, or pass --allow_missing to drop and count them"))
    if errors:
        raise InputErrors(errors)
    lengths = [len(s) for s in proteins.values()]
    return {"proteins": len(lengths), "truncated": sum(n > max_length for n in lengths),
            "max_residues": max(lengths)}


def _check_chunk_star(args):
    try:
        return check_chunk(*args), None
    except InputErrors as exc:
        return None, exc.errors


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
def check_model(model: str, source: str = "--esm_model", hidden_size: int = ESM_DIM,
                fix: str = "use a FastESM2_650 / ESM-2 650M model (hidden size 1280)",
                launch_dir: Path = Path(".")) -> list[InputError]:
    """A local model directory must exist and produce `hidden_size`-wide hidden states."""
    local = model_path(model, launch_dir)
    if local is None:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
        if not isinstance(cached, str):
            if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
                return [InputError(source, model, "model not in the Hugging Face cache and HF_HUB_OFFLINE is set",
                                   "pre-fetch it on a node with internet (virnucpro-extract fetch-model) "
                                   "or give a local directory")]
            return []
        config_path = Path(cached)
    else:
        config_path = local / "config.json"
    if not config_path.is_file():
        return [InputError(local or model, "config.json", "model directory missing or has no config.json",
                           "give a directory saved with save_pretrained, or a hub id")]
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return [InputError(config_path, f"line {getattr(exc, 'lineno', '-')}",
                           f"not valid JSON ({getattr(exc, 'msg', type(exc).__name__)})",
                           "restore the model's config.json (save_pretrained writes it)")]
    missing_packages = model_code_errors(config_path.parent, config)
    if missing_packages:
        return missing_packages
    hidden = config.get("hidden_size")
    if hidden != hidden_size:
        return [InputError(config_path, "hidden_size", f"model hidden size is {hidden}, the features need {hidden_size}",
                           fix)]
    return []


def model_code_errors(model_dir: Path, config: dict) -> list[InputError]:
    """A model's own code (config `auto_map`, e.g. DNABERT-S's bert_layers.py) importing packages that are
    not installed: found here rather than when the GPU task loads it. Files not present locally are left
    to the download."""
    import importlib.util

    from transformers.dynamic_module_utils import get_imports

    references = [r for value in (config.get("auto_map") or {}).values()
                  for r in (value if isinstance(value, list) else [value]) if isinstance(r, str)]
    pending = sorted({r.split("--")[-1].split(".")[0] for r in references})
    seen, errors = set(), []
    while pending:
        module = pending.pop()
        code = model_dir / f"{module}.py"
        if module in seen or not code.is_file():
            continue
        seen.add(module)
        missing = sorted(name for name in get_imports(code) if importlib.util.find_spec(name) is None)
        if missing:
            errors.append(InputError(code, "import", f"the model's own code needs {', '.join(missing)}, not installed",
                                     f"pip install {' '.join(missing)} in the pipeline's environment (the "
                                     "container image has what DNABERT-S needs)"))
        text = code.read_text(errors="replace")
        pending += re.findall(r"^\s*from\s+\.(\w+)\s+import", text, re.M)
    return errors


# ----------------------------------------------------------------------------------------------
# Entry
# ----------------------------------------------------------------------------------------------
def write_manifest(path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: str(r[c]).lower() if isinstance(r[c], bool) else r[c] for c in MANIFEST_COLUMNS} for r in rows)
    write_text(path, buffer.getvalue())


def read_manifest(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def unknown_params(params: dict, schema_path) -> list[str]:
    """Names given on the command line that the schema does not know (typos, usually)."""
    schema = json.loads(Path(schema_path).read_text())
    known = {name for d in schema.get("definitions", {}).values() for name in d.get("properties", {})}
    return sorted(k for k in params if k not in known and "-" not in k and k.lower() == k)


def model_fingerprint(model: str) -> str:
    """Content key of a local model directory (file names, sizes, mtimes); the id itself for hub models.

    Passed to EMBED_PROTEINS so `-resume` recomputes embeddings when the weights change in place.
    """
    import hashlib

    path = Path(model).expanduser()
    if not path.is_dir():
        return model
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return f"{path.resolve()}@{digest.hexdigest()[:16]}"


def check_publish_mode(params: dict, work_dir: Path) -> list[InputError]:
    """Hard links (the atomic default publish mode) cannot cross file systems: say so before any GPU work.

    Compared from the task's work directory to the nearest existing folder of --outdir; skipped when
    that folder is not visible here (inside a container that does not mount it).
    """
    if (params.get("publish_dir_mode") or "link") != "link" or not params.get("outdir"):
        return []
    target = Path(str(params["outdir"])).expanduser().absolute()
    while not target.exists() and target != target.parent:
        target = target.parent
    if target == target.parent:
        return []
    if os.stat(target).st_dev == os.stat(work_dir).st_dev:
        return []
    return [InputError(params["outdir"], "--publish_dir_mode link",
                       f"outdir ({target}) is on another file system than the work directory ({work_dir}), "
                       "so outputs cannot be published as hard links",
                       "pass --publish_dir_mode copy, or put -work-dir on the file system of --outdir")]


def run_preflight(params: dict, outdir, schema=None, workers: int = 1, discover_only: bool = False,
                  launch_dir: Path = Path(".")) -> dict:
    """Validate everything; write `chunks.csv` and `preflight.json` into outdir or raise InputErrors.

    `discover_only` (the pipeline's stub run) lists the chunks without reading them; relative model paths
    are taken from `launch_dir`.
    """
    import sys

    outdir = Path(outdir)
    errors = validate_params(params, schema) if schema else input_choice_errors(params)
    if errors:
        raise InputErrors(errors)
    for name in unknown_params(params, schema) if schema else []:
        print(f"warning: --{name} is not a parameter of this pipeline (ignored); see --help", file=sys.stderr)
    recompute = bool(params.get("recompute_dnabert", False))
    if params.get("input"):
        chunks, errors = read_samplesheet(params["input"], recompute)
    else:
        chunks, errors = discover_data_dir(params["data_dir"], recompute)
    if not discover_only:
        errors += check_model(str(params.get("esm_model") or ""), launch_dir=launch_dir)
        errors += check_publish_mode(params, Path.cwd())
    discovered = len(chunks)
    if params.get("balance_hosts"):
        sampled = balance_hosts(chunks, int(params.get("seed", 42)))
        # VirNucPro samples host files as found; only the sampled ones must be complete
        dropped = {c.protein_fasta for c in chunks} - {c.protein_fasta for c in sampled}
        chunks, errors = sampled, [e for e in errors if e.file not in dropped]
    if not discover_only and any(c.compute_dnabert for c in chunks):
        errors += check_model(str(params.get("dnabert_model") or DEFAULT_DNABERT_MODEL), "--dnabert_model",
                              DNABERT_DIM, "use DNABERT-S (zhihan1996/DNABERT-S, hidden size 768)", launch_dir)
    checkable = [c for c in chunks if Path(c.protein_fasta).is_file()
                 and Path(c.nucleotide_fasta if c.compute_dnabert else c.dnabert_embeddings).is_file()]
    max_length, allow_missing = int(params.get("max_length", 1022)), bool(params.get("allow_missing", False))
    jobs = [(c, max_length, allow_missing) for c in checkable]
    if discover_only:
        results = [({"proteins": 0, "truncated": 0, "max_residues": 0}, None) for _ in jobs]
    elif workers > 1 and len(jobs) > 1:
        # spawn, not fork: forking a process that already ran torch can hang its workers
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_check_chunk_star, jobs))
    else:
        results = [_check_chunk_star(job) for job in jobs]
    rows = []
    for chunk, (counts, chunk_errors) in zip(checkable, results):
        if chunk_errors:
            errors += chunk_errors
        else:
            rows.append({"key": chunk.key, **asdict(chunk), **counts})
    if errors:
        raise InputErrors(errors)
    per_task = int(params.get("chunks_per_task") or 128)
    for index, row in enumerate(sorted(rows, key=lambda r: r["key"])):
        row["task_group"] = index // per_task
    write_manifest(outdir / "chunks.csv", rows)
    summary = {"chunks_discovered": discovered, "chunks_selected": len(rows),
               "proteins": sum(r["proteins"] for r in rows), "truncated": sum(r["truncated"] for r in rows),
               "max_length": max_length, "balance_hosts": bool(params.get("balance_hosts")),
               "model_fingerprint": model_fingerprint(str(params.get("esm_model") or "")),
               "dnabert_chunks_to_compute": sum(bool(r["compute_dnabert"]) for r in rows),
               "dnabert_model_fingerprint": model_fingerprint(str(params.get("dnabert_model") or DEFAULT_DNABERT_MODEL)),
               "chunks": rows}
    write_json(outdir / "preflight.json", summary)
    return summary
