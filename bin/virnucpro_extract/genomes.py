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
# amino acid of the reverse complement of a forward codon (complement: T C A G <-> A G T C, i.e. code ^ 2)
_AMINO5_RC = np.full(125, ord("?"), dtype=np.uint8)
for _i in range(4):
    for _j in range(4):
        for _k in range(4):
            _AMINO5_RC[25 * _i + 5 * _j + _k] = _AMINO5[25 * (_k ^ 2) + 5 * (_j ^ 2) + (_i ^ 2)]
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

    def contains_all(self, queries: list[str], chains: list | None = None) -> list[bool]:
        """For each query, whether it lies within one translation (VirNucPro's `any(q in p for p in list)`).

        `chains` (optional, one per query): (strand phase, codon index of the query in that phase's translation),
        or None. The frames of consecutive reads along one gene are consecutive stretches of its translation, so
        where the previous query of the same strand phase was found at p, this one is first tried at
        p + (its codon index - the previous one's): one comparison instead of a scan. Any match decides, so the
        answer is the scan's whatever the guess.
        """
        if not self.any:
            return [False] * len(queries)
        if len(self.text) * len(queries) < 30_000_000:  # a small record: scanning costs less than indexing
            text = self.text
            if chains is None:
                return [q in text for q in queries]
            found, last = [], {}
            for query, chain in zip(queries, chains):
                if chain is not None and chain[0] in last:
                    codon, position = last[chain[0]]
                    guess = position + chain[1] - codon
                    if guess >= 0 and text.startswith(query, guess):
                        found.append(True)
                        last[chain[0]] = (chain[1], guess)
                        continue
                position = text.find(query)
                found.append(position >= 0)
                if position >= 0 and chain is not None:
                    last[chain[0]] = (chain[1], position)
            return found
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


def translated_strands(sequence: bytes) -> tuple[tuple, tuple]:
    """Both strands of a sequence translated whole in their three phases (a codon holding another letter as '?'):
    (forward, reverse), each as `_phases` gives it.

    Every position's codon is coded once; the reverse strand's codon at reverse position r is the reverse
    complement of the forward codon ending at the mirrored position, so its amino acid comes from the same codes
    through the reverse-complement table, read backwards: no second strand to code.
    """
    codes = _CODE[np.frombuffer(sequence, dtype=np.uint8)]
    if len(codes) < 3:
        empty = (["", "", ""], np.zeros(3, dtype=np.int32), [0, 1, 2])
        return empty, empty
    index = codes[:-2] * np.uint8(25) + codes[1:-1] * np.uint8(5) + codes[2:]  # <= 124: uint8 throughout
    return _phases(_AMINO5[index]), _phases(_AMINO5_RC[index][::-1])


def _phases(amino: np.ndarray) -> tuple[list[str], np.ndarray, list[int]]:
    """The protein of each phase p (every third amino acid from p), the running count of stops of the three
    phases laid end to end (`stops[offsets[p] + j]`: stops among the first j codons of phase p) and those offsets."""
    stop = amino == ord("*")
    proteins, running, offsets, offset = [], [], [], 0
    for phase in range(3):
        proteins.append(amino[phase::3].tobytes().decode("ascii"))
        counts = np.zeros(len(proteins[-1]) + 1, dtype=np.int32)
        np.cumsum(stop[phase::3], out=counts[1:])
        running.append(counts)
        offsets.append(offset)
        offset += len(counts)
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
    if raw.translate(None, b"ACGT"):   # some other letter: count which windows hold one (most records have none)
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
    fast = clean & ~unusual

    (forward, forward_stops, forward_offsets), (reverse, reverse_stops, reverse_offsets) = translated_strands(raw)
    reverse_raw = _RC[letters][::-1].tobytes()
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
        chain = (p if f < 3 else 3 + p, j)   # which phase translation the protein is a stretch of, and where
        candidates.append((k, f"{prefix}{k + 1}{suffixes[f]}", text[first:stop], proteins[p][j: j + n], chain))
    if unusual.any():
        for k in np.nonzero(unusual)[0].tolist():
            a, b = int(starts[k]), int(ends[k])
            candidates += [(k, f"{prefix}{k + 1}{suffix}", nucleotide, protein, None)
                           for suffix, protein, nucleotide in virnucpro_frames(sequence[a:b])
                           if protein and "*" not in protein]
        candidates.sort(key=lambda c: c[0])  # stable: the frames of a window keep their order
    kept = cds.contains_all([c[3] for c in candidates], [c[4] for c in candidates])
    candidates = [c[1:4] for c in candidates]
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


def open_binary(path):
    """A binary handle on a plain or gzip-compressed file."""
    path = Path(path)
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


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


_FEATURE_KEY = re.compile(rb"^     (\S+)", re.M)
_TRANSLATION = re.compile(rb'/translation="([^"]*)"')
_SECTION_END = re.compile(rb"^\S", re.M)


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
        header = block[: features_at if features_at >= 0 else len(block)]
        record_id = _record_id(_first_word(header, rb"^LOCUS\s+(\S+)"), _first_word(header, rb"^ACCESSION\s+(\S+)"),
                               _first_word(header, rb"^VERSION\s+(\S+)"))
        if wanted is not None and record_id not in wanted:
            continue
        cds = []
        if features_at >= 0:
            body_start = block.find(b"\n", features_at + 1) + 1
            end = _SECTION_END.search(block, body_start)
            table = block[body_start: end.start() if end else len(block)]
            keys = list(_FEATURE_KEY.finditer(table))
            for index, key in enumerate(keys):
                if key.group(1) != b"CDS":
                    continue
                stop = keys[index + 1].start() if index + 1 < len(keys) else len(table)
                found = _TRANSLATION.search(table, key.end(), stop)
                cds.append(found.group(1).translate(None, b" \t\r\n").decode("ascii", errors="replace") if found else "")
        translations[record_id] = cds
    return translations


def _first_word(header: bytes, pattern: bytes) -> str | None:
    found = re.search(pattern, header, re.M)
    return found.group(1).decode("ascii", errors="replace") if found else None


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
