"""`split`: VirNucPro's split_fasta_file: an identified protein FASTA and its nucleotide FASTA cut into consecutive
files of `sequences_per_file` records, `<prefix>.identified_{protein,nucleotide}/output_<n>.fa`, lines copied as
they are. The last file may be short; VirNucPro embeds only full files, and so does the pipeline unless
--keep_partial_files: the short file's records are counted and listed, never dropped silently.

Several input files per side (the shards of one genome FASTA, in order) are split as if they were one. One chunk
file pair is held in memory at a time, and each is written atomically.
"""
from __future__ import annotations

from pathlib import Path

from .errors import InputError
from .files import write_text

PAIRING_FIX = ("give the two identified FASTA files of one run of VirNucPro's make_train_dataset (the same ids, in "
               "the same order)")


def records(paths: list):
    """(id, the record's lines as they are, file, line of its header) of each record of the files, in order."""
    for path in paths:
        lines, start = None, 0
        with open(path, encoding="ascii", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if line.startswith(">"):
                    if lines is not None:
                        yield _record_id(lines[0]), lines, path, start
                    lines, start = [line], number
                elif lines is not None:
                    lines.append(line if line.endswith("\n") else line + "\n")
        if lines is not None:
            yield _record_id(lines[0]), lines, path, start


def _record_id(header: str) -> str:
    words = header[1:].split(None, 1)
    return words[0] if words else ""


def split_identified(prefix: str, proteins: list, nucleotides: list, outdir, per_file: int, max_length: int,
                     shown: dict | None = None) -> list[dict]:
    """Write the chunk files of one prefix; return one row per chunk file (records, full or short, residues).

    The two sides must hold the same ids in the same order (VirNucPro writes them so): a difference is an error
    naming the record. `shown` maps a staged path to the path a user knows it by, for messages.
    """
    shown = shown or {}
    outdir = Path(outdir)
    rows, protein_lines, nucleotide_lines = [], [], []
    row = None

    def flush():
        n = len(rows) + 1
        write_text(outdir / f"{prefix}.identified_protein" / f"output_{n}.fa", "".join(protein_lines))
        write_text(outdir / f"{prefix}.identified_nucleotide" / f"output_{n}.fa", "".join(nucleotide_lines))
        rows.append({**row, "id": f"output_{n}", "full": row["proteins"] == per_file})
        protein_lines.clear()
        nucleotide_lines.clear()

    partners = records(nucleotides)
    for record_id, lines, path, line in records(proteins):
        partner = next(partners, None)
        if partner is None or partner[0] != record_id:
            there = f"has {partner[0]!r} there" if partner else "has no record there"
            raise InputError(shown.get(str(path), path), f"record {record_id} (line {line})",
                             f"the nucleotide FASTA {there}", PAIRING_FIX)
        if row is None:
            row = {"prefix": prefix, "proteins": 0, "truncated": 0, "max_residues": 0}
        protein_lines += lines
        nucleotide_lines += partner[1]
        residues = len("".join(x.strip() for x in lines[1:]).rstrip("*"))   # as embed counts: the stop is no residue
        row["proteins"] += 1
        row["truncated"] += residues > max_length
        row["max_residues"] = max(row["max_residues"], residues)
        if row["proteins"] == per_file:
            flush()
            row = None
    extra = next(partners, None)
    if extra is not None:
        raise InputError(shown.get(str(extra[2]), extra[2]), f"record {extra[0]} (line {extra[3]})",
                         "the protein FASTA has no record there", PAIRING_FIX)
    if row is not None:
        flush()
    return rows


def concatenate(paths: list, target) -> None:
    """The shards of one identified FASTA, in order, as one file (written atomically)."""
    from .files import atomic_path

    with atomic_path(target) as tmp, open(tmp, "wb") as out:
        for path in paths:
            with open(path, "rb") as handle:
                while block := handle.read(1 << 20):
                    out.write(block)
