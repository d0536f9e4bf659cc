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

from ..defaults import HOST_PREFIXES, label_for_prefix
from ..errors import InputError

SAMPLESHEET_COLUMNS = ("id", "label", "protein_fasta", "dnabert_embeddings")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
PROTEIN_DIR_SUFFIX = ".identified_protein"
NUCLEOTIDE_DIR_SUFFIX = ".identified_nucleotide"
CHUNK_FASTA = re.compile(r"^(output_\d+)\.fa$")


@dataclass
class EarlierStage:
    """A prefix that starts before the chunk files: from RefSeq genomes (one genome FASTA and the GenBank file
    that annotates it) or from unsplit identified FASTA."""

    prefix: str
    label: str
    stage: str                 # "genomes" or "unsplit"
    fasta: str = ""            # genomes
    genbank: str = ""
    protein: str = ""          # unsplit
    nucleotide: str = ""


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
    def from_tsv(cls, path) -> InputFiles:
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
EARLIER_COLUMNS = {"genomes": ("genome_fasta", "genbank"), "unsplit": ("identified_protein", "identified_nucleotide")}


def read_samplesheet(path, files: InputFiles, recompute_dnabert: bool = False
                     ) -> tuple[list[Chunk], list[EarlierStage], list[InputError]]:
    """Parse a samplesheet; relative paths are resolved against the samplesheet's folder.

    A row is one chunk (`protein_fasta` with `dnabert_embeddings`, or with `nucleotide_fasta` whose DNABERT-S
    file is computed where `dnabert_embeddings` is empty or with `recompute_dnabert`), or one earlier starting
    point: `genome_fasta` with `genbank` (RefSeq genomes), or `identified_protein` with `identified_nucleotide`
    (unsplit identified FASTA). For those, `group` is the prefix of the chunks made (default: the file's own
    prefix, `viral.1.1` of viral.1.1.genomic.fna.gz).
    """
    chunks, earlier, errors = _read_samplesheet(path, files, recompute_dnabert)
    return chunks, earlier, errors


def _read_samplesheet(path, files: InputFiles, recompute_dnabert: bool):
    from .genome_checks import GENOME_FASTA_SUFFIX, IDENTIFIED_SUFFIX

    path = normal(path)
    earlier: list[EarlierStage] = []
    if not files.is_file(path):
        return [], [], [InputError(path, "-", "samplesheet not found", "check --input")]
    try:
        text = files.local(path).read_text(encoding="utf-8-sig")  # -sig: spreadsheets often save a byte-order mark
    except UnicodeDecodeError as exc:
        return [], [], [InputError(path, f"byte {exc.start}", "not a text CSV file (binary or non-UTF-8 content)",
                                   "save the samplesheet as a UTF-8 CSV")]
    chunks, errors, seen = [], [], {}
    strict = csv.reader(io.StringIO(text, newline=""), strict=True)
    row_start = 1
    try:
        for _ in strict:
            row_start = strict.line_num + 1
    except csv.Error as exc:  # the quoting is broken in the row that starts on row_start
        return [], [], [InputError(path, f"line {row_start}", f"not valid CSV ({exc})",
                                   "close the quoted field or remove the stray '\"'")]
    folder = PurePath(path).parent
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        starts_earlier = any(EARLIER_COLUMNS[stage][0] in columns for stage in EARLIER_COLUMNS)
        required = [c for c in SAMPLESHEET_COLUMNS
                    if (c != "dnabert_embeddings" or "nucleotide_fasta" not in columns)
                    and (not starts_earlier or c in ("id", "label") or "protein_fasta" in columns)]
        missing = [c for c in required if c not in columns]
        if missing:
            return [], [], [InputError(path, "line 1", f"missing column(s) {', '.join(missing)}",
                                       f"the header must be {','.join(SAMPLESHEET_COLUMNS)}[,group][,nucleotide_fasta] "
                                       "(or id,label with genome_fasta,genbank or identified_protein,"
                                       "identified_nucleotide)")]
        for lineno, row in enumerate(reader, start=2):
            where = f"line {lineno}"
            if None in row:
                errors.append(InputError(path, where, f"{len(columns) + len(row[None])} fields, the header has "
                                         f"{len(columns)}", "quote fields that contain commas, or fix the header"))
                continue
            row = {k: (v or "").strip() for k, v in row.items()}
            stage = next((name for name, (first, _) in EARLIER_COLUMNS.items()
                          if row.get(first) and not row.get("protein_fasta")), None)
            default_group = row["label"]
            if stage is not None:
                named = PurePath(row[EARLIER_COLUMNS[stage][0]]).name
                match = (GENOME_FASTA_SUFFIX if stage == "genomes" else IDENTIFIED_SUFFIX).match(named)
                default_group = match["prefix"] if match else row["label"]
            label, group = row["label"], row.get("group") or default_group
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
            if stage is not None:
                located, ok = {}, True
                for column in EARLIER_COLUMNS[stage]:
                    value = row.get(column, "")
                    file = normal(folder / value) if value else None
                    if file is None or not files.is_file(file):
                        errors.append(InputError(path, where, f"{column} {value!r} does not exist"
                                                 + (f" (resolved to {file})" if file else ""),
                                                 "fix the path; relative paths are resolved against the "
                                                 "samplesheet's folder"))
                        ok = False
                    located[column] = file or ""
                if ok and stage == "genomes":
                    earlier.append(EarlierStage(group, label, stage, fasta=located["genome_fasta"],
                                                genbank=located["genbank"]))
                elif ok:
                    earlier.append(EarlierStage(group, label, stage, protein=located["identified_protein"],
                                                nucleotide=located["identified_nucleotide"]))
                continue
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
    if not chunks and not earlier and not errors:
        errors.append(InputError(path, "-", "samplesheet has no rows", "add one row per chunk"))
    return chunks, earlier, errors


# ----------------------------------------------------------------------------------------------
# A VirNucPro data/ folder
# ----------------------------------------------------------------------------------------------
def discover_data_dir(data_dir, files: InputFiles, recompute_dnabert: bool = False
                      ) -> tuple[list[Chunk], list[EarlierStage], list[InputError]]:
    """The chunks of a VirNucPro data/ folder, and the prefixes that start earlier, each prefix from its most
    advanced stage: chunk folders, else unsplit identified FASTA, else RefSeq genomes.

    Chunks: `<prefix>.identified_protein/output_<n>.fa` with their DNABERT-S files; a chunk whose DNABERT-S file
    is missing but whose reads `<prefix>.identified_nucleotide/output_<n>.fa` exist (every chunk with reads, with
    `recompute_dnabert`) is marked for EMBED_DNA to compute. Unsplit: `<prefix>.identified_protein.fa` with
    `<prefix>.identified_nucleotide.fa`. Genomes: `<base>.<k>.genomic.fna[.gz]` with `<base>.genomic.gbff[.gz]`,
    prefix `<base>.<k>`.
    """
    from .genome_checks import GENOME_FASTA_SUFFIX, IDENTIFIED_SUFFIX, expected_genbank, genbank_for

    data_dir = normal(data_dir)
    if files.staged is None and not Path(data_dir).is_dir():  # staged: the Nextflow head has checked it
        return [], [], [InputError(data_dir, "-", "--data_dir is not a directory", "give VirNucPro's data/ folder")]
    chunks, errors = [], []
    protein_fastas: dict[str, list[str]] = {}
    top: dict[str, str] = {}
    for origin in files.under(data_dir):
        relative = PurePath(origin).relative_to(data_dir)
        if len(relative.parts) == 2 and relative.parts[0].endswith(PROTEIN_DIR_SUFFIX):
            protein_fastas.setdefault(relative.parts[0], []).append(origin)
        elif len(relative.parts) == 1:
            top[relative.parts[0]] = origin
    chunk_prefixes = set()
    for folder in sorted(protein_fastas):
        prefix = folder[: -len(PROTEIN_DIR_SUFFIX)]
        protein_dir = f"{data_dir}/{folder}"
        label = label_for_prefix(prefix)
        if label is None:
            errors.append(unknown_prefix_error(protein_dir, prefix))
            continue
        nucleotide_dir = f"{data_dir}/{prefix}{NUCLEOTIDE_DIR_SUFFIX}"
        for fasta in sorted(protein_fastas[folder], key=_chunk_sort_key):
            match = CHUNK_FASTA.match(PurePath(fasta).name)
            if not match:
                continue
            chunk_prefixes.add(prefix)
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

    earlier: list[EarlierStage] = []
    unsplit: dict[str, dict[str, str]] = {}
    for name, origin in sorted(top.items()):
        if (match := IDENTIFIED_SUFFIX.match(name)) and match["prefix"] not in chunk_prefixes:
            unsplit.setdefault(match["prefix"], {})[match["side"]] = origin
    for prefix, sides in sorted(unsplit.items()):
        label = label_for_prefix(prefix)
        if label is None:
            errors.append(unknown_prefix_error(next(iter(sides.values())), prefix))
            continue
        missing = {"protein", "nucleotide"} - set(sides)
        if missing:
            side = missing.pop()
            given = next(iter(sides.values()))
            errors.append(InputError(given, "-", f"no {prefix}.identified_{side}.fa beside it",
                                     f"add {data_dir}/{prefix}.identified_{side}.fa (make_train_dataset writes both)"))
            continue
        earlier.append(EarlierStage(prefix, label, "unsplit", protein=sides["protein"], nucleotide=sides["nucleotide"]))
    started = chunk_prefixes | {e.prefix for e in earlier}
    genbanks = [name for name in top if name.endswith((".genomic.gbff", ".genomic.gbff.gz"))]
    for name, origin in sorted(top.items()):
        match = GENOME_FASTA_SUFFIX.match(name)
        if not match or match["prefix"] in started:
            continue
        prefix = match["prefix"]
        label = label_for_prefix(prefix)
        if label is None:
            errors.append(unknown_prefix_error(origin, prefix))
            continue
        genbank = genbank_for(name, genbanks)
        if genbank is None:
            expected = f"{data_dir}/{expected_genbank(name)}"
            errors.append(InputError(origin, "-", f"genome FASTA with no GenBank file to pair with (expected {expected})",
                                     f"download {expected_genbank(name)} from the same RefSeq release into {data_dir}"))
            continue
        earlier.append(EarlierStage(prefix, label, "genomes", fasta=origin, genbank=top[genbank]))
    if not chunks and not earlier and not errors:
        errors.append(InputError(data_dir, "-", f"no <prefix>{PROTEIN_DIR_SUFFIX}/output_<n>.fa chunks, identified "
                                 "FASTA or RefSeq genomes found", "point --data_dir at VirNucPro's data/ folder"))
    return chunks, earlier, errors


def unknown_prefix_error(file, prefix: str) -> InputError:
    return InputError(file, "-", f"unknown category prefix {prefix!r}",
                      "name it viral* or vertebrate*/protozoa*/plant*/invertebrate*/fungi*/bacteria*/archaea*, or "
                      "list the chunks in a samplesheet with --input")


def _chunk_sort_key(path: str):
    name = PurePath(path).name
    numbers = re.findall(r"\d+", name)
    return (int(numbers[-1]) if numbers else -1, name)


def host_category(group: str) -> str:
    """The host category a group (a RefSeq prefix) belongs to: the HOST_PREFIXES name it starts with, else itself."""
    return next((name for name in HOST_PREFIXES if group.startswith(name)), group)


def balance_hosts(chunks: list[Chunk], seed: int) -> list[Chunk]:
    """VirNucPro's host sampling: ceil(n_viral/7) files per host category, then down to n_viral.

    A category is one of the seven host names (`HOST_PREFIXES`: vertebrate_mammalian and vertebrate_other are one),
    pooling all its prefixes (bacteria.1.1, bacteria.2.1, ...), as VirNucPro pools files by name; a group named
    otherwise (a samplesheet's) is its own category. Files are sampled in one fixed order (category, group, chunk
    number), so the same data and --seed pick the same files whichever way they were listed.
    """
    viral = [c for c in chunks if c.label == "viral"]
    hosts = sorted((c for c in chunks if c.label == "host"), key=lambda c: (c.group, _chunk_sort_key(c.key), c.key))
    rng = random.Random(seed)
    per_category = math.ceil(len(viral) / 7)
    picked = []
    for category in sorted({host_category(c.group) for c in hosts}):
        category_files = [c for c in hosts if host_category(c.group) == category]
        picked += rng.sample(category_files, min(per_category, len(category_files)))
    if len(picked) > len(viral):
        picked = rng.sample(picked, len(viral))
    kept = {c.key for c in picked}
    return viral + [c for c in chunks if c.label == "host" and c.key in kept]
