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
are streamed, a batch of them at a time laid end to end (`identify_records`); each batch's codons are translated
once, both strands, with `bytes.translate`; every frame of the batch is gathered as one row of a [frames, codons]
array through a strided view (every third amino acid, backwards on the reverse strand), so the stop check is one
pass over that array, the ambiguity check a difference of prefix sums, and the CDS check of every frame of the
batch a few numpy passes (`CdsIndex`), not a scan.

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

from .defaults import GENBANK_READERS
from .files import atomic_path

try:   # ISA-L's inflate, about 3x zlib's on genome files (decompression is a third of the identification's time)
    from isal import igzip
except ImportError:   # the standard library's, where isal is not installed
    igzip = None

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
    starts, ends, _ = record_windows(np.array([length], dtype=np.int64), read_length)
    return list(zip(starts.tolist(), ends.tolist()))


def record_windows(lengths: np.ndarray, read_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The read windows of records of these lengths, record after record: (starts, ends, windows per record),
    each window's bounds within its record, computed for every record at once.

    With n windows and surplus s = n*c - L, the first s - (n - 1) * floor(s/n) steps are floor(s/n) + 1 and the
    rest floor(s/n) (`read_windows`; the last step, after the last window, moves nothing), so window k starts at
    k*c - k*floor(s/n) - min(k, that count).
    """
    counts = -(-lengths // read_length)
    surplus = counts * read_length - lengths
    lower = surplus // np.maximum(counts, 1)
    longer_steps = surplus - lower * (counts - 1)
    k = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    starts = k * read_length - k * np.repeat(lower, counts) - np.minimum(k, np.repeat(longer_steps, counts))
    return starts, np.minimum(starts + read_length, np.repeat(lengths, counts)), counts


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
    """Whether a frame of a genome record is a substring of at least one of that record's CDS translations, for
    every record of a batch at once.

    A record's translations are joined by '|' (a frame never holds one, so no match can span two), and the
    records' texts by '|' too. A frame is looked up by its first K residues: the text positions whose K-mer is the
    head of some frame are picked out with a small hash table of the frames' heads (one pass over the text, whose
    table stays in cache), then sorted by (record, K-mer), so each frame finds every place its head occurs in its
    own record's text with one binary search (`head_places`), and is compared with the text at the first
    (`contains_frames`). A frame whose head is nowhere in its record is in no translation, nor is one that fails
    at its head's only place; a head found in several places sends the frame to `str.find` in its record's text.
    The heads are looked up before the frames are translated in full, so only frames whose head is somewhere are.
    Frames are handled all at once in numpy, not one Python call each, and every answer is VirNucPro's
    `any(frame in translation for translation in cds)`.
    """

    K = 6                      # residues a key: six bytes of a uint64
    RECORD_BITS = 64 - 8 * K   # the record's number fills the key's top two bytes: 65,536 records a batch

    def __init__(self, translations: list[list[str]]):
        """translations[r]: the CDS /translation strings of record r of the batch."""
        if len(translations) > 1 << self.RECORD_BITS:
            raise ValueError(f"{len(translations)} records in one CdsIndex: at most {1 << self.RECORD_BITS}")
        self.texts = ["|".join(record) for record in translations]
        self.text = "|".join(self.texts)
        lengths = np.array([len(text) for text in self.texts], dtype=np.int64)
        self.text_starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]).astype(np.int64)
        self.text_ends = self.text_starts + lengths
        self.letters = np.frombuffer(self.text.encode("ascii", errors="replace"), dtype=np.uint8)

    def contains_all(self, record: int, queries: list[str]) -> list[bool]:
        """For each query string, whether it lies within one of record `record`'s translations: the plain rule,
        for the few frames translated VirNucPro's codon-skipping way (the rest go through `contains_frames`)."""
        return [bool(self.texts[record]) and query in self.texts[record] for query in queries]

    _KEY_MASK = np.uint64((1 << (8 * K)) - 1)

    @classmethod
    def _keys(cls, words: np.ndarray) -> np.ndarray:
        """The K letters from each of `words`' positions as the low bytes of one little-endian integer.
        words: `_words` of the letters (or a gather of them)."""
        return words & cls._KEY_MASK

    @classmethod
    def _with_records(cls, keys: np.ndarray, records: np.ndarray) -> np.ndarray:
        """The keys with their record's number above the K letters: one K-mer of two records is two keys."""
        return keys | (records.astype(np.uint64) << np.uint64(8 * cls.K))

    @staticmethod
    def _words(letters: np.ndarray) -> np.ndarray:
        """[len + 1] uint64: the eight bytes from each position (zeros past the end), through an overlapping view
        of one padded copy: each is one unaligned load."""
        padded = np.concatenate([letters, np.zeros(8, dtype=np.uint8)])
        return np.ndarray((len(letters) + 1,), dtype="<u8", buffer=padded, strides=(1,))

    _HASH = 0x9E3779B97F4A7C15   # Fibonacci hashing: the key times 2**64 / golden ratio, its top bits the slot

    @classmethod
    def _slots(cls, keys: np.ndarray, bits: int, out: np.ndarray | None = None) -> np.ndarray:
        """The hash-table slot of each key (`out=keys` hashes in place, sparing a text-sized temporary), as int64:
        numpy indexes with int64 without the checked conversion a uint64 index costs."""
        slots = np.multiply(keys, np.uint64(cls._HASH), out=out)
        return np.right_shift(slots, np.uint64(64 - bits), out=slots).view(np.int64)

    def head_places(self, heads: np.ndarray, counts: np.ndarray, records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """([frames] int64, [frames] int64): where in `text` each frame's first K letters first occur within its
        own record's translations, and in how many places (0: nowhere, so the frame is in none of them); both 0 for
        a frame shorter than K (counts), which `contains_frames` checks by the plain rule.

        heads:   [frames, >= 8] uint8, each frame's first letters (junk past its count).
        records: [frames] int, the record (index into the translations given) of each frame.

        One pass over the text: the positions whose K-mer is some frame's head (and a few more, sharing a slot of
        a small hash table with one) are picked and sorted by (record, K-mer); each head's places in its own record
        are one run of them, found with one binary search among the runs, and only for the heads whose slot some
        picked position shares (most heads off a gene have none)."""
        k = self.K
        head_at, places = np.zeros(len(heads), dtype=np.int64), np.zeros(len(heads), dtype=np.int64)
        index = np.flatnonzero(counts >= k)
        if not len(index) or len(self.letters) < k:
            return head_at, places
        keys = self._keys(np.ascontiguousarray(heads[index, :8]).view("<u8")[:, 0])
        bits = max(10, (64 * len(keys)).bit_length())     # a text K-mer no frame starts with passes 1 time in 64
        is_head = np.zeros(1 << bits, dtype=bool)
        head_slots = self._slots(keys, bits)
        is_head[head_slots] = True
        text_words = self._words(self.letters)
        text_slots = self._slots(self._keys(text_words[: len(self.letters) - k + 1]), bits)
        picked = np.flatnonzero(is_head[text_slots])
        # most heads (those of frames off a gene) share a slot with no picked place: they have none, and only the
        # rest are searched for
        is_head[:] = False
        is_head[text_slots[picked]] = True
        some_place = is_head[head_slots]
        index, keys = index[some_place], keys[some_place]
        if not len(index):
            return head_at, places
        picked_records = np.searchsorted(self.text_starts, picked, side="right") - 1
        picked_keys = self._with_records(self._keys(text_words[picked]), picked_records)
        order = np.argsort(picked_keys, kind="stable")
        picked, picked_keys = picked[order], picked_keys[order]
        # runs of one (record, K-mer): each head is looked up once among the runs' keys
        run_starts = np.flatnonzero(np.concatenate([[True], picked_keys[1:] != picked_keys[:-1]]))
        run_keys = picked_keys[run_starts]
        keys = self._with_records(keys, records[index])
        run = np.minimum(np.searchsorted(run_keys, keys), len(run_keys) - 1)
        hit = run_keys[run] == keys
        index, run = index[hit], run[hit]
        places[index] = np.diff(np.append(run_starts, len(picked)))[run]
        head_at[index] = picked[run_starts[run]]
        return head_at, places

    def contains_frames(self, rows: np.ndarray, counts: np.ndarray, records: np.ndarray, protein,
                        heads: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """[frames] bool: whether each frame lies within one of its record's translations.

        rows:    [frames, width] uint8, frame i's amino acids in rows[i, :counts[i]] and anything after them;
                 width > every count, and >= 8 (`identify_records` gives them so).
        records: [frames] int, the record (index into the translations given) of each frame.
        protein(i): frame i as a string, for the few frames that go through `str.find`.
        heads:   `head_places` of these frames, where the caller has looked them up already.

        A frame is compared with the text at its head's first place, eight letters at a time; one that fails there
        but whose head has other places goes to `str.find` in its record's text.
        """
        head_at, places = heads if heads is not None else self.head_places(rows, counts, records)
        found = np.zeros(len(rows), dtype=bool)
        long = counts >= self.K
        for i in np.flatnonzero(~long).tolist():   # shorter than a key: the plain rule
            found[i] = protein(i) in self.texts[records[i]]
        tried = np.flatnonzero(long & (places > 0) & (head_at + counts <= self.text_ends[records]))
        matched = tried[_same_prefixes(rows[tried], self.letters, head_at[tried], counts[tried])]
        found[matched] = True
        unsure = long & (places > 1)
        unsure[matched] = False
        for i in np.flatnonzero(unsure).tolist():
            found[i] = self.texts[records[i]].find(protein(i)) >= 0
        return found


def _same_prefixes(rows: np.ndarray, text: np.ndarray, at: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """[rows] bool: whether the first lengths[i] bytes of rows[i] equal text[at[i]:][:lengths[i]] (lengths below
    the rows' width): the first differing column of each row, found as `_stop_free` finds a stop."""
    width = rows.shape[1]
    padded = np.concatenate([text, np.zeros(width, dtype=np.uint8)])
    windows = np.lib.stride_tricks.as_strided(padded, shape=(len(text), width), strides=(1, 1), writeable=False)
    differ = windows[at] != rows
    differ[:, -1] = True
    return differ.argmax(axis=1) >= lengths


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


def base_codes(sequence: bytes) -> np.ndarray:
    """[len] uint8: each base of an upper-case sequence as T C A G = 0..3 (the codon table's order), 4 for any other
    letter, so the sequence is A C G T only where the largest code is 3."""
    return np.frombuffer(sequence.translate(_CODE), dtype=np.uint8)


def codon_codes(codes: np.ndarray) -> bytes:
    """[len - 2] bytes: the codon at every position p of a sequence (`base_codes`), coded once as a byte,
    25 a + 5 b + c (each base 0..4). `_AMINO5` turns a code into the codon's amino acid and `_AMINO5_RC` into that
    of its reverse complement: the reverse strand's codon at reverse position r is the reverse complement of the
    forward codon at len - 3 - r, so a reverse frame reads these codes backwards, every third byte, and nothing is
    reversed or coded twice."""
    if len(codes) < 3:
        return b""
    index = codes[:-2] * np.uint8(25)          # <= 124: uint8 throughout
    index += codes[1:-1] * np.uint8(5)
    index += codes[2:]
    return index.tobytes()


def frame_aminos(codons: bytes, begins: np.ndarray, width: int, step: int, table: bytes) -> np.ndarray:
    """[frames, width] uint8: the amino acids of `width` codons of each frame from begins[i] (`codon_codes`
    positions), forwards (step 3, table `_AMINO5`) or backwards (step -3, `_AMINO5_RC`): a gather of the codes,
    then one `bytes.translate` of the rows gathered, so only the frames asked for are translated."""
    rows = strided_rows(codons, begins, width, step)
    return np.frombuffer(rows.tobytes().translate(table), dtype=np.uint8).reshape(rows.shape)


def strided_rows(letters: bytes, begins: np.ndarray, width: int, step: int) -> np.ndarray:
    """[len(begins), width] uint8: the `width` bytes from each of `begins`, every `step`-th (forwards or
    backwards), in one gather through a strided view of one padded copy. A row may run past what the caller
    wants from it (into the next read, or the padding): callers cut each to its length."""
    pad = np.zeros(abs(step) * width, dtype=np.uint8)
    padded = np.concatenate([pad, np.frombuffer(letters, dtype=np.uint8), pad])
    rows = np.lib.stride_tricks.as_strided(padded[len(pad):], shape=(len(letters), width), strides=(1, step),
                                           writeable=False)
    return rows[begins]


def _stop_free(rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[frames] bool: whether the first counts[i] letters of rows[i] hold no stop ('*'). rows' last column
    must lie past every count: it is set to a stop, so the first stop of every row (argmax's first True) is found
    at or before it."""
    stops = rows == ord("*")
    stops[:, -1] = True
    return (counts > 0) & (stops.argmax(axis=1) >= counts)


def _window_letters(raw: bytes, starts: np.ndarray, ends: np.ndarray, acgt_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """([windows] bool, [windows] bool): whether each window [starts, ends) of the upper-case sequence is free of
    the dropped ambiguity codes, and whether a free one holds another letter outside A C G T (U, say), which
    VirNucPro's codon-skipping translation handles. Differences of prefix sums, where the batch has such letters."""
    if acgt_only:   # most batches
        return np.ones(len(starts), dtype=bool), np.zeros(len(starts), dtype=bool)
    letters = np.frombuffer(raw, dtype=np.uint8)
    ambiguous = np.zeros(len(raw) + 1, dtype=np.int32)
    np.cumsum(_IS_AMBIGUOUS[letters], out=ambiguous[1:])
    clean = ambiguous[ends] == ambiguous[starts]
    other = np.zeros(len(raw) + 1, dtype=np.int32)
    np.cumsum(_IS_OTHER[letters], out=other[1:])
    return clean, clean & (other[ends] != other[starts])


def identify_records(records: list[tuple[str, str, list[str] | None]], read_length: int,
                     stats: IdentifyStats) -> tuple[str, str]:
    """The kept frames of a batch of genome records as the two identified FASTA texts (nucleotide, protein), one
    line a sequence, in VirNucPro's order: record by record, read by read, F1..R3 within a read.

    records: [(record id, sequence, the GenBank record's CDS translations or None)].

    The batch is worked as one sequence, its records laid end to end: a frame never leaves its read, so no codon
    it reads spans two records, and a read of the whole line at [s, e) has its reverse strand at [T - e, T - s)
    of the line's reverse complement (T the line's length), as it would in its own record. So the per-call costs
    of numpy are paid once a batch, not once a record, which is what a file of many small viral genomes needs.
    """
    lengths = np.array([len(sequence) for _, sequence, _ in records], dtype=np.int64)
    starts, ends, windows_per_record = record_windows(lengths, read_length)
    stats.records += len(records)
    stats.bases += int(lengths.sum())
    stats.reads += int(windows_per_record.sum())
    if not windows_per_record.sum():
        return "", ""
    record_at = np.concatenate([[0], np.cumsum(lengths)[:-1]])          # where each record starts on the line
    window_record = np.repeat(np.arange(len(records)), windows_per_record)
    starts, ends = starts + record_at[window_record], ends + record_at[window_record]
    sequence = "".join(sequence for _, sequence, _ in records)
    length = len(sequence)
    raw = sequence.encode("ascii", errors="replace")
    codes = base_codes(raw)
    acgt_only = not len(codes) or codes.max() <= 3
    if not acgt_only and not raw.isupper():   # VirNucPro upper-cases each record
        sequence = sequence.upper()
        raw = sequence.encode("ascii", errors="replace")
        codes = base_codes(raw)
        acgt_only = codes.max() <= 3
    clean, unusual = _window_letters(raw, starts, ends, acgt_only)
    stats.reads_ambiguous += int((~clean).sum())
    with_cds = np.array([bool(cds) for _, _, cds in records])[window_record]
    unusual &= with_cds
    stats.reads_other_letters += int(unusual.sum())
    if not (clean & with_cds).any():
        return "", ""
    cds = CdsIndex([found or [] for _, _, found in records])

    # [windows, 6] frames F1 F2 F3 R1 R2 R3 (offset o = 0, 1, 2 of each strand): codons, where the first codon
    # is in `codon_codes` (a reverse frame's, read backwards), and where it starts on its strand
    offsets = np.arange(3)
    forward_at = starts[:, None] + offsets
    reverse_at = (length - ends)[:, None] + offsets
    counts = np.tile((ends - starts)[:, None] - offsets, 2).ravel() // 3
    codon_at = np.concatenate([forward_at, length - 3 - reverse_at], axis=1).ravel()
    strand_at = np.concatenate([forward_at, reverse_at], axis=1).ravel()
    candidate = np.repeat(clean & with_cds & ~unusual, 6) & (counts > 0)
    codons = codon_codes(codes)
    is_reverse = np.tile(np.arange(6) >= 3, len(starts))
    strands = ((3, _AMINO5, np.flatnonzero(candidate & ~is_reverse)), (-3, _AMINO5_RC, np.flatnonzero(candidate & is_reverse)))
    # First each frame's head, its first K (six) amino acids, looked up in its record's translations: a frame
    # whose head is in none is kept by no rule, and that is most frames off a gene, so only the rest are
    # translated in full and checked for stops (a frame shorter than K goes on, to the plain rule). Eight are
    # gathered, as a key is loaded as one eight-byte word
    heads = [frame_aminos(codons, codon_at[at], 8, step, table) for step, table, at in strands]
    at = np.concatenate([at for _, _, at in strands])
    head_at, places = cds.head_places(np.concatenate(heads), counts[at], window_record[at // 6])
    further = (counts[at] < CdsIndex.K) | (places > 0)
    width = max(read_length // 3 + 1, 8)       # a column past the longest frame (`_stop_free`), a key's 8 bytes
    frames_at, blocks, found_heads, done = [], [], [], 0
    for step, table, strand_frames in strands:
        on = further[done: done + len(strand_frames)]
        picked = strand_frames[on]
        rows = frame_aminos(codons, codon_at[picked], width, step, table)
        stop_free = _stop_free(rows, counts[picked])
        frames_at.append(picked[stop_free])
        blocks.append(rows[stop_free])
        found_heads.append(np.flatnonzero(on)[stop_free] + done)
        done += len(strand_frames)
    frames_at, found_heads = np.concatenate(frames_at), np.concatenate(found_heads)
    order = np.argsort(frames_at, kind="stable")   # window-major, F1..R3 within a window: VirNucPro's order
    frames_at, rows, found_heads = frames_at[order], np.concatenate(blocks)[order], found_heads[order]
    strand_at, counts = strand_at[frames_at], counts[frames_at]
    line_text = rows.tobytes().decode("ascii")
    begins = np.arange(len(frames_at), dtype=np.int64) * width

    def protein(i: int) -> str:
        return line_text[begins[i]: begins[i] + counts[i]]

    kept = cds.contains_frames(rows, counts, window_record[frames_at // 6], protein,
                               (head_at[found_heads], places[found_heads]))
    # each kept frame's id (read k of record r is window k - first_window[r] of the batch, VirNucPro's
    # <record>_chunk_<k + 1>) and nucleotide: from its first codon on its strand, one base past its codons, cut
    # at the read's end; a reverse frame's is gathered backwards from the forward strand and complemented
    kept_at = frames_at[kept]
    window, frame = kept_at // 6, kept_at % 6
    reverse = frame >= 3
    first_window = np.cumsum(windows_per_record) - windows_per_record
    record = window_record[window]
    nucleotide_at = strand_at[kept]
    nucleotide_length = np.minimum(np.where(reverse, length - starts[window], ends[window]) - nucleotide_at,
                                   1 + 3 * counts[kept])
    reverse_text = strided_rows(raw, length - 1 - nucleotide_at[reverse], read_length, -1).tobytes() \
        .translate(_RC).decode("ascii")
    piece_at = nucleotide_at.copy()
    piece_at[reverse] = np.arange(int(reverse.sum())) * read_length
    prefixes = [f">{record_id}_chunk_" for record_id, _, _ in records]
    headers = [f"{prefixes[r]}{number}{SUFFIXES[f]}\n" for r, number, f
               in zip(record.tolist(), (window - first_window[record] + 1).tolist(), frame.tolist())]
    sources = (sequence, reverse_text)
    nucleotides = [f"{header}{sources[r][a: a + n]}\n" for header, r, a, n
                   in zip(headers, reverse.tolist(), piece_at.tolist(), nucleotide_length.tolist())]
    proteins = [f"{header}{line_text[a: a + n]}\n" for header, a, n
                in zip(headers, begins[kept].tolist(), counts[kept].tolist())]
    order = window.tolist()
    if unusual.any():   # reads with letters outside A C G T, translated VirNucPro's skipping way
        for at in np.flatnonzero(unusual).tolist():
            r = int(window_record[at])
            header = f"{prefixes[r]}{at - first_window[r] + 1}"
            frames = [(suffix, protein, nucleotide) for suffix, protein, nucleotide
                      in virnucpro_frames(sequence[int(starts[at]): int(ends[at])]) if protein and "*" not in protein]
            for (suffix, protein, nucleotide), ok in zip(frames, cds.contains_all(r, [f[1] for f in frames])):
                if ok:
                    nucleotides.append(f"{header}{suffix}\n{nucleotide}\n")
                    proteins.append(f"{header}{suffix}\n{protein}\n")
                    order.append(at)
        by_window = sorted(range(len(order)), key=order.__getitem__)   # stable: a window's frames keep their order
        nucleotides, proteins = [nucleotides[i] for i in by_window], [proteins[i] for i in by_window]
    stats.frames_kept += len(nucleotides)
    return "".join(nucleotides), "".join(proteins)


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------
def _gzip_open(path):
    """A binary gzip handle: ISA-L's where isal is installed, else the standard library's."""
    return igzip.open(path, "rb") if igzip is not None else gzip.open(path, "rb")


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


def _header_starts(block: bytes, at: int, after_newline: bool) -> list[int]:
    """Where a header line ('>' first on its line) starts in block[at:]; after_newline: whether the byte before
    block[0] ends a line (or the file starts there). Found with `bytes.find` of one byte (memchr), checked for the
    newline before it: a '>' inside a header line is not a record's start, and sequence lines hold none."""
    starts = []
    while (at := block.find(b">", at)) >= 0:
        if block[at - 1] == 10 if at else after_newline:
            starts.append(at)
        at += 1
    return starts


def fasta_records(path, block_size: int = 1 << 22):
    """(id, sequence) of each record of a genome FASTA (plain or .gz), streamed one record at a time.

    Read in large blocks and split where a line starts with '>', not line by line: genome records are megabases
    long, and a record longer than a block is kept as its blocks' parts, joined once. Text before the first '>'
    is skipped, the id is the header up to the first white space (Biopython's record.id) and the sequence is
    every other line joined with white space removed, as Biopython's FASTA parser gives them. Protein and read
    chunk files go through `fasta.read_fasta`, which checks every line; PREFLIGHT checks a genome FASTA's letters
    record by record.
    """
    with open_binary(path) as handle:
        parts, after_newline = None, True     # parts: the current record's bytes so far (None before the first)
        while block := handle.read(block_size):
            at = 0
            for start in _header_starts(block, 0, after_newline):
                if parts is not None:
                    parts.append(block[at:start])
                    yield _fasta_record(b"".join(parts))
                parts, at = [], start
            if parts is not None:
                parts.append(block[at:])
            after_newline = block.endswith(b"\n")
        if parts:
            yield _fasta_record(b"".join(parts))


def _fasta_record(text: bytes) -> tuple[str, str]:
    newline = text.find(b"\n")
    header, body = (text[1:newline], text[newline + 1:]) if newline >= 0 else (text[1:], b"")
    return _first_word(header), _joined_lines(body).decode("ascii", errors="replace")


def _first_word(header: bytes) -> str:
    words = header.split(None, 1)
    return words[0].decode("ascii", errors="replace") if words else ""


def _joined_lines(body: bytes) -> bytes:
    """A FASTA record's sequence lines joined, white space removed. A genome FASTA's lines are all of one width
    but the last, so where every (width + 1)-th byte is the newline the lines are cut out of a [lines, width + 1]
    view in one copy, and then checked (memchr) to hold no white space; any other layout is cleaned byte by
    byte."""
    width = body.find(b"\n")
    lines = len(body) // (width + 1) if width > 0 else 0
    if lines >= 2:
        grid = np.frombuffer(body, dtype=np.uint8, count=lines * (width + 1)).reshape(lines, width + 1)
        if (grid[:, width] == 10).all():
            tail = body[lines * (width + 1):]
            joined = grid[:, :width].tobytes() + (tail[:-1] if tail.endswith(b"\n") else tail)
            if not any(space in joined for space in (b"\n", b"\r", b" ", b"\t")):
                return joined
    return body.translate(None, b" \t\r\n")


def fasta_ids(path, block_size: int = 1 << 22) -> list[str]:
    """The record ids of a FASTA, from its header lines only (read in large blocks), as `fasta_records` gives them."""
    ids, header, after_newline = [], None, True    # header: a header line cut at the end of a block, so far
    with open_binary(path) as handle:
        while block := handle.read(block_size):
            at = 0
            if header is not None:
                end = block.find(b"\n")
                if end < 0:
                    header += block
                    continue
                ids.append(_first_word(header + block[:end]))
                header, at = None, end
            for start in _header_starts(block, at, after_newline):
                end = block.find(b"\n", start)
                if end < 0:
                    header = block[start + 1:]
                    break
                ids.append(_first_word(block[start + 1: end]))
            after_newline = block.endswith(b"\n")
    if header is not None:
        ids.append(_first_word(header))
    return ids


# a literal first byte lets the regex engine jump from newline to newline instead of trying every position
_FEATURE_KEY_LINE = re.compile(rb"\n {5}\S")      # a feature key starts in column 6; qualifiers in column 22
_SECTION_END = re.compile(rb"\n\S")               # the feature table ends at the next line that does not indent
# a qualifier starts a line at column 22 (so a /note that quotes "/translation=" is not taken for one)
_TRANSLATION = b"\n" + b" " * 21 + b'/translation="'
_LOCUS_LENGTH = re.compile(rb"LOCUS +\S+ +(\d+) bp")
_ORIGIN_OR_END = re.compile(rb"\n(ORIGIN|//)")
_HEADER_WORD = re.compile(rb"^(LOCUS|ACCESSION|VERSION) +(\S+)", re.M)


def genbank_records(path, block_size: int = 1 << 22):
    """Each record of a GenBank file (plain or .gz) up to its '//' line, as (buffer, start, end, features, table_end):
    the record is buffer[start:end], left in the block it was read in (a record is not copied out; searches take
    the bounds); its FEATURES line starts at `features` and its feature table ends at `table_end` (both -1 with no
    FEATURES line). One block of the file in memory at a time, or up to twice a record where a record is longer:
    while a record is not whole, the next read is as long as what is held, so the buffer doubles and a long
    record is searched from its start a few times (O(its length) in all), not once a block."""
    with open_binary(path) as handle:
        buffer = b""
        while True:
            block = handle.read(max(block_size, len(buffer)))
            buffer = buffer + block if buffer else block
            start = 0
            while True:
                table = _feature_table(buffer, start)
                end = _record_end(buffer, start, table[1]) if table else -1
                if end < 0:
                    break
                yield buffer, start, end + 1, *table
                rest = buffer.find(b"\n", end + 3)
                start = rest + 1 if rest >= 0 else len(buffer)
            buffer = buffer[start:]
            if not block:
                break
        if buffer.strip():
            yield buffer, 0, len(buffer), *_feature_table(buffer, 0, len(buffer))


def _feature_table(buffer: bytes, start: int, end: int | None = None) -> tuple[int, int] | None:
    """(where the FEATURES line of the record at `start` begins, where its feature table ends: at the first line
    after it that does not indent, BASE COUNT, ORIGIN, CONTIG or '//'), (-1, -1) for a record without FEATURES,
    or None while the buffer does not reach the table's end. `end`: the record's end, where it is known."""
    features = buffer.find(b"\nFEATURES", start, len(buffer) if end is None else end)
    if features < 0 or (end is None and buffer.find(b"\n//", start, features) >= 0):   # none, or a later record's
        return -1, -1
    body = buffer.find(b"\n", features + 1, len(buffer) if end is None else end)
    found = _SECTION_END.search(buffer, body, len(buffer) if end is None else end) if body >= 0 else None
    if found is None:
        return None if end is None else (features, end)
    return features, found.start()


def _record_end(buffer: bytes, start: int, table_end: int) -> int:
    """Where the '\n//' that ends the record at `start` is, or -1 if the buffer does not hold it yet.

    The sequence section is most of a record's bytes and holds nothing VirNucPro takes, so it is not searched:
    its length follows from the LOCUS line's (lines of 60 bases after a 9-column position, a space before each 10),
    and the '//' is looked for there, once the bytes before it are known to hold no '/' (one memchr: a sequence
    section holds none, so the record's own '//' is not earlier, and a later record's is not taken for it). A
    record laid out otherwise is searched for its '//' instead. The ORIGIN line is looked for from the end of the
    feature table, which `_feature_table` has found (table_end), if any."""
    section = _ORIGIN_OR_END.search(buffer, max(start, table_end))   # a record without ORIGIN (CONTIG, say) ends
    if section is None or section.group(1) == b"//":                 # at its own '//'
        return section.start() if section else -1
    locus = _LOCUS_LENGTH.match(buffer, start)
    line_end = buffer.find(b"\n", section.start() + 1) if locus else -1
    if line_end >= 0:
        bases = int(locus.group(1))
        full, rest = divmod(bases, 60)
        expected = line_end + 76 * full + (10 + rest + -(-rest // 10) if rest else 0)
        if buffer.startswith(b"\n//", expected) and buffer.find(b"/", line_end, expected) < 0:
            return expected
    return buffer.find(b"\n//", start)


def genbank_entries(genbank, block_size: int = 1 << 22):
    """(record id, where its feature table is) of each record of a GenBank file, in file order, the id as Biopython
    gives it (VERSION's accession.version, else the accession, else the LOCUS name); `record_translations(*where)`
    reads its CDS translations, for the records wanted only."""
    for block, record_start, record_end, features_at, table_end in genbank_records(genbank, block_size):
        words = {}
        for found in _HEADER_WORD.finditer(block, record_start, features_at if features_at >= 0 else record_end):
            words.setdefault(found.group(1), found.group(2).decode("ascii", errors="replace"))
        yield (_record_id(words.get(b"LOCUS"), words.get(b"ACCESSION"), words.get(b"VERSION")),
               (block, record_end, features_at, table_end))


def record_translations(block: bytes, record_end: int, features_at: int, table_end: int) -> list[str]:
    """The /translation of each CDS feature of one record (`genbank_entries`), in file order, joined across lines
    with white space removed, as Biopython reads it; a CDS without one counts as an empty translation, as in
    VirNucPro. The translations are cleaned of white space together, one `bytes.translate` a record: a
    translation holds no '"', which parts them."""
    parts = []
    body = block.find(b"\n", features_at + 1, record_end) if features_at >= 0 else -1
    # each CDS key line, and the first /translation after it unless another feature's key comes first
    at = block.find(b"\n     CDS ", body, table_end) if body >= 0 else -1
    while at >= 0:
        start = block.find(_TRANSLATION, at, table_end)
        if start < 0 or _FEATURE_KEY_LINE.search(block, at + 1, start):
            parts.append(b"")
        else:
            start += len(_TRANSLATION)
            close = block.find(b'"', start, table_end)
            parts.append(block[start: close if close >= 0 else table_end])
        at = block.find(b"\n     CDS ", at + 1, table_end)
    return b'"'.join(parts).translate(None, b" \t\r\n").decode("ascii", errors="replace").split('"') if parts else []


def scanned_records(genbank):
    """(record id, CDS translations) of each record of a GenBank file, in file order, as the scan reads them
    (`genbank_entries`, `record_translations`): what PREFLIGHT compares with `biopython_records`."""
    for record_id, where in genbank_entries(genbank):
        yield record_id, record_translations(*where)


def biopython_records(genbank):
    """(record id, the /translation of each CDS feature, '' where a CDS has none) of each record of a GenBank file,
    in file order, read by Biopython exactly as VirNucPro reads them: the reference PREFLIGHT checks the scan
    against, for every file, and the reader of a file laid out so that the scan would read it otherwise."""
    from Bio import SeqIO

    with open_text(genbank) as handle:
        for record in SeqIO.parse(handle, "genbank"):
            yield record.id, [feature.qualifiers.get("translation", [""])[0] for feature in record.features
                              if feature.type == "CDS"]


def biopython_cds_translations(genbank, wanted: set[str] | None = None) -> dict[str, list[str]]:
    """`cds_translations`, read by Biopython (`biopython_records`)."""
    return {record_id: found for record_id, found in biopython_records(genbank)
            if wanted is None or record_id in wanted}


def cds_translations(genbank, wanted: set[str] | None = None, block_size: int = 1 << 22) -> dict[str, list[str]]:
    """{record id: the /translation of each CDS feature, in file order}, for the records in `wanted` (all if None);
    a record id met twice keeps its last record's, as a dict built from Biopython's parse does.

    A scan for just what VirNucPro takes from the GenBank file (`genbank_entries`, `record_translations`).
    Biopython parses every file in PREFLIGHT (which reports what does not parse, and compares its reading of every
    record with this scan's: a file where they differ is read with `biopython_cds_translations` instead); parsing
    again here with it would cost more than the rest of the identification, so this reads only those qualifiers.
    """
    return {record_id: record_translations(*where) for record_id, where in genbank_entries(genbank, block_size)
            if wanted is None or record_id in wanted}


class _NotInFileOrder(Exception):
    """A genome FASTA whose records are not the GenBank file's in the same order (or not all in it)."""


class _TranslationsInFileOrder:
    """The CDS translations of the GenBank records a genome FASTA's records name, read as the two files are walked
    side by side: RefSeq writes a genome FASTA's records in its GenBank file's order (a FASTA part of a release
    being a run of the GenBank file's records), so one pass over each file serves, and nothing but the record in
    hand is held. _NotInFileOrder is raised where the walk cannot give what a dict of every record would: by
    `get` for a record not found ahead, and wherever a record id already used is met again (a dict keeps the
    last), by `get` as it walks on or by `finish`, which walks the rest of the file."""

    def __init__(self, genbank):
        self._entries = genbank_entries(genbank)
        self._used = set()

    def get(self, record_id: str) -> list[str]:
        for entry_id, where in self._entries:
            if entry_id in self._used:
                raise _NotInFileOrder(entry_id)
            if entry_id == record_id:
                self._used.add(record_id)
                return record_translations(*where)
        raise _NotInFileOrder(record_id)

    def finish(self) -> None:
        for entry_id, _ in self._entries:
            if entry_id in self._used:
                raise _NotInFileOrder(entry_id)


def _record_id(name, accession, version) -> str:
    """The record id Biopython gives an NCBI file's record: VERSION's accession.version, else the accession, else
    the LOCUS name (Biopython's rule differs in headers NCBI does not write, which PREFLIGHT's comparison finds)."""
    if version and version.count(".") == 1 and version.split(".")[1].isdigit():
        return version
    return version or accession or name or ""


# Records are identified in batches of about this many bases (or records): many small viral genomes cost one numpy
# pass, not one each, while memory stays at a batch (and a bacterial chromosome is a batch of its own)
BATCH_BASES = 1 << 18
BATCH_RECORDS = 4096


def identify_genome(fasta, genbank, read_length: int, nucleotide_out, protein_out,
                    first_record: int = 0, last_record: int | None = None, genbank_reader: str = "scan") -> IdentifyStats:
    """Write the kept frames of the FASTA's records [first_record, last_record) to the two identified FASTA files
    (one line per sequence, the same ids in the same order); return what they gave.

    The GenBank file is walked beside the FASTA (`_TranslationsInFileOrder`), as RefSeq's files allow; where the
    records are not in the same order (or one is missing, or an id is repeated), the outputs so far are dropped
    and the FASTA's ids are read first, so that only the CDS translations of the records it names are loaded.
    genbank_reader "biopython" (PREFLIGHT's choice for a file the scan reads otherwise than Biopython) reads the
    translations with Biopython, the FASTA's ids first."""
    if genbank_reader not in GENBANK_READERS:
        raise ValueError(f"genbank_reader {genbank_reader!r}: one of {', '.join(GENBANK_READERS)}")
    if genbank_reader == "biopython":
        return _identify_ids_first(fasta, genbank, read_length, nucleotide_out, protein_out, first_record,
                                   last_record, biopython_cds_translations)
    try:
        in_order = _TranslationsInFileOrder(genbank)
        stats = _identify(fasta, in_order.get, read_length, nucleotide_out, protein_out, first_record, last_record,
                          in_order.finish)
    except _NotInFileOrder:
        stats = _identify_ids_first(fasta, genbank, read_length, nucleotide_out, protein_out, first_record,
                                    last_record, cds_translations)
    return stats


def _identify_ids_first(fasta, genbank, read_length: int, nucleotide_out, protein_out, first_record: int,
                        last_record: int | None, read_translations) -> IdentifyStats:
    """identify_genome with the FASTA's ids read first, and then the CDS translations of only the GenBank records
    they name: `read_translations(genbank, wanted)`, `cds_translations` or `biopython_cds_translations`."""
    wanted = {record_id.split("_chunk_")[0] for record_id in fasta_ids(fasta)[first_record:last_record]}
    translations = read_translations(genbank, wanted)
    return _identify(fasta, translations.get, read_length, nucleotide_out, protein_out, first_record, last_record)


def _identify(fasta, translations_of, read_length: int, nucleotide_out, protein_out, first_record: int,
              last_record: int | None, finish=None) -> IdentifyStats:
    """identify_genome's work, with the GenBank record's translations of a record id from `translations_of`
    (None: no such record); `finish` runs before the outputs are renamed into place."""
    stats = IdentifyStats()
    with atomic_path(nucleotide_out) as nucleotide_tmp, atomic_path(protein_out) as protein_tmp, \
            open(nucleotide_tmp, "w") as nucleotide, open(protein_tmp, "w") as protein:

        def write(batch):
            nucleotide_text, protein_text = identify_records(batch, read_length, stats)
            nucleotide.write(nucleotide_text)
            protein.write(protein_text)

        batch, batch_bases = [], 0
        for index, (record_id, sequence) in enumerate(fasta_records(fasta)):
            if index < first_record:
                continue
            if last_record is not None and index >= last_record:
                break
            # VirNucPro looks the GenBank record up by the read id before '_chunk_'
            found = translations_of(f"{record_id}_chunk_1".split("_chunk_")[0])
            if found is None:
                stats.records_without_genbank.append(record_id)
            elif not any(found):
                stats.records_without_cds.append(record_id)
            batch.append((record_id, sequence, found))
            batch_bases += len(sequence)
            if batch_bases >= BATCH_BASES or len(batch) >= BATCH_RECORDS:
                write(batch)
                batch, batch_bases = [], 0
        write(batch)
        if finish is not None:
            finish()
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
