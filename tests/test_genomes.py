"""From RefSeq genomes (and unsplit identified FASTA) to chunk files: the product's reads, frames and split checked
against tests/virnucpro_rules.py, an implementation of VirNucPro's rules written from the reference text; then real
`nextflow run`s from genomes and identified FASTA, a kill during the genome step, and each bad genome input."""
from __future__ import annotations

import gzip
import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
import warnings
from pathlib import Path

import pytest
import torch

import virnucpro_rules as rules
from conftest import DNABERT_DIM, ESM_DIM, MERGED_DIM, REPO, cli, cosine_rows, expect_errors, nextflow, nextflow_output, read_fasta_records

SENSE = [codon for codon, amino in rules.STANDARD_CODE.items() if amino != "*"]


# ----------------------------------------------------------------------------------------------
# Genomes written here: every edge case of the rules
# ----------------------------------------------------------------------------------------------
def gene(rng: random.Random, codons: int) -> str:
    return "ATG" + "".join(rng.choice(SENSE) for _ in range(codons))


def genome_with_genes(rng: random.Random, length: int) -> tuple[str, list[str]]:
    """Genes (stop-free codons) on both strands between spacers; their translations are the record's CDS."""
    sequence, translations = "", []
    while len(sequence) < length:
        sequence += "".join(rng.choice("ACGT") for _ in range(rng.randint(0, 90)))
        dna = gene(rng, rng.randint(40, 300))
        translations.append(rules.translate(dna))
        sequence += dna if rng.random() < 0.5 else rules.revcomp(dna)
    return sequence[:length], translations


def edge_records(rng: random.Random, prefix: str) -> tuple[list[tuple[str, str]], dict[str, list[str]]]:
    """Records of every kind the rules treat differently; returns (records in file order, GenBank CDS)."""
    records, cds = [], {}

    def add(name, sequence, translations, in_genbank=True):
        record_id = f"{prefix}_{name}.1"
        records.append((record_id, sequence))
        if in_genbank:
            cds[record_id] = translations

    add("long", *genome_with_genes(rng, 4200))
    # one gene the whole record long: every window keeps a frame, the uneven last windows included
    for name, length in (("l350", 350), ("l1000", 1000)):    # 0-300, 174-350; 0-300, 249-549, 498-798, 747-1000
        dna = gene(rng, length // 3)[:length]
        add(name, dna, [rules.translate(dna)])
    add("short", *genome_with_genes(rng, 130))                # shorter than a read: one short window
    sequence, translations = genome_with_genes(rng, 2000)
    add("ambiguous", sequence[:700] + "N" + sequence[701:1500] + "y" + sequence[1501:], translations)
    add("absent", *genome_with_genes(rng, 900), in_genbank=False)
    add("nocds", genome_with_genes(rng, 1200)[0], [])
    sequence, translations = genome_with_genes(rng, 1500)
    add("uracil", sequence[:400] + "U" + sequence[401:], translations)  # VirNucPro skips that codon
    # several frames of one read: the second read's codons are stop-free on both strands (F1 and R1), and both
    # translations are CDS of the record
    both = [c for c in SENSE if rules.revcomp(c) in SENSE]
    read = "".join(rng.choice(both) for _ in range(100))
    flank = lambda: "".join(rng.choice("ACGT") for _ in range(300))  # noqa: E731
    add("multi", flank() + read + flank(), [rules.translate(read), rules.translate(rules.revcomp(read))])
    return records, cds


def write_genbank(path: Path, records: list[tuple[str, str]], cds: dict[str, list[str]]) -> None:
    from Bio import SeqIO
    from Bio.Seq import Seq
    from Bio.SeqFeature import FeatureLocation, SeqFeature
    from Bio.SeqRecord import SeqRecord

    out = []
    for record_id, sequence in records:
        if record_id not in cds:
            continue
        record = SeqRecord(Seq(sequence), id=record_id, name=record_id.split(".")[0][:16], description="test genome",
                           annotations={"molecule_type": "DNA"})
        for k, translation in enumerate(cds[record_id]):
            record.features.append(SeqFeature(FeatureLocation(0, min(3, len(sequence))), type="CDS",
                                              qualifiers={"translation": [translation], "note": [f"cds {k}"]}))
        out.append(record)
    with gzip.open(path, "wt") as handle:
        SeqIO.write(out, handle, "genbank")


def write_genome_fasta(path: Path, records: list[tuple[str, str]], width: int = 70) -> None:
    with gzip.open(path, "wt") as handle:
        for record_id, sequence in records:
            handle.write(f">{record_id} test genome\n")
            handle.writelines(sequence[i:i + width] + "\n" for i in range(0, len(sequence), width))


def genbank_translations(path: Path) -> dict[str, list[str]]:
    """The test's own reading of a GenBank file (Biopython, as VirNucPro reads it)."""
    from Bio import SeqIO

    with gzip.open(path, "rt") as handle:
        return {r.id: [f.qualifiers.get("translation", [""])[0] for f in r.features if f.type == "CDS"]
                for r in SeqIO.parse(handle, "genbank")}


def fasta_records_gz(path: Path) -> list[tuple[str, str]]:
    records = []
    with gzip.open(path, "rt") as handle:
        for line in handle:
            line = line.strip()
            if line.startswith(">"):
                records.append([line[1:].split()[0], ""])
            elif line:
                records[-1][1] += line
    return [tuple(r) for r in records]


def refseq_folder(root: Path, seed: int = 7) -> Path:
    """viral.1 (two genome FASTA under one GenBank file, every edge case) and two host categories."""
    rng = random.Random(seed)
    data = root / "data"
    data.mkdir(parents=True)
    viral_1, cds_1 = edge_records(rng, "NC_v1")
    viral_2, cds_2 = edge_records(rng, "NC_v2")
    write_genbank(data / "viral.1.genomic.gbff.gz", viral_1 + viral_2, {**cds_1, **cds_2})
    write_genome_fasta(data / "viral.1.1.genomic.fna.gz", viral_1)
    write_genome_fasta(data / "viral.1.2.genomic.fna.gz", viral_2)
    for base in ("bacteria.1", "vertebrate_mammalian.1"):
        records, cds = [], {}
        for k in range(3):
            record_id = f"NC_{base[:4]}{k}.1"
            sequence, translations = genome_with_genes(rng, rng.choice([6000, 9000, 3000]))
            records.append((record_id, sequence))
            cds[record_id] = translations
        write_genbank(data / f"{base}.genomic.gbff.gz", records, cds)
        write_genome_fasta(data / f"{base}.1.genomic.fna.gz", records)
    return data


def expected_identified(data: Path, fasta: Path, read_length: int = 300) -> list[tuple[str, str, str]]:
    base = fasta.name.rsplit(".", 4)[0]  # viral.1.1.genomic.fna.gz -> viral.1
    genbank = data / f"{base}.genomic.gbff.gz"
    return rules.identified(fasta_records_gz(fasta), genbank_translations(genbank), read_length)


@pytest.fixture(scope="module")
def refseq(tmp_path_factory) -> Path:
    return refseq_folder(tmp_path_factory.mktemp("refseq"))


# ----------------------------------------------------------------------------------------------
# Unit tier: the identify and split commands against the rules
# ----------------------------------------------------------------------------------------------
def test_read_windows_follow_virnucpro(refseq):
    from virnucpro_extract.genomes import read_windows

    assert read_windows(350, 300) == [(0, 300), (174, 350)]
    assert read_windows(1000, 300) == [(0, 300), (249, 549), (498, 798), (747, 1000)]
    for length in list(range(1, 2000, 7)) + [299, 300, 301, 600, 601, 12345]:
        for c in (300, 500):
            assert read_windows(length, c) == rules.windows(length, c), (length, c)


@pytest.mark.parametrize("block_size", [1, 3, 7, 64, 1 << 22])
def test_a_genome_fasta_is_read_as_biopython_reads_it_at_any_block_size(tmp_path, block_size):
    """`fasta_records` splits blocks where a line starts with '>' and cuts equal-width lines out in one copy;
    `fasta_ids` reads the headers only. Records, ids and sequences must be Biopython's whatever the layout:
    lines of one width or of many, CRLF, blank lines, spaces in a line, a '>' inside a header, a header that
    starts '>>' or '> ', an empty record, no newline at the end, and a header or line cut at a block's end."""
    from Bio import SeqIO

    from virnucpro_extract.genomes import fasta_ids, fasta_records

    rng = random.Random(block_size)
    for case in range(40):
        newline = "\r\n" if case % 5 == 4 else "\n"
        text = ""
        for _ in range(rng.randint(1, 5)):
            title = rng.choice(["NC_1.1", " NC_2.1", ">NC_3.1", "id a > b", "x\tdescription", ""])
            sequence = "".join(rng.choices("ACGTNacgt", k=rng.randint(0, 500)))
            width = rng.choice([60, 80, 7, 1, 1000])
            lines = [sequence[i: i + width] for i in range(0, len(sequence), width)]
            if lines and rng.random() < 0.3:
                lines.insert(rng.randrange(len(lines)), rng.choice(["", "AC GT", "TTT"]))
            text += ">" + title + newline + newline.join(lines) + newline
        if case % 3 == 0:
            text = text.rstrip()
        path = tmp_path / f"g{case}.fna.gz"
        with gzip.open(path, "wb") as handle:
            handle.write(text.encode())
        with gzip.open(path, "rt") as handle:
            expected = [(record.id, str(record.seq)) for record in SeqIO.parse(handle, "fasta")]
        assert list(fasta_records(path, block_size)) == expected, text
        assert fasta_ids(path, block_size) == [record_id for record_id, _ in expected], text


@pytest.mark.parametrize("batch_bases", [None, 1, 4])
def test_identify_handles_tiny_records_and_tiny_translations_at_any_batch_edge(tmp_path, monkeypatch, batch_bases):
    """Records of 1-9 bases (a frame with no codon begins past the batch's translated line), CDS texts shorter
    than the lookup's six-residue key, a header with white space after '>' (Biopython's id is its first word),
    and each at the start, middle and end of a batch: VirNucPro's frames, no crash."""
    from virnucpro_extract.genomes import identify_genome

    if batch_bases:
        monkeypatch.setattr("virnucpro_extract.genomes.BATCH_BASES", batch_bases)
    records = [("NC_1.1", "T"), ("NC_2.1", "ATGAAAGTGCTG"), ("NC_3.1", "ATGAAA"), ("NC_4.1", "AT"),
               ("NC_5.1", "ATGAAACCC"), ("NC_6.1", "TTTCATTT")]
    cds = {"NC_1.1": ["M"], "NC_2.1": ["MKVL"], "NC_3.1": ["MK"], "NC_4.1": [""], "NC_5.1": ["MKP"],
           "NC_6.1": ["AMKA"]}
    fasta = tmp_path / "t.1.genomic.fna.gz"
    with gzip.open(fasta, "wt") as handle:
        handle.writelines(f"> {record_id} test\n{sequence}\n" if k == 2 else f">{record_id}\n{sequence}\n"
                          for k, (record_id, sequence) in enumerate(records))
    write_genbank(tmp_path / "t.genomic.gbff.gz", records, cds)
    stats = identify_genome(fasta, tmp_path / "t.genomic.gbff.gz", 300, tmp_path / "n.fa", tmp_path / "p.fa")
    expected = rules.identified(records, cds, 300)
    assert {i.split("_chunk_")[0] for i, _, _ in expected} >= {"NC_2.1", "NC_3.1", "NC_5.1", "NC_6.1"}
    assert read_fasta_records(tmp_path / "n.fa") == [(i, n) for i, n, _ in expected]
    assert read_fasta_records(tmp_path / "p.fa") == [(i, p) for i, _, p in expected]
    assert stats.records_without_genbank == []


@pytest.mark.parametrize("read_length, batch_bases", [(300, None), (500, None), (300, 1), (300, 5000)])
def test_identify_writes_what_virnucpro_writes(tmp_path, monkeypatch, refseq, read_length, batch_bases):
    """Records are identified in batches laid end to end: the default (the whole file, here), one record a batch,
    and batches that end mid-file must all write VirNucPro's reads and frames."""
    if batch_bases:
        monkeypatch.setattr("virnucpro_extract.genomes.BATCH_BASES", batch_bases)
    for fasta in sorted(refseq.glob("*.genomic.fna.gz")):
        base = fasta.name.rsplit(".", 4)[0]
        result = cli("identify", "--fasta", fasta, "--genbank", refseq / f"{base}.genomic.gbff.gz", "--read_length",
                     read_length, "--nucleotide_out", tmp_path / "n.fa", "--protein_out", tmp_path / "p.fa",
                     "--stats", tmp_path / "s.json")
        assert result.exit_code == 0, result.stderr
        expected = expected_identified(refseq, fasta, read_length)
        assert expected, f"{fasta.name}: the test data keeps no frame"
        assert read_fasta_records(tmp_path / "n.fa") == [(i, n) for i, n, _ in expected], fasta.name
        assert read_fasta_records(tmp_path / "p.fa") == [(i, p) for i, _, p in expected], fasta.name
        # one sequence per line, as VirNucPro writes them
        assert len((tmp_path / "p.fa").read_text().splitlines()) == 2 * len(expected)
        stats = json.loads((tmp_path / "s.json").read_text())
        assert stats["frames_kept"] == len(expected)
        if fasta.name.startswith("viral"):
            assert stats["records_without_genbank"] == [r for r, _ in fasta_records_gz(fasta) if "absent" in r]
            assert stats["reads_other_letters"] >= 1 and stats["reads_ambiguous"] >= 2


def test_identify_walks_the_genbank_file_beside_the_fasta_and_reads_ids_first_where_it_cannot(tmp_path, monkeypatch):
    """A RefSeq genome FASTA is a run of its GenBank file's records in the same order, so identify walks the two
    side by side without reading the FASTA's ids first. Where the orders differ, a GenBank record id repeats
    (a dict of Biopython's records keeps the last, whether the repeat comes after every record the FASTA names
    or among them) or a FASTA record repeats, the output must still be what VirNucPro writes from a dict of
    every GenBank record."""
    import virnucpro_extract.genomes as genomes

    rng = random.Random(23)
    records, cds = [], {}
    for k in range(8):
        record_id = f"NC_w{k}.1"
        sequence, translations = genome_with_genes(rng, rng.choice([900, 2500, 4000]))
        records.append((record_id, sequence))
        cds[record_id] = translations
    write_genbank(tmp_path / "in_order.gbff.gz", records, cds)
    write_genbank(tmp_path / "tail.gbff.gz", records[2:3], {records[2][0]: cds[records[5][0]]})
    write_genbank(tmp_path / "head.gbff.gz", records[:3], cds)
    write_genbank(tmp_path / "rest.gbff.gz", records[3:], cds)
    for name, parts in (("repeated", ["in_order", "tail"]), ("repeated_within", ["head", "tail", "rest"])):
        (tmp_path / f"{name}.gbff.gz").write_bytes(gzip.compress(b"".join(
            gzip.decompress((tmp_path / f"{part}.gbff.gz").read_bytes()) for part in parts)))
    ids_read = []
    real_fasta_ids = genomes.fasta_ids
    monkeypatch.setattr(genomes, "fasta_ids", lambda path: ids_read.append(path) or real_fasta_ids(path))
    cases = [("middle run", records[3:6], "in_order", False), ("reversed", records[::-1], "in_order", True),
             ("GenBank id repeated", records[1:4], "repeated", True),
             ("GenBank id repeated before a record the FASTA names later", records[1:5], "repeated_within", True),
             ("FASTA record repeated", records[2:4] + records[3:4], "in_order", True)]
    for name, fasta_records, genbank_name, reads_ids in cases:
        fasta, genbank = tmp_path / f"{name}.fna.gz", tmp_path / f"{genbank_name}.gbff.gz"
        write_genome_fasta(fasta, fasta_records)
        ids_read.clear()
        genomes.identify_genome(fasta, genbank, 300, tmp_path / "n.fa", tmp_path / "p.fa")
        expected = rules.identified(fasta_records_gz(fasta), genbank_translations(genbank), 300)
        assert expected, name
        assert read_fasta_records(tmp_path / "n.fa") == [(i, n) for i, n, _ in expected], name
        assert read_fasta_records(tmp_path / "p.fa") == [(i, p) for i, _, p in expected], name
        assert bool(ids_read) == reads_ids, name


def test_cds_lookup_answers_the_plain_rule_for_every_record_of_a_batch():
    """The lookup finds a frame's first six residues among every record's translations at once, then compares;
    small alphabets (six residues found in many places), frames that occur only in another record of the batch
    and frames shorter than six must not change an answer: each is VirNucPro's
    `any(frame in translation for translation in the frame's own record's CDS)`."""
    import numpy as np

    from virnucpro_extract.genomes import CdsIndex

    rng = random.Random(5)
    for _ in range(300):
        alphabet = "ACDEFGHIKL"[: rng.randint(2, 10)]
        records = [[("".join(rng.choices(alphabet, k=rng.randint(0, 300)))) for _ in range(rng.randint(0, 6))]
                   for _ in range(rng.randint(1, 4))]
        owners, queries = [], []
        for _ in range(rng.randint(1, 60)):
            owners.append(rng.randrange(len(records)))
            source = rng.choice(rng.choice(records) or [""])   # often another record's translation
            if source and rng.random() < 0.7:
                start = rng.randrange(len(source))
                queries.append(source[start: rng.randint(start + 1, len(source))])
            else:
                queries.append("".join(rng.choices(alphabet, k=rng.randint(1, 40))))
        # the frames as identify_records hands them over: rows of one width, each frame then junk to the row's end
        width = max(8, max(len(q) for q in queries) + 1)
        rows = np.frombuffer("".join(q + "".join(rng.choices("ACDEFMW*", k=width - len(q))) for q in queries).encode(),
                             dtype=np.uint8).reshape(len(queries), width)
        expected = [any(query in translation for translation in records[owner])
                    for owner, query in zip(owners, queries)]
        index = CdsIndex(records)
        found = index.contains_frames(rows, np.array([len(q) for q in queries]), np.array(owners), queries.__getitem__)
        assert found.tolist() == expected
        assert [index.contains_all(owner, [query])[0] for owner, query in zip(owners, queries)] == expected


def test_the_genbank_scan_reads_every_cds_translation_as_biopython_does(tmp_path):
    """`cds_translations` skips Biopython's parse for speed: on RefSeq-shaped records (source and gene features,
    the usual CDS qualifiers before /translation, a CDS without one, a mat_peptide, a /note that quotes a
    translation, locations wrapped over lines, a record with no feature) it must give what Biopython gives."""
    from Bio import SeqIO
    from Bio.Seq import Seq
    from Bio.SeqFeature import CompoundLocation, FeatureLocation, SeqFeature
    from Bio.SeqRecord import SeqRecord

    from virnucpro_extract.genomes import cds_translations

    rng = random.Random(11)
    records = []
    for r in range(6):
        sequence = "".join(rng.choices("ACGT", k=3000))
        record = SeqRecord(Seq(sequence), id=f"NC_{r:06d}.{r + 1}", name=f"NC_{r:06d}", description="test genome",
                           annotations={"molecule_type": "DNA"})
        record.features.append(SeqFeature(FeatureLocation(0, 3000, 1), type="source", qualifiers={
            "organism": ["Test virus"], "mol_type": ["genomic DNA"], "db_xref": ["taxon:1"]}))
        for k in range(r if r != 3 else 0):
            protein = "M" + "".join(rng.choices("ACDEFGHIKLMNPQRSTVWY", k=rng.randint(5, 400)))
            location = FeatureLocation(10 * k, 10 * k + 300, rng.choice((1, -1)))
            if k == 2:   # a join long enough to wrap over lines
                location = CompoundLocation([FeatureLocation(a, a + 9, 1) for a in range(0, 2700, 30)])
            gene = {"gene": [f"g{k}"], "locus_tag": [f"T{r}_{k}"], "db_xref": [f"GeneID:{r}{k}"]}
            record.features.append(SeqFeature(location, type="gene", qualifiers=gene))
            qualifiers = {**gene, "codon_start": ["1"], "transl_table": ["11"], "product": [f"protein {k}"],
                          "protein_id": [f"YP_{r}{k}.1"], "note": ['see /translation="MAW" in the paper']}
            if k != 1:   # CDS 1 has no translation: VirNucPro counts it as an empty one
                qualifiers["translation"] = [protein]
            record.features.append(SeqFeature(location, type="CDS", qualifiers=qualifiers))
            record.features.append(SeqFeature(FeatureLocation(10 * k, 10 * k + 60, 1), type="mat_peptide",
                                              qualifiers={"product": ["leader"]}))
        records.append(record)
    path = tmp_path / "t.genomic.gbff.gz"
    with gzip.open(path, "wt") as handle:
        SeqIO.write(records, handle, "genbank")
    expected = genbank_translations(path)
    assert sum(len(t) for t in expected.values()) >= 10 and any("" in t for t in expected.values())
    assert cds_translations(path) == expected
    # the scan jumps over a record's sequence by its LOCUS length; a record whose LOCUS line says another length
    # (or a sequence section laid out otherwise) must still end at its own '//', not swallow the next record, and
    # so must one with no sequence section (a CONTIG record) before a record of the same length
    text = gzip.open(path, "rt").read().replace("3000 bp", "9000 bp", 1).replace("\n     2941 ", "\n  2941 ", 1)
    first, second, rest = text.split("\n//\n", 2)
    second = second[: second.index("\nORIGIN")] + "\nCONTIG      join(NW_000001.1:1..3000)"
    rest = rest.replace("\nORIGIN", "\nBASE COUNT      750 a    750 c    750 g    750 t\nORIGIN", 1)
    # and a record with no FEATURES section nor VERSION line (its id: the accession) before one that has both
    first = re.sub(r"\nVERSION[^\n]*", "", first[: first.index("\nFEATURES")] + first[first.index("\nORIGIN"):])
    expected = {("NC_000000" if key == "NC_000000.1" else key): found for key, found in expected.items()}
    text = "\n//\n".join([first, second, rest])
    with gzip.open(path, "wt") as handle:
        handle.write(text)
    assert text.count("9000 bp") == 1 and "\n  2941 " in text and "\nCONTIG" in text and "\nBASE COUNT" in text
    assert text.count("\nFEATURES") == 5 and text.count("\nVERSION") == 5
    # (Biopython refuses the altered sequence line; the features are as before), and records cut at a block's end
    # (the feature table's, the sequence's) are read whole
    for block_size in (64, 1000, 5000, 1 << 22):
        assert cds_translations(path, block_size=block_size) == expected, block_size
    assert cds_translations(path, {"NC_000002.3", "NC_000004.5"}) == {k: expected[k] for k in ("NC_000002.3",
                                                                                                "NC_000004.5")}


def translation_one_column_right(path: Path) -> None:
    """Move the /translation qualifiers of the file's first record one column right: Biopython reads the file as
    before, the fast scan (which takes a qualifier in NCBI's column 22 only) would lose those translations."""
    text = gzip.decompress(path.read_bytes()).decode()
    first_end = text.index("\n//\n")
    qualifier = "\n" + " " * 21 + '/translation="'
    assert qualifier in text[:first_end]
    first = text[:first_end].replace(qualifier, "\n" + " " * 22 + '/translation="')
    path.write_bytes(gzip.compress((first + text[first_end:]).encode()))


def locus_length_reaching_the_next_records_end(text: str) -> str:
    """The first record's LOCUS length changed, and a COMMENT line of the right width added to the second record,
    so that the first record's end predicted from its LOCUS length falls on the second record's '//' line (the
    scan must not end the first record there and lose the second; Biopython only warns of the length)."""
    first_end = text.index("\n//\n") + 4
    first, second, rest = text[:first_end], text[first_end:], ""
    second_end = second.index("\n//\n") + 4
    second, rest = second[:second_end], second[second_end:]
    length = int(re.match(r"LOCUS +\S+ +(\d+) bp", first).group(1))
    line_end = first.index("\n", first.index("\nORIGIN") + 1)
    at_features = second.index("\nFEATURES") + 1
    for claimed in range(length + 1, 10 * length):
        if len(str(claimed)) != len(str(length)):
            break
        full, part = divmod(claimed, 60)
        predicted = line_end + 76 * full + (10 + part + -(-part // 10) if part else 0)
        comment = predicted - (len(first) + second_end - 4)   # the second's '\n//' moves by the COMMENT line
        if 14 <= comment <= 79:
            first = first.replace(f" {length} bp", f" {claimed} bp", 1)
            second = second[:at_features] + "COMMENT     " + "x" * (comment - 13) + "\n" + second[at_features:]
            assert (first + second)[predicted:predicted + 3] == "\n//"
            return first + second + rest
    raise AssertionError("no LOCUS length lands on the next record's end")


def test_preflight_identifies_a_genbank_file_the_scan_reads_otherwise_with_biopython(tmp_path):
    """A GenBank file laid out otherwise than NCBI writes it could be read otherwise by the fast scan than by
    Biopython (VirNucPro's reader), silently: PREFLIGHT reads every file both ways and picks Biopython for a file
    where they differ, and the identification then writes what VirNucPro writes. A LOCUS length that reaches the
    next record's end is read as Biopython reads it by the scan itself."""
    from virnucpro_extract.genomes import cds_translations, identify_genome
    from virnucpro_extract.preflight.genome_checks import check_genbank

    rng = random.Random(31)
    records, cds = [], {}
    for k in range(3):
        record_id = f"NC_x{k}.1"
        sequence, translations = genome_with_genes(rng, 3000)
        records.append((record_id, sequence))
        cds[record_id] = translations
    fasta = tmp_path / "x.1.genomic.fna.gz"
    write_genome_fasta(fasta, records)
    ncbi, shifted, long_locus = (tmp_path / f"{name}.genomic.gbff.gz" for name in ("ncbi", "shifted", "long_locus"))
    write_genbank(ncbi, records, cds)
    shutil.copy(ncbi, shifted)
    translation_one_column_right(shifted)
    long_locus.write_bytes(gzip.compress(locus_length_reaching_the_next_records_end(
        gzip.decompress(ncbi.read_bytes()).decode()).encode()))
    expected = {}
    for genbank, reader in ((ncbi, "scan"), (shifted, "biopython"), (long_locus, "scan")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # Biopython warns of the LOCUS length
            summary, errors = check_genbank(str(genbank), genbank)
            translations = genbank_translations(genbank)
        assert not errors and summary.genbank_reader == reader, genbank.name
        if reader == "scan":
            assert cds_translations(genbank) == translations, genbank.name
        expected[genbank] = rules.identified(fasta_records_gz(fasta), translations, 300)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            identify_genome(fasta, genbank, 300, tmp_path / "n.fa", tmp_path / "p.fa", genbank_reader=reader)
        assert read_fasta_records(tmp_path / "p.fa") == [(i, p) for i, _, p in expected[genbank]], genbank.name
        assert read_fasta_records(tmp_path / "n.fa") == [(i, n) for i, n, _ in expected[genbank]], genbank.name
    # the choice matters: the scan loses the shifted translation's frames
    identify_genome(fasta, shifted, 300, tmp_path / "n.fa", tmp_path / "p.fa", genbank_reader="scan")
    assert 0 < len(read_fasta_records(tmp_path / "p.fa")) < len(expected[shifted])


def test_the_edge_cases_are_in_the_test_data(refseq):
    """What the comparison above covers: without these, agreeing would prove less."""
    expected = expected_identified(refseq, refseq / "viral.1.1.genomic.fna.gz")
    ids = [i for i, _, _ in expected]
    assert {i for i in ids if i.startswith("NC_v1_multi.1_chunk_2")} >= {"NC_v1_multi.1_chunk_2F1",
                                                                         "NC_v1_multi.1_chunk_2R1"}, "several frames"
    assert any("R" in i.rsplit("_chunk_", 1)[1] for i in ids), "reverse-strand frames"
    assert {"NC_v1_l350.1_chunk_2F1", "NC_v1_l1000.1_chunk_4F1"} <= set(ids), "the uneven last windows"
    lengths = {len(n) - 3 * len(p) for _, n, p in expected}
    assert lengths == {0, 1}, "the one-base-longer slice, and its cut at the read's end"
    assert not any("absent" in i or "nocds" in i for i in ids)
    assert any(i.startswith("NC_v1_uracil.1") for i in ids)


def test_split_cuts_files_of_n_records_and_counts_the_short_one(tmp_path):
    records = [(f"NC_1.1_chunk_{k}F1", "MKV" * (k % 5 + 1)) for k in range(23)]
    reads = [(i, "ACGT" * (k % 7 + 3)) for k, (i, _) in enumerate(records)]
    (tmp_path / "p.fa").write_text("".join(f">{i}\n{s}\n" for i, s in records))
    (tmp_path / "n.fa").write_text("".join(f">{i}\n{s}\n" for i, s in reads))
    result = cli("split", "--prefix", "viral.1.1", "--protein", tmp_path / "p.fa", "--nucleotide", tmp_path / "n.fa",
                 "--sequences_per_file", 10, "--outdir", tmp_path / "chunks", "--stats", tmp_path / "s.json")
    assert result.exit_code == 0, result.stderr
    for side, source in (("protein", records), ("nucleotide", reads)):
        for n, part in enumerate(rules.split(source, 10), start=1):
            assert read_fasta_records(tmp_path / "chunks" / f"viral.1.1.identified_{side}" / f"output_{n}.fa") == part
    rows = json.loads((tmp_path / "s.json").read_text())["chunks"]
    assert [(r["id"], r["proteins"], r["full"]) for r in rows] == [("output_1", 10, True), ("output_2", 10, True),
                                                                   ("output_3", 3, False)]
    # the two sides must hold the same ids in the same order
    (tmp_path / "n.fa").write_text("".join(f">{i}\n{s}\n" for i, s in reads[:5] + reads[6:]))  # one read missing
    bad = cli("split", "--prefix", "viral.1.1", "--protein", tmp_path / "p.fa", "--nucleotide", tmp_path / "n.fa",
              "--outdir", tmp_path / "c2")
    expect_errors(bad, (tmp_path / "p.fa", r"record NC_1\.1_chunk_5F1 \(line 11\)",
                        r"^the nucleotide FASTA has 'NC_1\.1_chunk_6F1' there$"))


def test_split_counts_residues_as_embed_does_without_the_trailing_stop(tmp_path):
    """A 5-residue protein written with its stop ('MKVLA*') is not truncated at --max_length 5 (embed strips it)."""
    (tmp_path / "p.fa").write_text(">NC_1.1_chunk_1F1\nMKVLA*\n>NC_1.1_chunk_2F1\nMKVLAG\n")
    (tmp_path / "n.fa").write_text(">NC_1.1_chunk_1F1\nACGTACGTACGTACGTAC\n>NC_1.1_chunk_2F1\nACGTACGTACGTACGTAC\n")
    result = cli("split", "--prefix", "viral.1.1", "--protein", tmp_path / "p.fa", "--nucleotide", tmp_path / "n.fa",
                 "--max_length", 5, "--outdir", tmp_path / "chunks", "--stats", tmp_path / "s.json")
    assert result.exit_code == 0, result.stderr
    [row] = json.loads((tmp_path / "s.json").read_text())["chunks"]
    assert (row["truncated"], row["max_residues"]) == (1, 6)      # MKVLAG only


def test_plan_embeds_full_split_files_only_unless_asked_and_samples_hosts_of_every_origin(tmp_path):
    from virnucpro_extract.plan import plan_chunks

    rows = [{"key": f"viral.1.1/output_{n}", "id": f"output_{n}", "group": "viral.1.1", "label": "viral",
             "origin": "split", "full": "true" if n < 3 else "false", "proteins": 10 if n < 3 else 4} for n in (1, 2, 3)]
    rows += [{"key": f"bacteria/output_{n}", "id": f"output_{n}", "group": "bacteria", "label": "host",
              "origin": "given", "full": "true", "proteins": 10} for n in (1, 2, 3)]
    plan = plan_chunks([dict(r) for r in rows], balance=False, seed=42, keep_partial_files=False, per_task=2)
    assert sorted(plan["groups"]) == ["bacteria/output_1", "bacteria/output_2", "bacteria/output_3",
                                      "viral.1.1/output_1", "viral.1.1/output_2"]
    assert plan["not_embedded"] == [{"key": "viral.1.1/output_3", "group": "viral.1.1", "records": 4}]
    assert sorted(set(plan["groups"].values())) == [0, 1, 2]
    kept = plan_chunks([dict(r) for r in rows], balance=False, seed=42, keep_partial_files=True, per_task=2)
    assert "viral.1.1/output_3" in kept["groups"] and not kept["not_embedded"]
    balanced = plan_chunks([dict(r) for r in rows], balance=True, seed=42, keep_partial_files=False, per_task=128)
    hosts = [k for k in balanced["groups"] if k.startswith("bacteria")]
    assert len(hosts) == 1 and len(balanced["balanced_out"]) == 2  # ceil(2 viral / 7) = 1 host file


# ----------------------------------------------------------------------------------------------
# Pipeline tier
# ----------------------------------------------------------------------------------------------
def unsplit_prefix(data: Path, refseq: Path) -> list[tuple[str, str, str]]:
    """vertebrate_other.1.1 as make_train_dataset leaves it: the identified pair of a genome, unsplit."""
    frames = expected_identified(refseq, refseq / "vertebrate_mammalian.1.1.genomic.fna.gz")
    (data / "vertebrate_other.1.1.identified_nucleotide.fa").write_text("".join(f">{i}\n{n}\n" for i, n, _ in frames))
    (data / "vertebrate_other.1.1.identified_protein.fa").write_text("".join(f">{i}\n{p}\n" for i, _, p in frames))
    return frames


def run_args(data, tiny_model, tiny_dna_model, outdir):
    return ["-profile", "test", "--data_dir", data, "--esm_model", tiny_model, "--dnabert_model", tiny_dna_model,
            "--sequences_per_file", 12, "--outdir", outdir]


@pytest.mark.pipeline
def test_from_genomes_and_identified_fasta_to_features_with_a_kill_and_resume(tmp_path, refseq, tiny_model,
                                                                             tiny_dna_model, reference, dna_reference):
    data = tmp_path / "data"
    shutil.copytree(refseq, data)
    (data / "vertebrate_mammalian.1.genomic.gbff.gz").rename(data / "vertebrate_other.1.genomic.gbff.gz")
    (data / "vertebrate_mammalian.1.1.genomic.fna.gz").rename(data / "vertebrate_other.1.1.genomic.fna.gz")
    unsplit = unsplit_prefix(data, refseq)  # the most advanced stage wins: these, not the genomes beside them
    translation_one_column_right(data / "bacteria.1.genomic.gbff.gz")   # identified with Biopython, PREFLIGHT says
    launch, outdir = tmp_path / "launch", tmp_path / "launch" / "results"
    launch.mkdir()
    args = run_args(data, tiny_model, tiny_dna_model, outdir)

    # killed during the genome step
    env = {**os.environ, "NXF_OFFLINE": "true", "NXF_ANSI_LOG": "false"}
    run = subprocess.Popen(["nextflow", "run", str(REPO / "main.nf"), "-ansi-log", "false", *map(str, args)],
                           cwd=launch, env=env, start_new_session=True, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    for line in run.stdout:
        if "Submitted process > VIRNUCPRO_EXTRACT:IDENTIFY_FRAMES" in line:
            break
    time.sleep(1.5)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert not (outdir / "esm").exists(), "killed too late: the test proves nothing"

    resumed = nextflow(*args, "-resume", cwd=launch)
    assert resumed.returncode == 0, nextflow_output(resumed)[-5000:]

    # identified FASTA, for the prefixes made from genomes
    expected = {"viral.1.1": expected_identified(data, data / "viral.1.1.genomic.fna.gz"),
                "viral.1.2": expected_identified(data, data / "viral.1.2.genomic.fna.gz"),
                "bacteria.1.1": expected_identified(data, data / "bacteria.1.1.genomic.fna.gz")}
    for prefix, frames in expected.items():
        assert read_fasta_records(outdir / "identified" / f"{prefix}.identified_nucleotide.fa") == \
            [(i, n) for i, n, _ in frames], prefix
        assert read_fasta_records(outdir / "identified" / f"{prefix}.identified_protein.fa") == \
            [(i, p) for i, _, p in frames], prefix
    assert not (outdir / "identified" / "vertebrate_other.1.1.identified_protein.fa").exists()
    expected["vertebrate_other.1.1"] = unsplit

    # chunk files, and which of them reached the features
    embedded = []
    for prefix, frames in expected.items():
        parts = rules.split(frames, 12)
        for n, part in enumerate(parts, start=1):
            proteins = outdir / "chunks" / f"{prefix}.identified_protein" / f"output_{n}.fa"
            assert read_fasta_records(proteins) == [(i, p) for i, _, p in part], proteins
            merged = outdir / "data_merge" / f"{prefix}_merged" / f"output_{n}_merged.pt"
            assert merged.exists() == (len(part) == 12), merged  # VirNucPro's rule: full files only
            if len(part) == 12:
                embedded.append((prefix, n, part))
    assert {p for p, _, _ in embedded} == set(expected)

    # the features: DNABERT-S half as VirNucPro computes it (one read at a time), protein half as transformers does
    for prefix, n, part in embedded:
        merged = torch.load(outdir / "data_merge" / f"{prefix}_merged" / f"output_{n}_merged.pt", weights_only=True)
        assert merged["ids"] == [i for i, _, _ in part]
        assert merged["data"].shape == (12, MERGED_DIM) and merged["labels"] == [1 if prefix.startswith("viral") else 0]
        dna = dna_reference.rows([nucleotide for _, nucleotide, _ in part])
        torch.testing.assert_close(merged["data"][:, :DNABERT_DIM], dna, rtol=1e-4, atol=1e-4)
        assert cosine_rows(merged["data"][:, DNABERT_DIM:], reference.rows([p for _, _, p in part])).min() >= 0.9999
        esm = torch.load(outdir / "esm" / prefix / f"output_{n}_ESM.pt", weights_only=True)
        assert esm["data"].shape == (12, ESM_DIM)

    report = (outdir / "report.html").read_text()
    assert "Starting points" in report and "Short chunk files not embedded" in report
    plan = json.loads((outdir / "pipeline_info" / "plan.json").read_text())
    short = {s["key"]: s["records"] for s in plan["not_embedded"]}
    assert short == {f"{p}/output_{len(rules.split(f, 12))}": len(rules.split(f, 12)[-1])
                     for p, f in expected.items() if len(f) % 12}
    stages = {p["prefix"]: p["stage"] for p in json.loads((outdir / "pipeline_info" / "preflight.json").read_text())["prefixes"]}
    assert stages == {"viral.1.1": "genomes", "viral.1.2": "genomes", "bacteria.1.1": "genomes",
                      "vertebrate_other.1.1": "unsplit"}
    warnings = "\n".join(line for line in nextflow_output(resumed).splitlines() if line.startswith("WARN: "))
    assert "record(s) not in" in warnings and "have no CDS translation" in warnings, warnings
    assert re.search(r"bacteria\.1\.genomic\.gbff\.gz: record NC_bact0\.1: laid out otherwise than NCBI writes GenBank "
                     r"files .* so it is identified with Biopython", warnings), warnings

    # -resume once more: every task from the cache, the same bytes published
    before = {p: p.read_bytes() for p in sorted((outdir / "chunks").rglob("*.fa"))}
    again = nextflow(*args, "-resume", cwd=launch)
    assert again.returncode == 0, nextflow_output(again)[-4000:]
    submitted = {m for m in re.findall(r"Submitted process > VIRNUCPRO_EXTRACT:(\w+)", again.stdout)}
    assert submitted == {"PUBLISH", "FINALISE_OUTDIR"}, submitted
    assert {p: p.read_bytes() for p in sorted((outdir / "chunks").rglob("*.fa"))} == before


@pytest.mark.pipeline
def test_bad_genome_inputs_are_preflight_errors_all_in_one_go(tmp_path, refseq, tiny_model, tiny_dna_model):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("viral.1.genomic.gbff.gz", "viral.1.1.genomic.fna.gz", "bacteria.1.genomic.gbff.gz"):
        shutil.copy(refseq / name, data / name)
    whole = (refseq / "bacteria.1.1.genomic.fna.gz").read_bytes()
    (data / "bacteria.1.1.genomic.fna.gz").write_bytes(whole[: len(whole) // 2])            # a cut-off download
    with gzip.open(data / "fungi.1.genomic.gbff.gz", "wt") as handle:                      # not GenBank
        handle.write("LOCUS       broken\nthis is not a GenBank record\n")
    shutil.copy(refseq / "bacteria.1.1.genomic.fna.gz", data / "fungi.1.1.genomic.fna.gz")
    shutil.copy(refseq / "bacteria.1.1.genomic.fna.gz", data / "plant.1.1.genomic.fna.gz")   # no plant.1 GenBank
    write_genome_fasta(data / "archaea.1.1.genomic.fna.gz", [("NC_arch.1", "ACGTJACGT" * 40)])
    shutil.copy(refseq / "bacteria.1.genomic.gbff.gz", data / "archaea.1.genomic.gbff.gz")
    run = nextflow(*run_args(data, tiny_model, tiny_dna_model, tmp_path / "results"), cwd=tmp_path)
    output = nextflow_output(run)
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith("error:")]
    assert run.returncode != 0
    expected = [
        rf"error: {re.escape(str(data))}/archaea\.1\.1\.genomic\.fna\.gz: record NC_arch\.1: letter\(s\) 'J' outside the "
        r"IUPAC nucleotide codes — give the genome FASTA as RefSeq ships it \(A C G T and IUPAC ambiguity codes\)",
        rf"error: {re.escape(str(data))}/bacteria\.1\.1\.genomic\.fna\.gz: (first record|after record NC_bact\d\.1): "
        r"cut-off gzip file — download it again \(the copy ends before the end of its gzip stream\)",
        rf"error: {re.escape(str(data))}/fungi\.1\.genomic\.gbff\.gz: first record: GenBank file does not parse \(.+\) — "
        r"give the \.genomic\.gbff\(\.gz\) file as RefSeq ships it \(download it again\)",
        rf"error: {re.escape(str(data))}/plant\.1\.1\.genomic\.fna\.gz: -: genome FASTA with no GenBank file to pair with "
        rf"\(expected {re.escape(str(data))}/plant\.1\.genomic\.gbff\.gz\) — download plant\.1\.genomic\.gbff\.gz from "
        rf"the same RefSeq release into {re.escape(str(data))}",
    ]
    assert len(lines) == len(expected), "\n".join(lines)
    for pattern in expected:
        assert any(re.fullmatch(pattern, line) for line in lines), (pattern, lines)
    warnings = [line.strip() for line in output.splitlines() if line.strip().startswith("warning:")]
    assert any(re.search(r"viral\.1\.1\.genomic\.fna\.gz: 1 of 9 record\(s\) not in ", w) for w in warnings), warnings
    assert any("have no CDS translation" in w for w in warnings), warnings
    assert re.findall(r"Submitted process > VIRNUCPRO_EXTRACT:(\w+)", run.stdout) == ["PREFLIGHT"]


@pytest.mark.pipeline
def test_a_genome_that_yields_no_frame_is_an_error_naming_it(tmp_path, refseq, tiny_model, tiny_dna_model):
    data = tmp_path / "data"
    data.mkdir()
    records = fasta_records_gz(refseq / "bacteria.1.1.genomic.fna.gz")
    write_genome_fasta(data / "bacteria.1.1.genomic.fna.gz", records)
    write_genbank(data / "bacteria.1.genomic.gbff.gz", records, {r: ["WWWWWWWWWWWWWWWWWWWWWWWW"] for r, _ in records})
    shutil.copy(refseq / "viral.1.genomic.gbff.gz", data)
    shutil.copy(refseq / "viral.1.1.genomic.fna.gz", data)
    run = nextflow(*run_args(data, tiny_model, tiny_dna_model, tmp_path / "results"), cwd=tmp_path)
    lines = [line.strip() for line in nextflow_output(run).splitlines() if line.strip().startswith("error:")]
    assert run.returncode != 0
    assert lines == [f"error: {data}/bacteria.1.1.genomic.fna.gz: -: no frame of any read was kept (no stop-free frame "
                     "is a substring of a CDS translation of its GenBank records) — check that the GenBank file is the "
                     "one annotating this genome FASTA (the same record ids), or leave the genome out"], lines
    assert "EMBED_PROTEINS" not in run.stdout and "EMBED_DNA" not in run.stdout
