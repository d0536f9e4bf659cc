"""Shared helpers: the one error type, FASTA reader, `.pt` loader and atomic writer.

Every subcommand goes through these, so a bad input reads the same wherever it is met
and no published file is ever half-written.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import re
import struct
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

DNABERT_DIM = 768
ESM_DIM = 1280
MERGED_DIM = DNABERT_DIM + ESM_DIM

VIRAL_PREFIXES = ("viral",)
HOST_PREFIXES = ("vertebrate", "protozoa", "plant", "invertebrate", "fungi", "bacteria", "archaea")
PROTEIN_ALPHABET = frozenset("ACDEFGHIKLMNPQRSTVWYXBZUO")
NUCLEOTIDE_ALPHABET = frozenset("ACGTN")


# Exit status of a failure that a retry with a smaller token budget may cure (sysexits' EX_TEMPFAIL);
# conf/base.config retries it. Rejected input exits 1, which is never retried.
EXIT_RETRY = 75


class InputError(Exception):
    """A rejected input, rendered as the contract's one line:
    `error: <file>: <record or line>: <what is wrong> — <how to fix it>`.

    `exit_status` is 1 for bad input; EXIT_RETRY for the few failures a retry can cure.
    """

    def __init__(self, file, where, problem, fix, exit_status: int = 1):
        self.file, self.where, self.problem, self.fix = str(file), str(where), problem, fix
        self.exit_status = exit_status
        super().__init__(str(self))

    def __str__(self):
        return f"error: {self.file}: {self.where}: {self.problem} — {self.fix}"

    @classmethod
    def from_line(cls, line: str, exit_status: int = 1) -> "InputError":
        """Parse a rendered line back (a worker process's error, passed on by its parent)."""
        body, _, fix = line.removeprefix("error: ").partition(" — ")
        file, where, problem = (body.split(": ", 2) + ["", ""])[:3]
        return cls(file, where, problem, fix, exit_status)

    def __reduce__(self):  # picklable: preflight's worker processes send their errors back
        return (type(self), (self.file, self.where, self.problem, self.fix, self.exit_status))


class InputErrors(Exception):
    """Several rejected inputs at once: preflight reports every bad file in one go."""

    def __init__(self, errors: list[InputError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))

    @property
    def exit_status(self) -> int:
        """EXIT_RETRY only when every error is retryable: a retry cannot cure bad input."""
        return EXIT_RETRY if all(e.exit_status == EXIT_RETRY for e in self.errors) else 1


def out_of_memory_error(exc: BaseException) -> InputError:
    """CUDA ran out of memory outside the batch splitting (model load, result copies): retryable."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else "CUDA out of memory"
    return InputError("GPU", "-", f"out of memory outside batch splitting ({first[:120]})",
                      "the pipeline retries the task with half the token budget; if it persists, free the GPU "
                      "or lower --toks_per_batch", EXIT_RETRY)


def label_for_prefix(prefix: str) -> str | None:
    """Map a VirNucPro category prefix (`viral.1.1`, `vertebrate_mammalian`, ...) to its label."""
    if prefix.startswith(VIRAL_PREFIXES):
        return "viral"
    if prefix.startswith(HOST_PREFIXES):
        return "host"
    return None


# ----------------------------------------------------------------------------------------------
# FASTA
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FastaRecord:
    id: str
    sequence: str
    line: int  # 1-based line of the header, for error messages


def read_fasta(path: str | os.PathLike) -> Iterator[FastaRecord]:
    """Yield the records of a FASTA file, raising `InputError` at the first malformed one.

    Our own reader rather than a lenient library parser: a file that is not FASTA, a header
    without an id or a record without sequence must name its line, not vanish silently.
    The id is the header up to the first whitespace, as VirNucPro's scripts use it.
    """
    path = Path(path)
    try:
        handle = open(path, "rb")  # decoded line by line, so a non-ASCII byte is reported with its line
    except FileNotFoundError:
        raise InputError(path, "-", "file not found", "check the path in the samplesheet or --data_dir")
    header, header_line, parts = None, 0, []
    with handle:
        for lineno, raw_bytes in enumerate(handle, start=1):
            try:
                line = raw_bytes.decode("ascii").strip()
            except UnicodeDecodeError as exc:
                raise InputError(path, f"line {lineno}, byte {exc.start + 1}", "not a FASTA file (binary or "
                                 "non-ASCII content)", "give a plain-text FASTA")
            if not line:
                continue
            if line.startswith(">"):
                if header is not None:
                    yield _finish_record(path, header, header_line, parts)
                header, header_line, parts = line[1:].strip(), lineno, []
            elif header is None:
                raise InputError(path, f"line {lineno}", "not a FASTA file (text before the first '>' header)",
                                 "give a FASTA file whose records start with '>id'")
            else:
                parts.append(line)
    if header is None:
        raise InputError(path, "-", "empty FASTA (no records)", "remove this chunk or regenerate its FASTA")
    yield _finish_record(path, header, header_line, parts)


def _finish_record(path: Path, header: str, line: int, parts: list[str]) -> FastaRecord:
    if not header.split():
        raise InputError(path, f"line {line}", "record has no id after '>'", "give every record an id")
    record_id = header.split()[0]
    sequence = "".join(parts)
    if not sequence:
        raise InputError(path, f"record {record_id} (line {line})", "record has no sequence",
                         "remove the record or add its sequence")
    return FastaRecord(record_id, sequence, line)


def check_protein(path, record: FastaRecord) -> str:
    """Return the upper-cased protein sequence, or raise for stops and letters ESM cannot read."""
    sequence = record.sequence.upper()
    where = f"record {record.id} (line {record.line})"
    stop = sequence.find("*")
    if stop != -1 and stop != len(sequence) - 1:
        raise InputError(path, where, f"stop codon '*' inside the protein at residue {stop + 1}",
                         "keep only frames without internal stops, as VirNucPro's translation step does")
    sequence = sequence.rstrip("*")
    bad = sorted(set(sequence) - PROTEIN_ALPHABET)
    if bad:
        raise InputError(path, where, f"invalid residue letter(s) {''.join(bad)!r}",
                         "use the 20 standard amino acids plus X, B, Z, U, O")
    return sequence


def check_nucleotide(path, record: FastaRecord) -> str:
    """Return the upper-cased read, or raise for letters other than A, C, G, T, N."""
    sequence = record.sequence.upper()
    bad = sorted(set(sequence) - NUCLEOTIDE_ALPHABET)
    if bad:
        raise InputError(path, f"record {record.id} (line {record.line})", f"invalid nucleotide letter(s) {''.join(bad)!r}",
                         "give DNA reads of A, C, G, T and N only (as VirNucPro's dataset scripts write them)")
    return sequence


def read_sequences(path, check, what: str = "protein") -> tuple[list[str], list[str]]:
    """Read a FASTA and check each record with `check`: (ids, sequences) in file order, ids unique."""
    ids, seqs, seen = [], [], {}
    for record in read_fasta(path):
        if record.id in seen:
            raise InputError(path, f"record {record.id} (line {record.line})",
                             f"duplicate id (first at line {seen[record.id]})", f"make every {what} id unique")
        seen[record.id] = record.line
        ids.append(record.id)
        seqs.append(check(path, record))
    return ids, seqs


def count_fasta(path) -> tuple[int, int]:
    """(records, sequence characters) of a FASTA file, counted without checking it: progress totals and the
    compile decision need them before the reader (which reports what is wrong) gets to the file."""
    records = letters = 0
    try:
        with open(path, "rb") as handle:
            for line in handle:
                if line.startswith(b">"):
                    records += 1
                else:
                    letters += len(line.strip())
    except OSError:
        pass  # the reader reports the missing file properly
    return records, letters


def read_proteins(path) -> tuple[list[str], list[str]]:
    """Read and check a protein FASTA: (ids, sequences) in file order, ids unique."""
    return read_sequences(path, check_protein, "protein")


def read_nucleotides(path) -> tuple[list[str], list[str]]:
    """Read and check a nucleotide FASTA (DNA reads): (ids, upper-cased sequences) in file order, ids unique."""
    return read_sequences(path, check_nucleotide, "read")


# ----------------------------------------------------------------------------------------------
# .pt files
# ----------------------------------------------------------------------------------------------
def load_pt(path):
    """Load a `.pt` file with `weights_only=True`: tensors and plain containers only.

    A file whose unpickling would need arbitrary classes (and so could run code) is rejected
    before any of it runs; truncated or corrupt files get the contract's error line.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise InputError(path, "-", "file not found", "check the path or rerun the step that writes it")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is long, multi-line and colour-coded; keep its one informative phrase.
        detail = re.search(r"WeightsUnpickler error:\s*(.*?)(?: was not an allowed global.*)?$", str(exc), re.M)
        reason = (detail.group(1).strip() if detail else "") or "unsupported content"
        if reason.startswith("Unsupported operand"):  # garbage bytes: unknown opcodes, not a payload
            raise damaged_pt_error(path) from None
        raise InputError(path, "-", f"unsafe or unsupported pickle content, not loaded ({reason})",
                         "re-save it with torch.save using only lists, dicts, strings and tensors")
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError,
            KeyError, IndexError, struct.error):  # the last three: garbage through the weights-only unpickler
        raise damaged_pt_error(path) from None


def damaged_pt_error(path: Path) -> InputError:
    """The error line for a `.pt` file torch cannot read, saying what the file looks like instead.

    torch's own exceptions (EOFError, BadZipFile, 'Unsupported operand 37') say nothing to a user; the
    first bytes tell an empty file, a cut-off archive, a compressed or a text file apart.
    """
    with open(path, "rb") as handle:
        head = handle.read(256)
    size = path.stat().st_size
    regenerate = "regenerate this file (the step that wrote it was interrupted or the copy is damaged)"
    if size == 0:
        return InputError(path, "-", "truncated or corrupt .pt file (empty: 0 bytes)", regenerate)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return InputError(path, "-", f"truncated or corrupt .pt file (a torch.save file cut off or damaged, "
                                     f"{size:,} bytes)", regenerate)
    if head.startswith(b"\x1f\x8b"):
        return InputError(path, "-", "truncated or corrupt .pt file (gzip-compressed, not a torch.save file)",
                          "decompress it with gunzip, or regenerate it")
    text = head.decode("ascii", errors="replace")
    if all(c.isprintable() or c.isspace() for c in text) and "\ufffd" not in text:
        first = (text.strip().splitlines() or [""])[0][:40]
        return InputError(path, "-", f"truncated or corrupt .pt file (text, not a torch.save file: starts {first!r})",
                          "give the .pt file that torch.save wrote, or regenerate it")
    return InputError(path, "-", f"truncated or corrupt .pt file (unknown binary content, {size:,} bytes)",
                      regenerate)


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


# ----------------------------------------------------------------------------------------------
# Atomic writes
# ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    Readers (and Nextflow's publisher) see the complete file or none, even if the process is
    killed mid-write: the temporary name is hidden and removed on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_pt(obj, path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=1, sort_keys=False, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
