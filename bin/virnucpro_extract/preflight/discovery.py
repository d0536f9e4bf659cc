"""Which chunks a run has: from a samplesheet or a VirNucPro `data/` folder, and VirNucPro's host sampling.

Files are found and read through `InputFiles`: under Nextflow, only the copies staged into the PREFLIGHT task
(so it works with inputs on object storage, or in a container that mounts only staged files), each known by
the path the user gave; run on its own, the files themselves.
"""
from __future__ import annotations

import csv
import io
import math
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path, PurePath

from ..defaults import label_for_prefix
from ..errors import InputError

SAMPLESHEET_COLUMNS = ("id", "label", "protein_fasta", "dnabert_embeddings")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
PROTEIN_DIR_SUFFIX = ".identified_protein"
NUCLEOTIDE_DIR_SUFFIX = ".identified_nucleotide"
CHUNK_FASTA = re.compile(r"^(output_\d+)\.fa$")


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


class InputFiles:
    """Where each input is read. `staged` maps the path a user knows a file by (absolute, normalised) to the
    copy staged for this task; without it the paths are read as they are."""

    def __init__(self, staged: dict[str, Path] | None = None):
        self.staged = staged

    @classmethod
    def from_tsv(cls, path) -> "InputFiles":
        """Nextflow's list: one `<staged path><TAB><user's path>` line per staged file."""
        staged = {}
        for line in Path(path).read_text().splitlines():
            if "\t" in line:
                local, origin = line.split("\t", 1)
                staged[normal(origin)] = Path(local)
        return cls(staged)

    def local(self, origin) -> Path:
        """The path to read for `origin` (its staged copy, or itself)."""
        if self.staged is None:
            return Path(origin)
        return self.staged.get(normal(origin), Path(origin))

    def is_file(self, origin) -> bool:
        if self.staged is None:
            return Path(origin).is_file()
        return normal(origin) in self.staged

    def is_dir(self, folder) -> bool:
        if self.staged is None:
            return Path(folder).is_dir()
        prefix = normal(folder).rstrip("/") + "/"
        return any(origin.startswith(prefix) for origin in self.staged)

    def under(self, folder) -> list[str]:
        """Every file below `folder` (the user's paths, sorted)."""
        if self.staged is None:
            return sorted(str(p) for p in Path(folder).rglob("*") if p.is_file())
        prefix = normal(folder).rstrip("/") + "/"
        return sorted(origin for origin in self.staged if origin.startswith(prefix))


def normal(path) -> str:
    """A path as one string for comparisons: absolute and lexically normalised (no symlinks followed)."""
    text = str(path)
    if "://" in text:
        return text
    return os.path.normpath(os.path.abspath(text))


# ----------------------------------------------------------------------------------------------
# Samplesheet
# ----------------------------------------------------------------------------------------------
def read_samplesheet(path, files: InputFiles, recompute_dnabert: bool = False) -> tuple[list[Chunk], list[InputError]]:
    """Parse a samplesheet; relative paths are resolved against the samplesheet's folder.

    An optional `nucleotide_fasta` column names the reads of a chunk: where `dnabert_embeddings` is
    empty (or `recompute_dnabert`), its DNABERT-S file is computed from them.
    """
    path = normal(path)
    if not files.is_file(path):
        return [], [InputError(path, "-", "samplesheet not found", "check --input")]
    try:
        text = files.local(path).read_text(encoding="utf-8-sig")  # -sig: spreadsheets often save a byte-order mark
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
    folder = PurePath(path).parent
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
            located = {}
            compute = bool(row.get("nucleotide_fasta")) and (recompute_dnabert or not row.get("dnabert_embeddings"))
            file_columns = ("protein_fasta", "nucleotide_fasta" if compute else "dnabert_embeddings")
            for column in file_columns + (("nucleotide_fasta",) if row.get("nucleotide_fasta") and not compute else ()):
                value = row.get(column, "")
                file = normal(folder / value) if value else None
                if file is None or not files.is_file(file):
                    errors.append(InputError(path, where, f"{column} {value!r} does not exist"
                                             + (f" (resolved to {file})" if file else ""),
                                             "fix the path; relative paths are resolved against the samplesheet's folder"))
                located[column] = file or ""
            chunks.append(Chunk(row["id"], group, label, located["protein_fasta"], located.get("dnabert_embeddings", ""),
                                located.get("nucleotide_fasta", ""), compute))
    if not chunks and not errors:
        errors.append(InputError(path, "-", "samplesheet has no rows", "add one row per chunk"))
    return chunks, errors


# ----------------------------------------------------------------------------------------------
# A VirNucPro data/ folder
# ----------------------------------------------------------------------------------------------
def discover_data_dir(data_dir, files: InputFiles, recompute_dnabert: bool = False) -> tuple[list[Chunk], list[InputError]]:
    """Find `<prefix>.identified_protein/output_<n>.fa` chunks and their DNABERT-S files.

    A chunk whose DNABERT-S file is missing but whose reads `<prefix>.identified_nucleotide/output_<n>.fa`
    exist (every chunk with reads, with `recompute_dnabert`) is marked for EMBED_DNA to compute.
    """
    data_dir = normal(data_dir)
    if files.staged is None and not Path(data_dir).is_dir():  # staged: the Nextflow head has checked it
        return [], [InputError(data_dir, "-", "--data_dir is not a directory", "give VirNucPro's data/ folder")]
    chunks, errors = [], []
    protein_fastas: dict[str, list[str]] = {}
    for origin in files.under(data_dir):
        relative = PurePath(origin).relative_to(data_dir)
        if len(relative.parts) == 2 and relative.parts[0].endswith(PROTEIN_DIR_SUFFIX):
            protein_fastas.setdefault(relative.parts[0], []).append(origin)
    for folder in sorted(protein_fastas):
        prefix = folder[: -len(PROTEIN_DIR_SUFFIX)]
        protein_dir = f"{data_dir}/{folder}"
        label = label_for_prefix(prefix)
        if label is None:
            errors.append(InputError(protein_dir, "-", f"unknown category prefix {prefix!r}",
                                     "name it viral* or vertebrate*/protozoa*/plant*/invertebrate*/fungi*/"
                                     "bacteria*/archaea*, or list the chunks in a samplesheet with --input"))
            continue
        nucleotide_dir = f"{data_dir}/{prefix}{NUCLEOTIDE_DIR_SUFFIX}"
        for fasta in sorted(protein_fastas[folder], key=_chunk_sort_key):
            match = CHUNK_FASTA.match(PurePath(fasta).name)
            if not match:
                continue
            dnabert = f"{nucleotide_dir}/{match.group(1)}_DNABERT_S.pt"
            reads = f"{nucleotide_dir}/{match.group(1)}.fa"
            compute = files.is_file(reads) and (recompute_dnabert or not files.is_file(dnabert))
            if not files.is_file(dnabert) and not compute:
                # still listed: --balance_hosts may drop the chunk, and with it this error
                errors.append(InputError(fasta, match.group(1), f"no DNABERT-S file (expected {dnabert})",
                                         f"add the chunk's reads as {reads} (the pipeline then computes it), "
                                         "run VirNucPro's DNABERT-S step for this chunk or remove the chunk"))
            chunks.append(Chunk(match.group(1), prefix, label, fasta, "" if compute else dnabert,
                                reads if files.is_file(reads) else "", compute))
    if not chunks and not errors:
        errors.append(InputError(data_dir, "-", f"no <prefix>{PROTEIN_DIR_SUFFIX}/output_<n>.fa chunks found",
                                 "point --data_dir at VirNucPro's data/ folder"))
    return chunks, errors


def _chunk_sort_key(path: str):
    name = PurePath(path).name
    numbers = re.findall(r"\d+", name)
    return (int(numbers[-1]) if numbers else -1, name)


def balance_hosts(chunks: list[Chunk], seed: int) -> list[Chunk]:
    """VirNucPro's host sampling: ceil(n_viral/7) files per host category, then down to n_viral."""
    viral = [c for c in chunks if c.label == "viral"]
    rng = random.Random(seed)
    per_category = math.ceil(len(viral) / 7)
    picked = []
    for group in sorted({c.group for c in chunks if c.label == "host"}):
        group_files = [c for c in chunks if c.group == group]
        picked += rng.sample(group_files, min(per_category, len(group_files)))
    if len(picked) > len(viral):
        picked = rng.sample(picked, len(viral))
    kept = {c.key for c in picked}
    return viral + [c for c in chunks if c.label == "host" and c.key in kept]
