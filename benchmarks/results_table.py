"""Render a bench_embed.py JSON result as the markdown table kept beside it and in the README.

Usage: python benchmarks/results_table.py benchmarks/results/embed_h100.json > benchmarks/results/embed_h100.md
"""
import json
import sys

NAMES = {"1_one_at_a_time_fp32": "1. one protein at a time, fp32",
         "2_seed_fp16_2048": "2. seed's way: fp16, 2,048-token batches, per-protein host copies",
         "3_plain_bf16_65536": "3. plain length-sorted bf16 batcher, 65,536 tokens",
         "4_worker_eager_65536": "4. worker, eager (not compiled), 65,536 tokens",
         "4_worker_compiled_65536": "4. **worker, compiled, 65,536 tokens**",
         "4_worker_compiled_131072": "4. **worker, compiled, 131,072 tokens** (default budget on an 80 GB card)"}


def main(path):
    doc = json.load(open(path))
    print(f"Card: **{doc['gpu']}**, torch {doc['torch']}, transformers {doc['transformers']}; {doc['model']} "
          f"({doc['params'] / 1e6:.1f} M parameters); 20,000 proteins per set; all methods in one process.\n")
    for set_name, rows in doc["sets"].items():
        print(f"### {set_name.replace('_', ' ')} residues\n")
        print("| method | tokens/s | proteins/s | × 1 | × 2 | × 3 | min cosine vs fp32 | max abs diff | peak GPU GiB |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, row in rows.items():
            print(f"| {NAMES.get(name, name)} | {row['tokens_per_s']:,} | {row['proteins_per_s']:,.0f} | "
                  f"{row.get('x_vs_1', '')} | {row.get('x_vs_2', '')} | {row.get('x_vs_3', '')} | "
                  f"{row['cosine_min']:.6f} | {row['max_abs_diff']:.3g} | {row['peak_gpu_gib']} |")
        print()
    for name, row in doc.get("whole_worker", {}).items():
        rss = row["rss_gib_after_each_chunk"]
        print(f"### Whole worker ({name.replace('_', ' ')})\n")
        print(f"{row['chunks']} chunk files × 10,000 proteins (99–100 residues) read from disk, embeddings written to "
              f"disk, model loaded from a directory: **{row['wall_s']} s wall**, {row['tokens_per_s_end_to_end']:,} "
              f"tokens/s end to end = **{row['share_of_steady_state']:.1%} of steady state**; host RSS after each "
              f"chunk {min(rss)}–{max(rss)} GiB (flat), peak RSS {row['peak_rss_gib']} GiB; token budget "
              f"{row['token_budget']:,}.\n")


if __name__ == "__main__":
    main(sys.argv[1])
