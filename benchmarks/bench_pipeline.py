"""The whole pipeline on one GPU, as Nextflow runs it: each task's own command in a fresh process, in order.

Data: a training-set slice of --chunks chunk files of 10,000 proteins (99-100 residues, as from 300-bp reads), half
viral and half host, with their reads (300 bp) and no DNABERT-S files, so EMBED_DNA computes them. Models: ESM-2
650M architecture with random weights (a directory, as --esm_model), and a DNABERT-S-shaped model from DNABERT-2's own
code (bench_common.dnabert2_model_dir), both loaded by the worker's own loaders.

Steps, each a `virnucpro-extract` process with the arguments its module gives it: preflight (schema, every file
read), embed-dna (one task of all chunks), embed (one task of all chunks), merge (one process for all chunks with
--workers, as MERGE_FEATURES runs one task per group), validate and report. Per step: wall seconds, peak host RSS of the process tree and peak
GPU memory in use (sampled every 0.2 s). End to end: proteins/s over the whole sequence, and its share of the embed
step's own steady state (chunks 3.. of its progress lines) and of --steady (a bench_forward figure) when given.

Usage (GPU machine): python benchmarks/bench_pipeline.py --out benchmarks/results/pipeline_h200.json
    --dnabert_code DIR  (DNABERT-2's bert_layers.py and siblings, with config.json)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from bench_fresh_task import save_model

from bench_common import SMOKE, dnabert2_model_dir

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, str(REPO / "bin" / "virnucpro-extract")]
AMINO = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY", dtype=np.uint8)
BASES = np.frombuffer(b"ACGT", dtype=np.uint8)


def write_slice(data: Path, chunks: int, per_chunk: int, seed: int = 0) -> int:
    """VirNucPro's layout: <prefix>.identified_protein/output_<n>.fa and the reads beside them; no .pt files."""
    rng = np.random.default_rng(seed)
    for n in range(chunks):
        prefix = "viral.1.1" if n % 2 == 0 else "bacteria.1.1"
        ids = [f"NC_{n:06d}.1_chunk_{k}F1" for k in range(per_chunk)]
        lengths = rng.integers(99, 101, per_chunk)
        residues = AMINO[rng.integers(0, len(AMINO), int(lengths.sum()))].tobytes().decode()
        reads = BASES[rng.integers(0, 4, per_chunk * 300)].tobytes().decode()
        proteins, offset = [], 0
        for length in lengths:
            proteins.append(residues[offset: offset + length])
            offset += length
        for kind, records in (("protein", proteins), ("nucleotide", [reads[k * 300:(k + 1) * 300] for k in range(per_chunk)])):
            folder = data / f"{prefix}.identified_{kind}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"output_{n // 2 + 1}.fa").write_text("".join(f">{i}\n{s}\n" for i, s in zip(ids, records)))
    return chunks * per_chunk


def tree_rss(root: int) -> int:
    """Resident bytes of a process and all its descendants, read from /proc."""
    parents, rss = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid = int(stat.parent.name)
            parents[pid], rss[pid] = int(fields[1]), int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, frontier = 0, [root]
    while frontier:
        pid = frontier.pop()
        total += rss.get(pid, 0)
        frontier += [child for child, parent in parents.items() if parent == pid]
    return total


class Sampler:
    """Peak RSS of a process tree, and peak GPU memory in use, sampled while it runs."""

    def __init__(self, pid: int):
        self.pid, self.peak_rss, self.peak_gpu_mib, self._stop = pid, 0, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, tree_rss(self.pid))
            if not SMOKE:
                used = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                      capture_output=True, text=True).stdout.split()
                if used:
                    self.peak_gpu_mib = max(self.peak_gpu_mib, int(used[0]))
            time.sleep(0.2)

    def stop(self):
        self._stop.set()
        self._thread.join()


def run_step(name: str, args: list[str], cwd: Path, log: Path) -> dict:
    """One task command; its stderr goes to `log`, progress lines are timed as they come."""
    start = time.perf_counter()
    with open(log, "w") as sink:
        proc = subprocess.Popen(CLI + args, cwd=cwd, stderr=subprocess.PIPE, stdout=sink, text=True)
        sampler = Sampler(proc.pid)
        chunk_times = []
        for line in proc.stderr:
            sink.write(line)
            if " chunks, " in line:
                chunk_times.append(time.perf_counter() - start)
        proc.wait()
        sampler.stop()
    row = {"wall_s": round(time.perf_counter() - start, 2), "exit": proc.returncode,
           "peak_rss_gib": round(sampler.peak_rss / 2**30, 2), "peak_gpu_gib": round(sampler.peak_gpu_mib / 1024, 2),
           "chunk_times_s": [round(t, 2) for t in chunk_times]}
    print(f"{name:<12} {row['wall_s']:>8.1f} s  exit {row['exit']}  RSS {row['peak_rss_gib']} GiB  "
          f"GPU {row['peak_gpu_gib']} GiB", flush=True)
    if proc.returncode != 0:
        print(log.read_text()[-3000:], flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--dnabert_code", required=True, type=Path)
    parser.add_argument("--chunks", type=int, default=4 if SMOKE else 20)
    parser.add_argument("--workers", type=int, default=4, help="merge and validate workers (the task's cpus)")
    parser.add_argument("--steady", type=float, help="steady-state tokens/s of the embed worker (bench_forward)")
    args = parser.parse_args()
    per_chunk = 50 if SMOKE else 10000
    gpu = [] if not SMOKE else ["--use_gpu", "false"]
    doc = {"chunks": args.chunks, "proteins_per_chunk": per_chunk, "steps": {}}
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    t0 = time.perf_counter()
    proteins = write_slice(work / "data", args.chunks, per_chunk)
    save_model(work / "esm")
    dnabert2_model_dir(args.dnabert_code, work / "dnabert", layers=1 if SMOKE else None)
    doc["setup_s"] = round(time.perf_counter() - t0, 1)
    params = {"data_dir": str(work / "data"), "esm_model": str(work / "esm"), "dnabert_model": str(work / "dnabert"),
              "outdir": str(work / "results"), "max_length": 1022, "chunks_per_task": 128, "use_gpu": not SMOKE}
    (work / "params.json").write_text(json.dumps(params))
    steps = doc["steps"]
    steps["preflight"] = run_step("preflight", ["preflight", "--params_json", "params.json", "--schema",
                                                str(REPO / "nextflow_schema.json"), "--workers", "4", "--launch_dir",
                                                str(work), "--outdir", "pf"], work, work / "preflight.log")
    lines = [line.split(",") for line in (work / "pf" / "chunks.csv").read_text().splitlines()]
    rows = [dict(zip(lines[0], r)) for r in lines[1:]]
    doc["compute_dnabert"] = sum(r["compute_dnabert"] == "true" for r in rows)
    steps["embed_dna"] = run_step("embed-dna", ["embed-dna", *(f"{r['key']}={r['nucleotide_fasta']}" for r in rows),
                                                "--outdir", "dnabert", "--dnabert_model", str(work / "dnabert"), *gpu,
                                                "--stats", "embed_dna.json"], work, work / "embed_dna.log")
    steps["embed"] = run_step("embed", ["embed", *(f"{r['key']}={r['protein_fasta']}" for r in rows), "--outdir", "esm",
                                        "--esm_model", str(work / "esm"), *gpu, "--stats", "embed.json"],
                              work, work / "embed.log")
    merge_table = ["key,group,id,label,dnabert_embeddings,esm,merged"] + [
        ",".join([r["key"], r["group"], r["id"], r["label"], f"dnabert/{r['key']}_DNABERT_S.pt", f"esm/{r['key']}_ESM.pt",
                  f"merged/{r['group']}_merged/{r['id']}_merged.pt"]) for r in rows]
    (work / "merge.csv").write_text("\n".join(merge_table) + "\n")
    steps["merge"] = run_step("merge", ["merge", "--table", "merge.csv", "--stats", "merge.json", "--workers",
                                        str(args.workers)], work, work / "merge.log")
    steps["merge"]["processes"] = 1
    table = ["key,group,id,label,protein_fasta,dnabert_embeddings,esm,merged"] + [
        ",".join([r["key"], r["group"], r["id"], r["label"], r["protein_fasta"], f"dnabert/{r['key']}_DNABERT_S.pt",
                  f"esm/{r['key']}_ESM.pt", f"merged/{r['group']}_merged/{r['id']}_merged.pt"]) for r in rows]
    (work / "outputs.csv").write_text("\n".join(table) + "\n")
    steps["validate"] = run_step("validate", ["validate", "--table", "outputs.csv", "--out", "validation.json",
                                              "--sample", "sample.pt", "--workers", str(args.workers)], work, work / "validate.log")
    steps["report"] = run_step("report", ["report", "--validation", "validation.json", "--sample", "sample.pt",
                                          "--preflight", "pf/preflight.json", "--embed_stats", "embed.json",
                                          "--dna_stats", "embed_dna.json", "--out", "report.html"],
                               work, work / "report.log")
    total = sum(s["wall_s"] for s in steps.values())
    embed = json.loads((work / "embed.json").read_text())
    tokens = sum(c["residues"] + 2 * c["proteins"] for c in embed["chunks"])
    times = steps["embed"]["chunk_times_s"]
    per_chunk_tokens = tokens / max(1, len(embed["chunks"]))
    steady = per_chunk_tokens * (len(times) - 3) / (times[-1] - times[2]) if len(times) > 4 else None
    doc["validation_passed"] = json.loads((work / "validation.json").read_text())["passed"]
    doc["end_to_end"] = {"wall_s": round(total, 1), "proteins": proteins, "proteins_per_s": round(proteins / total, 1),
                         "embed_tokens": tokens, "embed_compiled": embed["compiled"], "embed_forward": embed.get("forward"),
                         "embed_steady_tokens_per_s": round(steady) if steady else None,
                         "embed_load_s": embed["load_seconds"]}
    if steady:
        doc["end_to_end"]["share_of_embed_steady_state"] = round(tokens / total / steady, 3)
    if args.steady:
        doc["end_to_end"]["share_of_bench_forward_steady_state"] = round(tokens / total / args.steady, 3)
    import torch

    doc["gpu"] = torch.cuda.get_device_name() if not SMOKE else "cpu (smoke)"
    args.out.write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc["end_to_end"], indent=1), flush=True)


if __name__ == "__main__":
    main()
