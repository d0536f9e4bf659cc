"""Scaling of the embedding worker over the GPUs of one node: the same chunk files on 1 and on N cards.

Runs `virnucpro-extract embed` (the CLI EMBED_PROTEINS calls) twice in one invocation, `--gpus 1` then
`--gpus N`, on chunk files of 10,000 proteins of 99-100 residues, with an ESM-2 650M-architecture model of
random weights saved to a directory; reports proteins/s for each and the scaling efficiency
(N-GPU rate / (N × 1-GPU rate)). The first run also fills the compile cache, so the N-GPU run is not
charged for compiling; the 1-GPU run is repeated after it for a fair pair.

Needs click on the GPU machine (carry its wheel). Usage:
  python benchmarks/bench_multi_gpu.py --chunks 16 --out benchmarks/results/multi_gpu_<card>.json
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import EsmConfig, EsmModel

REPO = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    gpus = torch.cuda.device_count()
    tmp = Path(tempfile.mkdtemp())
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(tmp / "inductor"))
    config = EsmConfig(vocab_size=33, hidden_size=1280, num_hidden_layers=33, num_attention_heads=20,
                       intermediate_size=5120, max_position_embeddings=1026, position_embedding_type="rotary",
                       token_dropout=True, emb_layer_norm_before=False, pad_token_id=1, mask_token_id=32)
    with torch.device("cuda"):
        EsmModel(config, add_pooling_layer=False).save_pretrained(tmp / "model")
    rng = random.Random(0)
    chunk_args = []
    for n in range(args.chunks):
        fasta = tmp / "data" / f"output_{n + 1}.fa"
        fasta.parent.mkdir(parents=True, exist_ok=True)
        fasta.write_text("".join(f">p{n}_{k}F1\n{''.join(rng.choices('ACDEFGHIKLMNPQRSTVWY', k=rng.randint(99, 100)))}\n"
                                 for k in range(10000)))
        chunk_args.append(f"viral/output_{n + 1}={fasta}")
    doc = {"gpu": torch.cuda.get_device_name(), "gpus": gpus, "chunks": args.chunks, "proteins": 10000 * args.chunks,
           "runs": {}}
    for label, count in (("warm_compile_cache", 1), ("1_gpu", 1), (f"{gpus}_gpus", gpus)):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "bin" / "virnucpro-extract"), "embed", *chunk_args,
                        "--esm_model", str(tmp / "model"), "--gpus", str(count), "--outdir", str(tmp / label)],
                       check=True)
        seconds = time.perf_counter() - t0
        doc["runs"][label] = {"gpus": count, "seconds": round(seconds, 1),
                              "proteins_per_s": round(doc["proteins"] / seconds)}
        print(label, doc["runs"][label], flush=True)
    one, many = doc["runs"]["1_gpu"]["proteins_per_s"], doc["runs"][f"{gpus}_gpus"]["proteins_per_s"]
    doc["scaling_efficiency"] = round(many / (gpus * one), 3)
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
