"""What is inside each chunk's files: proteins readable and within the alphabet, DNABERT-S vectors (or reads)
present for the same ids, and no protein id in two chunks of one run (a copied chunk would give duplicated
training rows). Every bad file is reported in one go."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from ..errors import InputError, InputErrors, no_common_id
from ..fasta import check_protein, read_checked, read_nucleotides
from ..formats import read_dnabert
from .discovery import Chunk, InputFiles

DUPLICATES_LISTED = 5


def _named(origin: str, files: InputFiles, read):
    """`read(local path)`, with errors naming the user's file instead of the task's staged copy."""
    local = files.local(origin)
    try:
        return read(local)
    except InputError as exc:
        if exc.file == str(local):
            exc.file = origin
        raise


def check_chunk(chunk: Chunk, max_length: int, allow_missing: bool, files: InputFiles) -> dict:
    """Read both files of a chunk; return its counts and its protein ids with their lines, or raise InputErrors."""
    errors, proteins, dna_ids = [], None, None
    try:
        records = _named(chunk.protein_fasta, files, lambda path: read_checked(path, check_protein, "protein"))
        proteins = {r.id: r.sequence for r in records}
    except InputError as exc:
        errors.append(exc)
    dna_file, dna_side = chunk.dnabert_embeddings, "DNABERT-S file"
    try:
        if chunk.compute_dnabert:
            dna_file, dna_side = chunk.nucleotide_fasta, "nucleotide FASTA"
            dna_ids = _named(chunk.nucleotide_fasta, files, read_nucleotides)[0]
        else:
            dna_ids = _named(chunk.dnabert_embeddings, files, read_dnabert).ids
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
    if proteins and dna_ids and allow_missing and not any(i in proteins for i in dna_ids):
        errors.append(no_common_id(dna_file, dna_side, dna_ids[0]))
    if errors:
        raise InputErrors(errors)
    lengths = [len(s) for s in proteins.values()]
    return {"proteins": len(lengths), "truncated": sum(n > max_length for n in lengths), "max_residues": max(lengths),
            "id_lines": [(r.id, r.line) for r in records]}


def _check_chunk_star(args):
    try:
        return check_chunk(*args), None
    except InputErrors as exc:
        return None, exc.errors


def check_chunks(chunks: list[Chunk], max_length: int, allow_missing: bool, files: InputFiles,
                 workers: int = 1) -> list[tuple[dict | None, list[InputError] | None]]:
    """(counts, None) or (None, errors) for each chunk, in order; `workers` processes read them."""
    jobs = [(c, max_length, allow_missing, files) for c in chunks]
    if workers > 1 and len(jobs) > 1:
        # spawn, not fork: forking a process that already ran torch can hang its workers
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(_check_chunk_star, jobs))
    return [_check_chunk_star(job) for job in jobs]


def duplicate_id_errors(chunks: list[Chunk], id_lines: list[list[tuple[str, int]]]) -> list[InputError]:
    """Protein ids found in more than one chunk: one line each for the first few, then one line for the rest."""
    first_seen: dict[str, tuple[str, int]] = {}
    duplicates = []
    for chunk, ids in zip(chunks, id_lines):
        for record_id, line in ids:
            if record_id in first_seen:
                duplicates.append((chunk.protein_fasta, record_id, line, *first_seen[record_id]))
            else:
                first_seen[record_id] = (chunk.protein_fasta, line)
    fix = ("every protein id must be unique across the run's chunks (the same record twice gives duplicated training "
           "rows): remove the copied chunk, or rename its records")
    errors = [InputError(file, f"record {record_id} (line {line})", f"id also in {other} (line {other_line})", fix)
              for file, record_id, line, other, other_line in duplicates[:DUPLICATES_LISTED]]
    if len(duplicates) > DUPLICATES_LISTED:
        rest = duplicates[DUPLICATES_LISTED:]
        files = sorted({d[0] for d in rest} | {d[3] for d in rest})
        errors.append(InputError(rest[0][0], "-", f"{len(rest)} more id(s) found in more than one chunk (in "
                                 f"{', '.join(files[:4])}{' ...' if len(files) > 4 else ''})", fix))
    return errors
