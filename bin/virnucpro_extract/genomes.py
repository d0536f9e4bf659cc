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
are streamed one at a time; each record's codons are translated once, both strands, with `bytes.translate`, so a
read's frames are every third letter of that line; the stop check is two binary searches among the record's
stops and the ambiguity check a difference of prefix sums; and the CDS check of every frame of a record is one
numpy pass through a hash table of the translations' K-mers (`CdsIndex`), not a scan.

VirNucPro's translation skips a codon holding a letter outside its table (so the frame shifts), which only a read
with a letter outside A C G T and the dropped ambiguity codes can meet (U, for one). Such reads take
`virnucpro_frames`, which reproduces that behaviour exactly: the point is to make VirNucPro's training set.
"""
from __future__ import annotations

import gzip
import io
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

AMBIGUOUS = "NRYMKSWHBVD"
BASES = "TCAG"
AMINO_ACIDS = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"  # the standard table, TCAG order
CODON_TABLE = {a + b + c: AMINO_ACIDS[16 * i + 4 * j + k]
               for i, a in enumerate(BASES) for j, b in enumerate(BASES) for k, c in enumerate(BASES)}
SUFFIXES = ("F1", "F2", "F3", "R1", "R2", "R3")  # frame ids, in VirNucPro's order
COMPLEMENT = str.maketrans("ACGTacgt", "TGCAtgca")  # VirNucPro's: other letters stay as they are

_CODE = bytearray([4]) * 256  # T C A G -> 0..3 (the table's order), anything else 4: a bytes.translate table
for _index, _base in enumerate(BASES):
    _CODE[ord(_base)] = _index
# amino acid of a codon coded in base 5 (4: a letter outside the table), '?' for those
_AMINO5 = bytearray(b"?") * 256
# amino acid of the reverse complement of a forward codon (complement: T C A G <-> A G T C, i.e. code ^ 2)
_AMINO5_RC = bytearray(b"?") * 256
for _i in range(4):
    for _j in range(4):
        for _k in range(4):
            _AMINO5[25 * _i + 5 * _j + _k] = ord(AMINO_ACIDS[16 * _i + 4 * _j + _k])
            _AMINO5_RC[25 * _i + 5 * _j + _k] = ord(AMINO_ACIDS[16 * (_k ^ 2) + 4 * (_j ^ 2) + (_i ^ 2)])
_CODE, _AMINO5, _AMINO5_RC = bytes(_CODE), bytes(_AMINO5), bytes(_AMINO5_RC)
_IS_AMBIGUOUS = np.zeros(256, dtype=np.int32)
_IS_AMBIGUOUS[[ord(c) for c in AMBIGUOUS]] = 1
_IS_OTHER = np.ones(256, dtype=np.int32)  # neither A C G T nor a dropped ambiguity code (U, say)
_IS_OTHER[[ord(c) for c in "ACGT" + AMBIGUOUS]] = 0
_RC = bytes.maketrans(b"ACGT", b"TGCA")


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
    """Whether a frame is a substring of at least one of a record's CDS translations.

    The translations are joined by '|' (a frame never holds one, so no match can span two). A frame is looked up
    by its first K residues in a hash table of the text's K-mers that keeps one position per slot and how many
    K-mers fell in it, then compared there letter by letter; frames are handled all at once in numpy, not one
    Python call each. A frame whose first or last K-mer the table lacks is in no translation, nor is one that
    fails the comparison in a slot that only its own K-mer's one occurrence filled; the rest (a K-mer found in
    several places, or sharing its slot) are searched with `str.find`. So every answer is VirNucPro's
    `any(frame in translation for translation in cds)`.
    """

    K = 6   # residues a key: six bytes of a uint64

    def __init__(self, translations: list[str]):
        self.any = bool(translations)
        self.text = "|".join(translations)

    def contains_all(self, queries: list[str]) -> list[bool]:
        """For each query string, whether it lies within one translation: the plain rule, for the few frames
        translated VirNucPro's codon-skipping way (`identify_record` checks the rest with `contains_frames`)."""
        return [self.any and query in self.text for query in queries]

    @classmethod
    def _text_keys(cls, letters: np.ndarray) -> np.ndarray:
        """[len - K + 1] uint64: the K letters from each position, as the bytes of one little-endian integer
        (read through an overlapping view: each key is one unaligned load, not K shifts)."""
        count = max(0, len(letters) - cls.K + 1)
        padded = np.concatenate([letters, np.zeros(8 - cls.K, dtype=np.uint8)])
        words = np.ndarray((count,), dtype="<u8", buffer=padded, strides=(1,))
        return words & np.uint64((1 << (8 * cls.K)) - 1)

    @classmethod
    def _row_keys(cls, rows: np.ndarray) -> np.ndarray:
        """[rows] uint64: the key of each row of a [rows, K] uint8 array, as `_text_keys` packs them."""
        packed = np.zeros((len(rows), 8), dtype=np.uint8)
        packed[:, : cls.K] = rows
        return packed.view("<u8").ravel()

    @staticmethod
    def _slots(keys: np.ndarray, bits: int) -> np.ndarray:
        return ((keys * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - bits)).astype(np.intp)   # Fibonacci hashing

    # One table for every record, filled for one call and emptied after it: a fresh table of a few MB each record
    # costs more in page faults than the lookups
    _MAX_BITS = 22
    _positions = np.full(0, -1, dtype=np.int32)   # a position of a K-mer of the slot, or -1
    _shared = np.zeros(0, dtype=bool)             # whether more than one K-mer occurrence fell in the slot

    @staticmethod
    def _tables(bits: int) -> tuple[np.ndarray, np.ndarray]:
        """The shared (positions, shared) tables, at least 2**bits slots each, empty between calls."""
        if len(CdsIndex._positions) < (1 << bits):
            CdsIndex._positions = np.full(1 << bits, -1, dtype=np.int32)
            CdsIndex._shared = np.zeros(1 << bits, dtype=bool)
        return CdsIndex._positions, CdsIndex._shared

    def contains_frames(self, amino: np.ndarray, firsts: np.ndarray, counts: np.ndarray, protein) -> np.ndarray:
        """[frames] bool: whether each frame lies within one translation.

        amino:  [positions] uint8, the amino acid of the codon at each position of a strand (both strands laid
                end to end); frame i is amino[firsts[i] + 3 t] for t < counts[i].
        protein(i): frame i as a string, for the few frames that go through `str.find`.
        """
        found = np.zeros(len(firsts), dtype=bool)
        if not self.any or not len(firsts):
            return found
        k, text = self.K, np.frombuffer(self.text.encode("ascii", errors="replace"), dtype=np.uint8)
        long = counts >= k
        for i in np.flatnonzero(~long).tolist():
            found[i] = protein(i) in self.text
        index = np.flatnonzero(long)
        text_keys = self._text_keys(text)
        if not len(index) or not len(text_keys):
            return found
        bits = max(10, min(self._MAX_BITS, (16 * len(text_keys)).bit_length()))
        positions, shared = self._tables(bits)
        text_slots = self._slots(text_keys, bits)
        every = np.arange(len(text_keys), dtype=np.int32)
        positions[text_slots] = every                              # the last written wins
        shared[text_slots[positions[text_slots] != every]] = True   # a slot some occurrence lost
        try:
            starts, lengths = firsts[index], counts[index]
            step = 3 * np.arange(k)
            head_slots = self._slots(self._row_keys(amino[starts[:, None] + step]), bits)
            tail_slots = self._slots(self._row_keys(amino[(starts + 3 * (lengths - k))[:, None] + step]), bits)
            head_at = positions[head_slots]
            possible = (head_at >= 0) & (positions[tail_slots] >= 0)
            # compare each possible frame with the text where its head was seen, every letter at once
            tried = np.flatnonzero(possible & (head_at + lengths <= len(text)))
            if len(tried):
                n = lengths[tried]
                offsets = np.cumsum(n) - n
                t = np.arange(int(n.sum())) - np.repeat(offsets, n)
                mismatches = amino[np.repeat(starts[tried], n) + 3 * t] != text[np.repeat(head_at[tried], n) + t]
                matched = ~np.logical_or.reduceat(mismatches, offsets)
                found[index[tried[matched]]] = True
                possible[tried[matched]] = False
            # a slot that one K-mer occurrence filled alone was the frame's head's only place: nowhere else to look
            possible &= shared[head_slots]
        finally:
            positions[text_slots] = -1
            shared[text_slots] = False
        for i in index[possible].tolist():
            found[i] = self.text.find(protein(i)) >= 0
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


def translated_strands(sequence: bytes) -> bytes:
    """The amino acid of the codon at each position of both strands of an upper-case sequence, laid end to end:
    [forward position x: codon sequence[x:x+3]] + [reverse position r: codon reverse_complement[r:r+3]], each
    len - 2 long ('?' for a codon holding another letter). A frame from offset o of a read at s is then every
    third letter from s + o.

    Every position's codon is coded once, as a byte (25 a + 5 b + c, each base 0..4), and `bytes.translate`
    turns the codes into amino acids. The reverse strand's codon at reverse position r is the reverse
    complement of the forward codon at len - 3 - r, so its amino acid comes from the same codes read backwards,
    through the reverse-complement table: no second strand to code.
    """
    codes = np.frombuffer(sequence.translate(_CODE), dtype=np.uint8)
    if len(codes) < 3:
        return b""
    index = codes[:-2] * np.uint8(25)          # <= 124: uint8 throughout
    index += codes[1:-1] * np.uint8(5)
    index += codes[2:]
    return index.tobytes().translate(_AMINO5) + index[::-1].tobytes().translate(_AMINO5_RC)


def _stop_free(amino: np.ndarray, firsts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[frames] bool: whether frame i (amino[firsts[i] + 3 t], t < counts[i]) has codons and no stop.

    The positions are laid out phase by phase (x -> (x mod 3) * rows + x div 3, a transpose), so a frame's
    letters are one run of that line and its stops are counted with two binary searches among the record's."""
    rows = -(-len(amino) // 3)
    line = np.zeros(3 * rows, dtype=np.uint8)
    line[: len(amino)] = amino
    stops = np.flatnonzero(line.reshape(rows, 3).T.ravel() == ord("*"))
    begin = (firsts % 3) * rows + firsts // 3
    return (counts > 0) & (np.searchsorted(stops, begin) == np.searchsorted(stops, begin + np.maximum(counts, 0)))


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
    if raw.translate(None, b"ACGT"):   # some other letter: count which windows hold one (most records have none)
        letters = np.frombuffer(raw, dtype=np.uint8)
        ambiguous = np.zeros(length + 1, dtype=np.int32)
        np.cumsum(_IS_AMBIGUOUS[letters], out=ambiguous[1:])
        clean = ambiguous[ends] == ambiguous[starts]
        other = np.zeros(length + 1, dtype=np.int32)
        np.cumsum(_IS_OTHER[letters], out=other[1:])
        unusual = clean & (other[ends] != other[starts])   # letters outside A C G T: VirNucPro's skipping translation
    else:
        clean = np.ones(len(starts), dtype=bool)
        unusual = np.zeros(len(starts), dtype=bool)
    stats.reads_ambiguous += int((~clean).sum())
    if cds is None or not cds.any or not clean.any():
        return []
    stats.reads_other_letters += int(unusual.sum())

    amino_bytes = translated_strands(raw)
    amino = np.frombuffer(amino_bytes, dtype=np.uint8)
    amino_text = amino_bytes.decode("ascii")
    reverse_text = raw.translate(_RC)[::-1].decode("ascii")
    reverse_at = max(0, length - 2)     # where the reverse strand's positions start in `amino`
    # [windows, 6] first position and codons of frames F1 F2 F3 R1 R2 R3 (offset o = 0, 1, 2 of each strand)
    offsets = np.arange(3)
    forward_firsts = starts[:, None] + offsets
    reverse_firsts = reverse_at + (length - ends)[:, None] + offsets
    firsts = np.concatenate([forward_firsts, reverse_firsts], axis=1).ravel()
    counts = np.tile((ends - starts)[:, None] - offsets, 2).ravel() // 3
    candidate = np.repeat(clean & ~unusual, 6)
    candidate[candidate] = _stop_free(amino, firsts[candidate], counts[candidate])
    frames_at = np.flatnonzero(candidate)    # window-major, F1..R3 within a window: VirNucPro's order
    firsts, counts = firsts[frames_at], counts[frames_at]
    ends_on_strand = np.where(frames_at % 6 < 3, ends[frames_at // 6], reverse_at + length - starts[frames_at // 6])

    def protein(i: int) -> str:
        return amino_text[firsts[i]: firsts[i] + 3 * counts[i]: 3]

    kept = cds.contains_frames(amino, firsts, counts, protein)
    frames = []   # (window, frame id, nucleotide, protein)
    prefix = f"{record_id}_chunk_"
    for at, first, count, end in zip(frames_at[kept].tolist(), firsts[kept].tolist(), counts[kept].tolist(),
                                     ends_on_strand[kept].tolist()):
        window, frame = divmod(at, 6)
        text, first_base = (sequence, first) if frame < 3 else (reverse_text, first - reverse_at)
        frames.append((window, f"{prefix}{window + 1}{SUFFIXES[frame]}",
                       text[first_base: min(end - (first - first_base), first_base + 1 + 3 * count)],
                       amino_text[first: first + 3 * count: 3]))
    if unusual.any():   # reads with letters outside A C G T, translated VirNucPro's skipping way
        extra = []
        for k in np.nonzero(unusual)[0].tolist():
            a, b = int(starts[k]), int(ends[k])
            extra += [(k, f"{prefix}{k + 1}{suffix}", nucleotide, protein) for suffix, protein, nucleotide
                      in virnucpro_frames(sequence[a:b]) if protein and "*" not in protein]
        frames += [e for e, ok in zip(extra, cds.contains_all([e[3] for e in extra])) if ok]
        frames.sort(key=lambda frame: frame[0])   # stable: the frames of a window keep their order
    stats.frames_kept += len(frames)
    return [frame[1:] for frame in frames]


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------
def _gzip_open(path):
    """A binary gzip handle: ISA-L's inflate where isal is installed (about 3x zlib's speed on genome files,
    and decompression is a third of the identification's time), else the standard library's."""
    try:
        from isal import igzip
    except ImportError:
        return gzip.open(path, "rb")
    return igzip.open(path, "rb")


def open_text(path) -> io.TextIOBase:
    """A text handle on a plain or gzip-compressed file (told apart by its first bytes, not its name)."""
    path = Path(path)
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(_gzip_open(path), encoding="ascii", errors="replace")
    return open(path, encoding="ascii", errors="replace")


def open_binary(path):
    """A binary handle on a plain or gzip-compressed file."""
    path = Path(path)
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return _gzip_open(path) if magic == b"\x1f\x8b" else open(path, "rb")


def fasta_records(path, block_size: int = 1 << 22):
    """(id, sequence) of each record of a genome FASTA (plain or .gz), streamed one record at a time.

    Read in large blocks and split on header lines, not line by line: genome records are megabases long. Text
    before the first '>' is skipped, the id is the header up to the first white space (Biopython's record.id) and
    the sequence is every other line joined with white space removed, as Biopython's FASTA parser gives them.
    Protein and read chunk files go through `fasta.read_fasta`, which checks every line; PREFLIGHT checks a genome
    FASTA's letters record by record.
    """
    with open_binary(path) as handle:
        pending, started = b"", False
        while True:
            block = handle.read(block_size)
            pending += block
            if not started:
                first = pending.find(b">") if pending.startswith(b">") else pending.find(b"\n>") + 1
                if first <= 0 and not pending.startswith(b">"):
                    pending = pending[-1:] if block else b""
                    if not block:
                        return
                    continue
                pending, started = pending[first:], True
            if block:
                cut = pending.rfind(b"\n>")
                if cut < 0:
                    continue
                complete, pending = pending[:cut], pending[cut + 1:]
            else:
                complete, pending = pending, b""
            for text in complete.split(b"\n>"):
                yield _fasta_record(text if text.startswith(b">") else b">" + text)
            if not block:
                return


def _fasta_record(text: bytes) -> tuple[str, str]:
    newline = text.find(b"\n")
    header, body = (text[1:newline], text[newline + 1:]) if newline >= 0 else (text[1:], b"")
    words = header.split(None, 1)
    return (words[0].decode("ascii", errors="replace") if words else "",
            body.translate(None, b" \t\r\n").decode("ascii", errors="replace"))


def fasta_ids(path, block_size: int = 1 << 22) -> list[str]:
    """The record ids of a FASTA, from its header lines only (read in large blocks)."""
    ids, tail = [], b"\n"
    with open_binary(path) as handle:
        while block := handle.read(block_size):
            text = tail + block
            cut = text.rfind(b"\n")
            for found in re.finditer(rb"\n>([^\s]*)", text[: cut + 1] if cut >= 0 else text):
                ids.append(found.group(1).decode("ascii", errors="replace"))
            tail = text[cut:] if cut >= 0 else text
        if tail.startswith(b"\n>"):
            found = re.match(rb"\n>([^\s]*)", tail)
            ids.append(found.group(1).decode("ascii", errors="replace"))
    return ids


# a literal first byte lets the regex engine jump from newline to newline instead of trying every position
_FEATURE_KEY_LINE = re.compile(rb"\n {5}\S")      # a feature key starts in column 6; qualifiers in column 22
_SECTION_END = re.compile(rb"\n\S")               # the feature table ends at the next line that does not indent
_HEADER_WORD = re.compile(rb"^(LOCUS|ACCESSION|VERSION) +(\S+)", re.M)


def genbank_blocks(path, block_size: int = 1 << 22):
    """Each record of a GenBank file (plain or .gz) as bytes, up to its '//' line: one record in memory at a time."""
    with open_binary(path) as handle:
        buffer = b""
        while True:
            block = handle.read(block_size)
            buffer = buffer + block if buffer else block
            start = 0   # records are cut by offset; the buffer is copied once a block, not once a record
            while True:
                end = buffer.find(b"\n//", start)
                if end < 0:
                    break
                yield buffer[start: end + 1]
                rest = buffer.find(b"\n", end + 3)
                start = rest + 1 if rest >= 0 else len(buffer)
            buffer = buffer[start:]
            if not block:
                break
        if buffer.strip():
            yield buffer


def cds_translations(genbank, wanted: set[str] | None = None) -> dict[str, list[str]]:
    """{record id: the /translation of each CDS feature, in file order}, for the records in `wanted` (all if None).

    A scan for just what VirNucPro takes from the GenBank file, one record at a time: the record id as Biopython
    gives it (VERSION's accession.version, else the accession, else the LOCUS name) and each CDS feature's
    /translation, joined across lines with white space removed, as Biopython reads it; a CDS without one counts
    as an empty translation, as in VirNucPro. Biopython parses every file in PREFLIGHT (which reports what does not
    parse); parsing again here with it would cost more than the rest of the identification, so this reads only
    those qualifiers (tests/test_genomes.py checks that the two agree).
    """
    translations = {}
    for block in genbank_blocks(genbank):
        features_at = block.find(b"\nFEATURES")
        words = {}
        for found in _HEADER_WORD.finditer(block, 0, features_at if features_at >= 0 else len(block)):
            words.setdefault(found.group(1), found.group(2).decode("ascii", errors="replace"))
        record_id = _record_id(words.get(b"LOCUS"), words.get(b"ACCESSION"), words.get(b"VERSION"))
        if wanted is not None and record_id not in wanted:
            continue
        cds = []
        if features_at >= 0:
            body = block.find(b"\n", features_at + 1)
            end = _SECTION_END.search(block, body) if body >= 0 else None
            table_end = end.start() if end else len(block)
            # each CDS key line, and the first /translation after it unless another feature's key comes first
            at = block.find(b"\n     CDS ", body, table_end) if body >= 0 else -1
            while at >= 0:
                start = block.find(b'/translation="', at, table_end)
                if start < 0 or _FEATURE_KEY_LINE.search(block, at + 1, start):
                    cds.append("")
                else:
                    close = block.find(b'"', start + 14)
                    close = close if 0 <= close < table_end else table_end
                    cds.append(block[start + 14: close].translate(None, b" \t\r\n").decode("ascii", errors="replace"))
                at = block.find(b"\n     CDS ", at + 1, table_end)
        translations[record_id] = cds
    return translations


def _record_id(name, accession, version) -> str:
    """Biopython's record.id: VERSION's accession.version, else the accession, else the LOCUS name."""
    if version and version.count(".") == 1 and version.split(".")[1].isdigit():
        return version
    return version or accession or name or ""


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
