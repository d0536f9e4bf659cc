"""VirNucPro's training-data rules, written here from shared/virnucpro-reference.md ("How VirNucPro makes the
training data") and nothing else: the tests' independent reference for the product's genomes -> identified FASTA
and split steps. Plain loops, one read at a time; no code of the product is used.
"""
from __future__ import annotations

import math

STANDARD_CODE = {
    "TTT": "F", "TTC": "F", "TTA": "L", "TTG": "L", "CTT": "L", "CTC": "L", "CTA": "L", "CTG": "L",
    "ATT": "I", "ATC": "I", "ATA": "I", "ATG": "M", "GTT": "V", "GTC": "V", "GTA": "V", "GTG": "V",
    "TCT": "S", "TCC": "S", "TCA": "S", "TCG": "S", "CCT": "P", "CCC": "P", "CCA": "P", "CCG": "P",
    "ACT": "T", "ACC": "T", "ACA": "T", "ACG": "T", "GCT": "A", "GCC": "A", "GCA": "A", "GCG": "A",
    "TAT": "Y", "TAC": "Y", "TAA": "*", "TAG": "*", "CAT": "H", "CAC": "H", "CAA": "Q", "CAG": "Q",
    "AAT": "N", "AAC": "N", "AAA": "K", "AAG": "K", "GAT": "D", "GAC": "D", "GAA": "E", "GAG": "E",
    "TGT": "C", "TGC": "C", "TGA": "*", "TGG": "W", "CGT": "R", "CGC": "R", "CGA": "R", "CGG": "R",
    "AGT": "S", "AGC": "S", "AGA": "R", "AGG": "R", "GGT": "G", "GGC": "G", "GGA": "G", "GGG": "G",
}
DROPPED = set("NRYMKSWHBVD")


def windows(length: int, c: int) -> list[tuple[int, int]]:
    """n = ceil(L/c); s = n*c - L; q = floor(s/n); steps: (q+1) repeated (s - (n-1)*q) times, then q for the rest,
    then 0, cut to n entries; window k starts at k*c minus the sum of the first k steps, ends c later, cut at L."""
    n = math.ceil(length / c)
    if n == 0:
        return []
    s = n * c - length
    q = s // n
    steps = [q + 1] * (s - (n - 1) * q) + [q] * max(0, (n - 1) - (s - (n - 1) * q)) + [0]
    steps = steps[:n]
    result = []
    for k in range(n):
        start = k * c - sum(steps[:k])
        result.append((start, min(start + c, length)))
    return result


def revcomp(read: str) -> str:
    pairs = {"A": "T", "C": "G", "G": "C", "T": "A"}
    return "".join(pairs.get(base, base) for base in reversed(read))


def translate(frame_dna: str) -> str:
    """Codon by codon, whole codons only; a codon holding any other letter is skipped without a trace."""
    protein = ""
    for i in range(0, len(frame_dna) - 2, 3):
        amino = STANDARD_CODE.get(frame_dna[i:i + 3])
        if amino is not None:
            protein += amino
    return protein


def frames_of_read(read_id: str, read: str, translations: list[str]) -> list[tuple[str, str, str]]:
    """(id, nucleotide, protein) of the kept frames of one read, in the order F1 F2 F3 R1 R2 R3."""
    read = read.upper()
    if any(base in DROPPED for base in read):
        return []
    kept = []
    for strand, dna in (("F", read), ("R", revcomp(read))):
        for offset in range(3):
            protein = translate(dna[offset:])
            if not protein or "*" in protein:
                continue
            if not any(protein in translation for translation in translations):
                continue
            kept.append((f"{read_id}{strand}{offset + 1}", dna[offset: offset + 1 + 3 * len(protein)], protein))
    return kept


def identified(records: list[tuple[str, str]], cds: dict[str, list[str]], c: int) -> list[tuple[str, str, str]]:
    """Records in file order, windows in genome order, kept frames of each read."""
    out = []
    for record_id, sequence in records:
        for k, (start, end) in enumerate(windows(len(sequence), c)):
            read_id = f"{record_id}_chunk_{k + 1}"
            out += frames_of_read(read_id, sequence[start:end], cds.get(read_id.split("_chunk_")[0], []))
    return out


def split(records: list[tuple[str, str]], per_file: int) -> list[list[tuple[str, str]]]:
    """Consecutive files of per_file records; the last may be short."""
    return [records[i: i + per_file] for i in range(0, len(records), per_file)]
