"""`identify`: VirNucPro's training-data preparation from RefSeq genomes, record for record what its
make_train_dataset_300.py / _500.py write (rules in shared/virnucpro-reference.md):

- each genome record of length L gives ceil(L / read_length) overlapping windows (`read_windows`), read id
  `<record id>_chunk_<k>`;
- a read holding any of N R Y M K S W H B V D is dropped;
- its six frames (offsets 0, 1, 2 of the read and of its reverse complement, whole codons, standard table) are
  kept when stop-free and a substring of a CDS /translation of the GenBank record named by the read id before
  `_chunk_`; ids `<read id>F1..F3 / R1..R3`, in that order; the nucleotide written is one base longer than the
  codons, except where the read ends.

What differs is the cost, not the output. VirNucPro reads whole files into memory, translates every read
codon by codon and scans every CDS of the record for every frame (one Python call each). Here genome records
are streamed one at a time; each record is translated once per strand and phase with numpy, so a read's frames
are slices of those translations and its stop check and ambiguity check are differences of prefix sums; and the
CDS check goes through a k-mer index of the record's translations (`CdsIndex`), not a scan.

VirNucPro's translation skips a codon holding a letter outside its table (so the frame shifts), which only a read
with a letter outside A C G T and the dropped ambiguity codes can meet (U, for one). Such reads take
`virnucpro_frames`, which reproduces that behaviour exactly: the point is to make VirNucPro's training set.
"""
from __future__ import annotations

import gzip
import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

AMBIGUOUS = "NRYMKSWHBVD"
BASES = "TCAG"
AMINO_ACIDS = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"  # the standard table, TCAG order
CODON_TABLE = {a + b + c: AMINO_ACIDS[16 * i + 4 * j + k]
               for i, a in enumerate(BASES) for j, b in enumerate(BASES) for k, c in enumerate(BASES)}
COMPLEMENT = str.maketrans("ACGTacgt", "TGCAtgca")  # VirNucPro's: other letters stay as they are

_CODE = np.full(256, 4, dtype=np.uint8)  # T C A G -> 0..3 (the table's order), anything else 4
for _index, _base in enumerate(BASES):
    _CODE[ord(_base)] = _index
# amino acid of a codon coded in base 5 (4: a letter outside the table), '?' for those
_AMINO5 = np.full(125, ord("?"), dtype=np.uint8)
for _i in range(4):
    for _j in range(4):
        for _k in range(4):
            _AMINO5[25 * _i + 5 * _j + _k] = ord(AMINO_ACIDS[16 * _i + 4 * _j + _k])
_IS_AMBIGUOUS = np.zeros(256, dtype=np.int32)
_IS_AMBIGUOUS[[ord(c) for c in AMBIGUOUS]] = 1
_IS_OTHER = np.ones(256, dtype=np.int32)  # neither A C G T nor a dropped ambiguity code (U, say)
_IS_OTHER[[ord(c) for c in "ACGT" + AMBIGUOUS]] = 0
_RC = np.arange(256, dtype=np.uint8)
for _a, _b in zip("ACGT", "TGCA"):
    _RC[ord(_a)] = ord(_b)


def read_windows(length: int, read_length: int) -> list[tuple[int, int]]:
    """VirNucPro's read windows of a record (units.split_fasta_chunk): [(start, end)], ceil(L / c) of them.

    The surplus s = n*c - L is spread as steps of floor(s/n) + 1, then floor(s/n), then 0; window k starts at
    k*c less the first k steps and ends c later, cut at L. So most windows are c long and overlap, and the last
    is short where the steps fall short (L = 1000, c = 300: 0-300, 249-549, 498-798, 747-1000).
    """
    starts, ends = window_bounds(length, read_length)
    return list(zip(starts.tolist(), ends.tolist()))


def window_bounds(length: int, read_length: int) -> tuple[np.ndarray, np.ndarray]:
    """`read_windows` as two int64 arrays (starts, ends), computed without a Python loop."""
    count = -(-length // read_length)
    if count == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    surplus = count * read_length - length
    lower = int(surplus / count)
    upper_count = surplus - lower * (count - 1)
    steps = np.full(count, lower, dtype=np.int64)       # step k is taken after window k: [q+1]*u + [q]*... + [0]
    steps[: min(upper_count, count)] = lower + 1
    steps[count - 1] = 0 if upper_count < count else steps[count - 1]
    moved = np.concatenate([[0], np.cumsum(steps)[:-1]])
    starts = np.arange(count, dtype=np.int64) * read_length - moved
    return starts, np.minimum(starts + read_length, length)


def reverse_complement(sequence: str) -> str:
    """VirNucPro's reverse complement: A C G T (either case) complemented, every other letter kept, reversed."""
    return sequence.translate(COMPLEMENT)[::-1]


def translate_skipping(sequence: str, offset: int) -> str:
    """VirNucPro's translation of one frame: codons from `offset`, whole codons only, a codon outside the
    table skipped without a trace."""
    return "".join(CODON_TABLE.get(sequence[i:i + 3], "") for i in range(offset, len(sequence) - 2, 3))


def virnucpro_frames(read: str) -> list[tuple[str, str, str]]:
    """(frame id suffix, protein, nucleotide written) of the six frames of an upper-cased read, exactly as
    VirNucPro computes them, codon skipping included: the path for reads with letters outside A C G T."""
    reverse = reverse_complement(read)
    frames = []
    for strand, sequence in (("F", read), ("R", reverse)):
        for offset in range(3):
            protein = translate_skipping(sequence, offset)
            frames.append((f"{strand}{offset + 1}", protein, sequence[offset: offset + 1 + 3 * len(protein)]))
    return frames


class CdsIndex:
    """Whether a string is a substring of at least one of a record's CDS translations.

    The translations are joined by '|' (a frame never holds one, so no match can span two) and every k-mer's
    position is indexed, sorted by the k-mer, in numpy: a frame is looked up by its first k residues and
    verified at the few places that k-mer occurs. Strings shorter than k are searched in the joined text.
    """

    K = 6  # 5 bits a residue: the keys fit an int32, which sorts fast

    def __init__(self, translations: list[str]):
        self.any = bool(translations)
        self.text = "|".join(translations)
        self._keys = self._positions = None

    def _build(self):
        letters = np.frombuffer(self.text.encode("ascii", errors="replace"), dtype=np.uint8).astype(np.int32) & 31
        count = max(0, len(letters) - self.K + 1)
        keys = np.zeros(count, dtype=np.int32)
        for i in range(self.K):
            keys = (keys << 5) | letters[i: i + count]
        order = np.argsort(keys)
        self._keys, self._positions = keys[order], order

    def contains_all(self, queries: list[str]) -> list[bool]:
        """For each query, whether it lies within one translation (VirNucPro's `any(q in p for p in list)`)."""
        if not self.any:
            return [False] * len(queries)
        long = [i for i, q in enumerate(queries) if len(q) >= self.K]
        found = [(q in self.text) if len(q) < self.K else False for q in queries]
        if long:
            if self._keys is None:
                self._build()
            heads = np.frombuffer("".join(queries[i][: self.K] for i in long).encode("ascii", errors="replace"),
                                  dtype=np.uint8).reshape(len(long), self.K).astype(np.int32) & 31
            keys = np.zeros(len(long), dtype=np.int32)
            for column in range(self.K):
                keys = (keys << 5) | heads[:, column]
            lo = np.searchsorted(self._keys, keys, side="left").tolist()
            hi = np.searchsorted(self._keys, keys, side="right").tolist()
            positions, text = self._positions, self.text
            for i, start, stop in zip(long, lo, hi):
                query = queries[i]
                found[i] = any(text.startswith(query, p) for p in positions[start:stop].tolist())
        return found


@dataclass
class IdentifyStats:
    """What one genome FASTA (or a shard of it) gave."""

    records: int = 0
    bases: int = 0
    reads: int = 0
    reads_ambiguous: int = 0          # dropped: a base of N R Y M K S W H B V D
    reads_other_letters: int = 0      # letters outside A C G T (U, ...): translated VirNucPro's skipping way
    frames_kept: int = 0
    records_without_genbank: list[str] = field(default_factory=list)   # no GenBank record of this id
    records_without_cds: list[str] = field(default_factory=list)       # a GenBank record with no CDS translation

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def translated_phases(sequence: bytes) -> tuple[list[str], np.ndarray, list[int]]:
    """A strand translated whole in its three phases (a codon holding another letter as '?').

    Returns the protein of each phase, the running count of stops of the three phases laid end to end
    (`stops[offsets[p] + j]`: stops among the first j codons of phase p) and those offsets.
    """
    codes = _CODE[np.frombuffer(sequence, dtype=np.uint8)]
    proteins, running, offsets, offset = [], [], [], 0
    for phase in range(3):
        n = max(0, (len(codes) - phase) // 3)
        c = codes[phase: phase + 3 * n]
        amino = _AMINO5[c[0::3] * np.uint8(25) + c[1::3] * np.uint8(5) + c[2::3]]  # <= 124: uint8 throughout
        proteins.append(amino.tobytes().decode("ascii"))
        counts = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(amino == ord("*"), out=counts[1:])
        running.append(counts)
        offsets.append(offset)
        offset += n + 1
    return proteins, np.concatenate(running), offsets


def _stop_free(starts, sizes, stops, offsets):
    """[windows, 3] bool: whether frame offset o (0..2) of each window has codons and no stop; and its
    (phase, first codon, codons) as arrays of the same shape."""
    first = starts[:, None] + np.arange(3)[None, :]
    codons = (sizes[:, None] - np.arange(3)[None, :]) // 3
    phase, codon = first % 3, first // 3
    base = np.asarray(offsets)[phase] + codon
    has = codons > 0
    end = base + np.where(has, codons, 0)
    free = has & (stops[end] == stops[base])
    return free, phase, codon, codons


def identify_record(record_id: str, sequence: str, read_length: int, cds: CdsIndex | None, stats: IdentifyStats):
    """The kept frames of one genome record, in VirNucPro's order: [(frame id, nucleotide, protein)]."""
    sequence = sequence.upper()
    length = len(sequence)
    starts, ends = window_bounds(length, read_length)
    stats.records += 1
    stats.bases += length
    stats.reads += len(starts)
    if not len(starts):
        return []
    raw = sequence.encode("ascii", errors="replace")
    letters = np.frombuffer(raw, dtype=np.uint8)
    ambiguous = np.zeros(length + 1, dtype=np.int32)
    np.cumsum(_IS_AMBIGUOUS[letters], out=ambiguous[1:])
    clean = ambiguous[ends] == ambiguous[starts]
    stats.reads_ambiguous += int((~clean).sum())
    if cds is None or not cds.any or not clean.any():
        return []
    other = np.zeros(length + 1, dtype=np.int32)
    np.cumsum(_IS_OTHER[letters], out=other[1:])
    unusual = clean & (other[ends] != other[starts])   # letters outside A C G T: VirNucPro's skipping translation
    stats.reads_other_letters += int(unusual.sum())
    fast = clean & ~unusual

    forward, forward_stops, forward_offsets = translated_phases(raw)
    reverse_raw = _RC[letters][::-1].tobytes()
    reverse, reverse_stops, reverse_offsets = translated_phases(reverse_raw)
    reverse_text = reverse_raw.decode("ascii")
    sizes = ends - starts
    free_f, phase_f, codon_f, codons_f = _stop_free(starts, sizes, forward_stops, forward_offsets)
    free_r, phase_r, codon_r, codons_r = _stop_free(length - ends, sizes, reverse_stops, reverse_offsets)
    free = np.concatenate([free_f, free_r], axis=1) & fast[:, None]            # [windows, 6]: F1 F2 F3 R1 R2 R3
    phase = np.concatenate([phase_f, phase_r], axis=1)
    codon = np.concatenate([codon_f, codon_r], axis=1)
    codons = np.concatenate([codons_f, codons_r], axis=1)
    window_index, frame_index = np.nonzero(free)                               # window-major, F1..R3 within

    strands = ((forward, sequence), (forward, sequence), (forward, sequence),
               (reverse, reverse_text), (reverse, reverse_text), (reverse, reverse_text))
    prefix = f"{record_id}_chunk_"
    suffixes = ("F1", "F2", "F3", "R1", "R2", "R3")
    limits = np.where(frame_index < 3, ends[window_index], length - starts[window_index])
    firsts = 3 * codon[free] + phase[free]
    stops = np.minimum(limits, firsts + 1 + 3 * codons[free])
    candidates = []   # window-major, F1..R3 within a window: VirNucPro's order
    for k, f, p, j, n, first, stop in zip(window_index.tolist(), frame_index.tolist(), phase[free].tolist(),
                                          codon[free].tolist(), codons[free].tolist(), firsts.tolist(), stops.tolist()):
        proteins, text = strands[f]
        candidates.append((k, f"{prefix}{k + 1}{suffixes[f]}", text[first:stop], proteins[p][j: j + n]))
    if unusual.any():
        for k in np.nonzero(unusual)[0].tolist():
            a, b = int(starts[k]), int(ends[k])
            candidates += [(k, f"{prefix}{k + 1}{suffix}", nucleotide, protein)
                           for suffix, protein, nucleotide in virnucpro_frames(sequence[a:b])
                           if protein and "*" not in protein]
        candidates.sort(key=lambda c: c[0])  # stable: the frames of a window keep their order
    candidates = [c[1:] for c in candidates]
    kept = cds.contains_all([protein for _, _, protein in candidates])
    frames = [candidate for candidate, ok in zip(candidates, kept) if ok]
    stats.frames_kept += len(frames)
    return frames


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------
def open_text(path) -> io.TextIOBase:
    """A text handle on a plain or gzip-compressed file (told apart by its first bytes, not its name)."""
    path = Path(path)
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="ascii", errors="replace")
    return open(path, encoding="ascii", errors="replace")


def fasta_records(path):
    """(id, sequence) of each record of a genome FASTA (plain or .gz), streamed with Biopython."""
    from Bio.SeqIO.FastaIO import SimpleFastaParser

    with open_text(path) as handle:
        for title, sequence in SimpleFastaParser(handle):
            yield (title.split(None, 1)[0] if title.strip() else ""), sequence


def cds_translations(genbank, wanted: set[str] | None = None) -> dict[str, list[str]]:
    """{record id: the /translation of each CDS feature}, for the records in `wanted` (all if None), streamed
    with Biopython one record at a time. A CDS without /translation counts as an empty one, as in VirNucPro."""
    from Bio import SeqIO

    translations = {}
    with open_text(genbank) as handle:
        for record in SeqIO.parse(handle, "genbank"):
            if wanted is not None and record.id not in wanted:
                continue
            translations[record.id] = [feature.qualifiers.get("translation", [""])[0]
                                       for feature in record.features if feature.type == "CDS"]
    return translations


def fasta_ids(path) -> list[str]:
    """The record ids of a FASTA, from its header lines only."""
    ids = []
    with open_text(path) as handle:
        for line in handle:
            if line.startswith(">"):
                ids.append(line[1:].split(None, 1)[0] if line[1:].strip() else "")
    return ids


def identify_genome(fasta, genbank, read_length: int, nucleotide_out, protein_out,
                    first_record: int = 0, last_record: int | None = None) -> IdentifyStats:
    """Write the kept frames of the FASTA's records [first_record, last_record) to the two identified FASTA files
    (one line per sequence, the same ids in the same order); return what they gave."""
    from .files import atomic_path

    ids = fasta_ids(fasta)[first_record:last_record]
    translations = cds_translations(genbank, {record_id.split("_chunk_")[0] for record_id in ids})
    stats = IdentifyStats()
    with atomic_path(nucleotide_out) as nucleotide_tmp, atomic_path(protein_out) as protein_tmp, \
            open(nucleotide_tmp, "w") as nucleotide, open(protein_tmp, "w") as protein:
        for index, (record_id, sequence) in enumerate(fasta_records(fasta)):
            if index < first_record:
                continue
            if last_record is not None and index >= last_record:
                break
            # VirNucPro looks the GenBank record up by the read id before '_chunk_'
            key = f"{record_id}_chunk_1".split("_chunk_")[0]
            found = translations.get(key)
            if found is None:
                stats.records_without_genbank.append(record_id)
            elif not any(found):
                stats.records_without_cds.append(record_id)
            for frame_id, nucleotide_seq, protein_seq in identify_record(
                    record_id, sequence, read_length, CdsIndex(found) if found else None, stats):
                nucleotide.write(f">{frame_id}\n{nucleotide_seq}\n")
                protein.write(f">{frame_id}\n{protein_seq}\n")
    return stats


def gzip_complete(path) -> bool:
    """Whether a .gz file decompresses to its end (a cut-off download does not)."""
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(1 << 20):
                pass
        return True
    except (EOFError, OSError, zlib.error):
        return False
