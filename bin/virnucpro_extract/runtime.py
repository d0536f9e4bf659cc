"""The GPU runtime both embedding workers share: device and precision, token budgets, batch planning, pooled
batches split on CUDA out-of-memory, pinned device copies, and the worker loop (read ahead on one thread,
embed here, write behind on another) with its progress lines.

A worker supplies a `ChunkReader` (file -> tokenised chunk) and a `BatchEmbedder` subclass (how to plan,
collate and pool a batch); `run_chunks` does the rest, the same way for proteins and reads.
"""
from __future__ import annotations

import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .errors import InputError

PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
CPU_TOKEN_BUDGET = 8192
MAX_TOKEN_BUDGET = 131072


# ----------------------------------------------------------------------------------------------
# Device, precision, budget
# ----------------------------------------------------------------------------------------------
def choose_device(use_gpu: bool):
    import torch

    if use_gpu:
        if not torch.cuda.is_available():
            raise InputError("--use_gpu", "-", "no CUDA GPU is visible to this task",
                             "run on a GPU node (check --gres / --gpus all / --nv) or pass --use_gpu false")
        return torch.device("cuda")
    return torch.device("cpu")


def choose_dtype(precision: str | None, device):
    """(torch dtype, precision name): bf16 on GPU (fp16 on cards before compute capability 8.0, which have no
    bf16 tensor cores) and fp32 on CPU, unless `precision` says otherwise."""
    import torch

    if not precision:
        if device.type != "cuda":
            precision = "fp32"
        else:
            precision = "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"
    return getattr(torch, PRECISIONS[precision]), precision


def device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


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


def retry_budget(budget: int, attempt: int) -> int:
    """Half the token budget for each retry of a task (Nextflow's task.attempt), never below 64 tokens."""
    return max(64, budget >> (attempt - 1))


# ----------------------------------------------------------------------------------------------
# Batch planning
# ----------------------------------------------------------------------------------------------
def plan_batches(lengths: list[int], token_budget: int, extra: int = 2) -> list[list[int]]:
    """Group indices into batches of similar length whose padded size `n × (max_len + extra)` fits the budget.

    Sorting by length keeps padding small; each batch's width is its longest item plus `extra` special
    tokens (2 for BOS/EOS; 0 where the lengths already count them).
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
    """Batches for a packed forward: whole batches of one exact length first, the rest packed by length.

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


def split_on_out_of_memory(batch: list[int], run, too_big) -> None:
    """`run(batch)`; on CUDA out-of-memory, run its halves instead, down to single items.

    Nothing is skipped: an item that does not fit alone raises `too_big(index)`, an InputError
    naming it, instead of being dropped as the original scripts did.
    """
    import torch

    try:
        run(batch)
        return
    except torch.OutOfMemoryError:
        if len(batch) == 1:
            raise too_big(batch[0]) from None
    # The halves run after the except block, not inside it: until it ends, the exception's traceback keeps the
    # failed forward's frames alive, with every activation they hold, and empty_cache() could free none of it.
    torch.cuda.empty_cache()
    split_on_out_of_memory(batch[: len(batch) // 2], run, too_big)
    split_on_out_of_memory(batch[len(batch) // 2:], run, too_big)


def to_device(device, *arrays: np.ndarray):
    """Host arrays as tensors on `device`: pinned and copied without blocking on CUDA."""
    import torch

    tensors = [torch.from_numpy(a) for a in arrays]
    if device.type == "cuda":
        tensors = [t.pin_memory() for t in tensors]
    return tuple(t.to(device, non_blocking=True) for t in tensors)


# ----------------------------------------------------------------------------------------------
# Embedders
# ----------------------------------------------------------------------------------------------
class PendingEmbedding:
    """Embeddings of one chunk on their way to the host: `result()` waits for the copy to finish.

    The copy into pinned memory is queued behind the chunk's last batch, so the GPU moves on to the
    next chunk while the host writes this one.
    """

    def __init__(self, host, event):
        self.host, self.event = host, event

    def result(self):
        """float32 [N, hidden] on the host, row i for item i of the chunk."""
        if self.event is not None:
            self.event.synchronize()
        return self.host


class BatchEmbedder:
    """Tokenised items -> one pooled float32 row each, [N, hidden], in input order.

    Subclasses say how to `plan` batches, `collate` a batch onto the device, `forward` it to pooled rows
    [batch, hidden] float32, and what `too_big` error names an item that does not fit alone; batches that run
    out of GPU memory are split in halves (nothing is ever dropped), and the result is copied to the host
    without blocking the next chunk's batches.
    """

    unit = "item"

    def __init__(self, device, token_budget: int, hidden_size: int):
        self.device, self.token_budget, self.hidden_size = device, token_budget, hidden_size

    def plan(self, lengths: list[int]) -> list[list[int]]:
        raise NotImplementedError

    def collate(self, rows: list[np.ndarray]) -> tuple:
        raise NotImplementedError

    def forward(self, *batch):
        raise NotImplementedError

    def too_big(self, tokens: np.ndarray, fasta: str, record: str) -> InputError:
        raise NotImplementedError

    def embed(self, tokens: list[np.ndarray], fasta: str = "-", ids: list[str] | None = None):
        """float32 [N, hidden] on the host, row i for tokens[i]."""
        return self.embed_async(tokens, fasta, ids).result()

    def embed_async(self, tokens: list[np.ndarray], fasta: str = "-", ids: list[str] | None = None) -> PendingEmbedding:
        """Queue every batch of one chunk on the device; return without waiting for the GPU."""
        import torch

        order, pooled = [], []

        def run(part):
            pooled.append(self.forward(*self.collate([tokens[i] for i in part])))
            order.extend(part)

        def too_big(index):
            return self.too_big(tokens[index], fasta, ids[index] if ids else str(index))

        with torch.inference_mode():
            for batch in self.plan([len(t) for t in tokens]):
                split_on_out_of_memory(batch, run, too_big)
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


def require_finite(rows, chunk, precision: str) -> None:
    """Refuse to write a chunk whose embeddings hold NaN or Inf (a model overflowing in fp16, say): the file would
    be published and merged as if it were whole. rows [N, hidden] float32 on the host; chunk has fasta and ids."""
    from .formats import non_finite_rows

    bad = non_finite_rows(chunk.ids, rows)
    if bad:
        raise InputError(chunk.fasta, f"record {bad[0]}",
                         f"its embedding came out NaN or Inf in {precision} ({bad[1]} of {len(chunk.ids)} "
                         "rows of this chunk)", "rerun with --precision bf16 or fp32 (fp16 can overflow)")


def masked_mean(hidden, weights):
    """Mean of hidden [batch, length, hidden] over the positions where weights [batch, length] is 1; float32."""
    import torch

    weights = weights.float()
    summed = torch.einsum("bl,blh->bh", weights, hidden.float())
    return summed / weights.sum(1, keepdim=True)


# ----------------------------------------------------------------------------------------------
# The worker loop: many chunk files per model load
# ----------------------------------------------------------------------------------------------
def prefetch(read_chunk, chunks: list[tuple[str, str]], depth: int = 2):
    """Yield `read_chunk(key, path)` for each chunk, read on a background thread `depth` ahead of the consumer."""
    pending: queue.Queue = queue.Queue(maxsize=depth)

    def reader():
        for key, path in chunks:
            try:
                pending.put(read_chunk(key, path))
            except BaseException as exc:  # handed to the consumer, which re-raises it
                pending.put(exc)
                return
        pending.put(None)

    threading.Thread(target=reader, daemon=True, name="chunk-reader").start()
    while (item := pending.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item


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


def run_chunks(chunks: list[tuple[str, str]], read_chunk, embedder: BatchEmbedder, write_chunk, progress: Progress,
               step: str) -> list[dict]:
    """The worker loop: read ahead, embed, write behind; `write_chunk(chunk, rows) -> stats row` for each chunk.

    Returns the statistics rows, one per chunk, in key order.
    """
    stats = []

    def write(chunk, pending: PendingEmbedding, t0: float):
        row = write_chunk(chunk, pending.result())
        seconds = time.perf_counter() - t0
        stats.append({**row, "seconds": round(seconds, 3)})
        progress.chunk_done(chunk, seconds)

    overlap_writes(prefetch(read_chunk, chunks), lambda c: embedder.embed_async(c.tokens, c.fasta, c.ids), write,
                   f"{step}-writer")
    return sorted(stats, key=lambda s: s["key"])


class Progress:
    """One line per finished chunk: chunks and items done of the task's total, rate and ETA, readable in
    .command.log (no carriage returns). `records` holds each chunk file's record count (`count_fasta`)."""

    def __init__(self, records: list[int], log=None, step: str = "embed", unit: str = "proteins"):
        self.total_chunks, self.total = len(records), sum(records)
        self.log, self.done, self.items, self.started = log or sys.stderr, 0, 0, time.perf_counter()
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
