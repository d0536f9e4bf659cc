"""The earlier starting points of a prefix: RefSeq genomes (a GenBank file and the genome FASTA files it
annotates) and unsplit identified FASTA. Every file is read to its end here, before any task computes from it:
a cut-off .gz, a GenBank file that does not parse, letters outside IUPAC, a FASTA record the GenBank file does not
have (counted) and a GenBank record without CDS translations (a warning: VirNucPro keeps nothing from it)."""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

from ..defaults import GENOME_SHARD_BASES
from ..errors import InputError

IUPAC = frozenset("ACGTURYSWKMBDHVN")
GENBANK_SUFFIX = re.compile(r"^(?P<base>.+\.)genomic\.gbff(?:\.gz)?$")
GENOME_FASTA_SUFFIX = re.compile(r"^(?P<prefix>.+)\.genomic\.fna(?:\.gz)?$")
IDENTIFIED_SUFFIX = re.compile(r"^(?P<prefix>.+)\.identified_(?P<side>protein|nucleotide)\.fa$")
CUT_OFF_FIX = "download it again (the copy ends before the end of its gzip stream)"


@dataclass
class GenbankSummary:
    """Record ids of a GenBank file, with how many CDS translations each has; and the first record the fast scan
    (`genomes.scanned_records`) reads otherwise than Biopython, if any: that file is identified with Biopython."""

    path: str
    cds_per_record: dict[str, int] = field(default_factory=dict)
    scan_differs_at: str | None = None

    @property
    def genbank_reader(self) -> str:
        return "biopython" if self.scan_differs_at is not None else "scan"


@dataclass
class GenomeFastaSummary:
    """Records of a genome FASTA in order: ids and lengths; and its shards of about GENOME_SHARD_BASES bases."""

    path: str
    ids: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    def shards(self, bases: int = GENOME_SHARD_BASES) -> list[tuple[int, int]]:
        """[first, last) record ranges: consecutive records, a new shard once one holds `bases` bases."""
        shards, first, held = [], 0, 0
        for index, length in enumerate(self.lengths):
            held += length
            if held >= bases:
                shards.append((first, index + 1))
                first, held = index + 1, 0
        if first < len(self.lengths) or not shards:
            shards.append((first, len(self.lengths)))
        return shards


def _gzip_failure(exc: BaseException) -> bool:
    return isinstance(exc, (EOFError, zlib.error)) or "gzip" in type(exc).__name__.lower() or \
        "compressed file ended" in str(exc).lower() or "not a gzipped file" in str(exc).lower()


def _scan_readings(local):
    """The scan's (record id, translations) of each record, then None for ever: also where the scan fails on a
    file Biopython may yet read (so the two differ there)."""
    from ..genomes import scanned_records

    try:
        yield from scanned_records(local)
    except Exception:  # any failure of the scan means only that Biopython reads this file
        pass
    while True:
        yield None


def check_genbank(origin: str, local) -> tuple[GenbankSummary | None, list[InputError]]:
    """Parse a GenBank file to its end (Biopython); its records' CDS translation counts, or the error. Beside it,
    the fast scan that identification uses reads the file too, and must read every record as Biopython does
    (id and CDS translations): a layout NCBI does not write could make it read otherwise, silently, so the first
    record where it does is kept (`scan_differs_at`) and the file is then identified with Biopython."""
    from ..genomes import biopython_records

    summary = GenbankSummary(origin)
    scanned = _scan_readings(local)
    last = None
    try:
        for record_id, translations in biopython_records(local):
            summary.cds_per_record[record_id] = sum(1 for translation in translations if translation)
            if summary.scan_differs_at is None and next(scanned) != (record_id, translations):
                summary.scan_differs_at = f"record {record_id}"
            last = record_id
        # records the scan finds after Biopython's last (none where Biopython found none: that file is an error
        # below, and a scan through a file that holds no record end would hold all of it)
        if last is not None and summary.scan_differs_at is None and next(scanned) is not None:
            summary.scan_differs_at = f"after record {last}"
    except Exception as exc:  # Biopython raises ValueError and others; a cut-off .gz raises EOFError
        where = f"after record {last}" if last else "first record"
        if _gzip_failure(exc):
            return None, [InputError(origin, where, "cut-off gzip file", CUT_OFF_FIX)]
        message = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        return None, [InputError(origin, where, f"GenBank file does not parse ({message})",
                                 "give the .genomic.gbff(.gz) file as RefSeq ships it (download it again)")]
    if not summary.cds_per_record:
        return None, [InputError(origin, "-", "GenBank file holds no records",
                                 "give the .genomic.gbff(.gz) file as RefSeq ships it (download it again)")]
    return summary, []


def check_genome_fasta(origin: str, local) -> tuple[GenomeFastaSummary | None, list[InputError]]:
    """Read a genome FASTA to its end: ids and lengths, letters within IUPAC."""
    from ..genomes import fasta_records

    summary = GenomeFastaSummary(origin)
    try:
        for number, (record_id, sequence) in enumerate(fasta_records(local), start=1):
            bad = sorted(set(sequence.upper()) - IUPAC)
            if bad:
                return None, [InputError(origin, f"record {record_id or number}",
                                         f"letter(s) {''.join(bad)!r} outside the IUPAC nucleotide codes",
                                         "give the genome FASTA as RefSeq ships it (A C G T and IUPAC ambiguity codes)")]
            if not record_id:
                return None, [InputError(origin, f"record {number}", "record has no id after '>'",
                                         "give every record an id")]
            summary.ids.append(record_id)
            summary.lengths.append(len(sequence))
    except Exception as exc:
        last = summary.ids[-1] if summary.ids else None
        where = f"after record {last}" if last else "first record"
        if _gzip_failure(exc):
            return None, [InputError(origin, where, "cut-off gzip file", CUT_OFF_FIX)]
        raise
    if not summary.ids:
        return None, [InputError(origin, "-", "genome FASTA holds no records", "give the .genomic.fna(.gz) file as "
                                 "RefSeq ships it (download it again)")]
    return summary, []


def genbank_for(fasta_name: str, genbank_names: list[str]) -> str | None:
    """The GenBank file that annotates a genome FASTA, as VirNucPro pairs them: `<base>.genomic.gbff[.gz]` for
    `<base>.<k>.genomic.fna[.gz]` (the longest base, should several match)."""
    matches = [g for g in genbank_names if (m := GENBANK_SUFFIX.match(g)) and fasta_name.startswith(m["base"])]
    return max(matches, key=len) if matches else None


def expected_genbank(fasta_name: str) -> str:
    """The GenBank name a genome FASTA wants: viral.1.1.genomic.fna.gz -> viral.1.genomic.gbff.gz."""
    prefix = GENOME_FASTA_SUFFIX.match(fasta_name)["prefix"]
    base = prefix.rsplit(".", 1)[0] if "." in prefix else prefix
    return f"{base}.genomic.gbff" + (".gz" if fasta_name.endswith(".gz") else "")


@dataclass
class UnsplitSummary:
    records: int = 0


def check_unsplit(protein: str, nucleotide: str, local_protein, local_nucleotide
                  ) -> tuple[UnsplitSummary | None, list[InputError]]:
    """An unsplit identified pair: both FASTA readable, proteins and reads within their alphabets, the same ids in
    the same order (streamed: memory does not grow with the files)."""
    from ..fasta import check_nucleotide, check_protein, read_fasta

    fix = ("give the two identified FASTA files of one run of VirNucPro's make_train_dataset (the same ids, in the "
           "same order)")
    summary = UnsplitSummary()
    try:
        reads = read_fasta(local_nucleotide)
        for record in read_fasta(local_protein):
            check_protein(protein, record)
            partner = next(reads, None)
            if partner is None or partner.id != record.id:
                there = f"has {partner.id!r} there" if partner else "has no record there"
                return None, [InputError(protein, f"record {record.id} (line {record.line})",
                                         f"the nucleotide FASTA {there}", fix)]
            check_nucleotide(nucleotide, partner)
            summary.records += 1
        extra = next(reads, None)
        if extra is not None:
            return None, [InputError(nucleotide, f"record {extra.id} (line {extra.line})",
                                     "the protein FASTA has no record there", fix)]
    except InputError as exc:
        exc.file = protein if exc.file == str(local_protein) else nucleotide if exc.file == str(local_nucleotide) else exc.file
        return None, [exc]
    return summary, []
