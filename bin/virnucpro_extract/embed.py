"""`embed`: one FastESM2 / ESM-2 embedding per protein, mean over residues, for many chunk files.

The model is loaded once per task; each chunk file is read and tokenised on a background thread
while the GPU works on the previous one, batched under a token budget, pooled on the device, and
written atomically as `<group>/<id>_ESM.pt` in FASTA order (runtime.run_chunks).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .defaults import ESM_DIM
from .errors import InputError
from .fasta import count_fasta, read_proteins
from .formats import write_esm
from .models import config_hash, load_esm_model, load_tokenizer, resolve_model_dir
from .runtime import (
    BatchEmbedder,
    Progress,
    choose_device,
    choose_dtype,
    default_token_budget,
    device_name,
    masked_mean,
    plan_batches,
    plan_packed_batches,
    require_finite,
    retry_budget,
    run_chunks,
    to_device,
)


@dataclass
class EncodedChunk:
    """One chunk read and tokenised: token ids per protein, without BOS/EOS (added at batching)."""

    key: str
    fasta: str
    ids: list[str]
    tokens: list[np.ndarray]
    truncated: int
    residues: int = field(init=False)

    def __post_init__(self):
        self.residues = sum(len(t) for t in self.tokens)


class ProteinEncoder:
    """Maps residue letters to token ids with a lookup table built from the model's tokenizer.

    Equivalent to `tokenizer(seq)` for single-letter ESM vocabularies (tested), but vectorised:
    tokenising 10,000 proteins takes milliseconds instead of seconds.
    """

    def __init__(self, tokenizer, max_length: int):
        self.max_length = max_length
        self.cls_id, self.eos_id, self.pad_id = tokenizer.cls_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
        self.lut = np.full(256, tokenizer.unk_token_id, dtype=np.int64)
        for letter in "ACDEFGHIKLMNPQRSTVWYXBZUO":
            self.lut[ord(letter)] = tokenizer.convert_tokens_to_ids(letter)

    def encode(self, sequence: str) -> np.ndarray:
        residues = np.frombuffer(sequence[: self.max_length].encode("ascii"), dtype=np.uint8)
        return self.lut[residues]

    def read_chunk(self, key: str, fasta: str) -> EncodedChunk:
        ids, sequences = read_proteins(fasta)
        return EncodedChunk(key, fasta, ids, [self.encode(s) for s in sequences],
                            sum(len(s) > self.max_length for s in sequences))


class EsmEmbedder(BatchEmbedder):
    """Tokenised proteins -> mean of the last hidden state over residue positions only, [N, hidden] float32.

    Two forwards. The fast one (`EsmInferenceEncoder`, the default) takes packed batches: exact-length
    buckets without a mask, the rest packed end to end (`plan_packed_batches`); on GPU it runs through our
    Triton kernels (`esm_kernels.py`, nothing to compile), or with `--fused_kernels false` and
    `compile_model` one layer is compiled and reused by all. transformers' `EsmModel` (`--fast_forward false`, or models the
    fast forward does not cover) takes padded length-sorted batches; with `compile_model` its forward
    and pooling are compiled once with dynamic shapes. The compile cache persists across tasks via
    TORCHINDUCTOR_CACHE_DIR.
    """

    unit = "protein"

    def __init__(self, model, encoder: ProteinEncoder, device, token_budget: int, compile_model: bool = False):
        import torch

        from .esm_forward import EsmInferenceEncoder

        super().__init__(device, token_budget, model.config.hidden_size)
        self.model, self.encoder = model, encoder
        self.packed = isinstance(model, EsmInferenceEncoder)
        self._compiled = None
        if compile_model and self.packed:
            model.compile_layers()
        elif compile_model:
            self._compiled = torch.compile(self.pool, dynamic=True)

    def plan(self, lengths):
        return (plan_packed_batches if self.packed else plan_batches)(lengths, self.token_budget)

    def collate(self, rows: list[np.ndarray]):
        """Packed: one PackedBatch (BOS/EOS added, no padding). Padded: token ids and the residue mask, both
        [batch, max_len + 2]."""
        if self.packed:
            from .esm_forward import pack_proteins

            return (pack_proteins(rows, self.encoder.cls_id, self.encoder.eos_id, self.device),)
        width = max(len(r) for r in rows) + 2
        input_ids = np.full((len(rows), width), self.encoder.pad_id, dtype=np.int64)
        input_ids[:, 0] = self.encoder.cls_id
        residue_mask = np.zeros((len(rows), width), dtype=np.bool_)
        for r, row in enumerate(rows):
            input_ids[r, 1: len(row) + 1] = row
            input_ids[r, len(row) + 1] = self.encoder.eos_id
            residue_mask[r, 1: len(row) + 1] = True
        return to_device(self.device, input_ids, residue_mask)

    def forward(self, *batch):
        if self.packed:
            return self.model.pooled_residue_means(*batch)
        if self._compiled is not None and batch[0].shape[0] > 1:
            return self._compiled(*batch)
        return self.pool(*batch)

    def pool(self, input_ids, residue_mask):
        """input_ids, residue_mask [batch, length] -> mean of `last_hidden_state` over residues, [batch, hidden] float32."""
        attention_mask = input_ids.ne(self.encoder.pad_id).long()
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return masked_mean(hidden, residue_mask)

    def too_big(self, tokens, fasta, record):
        return InputError(fasta, f"record {record}", f"protein of {len(tokens)} residues does not fit in GPU memory "
                          "even alone", "lower --max_length (longer proteins are truncated) or free the GPU; "
                          "--toks_per_batch only bounds batches")


def gelu_epilogue(device, dtype) -> bool:
    """Whether FC1 applies GELU in cuBLASLt's epilogue (tanh form) instead of a separate erf-GELU pass.

    On by default for half-precision CUDA runs: on an H200 it took the compiled fast forward from 360k to 388k
    tokens/s (99-100 residues) with the same minimum cosine to the fp32 erf model (0.999966; 0.999963 on 40-166
    residues; benchmarks/results/forward_h200.json). Off in fp32, where a user asks for the exact function.
    """
    import torch

    return device.type == "cuda" and dtype != torch.float32


def run_embed(chunks: list[tuple[str, str]], outdir, model: str, precision: str | None, use_gpu: bool,
              toks_per_batch: int | None, max_length: int, trust_remote_code: bool = False,
              compile_model: bool | None = None, attempt: int = 1, log=None, compile_min_tokens: int = 0,
              fast_forward: bool = True, fused_kernels: bool = True) -> dict:
    """Embed every (key, fasta) chunk into `<outdir>/<key>_ESM.pt`; return per-chunk statistics.

    Reading the next chunk, the GPU work on this one and writing the previous one overlap; at most
    two chunks wait for the writer, so host memory stays bounded whatever the number of chunks.
    `compile_model` defaults to on for CUDA, off on CPU; a task of fewer than `compile_min_tokens`
    tokens runs eager (see `compile_decision`).
    """
    import torch
    from transformers.utils import logging as hf_logging

    log = log or sys.stderr
    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    device = choose_device(use_gpu)
    dtype, precision = choose_dtype(precision, device)
    model_dir = resolve_model_dir(model)
    fused_kernels, why_not_fused = fused_kernels_decision(fused_kernels, device, dtype)
    if why_not_fused:
        print(f"embed: warning: {why_not_fused}", file=log, flush=True)
    esm = load_esm_model(model_dir, dtype, device, trust_remote_code, fast_forward, gelu_epilogue(device, dtype),
                         fused_kernels)
    if esm.config.hidden_size != ESM_DIM:
        raise InputError(model_dir, "hidden_size", f"model hidden size is {esm.config.hidden_size}, "
                         f"the features need {ESM_DIM}", "use a FastESM2_650 / ESM-2 650M model")
    encoder = ProteinEncoder(load_tokenizer(model_dir, esm), max_length)
    budget = toks_per_batch or default_token_budget(device, esm.config.hidden_size, esm.config.intermediate_size,
                                                    torch.finfo(dtype).bits // 8)
    budget = retry_budget(budget, attempt)
    counts = [count_fasta(fasta) for _, fasta in chunks]
    task_tokens = sum(letters + 2 * records for records, letters in counts)
    fused = getattr(esm, "fused_kernels", False)
    compile_model, why = compile_decision(compile_model, device, task_tokens, compile_min_tokens, fused)
    embedder = EsmEmbedder(esm, encoder, device, budget, compile_model)
    load_seconds = time.perf_counter() - started
    forward = ("fast forward, fused Triton kernels" if fused else "fast forward") if embedder.packed \
        else "transformers EsmModel"
    print(f"embed: model {model} ({forward}, {precision}, {device}, {budget} tokens/batch, {why}) loaded in "
          f"{load_seconds:.1f}s", file=log, flush=True)

    def write(chunk: EncodedChunk, rows) -> dict:
        require_finite(rows, chunk, precision)
        write_esm(Path(outdir) / f"{chunk.key}_ESM.pt", chunk.ids, rows)
        return {"key": chunk.key, "proteins": len(chunk.ids), "residues": chunk.residues, "truncated": chunk.truncated}

    progress = Progress([records for records, _ in counts], log)
    stats = run_chunks(chunks, encoder.read_chunk, embedder, write, progress, "esm")
    return {"model": model, "config_hash": config_hash(model_dir), "precision": precision,
            "device": device_name(device),
            "token_budget": budget, "compiled": compile_model, "compile_decision": why,
            "forward": ("fast, fused kernels" if fused else "fast") if embedder.packed else "EsmModel",
            "load_seconds": round(load_seconds, 3),
            "total_seconds": round(time.perf_counter() - started, 3), "chunks": stats}


def fused_kernels_decision(requested: bool, device, dtype) -> tuple[bool, str | None]:
    """Whether the fast forward runs through our Triton kernels, and a warning when asked for but not possible.

    Triton needs a CUDA card of compute capability 7.0 or newer, and 8.0 for bfloat16; elsewhere the forward falls
    back to the compiled layer (or eager), which computes the same maths, instead of failing the task.
    """
    import importlib.util

    import torch

    if not requested or device.type != "cuda":
        return False, None
    if importlib.util.find_spec("triton") is None:
        return False, "--fused_kernels: Triton is not installed; the fast forward runs without its kernels"
    capability = torch.cuda.get_device_capability(device)
    needed = (8, 0) if dtype == torch.bfloat16 else (7, 0)
    if capability < needed:
        return False, (f"--fused_kernels: {torch.cuda.get_device_name(device)} (compute capability "
                       f"{capability[0]}.{capability[1]}) cannot run Triton's {dtype} kernels (needs "
                       f"{needed[0]}.{needed[1]}); the fast forward runs without them")
    return True, None


def compile_decision(requested: bool | None, device, task_tokens: int, min_tokens: int,
                     fused_kernels: bool = False) -> tuple[bool, str]:
    """Whether this task compiles the model, and why (logged, and kept in the task's statistics).

    Every new process pays the compile again. With the fast forward (one layer compiled for all) that is
    about 9 s with a warm on-disk cache and 35 s cold on an H200, while compiled batches save about 2.4 µs a
    token (416k against 210k tokens/s eager): a task breaks even near 4 M tokens warm (15 M cold;
    benchmarks/results/fresh_task_h200.json), so smaller tasks skip it. (transformers' EsmModel compiled
    whole costs about 41 s warm, 105 s cold.)
    """
    if device.type != "cuda":
        return False, "eager on CPU"
    if fused_kernels:
        return False, "eager with the fused Triton kernels: nothing to compile"
    if requested is False:
        return False, "eager: --compile false"
    if task_tokens < min_tokens:
        return False, (f"eager: {task_tokens:,} tokens in this task < --compile_min_tokens {min_tokens:,}, "
                       "compiling would cost more than it saves")
    return True, f"compiled: {task_tokens:,} tokens in this task"
