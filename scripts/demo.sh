#!/usr/bin/env bash
# One command from a fresh clone: install what is missing, build a tiny random-weight ESM model and
# a small VirNucPro data/ folder (2 viral + 2 host chunks), run the whole pipeline on CPU.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/scripts/setup_env.sh"
set -euo pipefail
demo="${1:-$repo/demo}"
mkdir -p "$demo"
[ -f "$demo/tiny_esm/config.json" ] || virnucpro-extract make-test-model "$demo/tiny_esm" >/dev/null
[ -d "$demo/data" ] || virnucpro-extract make-demo-data "$demo/data" --proteins_per_chunk 40 >/dev/null
cd "$demo"
nextflow run "$repo/main.nf" -profile test -resume \
    --data_dir "$demo/data" --esm_model "$demo/tiny_esm" --outdir "$demo/results"
echo
echo "Outputs:"
echo "  merged features   $demo/results/data_merge/"
echo "  ESM embeddings    $demo/results/esm/"
echo "  report            $demo/results/report.html"
echo "  validation, trace $demo/results/pipeline_info/"
