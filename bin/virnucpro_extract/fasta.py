"""The one FASTA reader, and the checks of protein and nucleotide records."""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

PROTEIN_ALPHABET = frozenset("ACDEFGHIKLMNPQRSTVWYXBZUO")
NUCLEOTIDE_ALPHABET = frozenset("ACGTN")


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
        raise InputError(path, "-", "file not found", "check the path in the samplesheet or --data_dir") from None
    header, header_line, parts = None, 0, []
    with handle:
        for lineno, raw_bytes in enumerate(handle, start=1):
            try:
                line = raw_bytes.decode("ascii").strip()
            except UnicodeDecodeError as exc:
                raise InputError(path, f"line {lineno}, byte {exc.start + 1}", "not a FASTA file (binary or "
                                 "non-ASCII content)", "give a plain-text FASTA") from None
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
    if not sequence:   # '*' alone: no residue to embed (an all-zero or NaN row otherwise)
        raise InputError(path, where, "record has no residues, only a stop codon '*'",
                         "remove the record (VirNucPro's translation step never writes an empty frame)")
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


def read_checked(path, check, what: str = "protein") -> list[FastaRecord]:
    """Read a FASTA and check each record with `check`: records (sequence as `check` returns it) in file order,
    ids unique."""
    records, seen = [], {}
    for record in read_fasta(path):
        if record.id in seen:
            raise InputError(path, f"record {record.id} (line {record.line})",
                             f"duplicate id (first at line {seen[record.id]})", f"make every {what} id unique")
        seen[record.id] = record.line
        records.append(FastaRecord(record.id, check(path, record), record.line))
    return records


def read_sequences(path, check, what: str = "protein") -> tuple[list[str], list[str]]:
    """(ids, sequences) of `read_checked`."""
    records = read_checked(path, check, what)
    return [r.id for r in records], [r.sequence for r in records]


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
