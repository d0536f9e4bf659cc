"""The pipeline's defaults and fixed facts, in one place: widths, model ids, limits, version, category prefixes.

nextflow.config and nextflow_schema.json carry the same defaults for Nextflow; tests/test_defaults.py checks
that they agree with this file.
"""
from __future__ import annotations

VERSION = "1.0.0dev"

DNABERT_DIM = 768
ESM_DIM = 1280
MERGED_DIM = DNABERT_DIM + ESM_DIM

DEFAULT_ESM_MODEL = "Synthyra/FastESM2_650"
DEFAULT_DNABERT_MODEL = "zhihan1996/DNABERT-S"
DEFAULT_MAX_LENGTH = 1022          # residues kept per protein (ESM-2's 1024 positions less BOS and EOS)
DEFAULT_CHUNKS_PER_TASK = 128      # chunk files per GPU task: one model load and compile per task
DEFAULT_COMPILE_MIN_TOKENS = 4_000_000
DEFAULT_SEED = 42
GENBANK_READERS = ("scan", "biopython")   # identify --genbank_reader: the fast scan of NCBI's layout, or Biopython

VIRAL_PREFIXES = ("viral",)
HOST_PREFIXES = ("vertebrate", "protozoa", "plant", "invertebrate", "fungi", "bacteria", "archaea")
LABEL_VALUES = {"viral": 1, "host": 0}   # train.py reads labels[0]


def label_for_prefix(prefix: str) -> str | None:
    """Map a VirNucPro category prefix (`viral.1.1`, `vertebrate_mammalian`, ...) to its label."""
    if prefix.startswith(VIRAL_PREFIXES):
        return "viral"
    if prefix.startswith(HOST_PREFIXES):
        return "host"
    return None

DEFAULT_READ_LENGTH = 300          # VirNucPro's reads: 300 or 500 bp
DEFAULT_SEQUENCES_PER_FILE = 10000  # records per chunk file when splitting (VirNucPro's split_fasta_file)
GENOME_SHARD_BASES = 50_000_000    # a genome FASTA is identified in tasks of about this many bases each
