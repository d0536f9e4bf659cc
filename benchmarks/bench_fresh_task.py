"""One EMBED_PROTEINS task as the pipeline runs it: a fresh `virnucpro-extract embed` process on the
default --chunks_per_task (128) chunk files of 10,000 proteins (99-100 residues), model loaded from a
directory (ESM-2 650M architecture, random weights).

What a task pays besides steady-state embedding is loading the model and, when compiled, tracing it
again in every new process (the on-disk inductor cache spares the kernel compilation, not the
tracing). Processes, one after the other on the same card (--runs):
  cold        compiled, empty compile cache (the first task on a machine), all --chunks files;
  warm        compiled, the cache the cold process left (every later task), all --chunks files;
  warm_small  compiled, warm cache, 4 files: what load and compile cost a task that finds the cache;
  eager       --compile false.
Per process: wall time, time to the first finished chunk, steady-state tokens/s (chunks 3..8, from
the times their progress lines appear), end-to-end tokens/s and its share of that steady state.
A short profile of the compiled model (warm cache) lists the top GPU kernels.

Usage (on the GPU machine): python benchmarks/bench_fresh_task.py --out benchmarks/results/fresh_task_h100.json
CPU smoke run of the plumbing: BENCH_SMOKE=1 python benchmarks/bench_fresh_task.py --out /tmp/fresh.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_embed import esm2_650m_config, random_proteins
from transformers import EsmModel

from bench_common import DEVICE, SMOKE

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "bin" / "virnucpro-extract"
sys.path.insert(0, str(REPO / "bin"))
from virnucpro_extract.models import ESM2_VOCAB  # noqa: E402

PROTEINS = 200 if SMOKE else 10000


def save_model(model_dir: Path) -> None:
    """ESM-2 650M with random weights, saved as a directory the worker loads (weights + vocabulary)."""
    from transformers import EsmTokenizer

    torch.manual_seed(0)
    with torch.device("cpu"):
        model = EsmModel(esm2_650m_config(), add_pooling_layer=False)
    model.save_pretrained(model_dir)
    (model_dir / "vocab.txt").write_text("\n".join(ESM2_VOCAB) + "\n")
    EsmTokenizer(vocab_file=str(model_dir / "vocab.txt")).save_pretrained(model_dir)


def write_chunks(data: Path, chunks: int) -> list[str]:
    args = []
    for n in range(chunks):
        fasta = data / f"output_{n + 1}.fa"
        fasta.parent.mkdir(parents=True, exist_ok=True)
        proteins = fast_random_proteins(PROTEINS, 99, 100, seed=2000 + n)
        fasta.write_text("".join(f">NC_{n:06d}.1_chunk_{k}F1\n{p}\n" for k, p in enumerate(proteins)))
        args.append(f"viral.1.1/output_{n + 1}={fasta}")
    return args


def fast_random_proteins(count: int, lo: int, hi: int, seed: int) -> list[str]:
    """Uniform random residues and lengths, drawn with numpy (1.28 M proteins in seconds, not minutes)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = rng.integers(lo, hi + 1, count)
    letters = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY", dtype=np.uint8)[rng.integers(0, 20, int(lengths.sum()))]
    text, ends = letters.tobytes().decode(), np.cumsum(lengths)
    return [text[end - length: end] for end, length in zip(ends, lengths)]


def run_task(name: str, chunk_args: list[str], model_dir: Path, outdir: Path, cache: Path, extra=()) -> dict:
    """Run one embed process; time each progress line ('chunks |') as it appears on stderr."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"), "TRITON_CACHE_DIR": str(cache / "triton")}
    stats = outdir / f"{name}.json"
    command = [sys.executable, str(CLI), "embed", *chunk_args, "--esm_model", str(model_dir), "--outdir",
               str(outdir / name), "--stats", str(stats), *(["--use_gpu", "false", "--toks_per_batch", "4096"]
                                                            if SMOKE else []), *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    chunk_times, tail = [], []
    for line in proc.stderr:
        if " chunks, " in line:
            chunk_times.append(time.perf_counter() - start)
        tail = (tail + [line.rstrip()])[-5:]
    proc.wait()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}", "stderr_tail": tail}
    summary = json.loads(stats.read_text())
    tokens = [c["residues"] + 2 * c["proteins"] for c in summary["chunks"]]
    steady_tokens = sum(tokens[3:]) if len(tokens) > 3 else sum(tokens[1:])
    first_steady = 2 if len(tokens) > 3 else 0
    steady_s = chunk_times[-1] - chunk_times[first_steady] if len(chunk_times) > first_steady + 1 else None
    steady = steady_tokens / steady_s if steady_s else None
    row = {"wall_s": round(wall, 1), "load_s": summary["load_seconds"], "first_chunk_s": round(chunk_times[0], 1),
           "tokens": sum(tokens), "tokens_per_s_end_to_end": round(sum(tokens) / wall),
           "tokens_per_s_steady": round(steady) if steady else None, "token_budget": summary["token_budget"],
           "compiled": summary["compiled"]}
    if steady:
        row["share_of_steady_state"] = round(row["tokens_per_s_end_to_end"] / steady, 3)
    print(f"{name}: {row}", flush=True)
    return row


def profile_compiled(model_dir: Path, cache: Path) -> list[str]:
    """Top GPU kernels of the compiled worker on three 99-100-residue batches (warm compile cache)."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"], os.environ["TRITON_CACHE_DIR"] = str(cache / "inductor"), str(cache / "triton")
    from virnucpro_extract.embed import EsmEmbedder, ProteinEncoder
    from virnucpro_extract.models import load_esm_model, load_tokenizer

    dtype = torch.float32 if SMOKE else torch.bfloat16
    model = load_esm_model(model_dir, dtype, DEVICE)
    encoder = ProteinEncoder(load_tokenizer(model_dir, model), 1022)
    embedder = EsmEmbedder(model, encoder, DEVICE, 4096 if SMOKE else 131072, compile_model=not SMOKE)
    tokens = [encoder.encode(p) for p in random_proteins(300 if SMOKE else 4000, 99, 100, seed=7)]
    embedder.embed(tokens)  # compile (from the cache) outside the profile
    activities = [torch.profiler.ProfilerActivity.CPU] + ([] if SMOKE else [torch.profiler.ProfilerActivity.CUDA])
    with torch.profiler.profile(activities=activities) as prof:
        embedder.embed(tokens)
        if not SMOKE:
            torch.cuda.synchronize()
    key = "self_cpu_time_total" if SMOKE else "self_cuda_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=14, max_name_column_width=70).splitlines()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--chunks", type=int, default=3 if SMOKE else 128)
    parser.add_argument("--runs", default="cold,warm_small")
    parser.add_argument("--steady", type=float, help="steady-state tokens/s of the worker (bench_forward), for the share")
    parser.add_argument("--profile", action="store_true", help="also profile the compiled model (warm cache)")
    args = parser.parse_args()
    doc = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "chunks": args.chunks,
           "proteins_per_chunk": PROTEINS, "runs": {}}

    def save():
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        save_model(tmp / "model")
        chunk_args = write_chunks(tmp / "data", args.chunks)
        doc["setup_s"] = round(time.perf_counter() - t0, 1)
        cache = tmp / "compile_cache"
        for name in args.runs.split(","):
            extra = ("--compile", "false") if name == "eager" else ()
            share = chunk_args[:4] if name.endswith("_small") else chunk_args
            # a small task is below the default --compile_min_tokens: force the compile to measure its cost
            extra += ("--compile_min_tokens", "0") if name.endswith("_small") else ()
            doc["runs"][name] = run_task(name, share, tmp / "model", tmp / "out", cache, extra)
            if args.steady and "tokens_per_s_end_to_end" in doc["runs"][name]:
                doc["runs"][name]["share_of_bench_forward_steady_state"] = round(
                    doc["runs"][name]["tokens_per_s_end_to_end"] / args.steady, 3)
            save()
        if args.profile:
            try:
                doc["profile_compiled"] = profile_compiled(tmp / "model", cache)
            except Exception as exc:  # a profile is a bonus; keep the timings
                doc["profile_compiled"] = [f"failed: {exc!r}"]
            save()
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
