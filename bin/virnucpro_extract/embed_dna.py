"""`embed-dna`: one DNABERT-S embedding per DNA read, as VirNucPro computed it, for many chunk files.

VirNucPro ran the model one read at a time: `hidden_states = model(input_ids)[0]` then
`torch.mean(hidden_states[0], dim=0)`, i.e. the mean of the last hidden state over EVERY token the
tokenizer returns ([CLS] and [SEP] included). Here reads are batched by length under a token
budget, padded, and the padding is masked both in attention (`attention_mask`) and in the mean, so
a batch gives the same vectors as one read at a time. Written atomically as
`<group>/<id>_DNABERT_S.pt` in VirNucPro's format, reads in FASTA order.

DNABERT-S ships its own model code (DNABERT-2's `bert_layers.py`, written for transformers 4.28), which
needs three things to run here: built and loaded by us rather than by transformers 5's `from_pretrained`
(which builds on the meta device and leaves non-persistent buffers to `_init_weights`; see
`build_remote_model`); its Triton flash-attention kernel, which
does not run on current Triton, switched off by setting the code module's `flash_attn_qkvpacked_func`
to None (its own PyTorch attention path then runs: same maths, ALiBi bias included); and half-precision
forwards under autocast, since that path adds a float32 bias to the scores.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .defaults import DEFAULT_DNABERT_MODEL, DNABERT_DIM
from .errors import InputError
from .fasta import count_fasta, read_nucleotides
from .formats import write_dnabert
from .models import config_hash, read_state_dict, resolve_model_dir
from .runtime import (
    BatchEmbedder,
    Progress,
    choose_device,
    choose_dtype,
    default_token_budget,
    device_name,
    masked_mean,
    plan_batches,
    require_finite,
    retry_budget,
    run_chunks,
    to_device,
)


@dataclass
class EncodedReads:
    """One nucleotide chunk read and tokenised: token ids per read, special tokens included."""

    key: str
    fasta: str
    ids: list[str]
    tokens: list[np.ndarray]
    bases: int = 0
    token_count: int = field(init=False)

    def __post_init__(self):
        self.token_count = sum(len(t) for t in self.tokens)


class ReadEncoder:
    """Tokenises reads exactly as VirNucPro did: `tokenizer(read)["input_ids"]`, special tokens included."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def encode(self, sequences: list[str]) -> list[np.ndarray]:
        if not sequences:
            return []
        encoded = self.tokenizer(sequences, add_special_tokens=True)["input_ids"]
        return [np.asarray(ids, dtype=np.int64) for ids in encoded]

    def read_chunk(self, key: str, fasta: str) -> EncodedReads:
        ids, sequences = read_nucleotides(fasta)
        return EncodedReads(key, fasta, ids, self.encode(sequences), sum(len(s) for s in sequences))


class DnaEmbedder(BatchEmbedder):
    """Mean of the last hidden state over all of a read's tokens (padding excluded), [N, hidden] float32."""

    unit = "read"

    def __init__(self, model, pad_id: int, device, token_budget: int):
        super().__init__(device, token_budget, model.config.hidden_size)
        self.model, self.pad_id = model, pad_id
        self.dtype = next(model.parameters()).dtype

    def plan(self, lengths):
        return plan_batches(lengths, self.token_budget, extra=0)  # the reads' tokens include [CLS] and [SEP]

    def collate(self, rows: list[np.ndarray]):
        """Pad to `[batch, max_len]` token ids, plus the attention mask (1 on the read's tokens, 0 on padding)."""
        width = max(len(r) for r in rows)
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, row in enumerate(rows):
            input_ids[r, : len(row)] = row
            attention_mask[r, : len(row)] = 1
        return to_device(self.device, input_ids, attention_mask)

    def forward(self, input_ids, attention_mask):
        """[batch, length] -> mean of the last hidden state over the unpadded tokens, [batch, hidden] float32."""
        import torch

        # autocast: DNABERT-2's PyTorch attention adds a float32 ALiBi/mask bias, which would promote the
        # scores to float32 and then fail against half-precision values
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            hidden = self.model(input_ids, attention_mask=attention_mask)[0]
        return masked_mean(hidden, attention_mask)

    def too_big(self, tokens, fasta, record):
        return InputError(fasta, f"record {record}", f"read of {len(tokens)} tokens does not fit in GPU memory even "
                          "alone", "split long reads (VirNucPro uses 300/500 bp) or free the GPU; --toks_per_batch "
                          "only bounds batches")


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------
def force_torch_attention(model) -> list[str]:
    """Make DNABERT-2-style model code take its PyTorch attention path; return the patched code modules.

    That code (`bert_layers.py`) calls a Triton flash-attention kernel when its module-level
    `flash_attn_qkvpacked_func` is set, and falls back to plain PyTorch attention when it is None.
    The kernel was written for an old Triton and fails on current releases, so it is switched off.
    """
    patched = []
    for module in model.modules():
        code = sys.modules.get(type(module).__module__)
        if code is not None and getattr(code, "flash_attn_qkvpacked_func", None) is not None:
            code.flash_attn_qkvpacked_func = None
            patched.append(code.__name__)
    return patched


def build_remote_model(model_dir: Path, config):
    """The checkpoint's own encoder class (auto_map AutoModel), built by us and loaded by us.

    transformers 5's `from_pretrained` builds on the meta device and then refills non-persistent
    buffers with uninitialised memory, trusting the class's `_init_weights` to set them again.
    DNABERT-2's code (written for transformers 4.28) computes its ALiBi table in `__init__` (fails on
    meta) and keeps `token_type_ids` as a non-persistent buffer its `_init_weights` never resets. A
    plain build keeps what `__init__` made; the weights then load over it, strictly for parameters.
    """
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    model_class = get_class_from_dynamic_module(config.auto_map["AutoModel"], model_dir)
    model = model_class(config)
    state = read_state_dict(model_dir)
    own = set(model.state_dict())
    prefix = f"{model_class.base_model_prefix}."
    if not own & set(state):  # saved from a model with a head: names carry the base model's prefix
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    # the pooler (a head over [CLS]) is often not saved and plays no part in the hidden states we average
    missing = sorted(n for n in {name for name, _ in model.named_parameters()} - set(state) if not n.startswith("pooler."))
    if missing:
        raise InputError(model_dir, "weights", f"checkpoint lacks {len(missing)} weight(s) of {model_class.__name__}, "
                         f"e.g. {missing[0]}", "give the directory of DNABERT-S as published (zhihan1996/DNABERT-S)")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return model


def load_dnabert_model(model_dir: Path, dtype, device):
    """DNABERT-S (or any BERT-like encoder) from a directory, its own code allowed, PyTorch attention forced."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=True)
        if "AutoModel" in (getattr(config, "auto_map", None) or {}):
            model = build_remote_model(model_dir, config)
        else:
            model = AutoModel.from_pretrained(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    except ImportError as exc:  # the model's own code imports a package we do not have
        raise InputError(model_dir, "-", f"the model's own code needs a missing package ({str(exc).splitlines()[0][:200]})",
                         "install it in the pipeline's environment (the container image has einops, which "
                         "DNABERT-S needs)") from None
    except (OSError, ValueError) as exc:
        raise InputError(model_dir, "-", f"cannot load the DNABERT-S model or tokenizer ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200]})",
                         "give --dnabert_model as zhihan1996/DNABERT-S or a directory holding its files") from None
    force_torch_attention(model)
    if model.config.hidden_size != DNABERT_DIM:
        raise InputError(model_dir, "hidden_size", f"model hidden size is {model.config.hidden_size}, "
                         f"the features need {DNABERT_DIM}", "use DNABERT-S (hidden size 768)")
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False), tokenizer


# ----------------------------------------------------------------------------------------------
# The worker: many chunk files per model load
# ----------------------------------------------------------------------------------------------
def run_embed_dna(chunks: list[tuple[str, str]], outdir, model: str = DEFAULT_DNABERT_MODEL,
                  precision: str | None = None, use_gpu: bool = True, toks_per_batch: int | None = None,
                  attempt: int = 1, log=None) -> dict:
    """Embed every (key, nucleotide fasta) chunk into `<outdir>/<key>_DNABERT_S.pt`; return per-chunk statistics.

    Reading the next chunk, the model work on this one and writing the previous one overlap.
    """
    import torch
    from transformers.utils import logging as hf_logging

    log = log or sys.stderr
    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    device = choose_device(use_gpu)
    dtype, precision = choose_dtype(precision, device)
    model_dir = resolve_model_dir(model)
    bert, tokenizer = load_dnabert_model(model_dir, dtype, device)
    encoder = ReadEncoder(tokenizer)
    budget = retry_budget(toks_per_batch or default_token_budget(device, bert.config.hidden_size,
                                                                 bert.config.intermediate_size,
                                                                 torch.finfo(dtype).bits // 8), attempt)
    embedder = DnaEmbedder(bert, encoder.pad_id, device, budget)
    load_seconds = time.perf_counter() - started
    print(f"embed-dna: model {model} ({precision}, {device}, {budget} tokens/batch) loaded in {load_seconds:.1f}s",
          file=log, flush=True)

    def write(chunk: EncodedReads, rows) -> dict:
        require_finite(rows, chunk, precision)
        write_dnabert(Path(outdir) / f"{chunk.key}_DNABERT_S.pt", chunk.ids, rows)
        return {"key": chunk.key, "reads": len(chunk.ids), "bases": chunk.bases, "tokens": chunk.token_count}

    progress = Progress([count_fasta(fasta)[0] for _, fasta in chunks], log, step="embed-dna", unit="reads")
    stats = run_chunks(chunks, encoder.read_chunk, embedder, write, progress, "dnabert")
    return {"model": model, "config_hash": config_hash(model_dir), "precision": precision,
            "device": device_name(device), "token_budget": budget, "load_seconds": round(load_seconds, 3),
            "total_seconds": round(time.perf_counter() - started, 3), "chunks": stats}
