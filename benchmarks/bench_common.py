"""What the benchmark scripts share: the device, the CPU smoke mode, and one way to time a run."""
import os
import time

import torch

SMOKE = os.environ.get("BENCH_SMOKE") == "1"  # a CPU run of a script's plumbing, tiny model and counts
DEVICE = torch.device("cpu" if SMOKE else "cuda")
if SMOKE:  # no CUDA: the timing calls become no-ops
    torch.cuda.synchronize = torch.cuda.reset_peak_memory_stats = lambda *a: None
    torch.cuda.max_memory_allocated = lambda *a: 0
    torch.cuda.get_device_name = lambda *a: "cpu (smoke)"


def timed(fn):
    """(fn(), seconds, peak GPU GiB), synchronised before and after so queued GPU work is counted."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = fn()
    torch.cuda.synchronize()
    return result, time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**30
