"""`embed`: one FastESM2 / ESM-2 embedding per protein, mean over residues, for many chunk files.

The model is loaded once per task; each chunk file is read and tokenised on a background thread
while the GPU works on the previous one, batched by length under a token budget, pooled on the
device, and written atomically as `<group>/<id>_ESM.pt` in FASTA order.
"""
from __future__ import annotations

import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .models import config_hash, load_esm_model, load_tokenizer, resolve_model_dir
from .util import ESM_DIM, InputError, count_fasta, read_proteins, save_pt, write_json

PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
CPU_TOKEN_BUDGET = 8192
MAX_TOKEN_BUDGET = 131072


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


def plan_batches(lengths: list[int], token_budget: int, extra: int = 2) -> list[list[int]]:
    """Group indices into batches of similar length whose padded size `n × (max_len + extra)` fits the budget.

    Sorting by length keeps padding small; each batch's width is its longest protein plus BOS/EOS
    (`extra` 2; 0 where the lengths already count the special tokens).
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches, current = [], []
    for index in order:
        width = lengths[index] + extra  # ascending order: this is the batch's widest so far
        if current and width * (len(current) + 1) > token_budget:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def plan_packed_batches(lengths: list[int], token_budget: int, extra: int = 2,
                        min_uniform_share: float = 0.25) -> list[list[int]]:
    """Batches for the packed forward: whole batches of one exact length first, the rest packed by length.

    A batch of one length runs attention with no mask at all; the leftovers of each length (and lengths too rare
    to fill a quarter of the budget) are packed end to end in length order, with no padding, until the budget's
    `sum(length + extra)` is reached. VirNucPro's proteins of 300-bp reads (99-100 residues) thus run almost
    entirely in uniform batches, and 40-166-residue sets in packed ones.
    """
    by_length: dict[int, list[int]] = {}
    for index in sorted(range(len(lengths)), key=lambda i: (lengths[i], i)):
        by_length.setdefault(lengths[index], []).append(index)
    batches, leftovers = [], []
    for length, indices in by_length.items():
        width = length + extra
        rows = max(1, token_budget // width)
        while len(indices) >= rows:
            batches.append(indices[:rows])
            indices = indices[rows:]
        if indices and len(indices) * width >= min_uniform_share * token_budget:
            batches.append(indices)
        else:
            leftovers.extend(indices)
    current, used = [], 0
    for index in leftovers:
        width = lengths[index] + extra
        if current and used + width > token_budget:
            batches.append(current)
            current, used = [], 0
        current.append(index)
        used += width
    if current:
        batches.append(current)
    return batches


def retry_budget(budget: int, attempt: int) -> int:
    """Half the token budget for each retry of a task (Nextflow's task.attempt), never below 64 tokens."""
    return max(64, budget >> (attempt - 1))


def default_token_budget(device, hidden_size: int, intermediate_size: int, bytes_per_value: int) -> int:
    """A budget that fits the card's free memory with room to spare; 8,192 tokens on CPU.

    Peak activation memory per token is a small multiple of (hidden + intermediate) values; the factor
    16 leaves room for attention workspaces and allocator fragmentation.
    """
    import torch

    if device.type != "cuda":
        return CPU_TOKEN_BUDGET
    free, _ = torch.cuda.mem_get_info(device)
    per_token = 16 * (hidden_size + intermediate_size) * bytes_per_value
    budget = int(0.5 * free / per_token)
    return max(1024, min(MAX_TOKEN_BUDGET, budget))


def split_on_out_of_memory(batch: list[int], run, too_big) -> None:
    """`run(batch)`; on CUDA out-of-memory, run its halves instead, down to single items.

    Nothing is skipped: an item that does not fit alone raises `too_big(index)`, an InputError
    naming it, instead of being dropped as the original scripts did.
    """
    import torch

    try:
        run(batch)
    except torch.OutOfMemoryError:
        if len(batch) == 1:
            raise too_big(batch[0])
        torch.cuda.empty_cache()
        split_on_out_of_memory(batch[: len(batch) // 2], run, too_big)
        split_on_out_of_memory(batch[len(batch) // 2:], run, too_big)


def pool_batch(batch: list[int], tokens: list, order: list, pooled: list, collate, forward_for, too_big) -> None:
    """Pool the items `batch` of `tokens`, split on CUDA out-of-memory; append each part's pooled rows to
    `pooled` and its item indices to `order`. `forward_for(part_size)` is the pooling function to run."""

    def run(part):
        pooled.append(forward_for(len(part))(*collate([tokens[i] for i in part])))
        order.extend(part)

    split_on_out_of_memory(batch, run, too_big)


def to_device(device, *arrays: np.ndarray):
    """Host arrays as tensors on `device`: pinned and copied without blocking on CUDA."""
    import torch

    tensors = [torch.from_numpy(a) for a in arrays]
    if device.type == "cuda":
        tensors = [t.pin_memory() for t in tensors]
    return tuple(t.to(device, non_blocking=True) for t in tensors)


class PendingEmbedding:
    """Embeddings of one chunk on their way to the host: `result()` waits for the copy to finish.

    The copy into pinned memory is queued behind the chunk's last batch, so the GPU moves on to the
    next chunk while the host writes this one.
    """

    def __init__(self, host, event):
        self.host, self.event = host, event

    def result(self):
        """float32 [N, hidden] on the host, row i for protein i of the chunk."""
        if self.event is not None:
            self.event.synchronize()
        return self.host


class EsmEmbedder:
    """Embeds tokenised proteins: mean of the last hidden state over residue positions only.

    Two forwards. The fast one (`EsmInferenceEncoder`, the default) takes packed batches: exact-length
    buckets without a mask, the rest packed end to end (`plan_packed_batches`); with `compile_model` one
    layer is compiled and reused by all. transformers' `EsmModel` (`--fast_forward false`, or models the
    fast forward does not cover) takes padded length-sorted batches; with `compile_model` its forward
    and pooling are compiled once with dynamic shapes. Pooling runs on the device in float32 either way;
    the compile cache persists across tasks via TORCHINDUCTOR_CACHE_DIR.
    """

    def __init__(self, model, encoder: ProteinEncoder, device, token_budget: int, compile_model: bool = False):
        import torch

        from .esm_forward import EsmInferenceEncoder

        self.model, self.encoder, self.device, self.token_budget = model, encoder, device, token_budget
        self.hidden_size = model.config.hidden_size
        self.packed = isinstance(model, EsmInferenceEncoder)
        self._compiled = None
        if compile_model and self.packed:
            model.compile_layers()
        elif compile_model:
            self._compiled = torch.compile(self.pool, dynamic=True)

    def embed(self, tokens: list[np.ndarray], fasta: str = "-", ids: list[str] | None = None):
        """float32 [N, hidden] on the host, row i for tokens[i]."""
        return self.embed_async(tokens, fasta, ids).result()

    def embed_async(self, tokens: list[np.ndarray], fasta: str = "-", ids: list[str] | None = None) -> PendingEmbedding:
        """Queue every batch of one chunk on the device; return without waiting for the GPU."""
        import torch

        order, pooled = [], []
        plan = plan_packed_batches if self.packed else plan_batches
        with torch.inference_mode():
            for batch in plan([len(t) for t in tokens], self.token_budget):
                self._embed_batch(batch, tokens, order, pooled, fasta, ids)
            if not pooled:
                return PendingEmbedding(torch.empty((0, self.hidden_size)), None)
            rows = torch.empty((len(tokens), self.hidden_size), dtype=torch.float32, device=self.device)
            rows[torch.as_tensor(order, device=self.device)] = torch.cat(pooled)
            if self.device.type != "cuda":
                return PendingEmbedding(rows, None)
            host = torch.empty(rows.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(rows, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            return PendingEmbedding(host, event)

    def _embed_batch(self, batch, tokens, order, pooled, fasta, ids):
        """Run one batch (split on CUDA out-of-memory); append its pooled rows and their indices."""

        def forward_for(size):
            if self.packed:
                return self.model.pooled_residue_means
            return self._compiled if self._compiled is not None and size > 1 else self.pool

        def too_big(index):
            return InputError(fasta, f"record {ids[index] if ids else index}", f"protein of {len(tokens[index])} "
                              "residues does not fit in GPU memory even alone", "lower --max_length (longer proteins "
                              "are truncated) or free the GPU; --toks_per_batch only bounds batches")

        collate = self.pack if self.packed else self.collate
        pool_batch(batch, tokens, order, pooled, collate, forward_for, too_big)

    def pack(self, rows: list[np.ndarray]):
        """The rows as one PackedBatch on the device (BOS/EOS added, no padding), for the fast forward."""
        from .esm_forward import pack_proteins

        return (pack_proteins(rows, self.encoder.cls_id, self.encoder.eos_id, self.device),)

    def collate(self, rows: list[np.ndarray]):
        """Pad to `[batch, max_len + 2]` token ids with BOS/EOS, plus the residue mask `[batch, max_len + 2]`."""
        width = max(len(r) for r in rows) + 2
        input_ids = np.full((len(rows), width), self.encoder.pad_id, dtype=np.int64)
        input_ids[:, 0] = self.encoder.cls_id
        residue_mask = np.zeros((len(rows), width), dtype=np.bool_)
        for r, row in enumerate(rows):
            input_ids[r, 1: len(row) + 1] = row
            input_ids[r, len(row) + 1] = self.encoder.eos_id
            residue_mask[r, 1: len(row) + 1] = True
        return to_device(self.device, input_ids, residue_mask)

    def pool(self, input_ids, residue_mask):
        """input_ids, residue_mask [batch, length] -> mean of `last_hidden_state` over residues, [batch, hidden] float32."""
        import torch

        attention_mask = input_ids.ne(self.encoder.pad_id).long()
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = residue_mask.float()
        summed = torch.einsum("bl,blh->bh", weights, hidden.float())
        return summed / weights.sum(1, keepdim=True)


# ----------------------------------------------------------------------------------------------
# The worker: many chunk files per model load
# ----------------------------------------------------------------------------------------------
def choose_device(use_gpu: bool):
    import torch

    if use_gpu:
        if not torch.cuda.is_available():
            raise InputError("--use_gpu", "-", "no CUDA GPU is visible to this task",
                             "run on a GPU node (check --gres / --gpus all / --nv) or pass --use_gpu false")
        return torch.device("cuda")
    return torch.device("cpu")


def gelu_epilogue(device, dtype) -> bool:
    """Whether FC1 applies GELU in cuBLASLt's epilogue (tanh form) instead of a separate erf-GELU pass.

    On by default for half-precision CUDA runs: on an H200 it took the compiled fast forward from 360k to 388k
    tokens/s (99-100 residues) with the same minimum cosine to the fp32 erf model (0.999966; 0.999963 on 40-166
    residues; benchmarks/results/forward_h200.json). Off in fp32, where a user asks for the exact function.
    """
    import torch

    return device.type == "cuda" and dtype != torch.float32


def choose_dtype(precision: str | None, device):
    import torch

    if not precision:
        precision = "bf16" if device.type == "cuda" else "fp32"
    return getattr(torch, PRECISIONS[precision]), precision


def prefetch(encoder: ProteinEncoder, chunks: list[tuple[str, str]], depth: int = 2):
    """Yield EncodedChunks read on a background thread, `depth` ahead of the consumer."""
    pending: queue.Queue = queue.Queue(maxsize=depth)

    def reader():
        for key, fasta in chunks:
            try:
                pending.put(encoder.read_chunk(key, fasta))
            except BaseException as exc:  # handed to the consumer, which re-raises it
                pending.put(exc)
                return
        pending.put(None)

    threading.Thread(target=reader, daemon=True, name="fasta-reader").start()
    while (item := pending.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item


def run_embed(chunks: list[tuple[str, str]], outdir, model: str, precision: str | None, use_gpu: bool,
              toks_per_batch: int | None, max_length: int, trust_remote_code: bool = False,
              compile_model: bool | None = None, attempt: int = 1, log=None, compile_min_tokens: int = 0,
              fast_forward: bool = True) -> dict:
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
    esm = load_esm_model(model_dir, dtype, device, trust_remote_code, fast_forward, gelu_epilogue(device, dtype))
    if esm.config.hidden_size != ESM_DIM:
        raise InputError(model_dir, "hidden_size", f"model hidden size is {esm.config.hidden_size}, "
                         f"the features need {ESM_DIM}", "use a FastESM2_650 / ESM-2 650M model")
    encoder = ProteinEncoder(load_tokenizer(model_dir, esm), max_length)
    budget = toks_per_batch or default_token_budget(device, esm.config.hidden_size, esm.config.intermediate_size,
                                                    torch.finfo(dtype).bits // 8)
    budget = retry_budget(budget, attempt)
    counts = [count_fasta(fasta) for _, fasta in chunks]
    task_tokens = sum(letters + 2 * records for records, letters in counts)
    compile_model, why = compile_decision(compile_model, device, task_tokens, compile_min_tokens)
    embedder = EsmEmbedder(esm, encoder, device, budget, compile_model)
    load_seconds = time.perf_counter() - started
    forward = "fast forward" if embedder.packed else "transformers EsmModel"
    print(f"embed: model {model} ({forward}, {precision}, {device}, {budget} tokens/batch, {why}) loaded in "
          f"{load_seconds:.1f}s", file=log, flush=True)

    stats, progress = [], Progress([records for records, _ in counts], log)

    def write(chunk: EncodedChunk, pending: PendingEmbedding, t0: float):
        save_pt({"proteins": chunk.ids, "data": pending.result()}, Path(outdir) / f"{chunk.key}_ESM.pt")
        seconds = time.perf_counter() - t0
        stats.append({"key": chunk.key, "proteins": len(chunk.ids), "residues": chunk.residues,
                      "truncated": chunk.truncated, "seconds": round(seconds, 3)})
        progress.chunk_done(chunk, seconds)

    overlap_writes(prefetch(encoder, chunks), lambda c: embedder.embed_async(c.tokens, c.fasta, c.ids), write,
                   "esm-writer")
    return {"model": model, "config_hash": config_hash(model_dir), "precision": precision,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "token_budget": budget, "compiled": compile_model, "compile_decision": why,
            "forward": "fast" if embedder.packed else "EsmModel",
            "load_seconds": round(load_seconds, 3),
            "total_seconds": round(time.perf_counter() - started, 3), "chunks": stats}


def overlap_writes(chunks, embed, write, thread_name: str) -> None:
    """For each chunk, `embed(chunk)` here and `write(chunk, embedded, t0)` on a writer thread.

    The device works on the next chunk while the host writes this one; at most two chunks wait for
    the writer, so host memory stays bounded whatever the number of chunks.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name) as writer:
        in_flight = []
        for chunk in chunks:
            t0 = time.perf_counter()
            in_flight.append(writer.submit(write, chunk, embed(chunk), t0))
            while len(in_flight) > 2:
                in_flight.pop(0).result()
        for future in in_flight:
            future.result()


def compile_decision(requested: bool | None, device, task_tokens: int, min_tokens: int) -> tuple[bool, str]:
    """Whether this task compiles the model, and why (logged, and kept in the task's statistics).

    Every new process pays the compile again. With the fast forward (one layer compiled for all) that is
    about 9 s with a warm on-disk cache and 35 s cold on an H200, while compiled batches save about 2.4 µs a
    token (416k against 210k tokens/s eager): a task breaks even near 4 M tokens warm (15 M cold;
    benchmarks/results/fresh_task_h200.json), so smaller tasks skip it. (transformers' EsmModel compiled
    whole costs about 41 s warm, 105 s cold.)
    """
    if device.type != "cuda":
        return False, "eager on CPU"
    if requested is False:
        return False, "eager: --compile false"
    if task_tokens < min_tokens:
        return False, (f"eager: {task_tokens:,} tokens in this task < --compile_min_tokens {min_tokens:,}, "
                       "compiling would cost more than it saves")
    return True, f"compiled: {task_tokens:,} tokens in this task"


class Progress:
    """One line per finished chunk: chunks and items done of the task's total, rate and ETA, readable in
    .command.log (no carriage returns). `records` holds each chunk file's record count (`count_fasta`)."""

    def __init__(self, records: list[int], log, step: str = "embed", unit: str = "proteins"):
        self.total_chunks, self.total = len(records), sum(records)
        self.log, self.done, self.items, self.started = log, 0, 0, time.perf_counter()
        self.step, self.unit = step, unit

    def chunk_done(self, chunk, seconds: float):
        self.done += 1
        self.items += len(chunk.ids)
        elapsed = time.perf_counter() - self.started
        rate = self.items / max(elapsed, 1e-9)
        eta = (self.total - self.items) / max(rate, 1e-9)
        share = self.items / max(self.total, 1)
        bar = "#" * round(20 * share)
        truncated = f", {chunk.truncated} truncated" if getattr(chunk, "truncated", None) is not None else ""
        print(f"{self.step}: [{bar:<20}] {self.done}/{self.total_chunks} chunks, {self.items:,}/{self.total:,} "
              f"{self.unit} ({100 * share:.0f}%) | {chunk.key}: {len(chunk.ids):,} {self.unit}{truncated}, "
              f"{seconds:.1f}s | {rate:,.0f} {self.unit}/s, ETA {eta:.0f}s", file=self.log, flush=True)
