"""Tiny models and demo data built on the spot: hub weights cannot be downloaded everywhere.

The test model has the real classes and output width (an `EsmModel` with hidden size 1280 and
the 33-token ESM-2 vocabulary) but one or two layers and random weights.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from .defaults import DNABERT_DIM, ESM_DIM
from .files import save_pt, write_text
from .models import ESM2_VOCAB

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
FRAMES = ("F1", "F2", "F3", "R1", "R2", "R3")


def tiny_esm_config(layers: int = 1):
    from transformers import EsmConfig

    return EsmConfig(vocab_size=len(ESM2_VOCAB), hidden_size=ESM_DIM, num_hidden_layers=layers,
                     num_attention_heads=20, intermediate_size=256, max_position_embeddings=1026,
                     position_embedding_type="rotary", token_dropout=True, emb_layer_norm_before=False,
                     pad_token_id=1, mask_token_id=32)


def make_test_model(outdir, layers: int = 1, seed: int = 0, fast_esm_layout: bool = False,
                    saved_by_transformers: bool = False) -> Path:
    """Save a random-weight ESM-2-architecture model (and tokenizer files) to `outdir`.

    With `fast_esm_layout` the directory is laid out as a FastESM2 checkpoint: `model_type`
    `fast_esm`, an `attn_backend` field, `FastEsmForMaskedLM` key names (`esm.` prefix, LM head)
    and no tokenizer files. The weights are written with today's parameter names, or with
    `saved_by_transformers` by the pinned transformers' own `save_pretrained`, which writes legacy
    names (`LayerNorm.gamma` / `.beta`, one rotary buffer under a `*` key).
    """
    import torch
    from safetensors.torch import save_file
    from transformers import EsmForMaskedLM, EsmModel, EsmTokenizer

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = tiny_esm_config(layers)
    model = EsmModel(config, add_pooling_layer=False)
    _randomise_layer_norms(model)
    if not fast_esm_layout:
        model.save_pretrained(outdir)
        vocab = outdir / "vocab.txt"
        vocab.write_text("\n".join(ESM2_VOCAB) + "\n")
        EsmTokenizer(vocab_file=str(vocab)).save_pretrained(outdir)
        return outdir
    # The same encoder weights as the plain layout of this seed, under FastEsmForMaskedLM's names:
    # building the LM head draws random numbers, so the encoder is copied rather than re-drawn.
    encoder = model
    model = EsmForMaskedLM(config)
    model.esm.load_state_dict(encoder.state_dict())
    _randomise_layer_norms(model.lm_head)
    if saved_by_transformers:
        model.save_pretrained(outdir)
    else:
        # clone: the LM head's decoder is tied to the word embeddings, and safetensors refuses shared storage
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if "position_ids" not in k}
        save_file(state, str(outdir / "model.safetensors"))
    fast_config = config.to_dict()
    fast_config.update(model_type="fast_esm", architectures=["FastEsmForMaskedLM"], attn_backend="sdpa",
                       auto_map={"AutoModel": "modeling_fastesm.FastEsmModel"})
    write_text(outdir / "config.json", json.dumps(fast_config, indent=1))
    return outdir


# A small DNA vocabulary: single bases and a few k-mers, with WordPiece's `##` continuation pieces.
DNA_KMERS = ("AC", "GT", "TA", "CG", "AAT", "GGC", "TTAG", "ACGT")
DNA_VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("ACGTN") + [f"##{b}" for b in "ACGTN"]
             + list(DNA_KMERS) + [f"##{k}" for k in DNA_KMERS])


def make_test_dna_model(outdir, layers: int = 1, seed: int = 0) -> Path:
    """Save a random-weight BERT (hidden 768, DNABERT-S's width) and a small DNA tokenizer to `outdir`.

    The tokenizer is WordPiece over single bases and a few k-mers; a read is one "word", so the
    word-length limit is raised well above read lengths (a 300-bp read must not become [UNK]).
    """
    import torch
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(DNA_VOCAB), hidden_size=DNABERT_DIM, num_hidden_layers=layers,
                        num_attention_heads=12, intermediate_size=256, max_position_embeddings=1024, pad_token_id=0)
    model = BertModel(config)
    _randomise_layer_norms(model)
    model.save_pretrained(outdir)
    # A plain tokenizers-library tokenizer (as DNABERT-S ships one: tokenizer.json), so AutoTokenizer loads it as saved.
    wordpiece = Tokenizer(WordPiece({token: i for i, token in enumerate(DNA_VOCAB)}, unk_token="[UNK]",
                                    max_input_chars_per_word=100_000))
    wordpiece.pre_tokenizer = pre_tokenizers.Whitespace()
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", DNA_VOCAB.index("[CLS]")), ("[SEP]", DNA_VOCAB.index("[SEP]"))])
    wordpiece.decoder = decoders.WordPiece(prefix="##")
    PreTrainedTokenizerFast(tokenizer_object=wordpiece, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]", model_max_length=1024).save_pretrained(outdir)
    return outdir


# A remote-code ("trust_remote_code") DNA encoder with the traits of DNABERT-2's own code that matter to the
# loader: an ALiBi table computed in __init__ as a plain attribute (fails on transformers 5's meta device),
# a non-persistent buffer that its _init_weights never resets (transformers 5 refills those with
# uninitialised memory), a module-level `flash_attn_qkvpacked_func` kernel that must be switched off, and a
# float32 attention bias added to the scores (fails in half precision without autocast). Written for tests.
REMOTE_DNA_CONFIG_CODE = '''
from transformers import PretrainedConfig


class AlibiDnaConfig(PretrainedConfig):
    model_type = "alibi_dna_test"

    def __init__(self, vocab_size=31, hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
                 intermediate_size=512, alibi_starting_size=64, initializer_range=0.02, pad_token_id=0, **kwargs):
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vocab_size, self.hidden_size, self.num_hidden_layers = vocab_size, hidden_size, num_hidden_layers
        self.num_attention_heads, self.intermediate_size = num_attention_heads, intermediate_size
        self.alibi_starting_size, self.initializer_range = alibi_starting_size, initializer_range
'''

REMOTE_DNA_MODEL_CODE = '''
import math

import torch
from torch import nn
from transformers import PreTrainedModel

from .configuration_alibi_dna import AlibiDnaConfig


def _kernel_that_must_not_run(*args, **kwargs):
    raise RuntimeError("the flash-attention stand-in ran: the loader did not switch it off")


flash_attn_qkvpacked_func = _kernel_that_must_not_run


def alibi_table(heads, size, device=None):
    slopes = torch.Tensor([2 ** (-8 * (h + 1) / heads) for h in range(heads)]).to(device)
    position = torch.arange(size, device=device)
    distance = (position[None, :] - position[:, None]).abs()
    return (slopes[:, None, None] * -distance).unsqueeze(0)  # [1, heads, size, size]


class AlibiLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        hidden, self.heads = config.hidden_size, config.num_attention_heads
        self.qkv, self.out = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, config.intermediate_size), nn.GELU(),
                                 nn.Linear(config.intermediate_size, hidden))
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)

    def forward(self, hidden, bias):
        batch, length, width = hidden.shape
        qkv = self.qkv(hidden).view(batch, length, 3, self.heads, width // self.heads)
        if flash_attn_qkvpacked_func is not None:
            context = flash_attn_qkvpacked_func(qkv, bias)
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            scores = q @ k.transpose(-1, -2) / math.sqrt(width // self.heads) + bias
            context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, width)
        hidden = self.norm1(hidden + self.out(context))
        return self.norm2(hidden + self.ffn(hidden))


class AlibiDnaModel(PreTrainedModel):
    config_class = AlibiDnaConfig
    base_model_prefix = "alibi_dna"

    def __init__(self, config):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.layers = nn.ModuleList(AlibiLayer(config) for _ in range(config.num_hidden_layers))
        self.alibi = alibi_table(config.num_attention_heads, config.alibi_starting_size)  # not a buffer
        self.register_buffer("embedding_scale", torch.full((config.hidden_size,), 0.5), persistent=False)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, **kwargs):
        hidden = self.embeddings(input_ids) * self.embedding_scale
        length = input_ids.shape[1]
        if self.alibi.shape[-1] < length:
            self.alibi = alibi_table(self.config.num_attention_heads, length, hidden.device)
        bias = self.alibi[:, :, :length, :length].to(hidden.device)
        if attention_mask is not None:
            bias = bias + (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
        for layer in self.layers:
            hidden = layer(hidden, bias)
        return (hidden,)
'''


def make_test_remote_dna_model(outdir, seed: int = 0) -> Path:
    """Save a random-weight remote-code DNA encoder (hidden 768) with DNABERT-2's loading hazards, plus
    `make_test_dna_model`'s tokenizer, to `outdir`; it loads only with `trust_remote_code`."""
    import shutil
    import tempfile

    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    write_text(outdir / "configuration_alibi_dna.py", REMOTE_DNA_CONFIG_CODE.lstrip())
    write_text(outdir / "modeling_alibi_dna.py", REMOTE_DNA_MODEL_CODE.lstrip())
    with tempfile.TemporaryDirectory() as tmp:
        make_test_dna_model(tmp, layers=1, seed=seed)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (Path(tmp) / name).exists():
                shutil.copy(Path(tmp) / name, outdir / name)
    config = {"model_type": "alibi_dna_test", "architectures": ["AlibiDnaModel"], "vocab_size": len(DNA_VOCAB),
              "hidden_size": DNABERT_DIM, "num_hidden_layers": 2, "num_attention_heads": 12, "intermediate_size": 512,
              "alibi_starting_size": 64, "pad_token_id": 0,
              "auto_map": {"AutoConfig": "configuration_alibi_dna.AlibiDnaConfig",
                           "AutoModel": "modeling_alibi_dna.AlibiDnaModel"}}
    write_text(outdir / "config.json", json.dumps(config, indent=1))
    torch.manual_seed(seed)
    model_class = get_class_from_dynamic_module("modeling_alibi_dna.AlibiDnaModel", outdir)
    model = model_class(AutoConfig.from_pretrained(outdir, trust_remote_code=True))  # a plain build: real device
    _randomise_layer_norms(model)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(outdir / "model.safetensors"))
    return outdir


def _randomise_layer_norms(model) -> None:
    """Random LayerNorm weights, so a test would notice a LayerNorm loaded from the wrong key."""
    import torch

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)


def random_proteins(rng: random.Random, count: int, genome: str, min_len: int = 40, max_len: int = 100):
    """VirNucPro-style records: `<genome>_chunk_<k><frame>` with one to three frames per read."""
    records, k = [], 0
    while len(records) < count:
        k += 1
        for frame in rng.sample(FRAMES, rng.randint(1, 3)):
            if len(records) < count:
                length = rng.randint(min_len, max_len)
                records.append((f"{genome}_chunk_{k}{frame}", "".join(rng.choice(AMINO_ACIDS) for _ in range(length))))
    return records


def write_chunk(protein_fasta, dnabert_pt, records, rng: random.Random) -> None:
    """Write a protein FASTA and its DNABERT-S file (Python-list vectors, ids shuffled); no file if `dnabert_pt`
    is None (the same random numbers are drawn either way)."""
    write_text(protein_fasta, "".join(f">{i}\n{s[:60]}\n{s[60:]}\n" if len(s) > 60 else f">{i}\n{s}\n"
                                      for i, s in records))
    ids = [i for i, _ in records]
    rng.shuffle(ids)
    dnabert = {"nucleotide": ids,
               "data": [{"label": i, "mean_representation": [rng.gauss(0, 1) for _ in range(DNABERT_DIM)]} for i in ids]}
    if dnabert_pt is not None:
        save_pt(dnabert, dnabert_pt)


def write_reads(nucleotide_fasta, ids, rng: random.Random, length: int = 300) -> None:
    """Write a nucleotide FASTA of random reads with the given ids, in that order."""
    write_text(nucleotide_fasta, "".join(f">{i}\n{''.join(rng.choice('ACGT') for _ in range(length))}\n" for i in ids))


def make_demo_data(outdir, viral_chunks: int = 2, host_chunks: int = 2, proteins_per_chunk: int = 20,
                   seed: int = 1, max_len: int = 100, nucleotides: bool = False, dnabert: bool = True) -> Path:
    """A VirNucPro `data/` folder: viral.1.1 and vertebrate_mammalian chunks (host split over two categories
    when there are several host chunks).

    `nucleotides` also writes `<prefix>.identified_nucleotide/output_<n>.fa` (random 300-bp reads, the protein
    FASTA's ids); `dnabert=False` leaves out the DNABERT-S files. Neither changes the protein records."""
    rng = random.Random(seed)
    read_rng = random.Random(f"reads-{seed}")
    data = Path(outdir)
    host_prefixes = ["vertebrate_mammalian", "bacteria"]
    plan = [("viral.1.1", n + 1) for n in range(viral_chunks)]
    plan += [(host_prefixes[n % 2], n // 2 + 1) for n in range(host_chunks)]
    for prefix, n in plan:
        genome = f"NC_{rng.randint(1000, 999999):06d}.1"
        records = random_proteins(rng, proteins_per_chunk, genome, max_len=max_len)
        write_chunk(data / f"{prefix}.identified_protein" / f"output_{n}.fa",
                    data / f"{prefix}.identified_nucleotide" / f"output_{n}_DNABERT_S.pt" if dnabert else None,
                    records, rng)
        if nucleotides:
            write_reads(data / f"{prefix}.identified_nucleotide" / f"output_{n}.fa", [i for i, _ in records], read_rng)
    return data


# ----------------------------------------------------------------------------------------------
# RefSeq-like genomes
# ----------------------------------------------------------------------------------------------
SENSE_CODONS = [a + b + c for a in "TCAG" for b in "TCAG" for c in "TCAG" if a + b + c not in ("TAA", "TAG", "TGA")]


def random_genome(rng: random.Random, length: int) -> tuple[str, list[tuple[int, int, int, str]]]:
    """A genome of genes on both strands between random spacers: (sequence, [(start, end, strand, protein)]).

    Genes are stop-free codons (a start codon first), so reads inside them have a stop-free frame that is a
    substring of the gene's translation: what VirNucPro keeps."""
    from Bio.Seq import Seq

    sequence, genes = "", []
    while len(sequence) < length:
        sequence += "".join(rng.choice("ACGT") for _ in range(rng.randint(0, 80)))
        dna = "ATG" + "".join(rng.choice(SENSE_CODONS) for _ in range(rng.randint(60, 400)))
        protein = str(Seq(dna).translate())
        strand = rng.choice((1, -1))
        start = len(sequence)
        sequence += dna if strand == 1 else str(Seq(dna).reverse_complement())
        genes.append((start, len(sequence), strand, protein))
    return sequence[:length], [g for g in genes if g[1] <= length]


def write_refseq_pair(data: Path, base: str, parts: dict[int, list[tuple[str, str]]], annotations: dict,
                      refseq_features: bool = True) -> None:
    """`<base>.genomic.gbff.gz` annotating every record, and `<base>.<k>.genomic.fna.gz` per part k.

    `annotations[record id]` lists (start, end, strand, protein) CDS features; a record not in it is absent from
    the GenBank file; one with an empty list has no CDS. Records are annotated as RefSeq annotates them: a source
    feature, and a gene feature before each CDS, which carries RefSeq's usual qualifiers before its /translation
    (`refseq_features=False`: CDS features with a /translation only)."""
    import gzip

    from Bio import SeqIO
    from Bio.Seq import Seq
    from Bio.SeqFeature import FeatureLocation, SeqFeature
    from Bio.SeqRecord import SeqRecord

    data.mkdir(parents=True, exist_ok=True)
    records = []
    for part in sorted(parts):
        for record_id, sequence in parts[part]:
            if record_id not in annotations:
                continue
            record = SeqRecord(Seq(sequence), id=record_id, name=record_id.split(".")[0], description=f"{record_id} demo",
                               annotations={"molecule_type": "DNA"})
            if refseq_features:
                record.features.append(SeqFeature(FeatureLocation(0, len(sequence), 1), type="source", qualifiers={
                    "organism": [f"{base} demo organism"], "mol_type": ["genomic DNA"], "db_xref": ["taxon:10239"]}))
            for k, (start, end, strand, protein) in enumerate(annotations[record_id]):
                location = FeatureLocation(start, end, strand)
                if not refseq_features:
                    record.features.append(SeqFeature(location, type="CDS", qualifiers={"translation": [protein]}))
                    continue
                gene = {"locus_tag": [f"{record_id.split('.')[0]}_{k + 1:04d}"], "db_xref": [f"GeneID:{k + 1}"]}
                record.features.append(SeqFeature(location, type="gene", qualifiers=gene))
                record.features.append(SeqFeature(location, type="CDS", qualifiers={
                    **gene, "codon_start": ["1"], "transl_table": ["11"], "product": ["hypothetical protein"],
                    "protein_id": [f"YP_{k + 1:09d}.1"], "translation": [protein]}))
            records.append(record)
    with gzip.open(data / f"{base}.genomic.gbff.gz", "wt") as handle:
        SeqIO.write(records, handle, "genbank")
    for part, entries in parts.items():
        with gzip.open(data / f"{base}.{part}.genomic.fna.gz", "wt") as handle:
            for record_id, sequence in entries:
                handle.write(f">{record_id} {record_id} demo genome\n")
                handle.writelines(sequence[i:i + 80] + "\n" for i in range(0, len(sequence), 80))


def make_demo_genomes(outdir, seed: int = 1, records_per_file: int = 3, length: int = 4000) -> Path:
    """A RefSeq download folder: viral.1 (one genome FASTA), bacteria.1 and vertebrate_mammalian.1 (host), .gz
    named as RefSeq names them; records of several lengths, genes on both strands, an ambiguous base or two."""
    rng = random.Random(seed)
    data = Path(outdir)
    for base in ("viral.1", "bacteria.1", "vertebrate_mammalian.1"):
        entries, annotations = [], {}
        for r in range(records_per_file):
            record_id = f"NC_{rng.randint(100000, 999999)}.{r + 1}"
            sequence, genes = random_genome(rng, rng.choice([length, length // 2 + 50, 350, 1000]))
            if r == 1:  # a few ambiguous bases: the reads holding them are dropped
                sequence = sequence[:200] + "N" + sequence[201:]
            entries.append((record_id, sequence))
            annotations[record_id] = genes
        write_refseq_pair(data, base, {1: entries}, annotations)
    return data
