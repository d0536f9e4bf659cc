"""Several GPUs in one EMBED_PROTEINS task: one worker process per visible card, never two on one card.

Why processes and not tasks: a task's GPUs are given to it whole by whoever schedules it (Slurm's
`--gres`, Docker's `--gpus`, or the workstation's visible devices with `maxForks 1`), so no two tasks
can share a card whatever order they finish in; inside the task each worker sees exactly one card
through its own CUDA_VISIBLE_DEVICES. A retried task starts from its own environment again, so no
assignment outlives a failure.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from .errors import EXIT_RETRY, InputError, InputErrors

CLI = Path(__file__).resolve().parents[1] / "virnucpro-extract"


def visible_devices(cuda_visible_devices: str | None, device_count: int) -> list[str]:
    """The cards this task may use, as CUDA_VISIBLE_DEVICES entries (indices or GPU-UUIDs).

    An explicit list wins (Slurm and container runtimes set one); CUDA ignores everything from the
    first invalid entry on (`-1` hides all cards), and so do we. Unset: every card the driver shows.
    """
    if cuda_visible_devices is None:
        return [str(index) for index in range(device_count)]
    devices = []
    for entry in cuda_visible_devices.split(","):
        entry = entry.strip()
        if not entry or entry.startswith("-"):
            break
        devices.append(entry)
    return devices


def plan_workers(visible: list[str], requested: int) -> list[str]:
    """One CUDA_VISIBLE_DEVICES value per worker: the first `requested` visible cards (0: all of them)."""
    count = len(visible) if requested == 0 else requested
    if not visible:
        raise InputError("CUDA_VISIBLE_DEVICES", "-", "no GPU is visible to this task",
                         "run on a GPU node (check --gres / --gpus all / --nv) or pass --use_gpu false")
    if count > len(visible):
        raise InputError("--gpus", str(requested), f"{count} GPUs asked for but {len(visible)} visible "
                         f"({','.join(visible)})", f"pass --gpus {len(visible)} or fewer")
    return visible[:count]


def split_chunks(chunks: list, workers: int) -> list[list]:
    """Chunk files dealt round-robin: VirNucPro's chunks hold 10,000 proteins each, so shares are even."""
    return [chunks[k::workers] for k in range(workers) if chunks[k::workers]]


_LOG_LOCK = threading.Lock()


def _relay(stream, prefix: str, log, lines: list[str]) -> None:
    """Copy a worker's stderr to `log` line by line, prefixed, and keep the lines for its error report."""
    for line in stream:
        line = line.rstrip("\n")
        lines.append(line)
        with _LOG_LOCK:
            log.write(f"{prefix}{line}\n")
            log.flush()


def run_workers(chunks: list[tuple[str, str]], devices: list[str], worker_args: list[str], log=None) -> dict:
    """Run `virnucpro-extract embed` once per device on its share of the chunks; merge their statistics.

    Every worker writes its own chunks atomically, so a failing worker loses none of the others'
    finished files; its error lines are passed on and the whole call fails.
    """
    log = log or sys.stderr
    shares = split_chunks(chunks, len(devices))
    with tempfile.TemporaryDirectory(prefix="embed-workers-") as tmp:
        procs = []
        for k, (device, share) in enumerate(zip(devices, shares)):
            stats = Path(tmp) / f"worker{k}.json"
            command = [sys.executable, str(CLI), "embed", *(f"{key}={fasta}" for key, fasta in share), *worker_args,
                       "--gpus", "1", "--stats", str(stats)]
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": device}
            procs.append((device, stats, subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)))
        # Each worker's lines reach the task's log as they come (progress), tagged with its card.
        logged = {device: [] for device, _, _ in procs}
        relays = [threading.Thread(target=_relay, args=(proc.stderr, f"[gpu {device}] ", log, logged[device]),
                                   daemon=True) for device, _, proc in procs]
        for relay in relays:
            relay.start()
        failures, summaries = [], []
        for (device, stats, proc), relay in zip(procs, relays):
            proc.wait()
            relay.join()
            stderr = "\n".join(logged[device])
            if proc.returncode != 0:
                lines = [line for line in stderr.splitlines() if line.startswith("error: ")] or \
                        [f"error: worker on GPU {device}: -: exited with status {proc.returncode} — see the log above"]
                failures += [InputError.from_line(line, proc.returncode if proc.returncode == EXIT_RETRY else 1)
                             for line in lines]
            else:
                summaries.append({**json.loads(stats.read_text()), "cuda_visible_devices": device})
    if failures:
        raise InputErrors(failures)
    merged = {**summaries[0], "workers": summaries, "chunks": [c for s in summaries for c in s["chunks"]],
              "total_seconds": max(s["total_seconds"] for s in summaries)}
    merged["device"] = ", ".join(sorted({s["device"] for s in summaries}))
    return merged

