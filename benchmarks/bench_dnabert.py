"""DNABERT-S throughput on one GPU: VirNucPro's one-read-at-a-time fp32 loop against the worker, same process, same card.

Model: BERT-base architecture (transformers `BertConfig()`: 12 layers, hidden 768, 12 heads, intermediate 3072),
vocabulary 4,096 (DNABERT-S's BPE vocabulary size), random weights: the compute per token is DNABERT-S's. It runs in
transformers' own `BertModel` (SDPA attention), not DNABERT-S's remote code (not downloadable here; with Triton
flash-attention switched off, that code's PyTorch attention path is used, which also materialises the attention
matrix per layer but skips padding by unpadding), so treat the figures as those of the same architecture.

Reads: 20,000 reads of 300 bp, given directly as token ids. Assumption: DNABERT-S's BPE tokenizer cuts a 300-bp read
into roughly 60-80 tokens; lengths are drawn uniformly from 60..80, plus [CLS] and [SEP] (62..82 tokens per read).
Token ids are random in 5..4095 (0-4 are the special tokens).

Methods:
  1. one read at a time, fp32 (VirNucPro's loop: `model(input_ids)[0]`, `torch.mean(hidden_states[0], dim=0)`),
     on a prefix of the reads (it is slow);
  2. the worker's embedder (bin/virnucpro_extract/embed_dna.py: length-sorted token-budget batches, padded and
     masked, pooled on the GPU), in the precisions/budgets of --variants (`auto` = the worker's default budget).
Each reports reads/s, tokens/s, peak GPU memory, and the minimum cosine / maximum absolute difference to method 1
(fp32, one at a time) on a sample of reads.

With `--model_code DIR` the model is instead DNABERT-2's own code (DIR: its bert_layers.py and siblings with
config.json, e.g. MAGICS-LAB/DNABERT_S evaluate/model_codes/), random weights, loaded by the worker's own loader
(`load_dnabert_model`: remote code built by us, Triton kernel off, PyTorch attention with unpadding), and the
reads are 300-bp random DNA through a 4,096-token BPE tokenizer (bench_common.dnabert2_model_dir): what users run.

Usage (on the GPU machine): python benchmarks/bench_dnabert.py --out benchmarks/results/dnabert_h100.json
    python benchmarks/bench_dnabert.py --model_code DIR --out benchmarks/results/dnabert2_code_h200.json
Plumbing check on CPU (tiny config, few reads): BENCH_SMOKE=1 python benchmarks/bench_dnabert.py --out /tmp/x.json
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bin"))
from bench_common import DEVICE, SMOKE, dnabert2_model_dir, timed  # noqa: E402
from virnucpro_extract.embed import default_token_budget  # noqa: E402
from virnucpro_extract.embed_dna import DnaEmbedder, ReadEncoder, load_dnabert_model  # noqa: E402

VOCAB, PAD, CLS, SEP = 4096, 0, 2, 3
READS, ONE_AT_A_TIME_READS, REFERENCE_SAMPLE = (300, 40, 24) if SMOKE else (20000, 2000, 512)
TOKENS_PER_READ = (60, 80)  # BPE tokens of a 300-bp read, without [CLS]/[SEP]


def bert_base_config() -> BertConfig:
    if SMOKE:
        return BertConfig(vocab_size=VOCAB, hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
                          intermediate_size=256, pad_token_id=PAD)
    return BertConfig(vocab_size=VOCAB, pad_token_id=PAD)  # BERT-base: 12 layers, 768 hidden, 3072 intermediate


def random_reads(count: int, seed: int) -> list[np.ndarray]:
    rng = random.Random(seed)
    return [np.asarray([CLS] + [rng.randrange(5, VOCAB) for _ in range(rng.randint(*TOKENS_PER_READ))] + [SEP],
                       dtype=np.int64) for _ in range(count)]


def one_at_a_time(model, reads):
    """VirNucPro's loop, fp32: every token of the read, special tokens included, one read per forward pass."""
    out = []
    with torch.inference_mode():
        for read in reads:
            input_ids = torch.from_numpy(read)[None].to(DEVICE)
            hidden_states = model(input_ids)[0]
            out.append(torch.mean(hidden_states[0], dim=0).float().cpu())
    return torch.stack(out)


def faithfulness(embeddings: torch.Tensor, reference: torch.Tensor) -> dict:
    cosine = torch.nn.functional.cosine_similarity(embeddings.double(), reference.double(), dim=1)
    return {"cosine_min": round(float(cosine.min()), 6),
            "max_abs_diff": round(float((embeddings.float() - reference.float()).abs().max()), 6)}


def record(name, reads, embeddings, seconds, peak, reference, sample, results):
    tokens = sum(len(r) for r in reads)
    row = {"reads_per_s": round(len(reads) / seconds, 1), "tokens_per_s": round(tokens / seconds), "reads": len(reads),
           "seconds": round(seconds, 2), "peak_gpu_gib": round(peak, 2)}
    inside = [i for i in sample if i < len(reads)]
    row.update(faithfulness(embeddings[inside], reference[[sample.index(i) for i in inside]]))
    results[name] = row
    print(f"  {name:<28} {row['reads_per_s']:>10,.1f} reads/s {row['tokens_per_s']:>11,} tok/s "
          f"cos_min {row['cosine_min']:.6f} max_abs {row['max_abs_diff']:.2e} peak {peak:.2f} GiB", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--variants", default="bf16_auto,bf16_65536,fp32_auto",
                        help="worker runs, PRECISION_BUDGET (budget a number of tokens or 'auto')")
    parser.add_argument("--model_code", type=Path, help="DNABERT-2's own model code: run that, as the worker does")
    args = parser.parse_args()
    if args.model_code:
        return main_model_code(args)

    reads = random_reads(READS, seed=7)
    sample = sorted(random.Random(1).sample(range(READS), REFERENCE_SAMPLE))
    doc = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
           "transformers": __import__("transformers").__version__,
           "model": "BERT-base architecture (BertConfig(): 12 layers, hidden 768), vocabulary 4096, random weights"
                    + (" [SMOKE: 1 layer, intermediate 256]" if SMOKE else ""),
           "reads": READS, "tokens": sum(len(r) for r in reads),
           "assumption": f"300-bp reads as {TOKENS_PER_READ[0]}-{TOKENS_PER_READ[1]} BPE tokens + [CLS]/[SEP]",
           "results": {}}
    torch.manual_seed(0)
    with torch.device(DEVICE):
        fp32 = BertModel(bert_base_config()).eval().requires_grad_(False)
    state = {k: v.clone() for k, v in fp32.state_dict().items()}
    doc["params"] = sum(p.numel() for p in fp32.parameters())
    print(f"{READS} reads, {doc['tokens']:,} tokens, {doc['gpu']}", flush=True)

    with torch.inference_mode():
        reference = one_at_a_time(fp32, [reads[i] for i in sample])
    results = doc["results"]
    one_at_a_time(fp32, reads[:20])  # warm-up
    embeddings, seconds, peak = timed(lambda: one_at_a_time(fp32, reads[:ONE_AT_A_TIME_READS]))
    record("1_one_at_a_time_fp32", reads[:ONE_AT_A_TIME_READS], embeddings, seconds, peak, reference, sample, results)

    def load(dtype):
        with torch.device(DEVICE):
            model = BertModel(bert_base_config()).eval()
        model.load_state_dict(state)
        return model.to(dtype).requires_grad_(False)

    time_worker_variants(args, doc, load, PAD, reads, reference, sample)
    print(json.dumps(doc, indent=1))


def time_worker_variants(args, doc: dict, load, pad_id: int, reads, reference, sample) -> None:
    """The worker (DnaEmbedder) at each `--variants` precision_budget, timed after one whole warm-up pass (a short
    one left the first variant measured below its speed); results written to --out after each variant."""
    results = doc["results"]
    for variant in args.variants.split(","):
        precision, budget = variant.split("_")
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        model = load(dtype)
        if budget == "auto":
            budget = default_token_budget(DEVICE, 768, model.config.intermediate_size, torch.finfo(dtype).bits // 8)
        embedder = DnaEmbedder(model, pad_id, DEVICE, int(budget))
        embedder.embed(reads)
        embeddings, seconds, peak = timed(lambda: embedder.embed(reads))  # noqa: B023 (called here)
        name = f"2_worker_{precision}_{budget}"
        record(name, reads, embeddings, seconds, peak, reference, sample, results)
        results[name]["x_vs_one_at_a_time"] = round(results[name]["reads_per_s"]
                                                    / results["1_one_at_a_time_fp32"]["reads_per_s"], 2)
        del model, embedder
        if not SMOKE:
            torch.cuda.empty_cache()
        Path(args.out).write_text(json.dumps(doc, indent=1))
    Path(args.out).write_text(json.dumps(doc, indent=1))


def main_model_code(args):
    """The same comparison on DNABERT-2's own code, loaded as the worker loads DNABERT-S."""
    import tempfile

    model_dir = dnabert2_model_dir(args.model_code, Path(tempfile.mkdtemp()) / "dnabert2", layers=1 if SMOKE else None)
    rng = random.Random(7)
    sequences = ["".join(rng.choices("ACGT", k=300)) for _ in range(READS)]
    doc = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
           "transformers": __import__("transformers").__version__,
           "model": "DNABERT-2's own code (bert_layers.py, PyTorch attention path), random weights, loaded by "
                    "load_dnabert_model" + (" [SMOKE: 1 layer]" if SMOKE else ""),
           "reads": READS, "results": {}}
    fp32, tokenizer = load_dnabert_model(model_dir, torch.float32, DEVICE)
    encoder = ReadEncoder(tokenizer)
    reads = encoder.encode(sequences)
    doc["tokens"] = sum(len(r) for r in reads)
    doc["tokens_per_read"] = [min(len(r) for r in reads), max(len(r) for r in reads)]
    sample = sorted(random.Random(1).sample(range(READS), REFERENCE_SAMPLE))
    print(f"{READS} reads, {doc['tokens']:,} tokens ({doc['tokens_per_read']} per read), {doc['gpu']}", flush=True)
    reference = one_at_a_time(fp32, [reads[i] for i in sample])
    results = doc["results"]
    one_at_a_time(fp32, reads[:20])
    embeddings, seconds, peak = timed(lambda: one_at_a_time(fp32, reads[:ONE_AT_A_TIME_READS]))
    record("1_one_at_a_time_fp32", reads[:ONE_AT_A_TIME_READS], embeddings, seconds, peak, reference, sample, results)
    del fp32
    time_worker_variants(args, doc, lambda dtype: load_dnabert_model(model_dir, dtype, DEVICE)[0], encoder.pad_id,
                         reads, reference, sample)
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
