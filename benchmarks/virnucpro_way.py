"""VirNucPro's way of making the identified FASTA, written here as its authors structure it (make_train_dataset_300.py
and units.py at 0f93f27; see shared/virnucpro-reference.md), for the benchmark to time against: the .gz files
decompressed to disk whole, the reads written to a chunk FASTA and read back as a list, the GenBank file parsed
into a dict of every record's CDS translations, each read translated codon by codon through a dict, and each
stop-free frame checked against every CDS of its record, one `in` per CDS. Not used by the pipeline.

Usage: python benchmarks/virnucpro_way.py GENOME.fna.gz GENBANK.gbff.gz OUTDIR [--read_length 300]
"""
from __future__ import annotations

import argparse
import gzip
import os
from pathlib import Path

from Bio import SeqIO

CODONS = {a + b + c: aa for (a, b, c), aa in zip(
    ((x, y, z) for x in "TCAG" for y in "TCAG" for z in "TCAG"),
    "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG")}
DROPPED = {"N", "R", "Y", "M", "K", "S", "W", "H", "B", "V", "D"}


def unzip_to_disk(source: Path, target: Path) -> Path:
    with gzip.open(source, "rt") as handle, open(target, "w") as out:
        out.write(handle.read())  # the whole file through memory, as the authors do
    return target


def cut_reads(fasta: Path, chunk_file: Path, size: int) -> None:
    with open(chunk_file, "w") as out:
        for record in SeqIO.parse(fasta, "fasta"):
            length = len(record.seq)
            count = -(-length // size)
            surplus = count * size - length
            low = int(surplus / count)
            ups = surplus - low * (count - 1)
            steps = [low + 1] * ups + [low] * (count - 1 - ups) + [0]
            moved = 0
            for start, step in zip(range(0, length, size), steps):
                piece = record[start - moved: start - moved + size] if start > 1 else record[start: start + size]
                piece.id = f"{record.id}_chunk_{start // size + 1}"
                piece.description = ""
                SeqIO.write(piece, out, "fasta")
                moved += step


def cds_lists(genbank: Path) -> dict[str, list[str]]:
    found = {}
    for record in SeqIO.parse(genbank, "genbank"):
        found[record.id] = [f.qualifiers.get("translation", [""])[0] for f in record.features if f.type == "CDS"]
    return found


def complement_reversed(sequence: str) -> str:
    return sequence.translate(str.maketrans("ACGTacgt", "TGCAtgca"))[::-1]


def six_frames(sequence: str) -> list[str]:
    def frame(seq, offset):
        return "".join(CODONS.get(seq[i:i + 3], "") for i in range(offset, len(seq) - 2, 3))

    reverse = complement_reversed(sequence)
    return [frame(sequence, o) for o in range(3)] + [frame(reverse, o) for o in range(3)]


def kept_frames(read_id: str, sequence: str, proteins: list[str]) -> list[tuple[str, str, str]]:
    if any(base in sequence for base in DROPPED):
        return []
    kept = []
    for number, protein in enumerate(six_frames(sequence), start=1):
        if "*" in protein or not any(protein in cds for cds in proteins):
            continue
        if number <= 3:
            kept.append((f"{read_id}F{number}", sequence[number - 1: number + 3 * len(protein)], protein))
        else:
            kept.append((f"{read_id}R{number - 3}",
                         complement_reversed(sequence)[number - 4: number - 3 + 3 * len(protein)], protein))
    return kept


def make_identified(fasta_gz: Path, genbank_gz: Path, outdir: Path, size: int = 300) -> int:
    """Returns the number of reads."""
    outdir.mkdir(parents=True, exist_ok=True)
    fasta = unzip_to_disk(fasta_gz, outdir / "genomic.fna")
    genbank = unzip_to_disk(genbank_gz, outdir / "genomic.gbff")
    chunks = outdir / f"genomic.chunk{size}.fna"
    cut_reads(fasta, chunks, size)
    os.remove(fasta)
    lists = cds_lists(genbank)
    reads = list(SeqIO.parse(chunks, "fasta"))
    with open(outdir / "identified_nucleotide.fa", "w") as dna_out, open(outdir / "identified_protein.fa", "w") as pro_out:
        for read in reads:
            for frame_id, dna, protein in kept_frames(read.id, str(read.seq).upper(),
                                                      lists.get(read.id.split("_chunk_")[0], [])):
                if protein:
                    dna_out.write(f">{frame_id}\n{dna}\n")
                    pro_out.write(f">{frame_id}\n{protein}\n")
    os.remove(genbank)
    os.remove(chunks)
    return len(reads)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fasta", type=Path)
    parser.add_argument("genbank", type=Path)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--read_length", type=int, default=300)
    args = parser.parse_args()
    print(make_identified(args.fasta, args.genbank, args.outdir, args.read_length))
