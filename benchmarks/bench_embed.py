"""Embedding throughput on one GPU: the worker against three references, same process, same card.

ESM-2 650M architecture (EsmConfig as in shared/performance.md) with random weights: the compute is
the real model's. Methods, on proteins of 300-bp reads (99-100 residues) and on 40-166 residues:
  1. one protein at a time, fp32;
  2. the seed's way: fp16, length-sorted batches of 2,048 tokens, each protein pooled and copied alone;
  3. a plain length-sorted bf16 batcher (65,536 tokens, pooled on the GPU, copied per batch);
  4. the worker (bin/virnucpro_extract/embed.py), in the variants given by --variants.
Each reports tokens/s, proteins/s, peak GPU memory, and the minimum cosine / maximum absolute
difference to an fp32 computation of the same proteins. `--whole` also runs the whole worker on
chunk files of 10,000 proteins read from and written to disk (model load and compile included).

Usage (on the GPU machine): python benchmarks/bench_embed.py --out benchmarks/results/embed_h100.json
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import EsmConfig, EsmModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bin"))
from bench_common import DEVICE, SMOKE, kernel_profile, timed  # noqa: E402
from virnucpro_extract.embed import EsmEmbedder, ProteinEncoder, run_embed  # noqa: E402
from virnucpro_extract.models import load_tokenizer  # noqa: E402

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
LENGTH_SETS = {"300bp_99_100": (99, 100, 20000), "mixed_40_166": (40, 166, 20000)}
REFERENCE_SAMPLE = 512
if SMOKE:
    LENGTH_SETS = {k: (lo, hi, 600) for k, (lo, hi, _) in LENGTH_SETS.items()}
    REFERENCE_SAMPLE = 32


def esm2_650m_config() -> EsmConfig:
    return EsmConfig(vocab_size=33, hidden_size=1280, num_hidden_layers=1 if SMOKE else 33, num_attention_heads=20,
                     intermediate_size=5120, max_position_embeddings=1026, position_embedding_type="rotary",
                     token_dropout=True, emb_layer_norm_before=False, pad_token_id=1, mask_token_id=32)


def random_proteins(count: int, lo: int, hi: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(AMINO_ACIDS, k=rng.randint(lo, hi))) for _ in range(count)]


# ----------------------------------------------------------------------------------------------
# References 1-3, written as their authors would: per-sequence, seed-style, plain batcher
# ----------------------------------------------------------------------------------------------
def with_specials(encoder: ProteinEncoder, tokens: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([[encoder.cls_id], tokens, [encoder.eos_id]]))


def one_at_a_time(model, encoder, tokens):
    out = []
    with torch.inference_mode():
        for t in tokens:
            ids = with_specials(encoder, t)[None].to(DEVICE)
            hidden = model(input_ids=ids).last_hidden_state
            out.append(hidden[0, 1:-1].mean(0).float().cpu())
    return torch.stack(out)


def length_sorted_batches(lengths, budget, descending=False):
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i] if descending else lengths[i])
    batches, current, widest = [], [], 0
    for i in order:
        width = max(widest, lengths[i] + 2)
        if current and width * (len(current) + 1) > budget:
            batches.append(current)
            current, width = [], lengths[i] + 2
        current.append(i)
        widest = width
    if current:
        batches.append(current)
    return batches


def padded(encoder, rows):
    width = max(len(r) for r in rows) + 2
    ids = torch.full((len(rows), width), encoder.pad_id, dtype=torch.long)
    for r, t in enumerate(rows):
        ids[r, : len(t) + 2] = with_specials(encoder, t)
    return ids


def seed_way(model, encoder, tokens):
    """fp16 model, 2,048-token batches longest first, each protein pooled and copied to the host alone."""
    out = [None] * len(tokens)
    with torch.inference_mode():
        for batch in length_sorted_batches([len(t) for t in tokens], 2048, descending=True):
            ids = padded(encoder, [tokens[i] for i in batch]).to(DEVICE)
            hidden = model(input_ids=ids, attention_mask=(ids != encoder.pad_id).long()).last_hidden_state
            for r, i in enumerate(batch):
                out[i] = hidden[r, 1: len(tokens[i]) + 1].mean(0).float().cpu()
    return torch.stack(out)


def plain_batcher(model, encoder, tokens, budget=65536):
    """bf16, length-sorted 65,536-token batches, masked mean on the GPU, one host copy per batch."""
    out = torch.empty((len(tokens), model.config.hidden_size))
    with torch.inference_mode():
        for batch in length_sorted_batches([len(t) for t in tokens], budget):
            ids = padded(encoder, [tokens[i] for i in batch]).to(DEVICE)
            mask = (ids != encoder.pad_id).long()
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            residues = mask.clone()
            residues[:, 0] = 0
            residues[torch.arange(len(batch)), mask.sum(1) - 1] = 0
            pooled = (hidden.float() * residues[..., None]).sum(1) / residues.sum(1, keepdim=True)
            out[torch.as_tensor(batch)] = pooled.cpu()
    return out


# ----------------------------------------------------------------------------------------------
def faithfulness(embeddings: torch.Tensor, reference: torch.Tensor, sample: list[int]) -> dict:
    got = embeddings[sample].float()
    cosine = torch.nn.functional.cosine_similarity(got, reference, dim=1)
    return {"cosine_min": round(float(cosine.min()), 6), "max_abs_diff": round(float((got - reference).abs().max()), 6)}


def measure(name, fn, tokens, reference, sample, results, count=None):
    count = count or len(tokens)
    embeddings, seconds, peak = timed(lambda: fn(tokens[:count]))
    n_tokens = sum(len(t) + 2 for t in tokens[:count])
    row = {"tokens_per_s": round(n_tokens / seconds), "proteins_per_s": round(count / seconds, 1),
           "proteins": count, "seconds": round(seconds, 2), "peak_gpu_gib": round(peak, 2)}
    if count == len(tokens):
        row.update(faithfulness(embeddings, reference, sample))
    else:  # one-at-a-time runs a prefix only; compare on the sampled proteins inside it
        inside = [i for i in sample if i < count]
        row.update(faithfulness(embeddings, reference[[sample.index(i) for i in inside]], inside))
    results[name] = row
    print(f"  {name:<40} {row['tokens_per_s']:>9,} tok/s {row['proteins_per_s']:>9,.1f} prot/s "
          f"cos_min {row['cosine_min']:.6f} max_abs {row['max_abs_diff']:.2e} peak {peak:.1f} GiB", flush=True)


def ratios(results: dict):
    for name, row in results.items():
        if name.startswith("4_worker"):
            for ref in ("1_one_at_a_time_fp32", "2_seed_fp16_2048", "3_plain_bf16_65536"):
                if ref in results:
                    row[f"x_vs_{ref[:1]}"] = round(row["tokens_per_s"] / results[ref]["tokens_per_s"], 2)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--variants", default="eager_65536,compiled_65536")
    parser.add_argument("--sets", default=",".join(LENGTH_SETS))
    parser.add_argument("--references", default="1,2,3")
    parser.add_argument("--profile", default="", help="a variant whose CUDA kernels to profile")
    parser.add_argument("--whole", type=int, default=0, help="chunk files of 10,000 proteins for the whole-worker run")
    args = parser.parse_args()
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(tempfile.gettempdir()) / "inductor-cache"))

    doc = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
           "transformers": __import__("transformers").__version__, "model": "ESM-2 650M architecture, random weights",
           "sets": {}}
    torch.manual_seed(0)
    with torch.device(DEVICE):
        fp32 = EsmModel(esm2_650m_config(), add_pooling_layer=False).eval()
    fp32.config._attn_implementation = "sdpa"
    state = {k: v.clone() for k, v in fp32.state_dict().items()}
    doc["params"] = sum(p.numel() for p in fp32.parameters())
    tmp = Path(tempfile.mkdtemp())
    encoder = ProteinEncoder(load_tokenizer(tmp), 1022)

    def fresh(dtype):
        with torch.device(DEVICE):
            model = EsmModel(esm2_650m_config(), add_pooling_layer=False).eval()
        model.config._attn_implementation = "sdpa"
        model.load_state_dict(state)
        return model.to(dtype).requires_grad_(False)

    for set_name in args.sets.split(","):
        lo, hi, count = LENGTH_SETS[set_name]
        tokens = [encoder.encode(s) for s in random_proteins(count, lo, hi, seed=len(set_name))]
        sample = sorted(random.Random(1).sample(range(count), REFERENCE_SAMPLE))
        with torch.inference_mode():
            reference = plain_batcher(fp32, encoder, [tokens[i] for i in sample], budget=16384)
        results = {}
        print(f"{set_name}: {count} proteins, {sum(len(t) + 2 for t in tokens):,} tokens", flush=True)
        if "1" in args.references:
            measure("1_one_at_a_time_fp32", lambda t: one_at_a_time(fp32, encoder, t), tokens, reference, sample,
                    results, count=300)
        if "2" in args.references:
            fp16 = fresh(torch.float16)
            seed_way(fp16, encoder, tokens[:2000])
            measure("2_seed_fp16_2048", lambda t: seed_way(fp16, encoder, t), tokens, reference, sample, results)
            del fp16
        if "3" in args.references:
            bf16 = fresh(torch.bfloat16)
            plain_batcher(bf16, encoder, tokens[:2000])
            measure("3_plain_bf16_65536", lambda t: plain_batcher(bf16, encoder, t), tokens, reference, sample, results)
            del bf16
        for variant in args.variants.split(","):
            mode, budget = variant.split("_")
            model = fresh(torch.bfloat16)
            embedder = EsmEmbedder(model, encoder, DEVICE, int(budget), compile_model=mode == "compiled")
            t0 = time.perf_counter()
            embedder.embed(tokens[:3000])  # warm-up, compile included
            warm = time.perf_counter() - t0
            measure(f"4_worker_{variant}", lambda t: embedder.embed(t), tokens, reference, sample, results)
            results[f"4_worker_{variant}"]["warmup_s"] = round(warm, 1)
            if args.profile and variant == args.profile:
                doc.setdefault("profiles", {})[f"{set_name}/{variant}"] = kernel_profile(
                    embedder, tokens[:6000], sort_by="cuda_time_total", rows=18)
            del model, embedder
            torch.cuda.empty_cache()
        ratios(results)
        doc["sets"][set_name] = results
        Path(args.out).write_text(json.dumps(doc, indent=1))

    if args.whole:
        doc["whole_worker"] = whole_worker(args, state, encoder, doc, tmp)
        Path(args.out).write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc, indent=1))


def whole_worker(args, state, encoder, doc, tmp: Path) -> dict:
    """The worker as EMBED_PROTEINS runs it: model from a directory, chunk files from disk, outputs to disk."""
    model_dir = tmp / "esm2_650m_random"
    with torch.device(DEVICE):
        model = EsmModel(esm2_650m_config(), add_pooling_layer=False)
    model.load_state_dict(state)
    model.save_pretrained(model_dir)
    del model
    chunks = []
    for n in range(args.whole):
        fasta = tmp / "data" / f"output_{n + 1}.fa"
        fasta.parent.mkdir(parents=True, exist_ok=True)
        proteins = random_proteins(200 if SMOKE else 10000, 99, 100, seed=1000 + n)
        fasta.write_text("".join(f">NC_{n:06d}.1_chunk_{k}F1\n{p}\n" for k, p in enumerate(proteins)))
        chunks.append((f"viral.1.1/output_{n + 1}", str(fasta)))
    rss_after_chunk = []

    class RssLog:
        def write(self, text):
            if " chunks, " in text:
                rss_after_chunk.append(round(current_rss_gib(), 2))
            sys.stderr.write(text)

        def flush(self):
            sys.stderr.flush()

    summaries = {}
    # Compile cache as a second task finds it: warmed by the steady-state runs above (their compile
    # times are the variants' warmup_s).
    for attempt in ("compile_cache_warm",):
        out = tmp / f"esm_{attempt}"
        rss_after_chunk.clear()
        t0 = time.perf_counter()
        summary = run_embed(chunks, out, str(model_dir), "fp32" if SMOKE else "bf16", not SMOKE, 4096 if SMOKE else None,
                            1022, log=RssLog())
        wall = time.perf_counter() - t0
        proteins = sum(c["proteins"] for c in summary["chunks"])
        tokens = sum(c["residues"] for c in summary["chunks"]) + 2 * proteins
        summaries[attempt] = {"chunks": len(chunks), "proteins": proteins, "wall_s": round(wall, 1),
                              "load_and_compile_s": summary["load_seconds"], "token_budget": summary["token_budget"],
                              "tokens_per_s_end_to_end": round(tokens / wall),
                              "rss_gib_after_each_chunk": list(rss_after_chunk),
                              "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    steady = max((row["tokens_per_s"] for name, row in doc["sets"].get("300bp_99_100", {}).items()
                  if name.startswith("4_worker")), default=None)
    for row in summaries.values():
        if steady:
            row["share_of_steady_state"] = round(row["tokens_per_s_end_to_end"] / steady, 3)
    return summaries


def current_rss_gib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return 0.0


if __name__ == "__main__":
    main()
