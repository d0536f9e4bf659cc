#!/usr/bin/env bash
# The test suite (installs what is missing first).
#   bash scripts/test.sh                 every tier
#   bash scripts/test.sh unit            one tier: unit | pipeline | slurm | browser | container
#   bash scripts/test.sh unit -x -k fasta   further arguments go to pytest
# The slowest tests are listed at the end (--durations), so a slower suite shows where.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/scripts/setup_env.sh"
set -euo pipefail
cd "$repo"
# Each test launches Nextflow dozens of times: a JVM that stops at the C1 compiler and collects with one thread
# starts about 4 s sooner on a 2-core machine (a run of the pipeline is short; it needs no C2). Yours wins if set.
export NXF_OPTS="${NXF_OPTS:--XX:TieredStopAtLevel=1 -XX:+UseSerialGC}"
tier=()
case "${1:-}" in
    unit|pipeline|slurm|browser|container) tier=(-m "$1"); shift ;;
esac
# A test file per worker, over every core (TEST_WORKERS=1 runs them in this process): most of a pipeline test is
# waiting on a JVM or a task, so two workers on CI's two cores halve the wall time; the shared models, data and
# pipeline run are still made once (tests/conftest.py `built_once`).
workers="${TEST_WORKERS:-$(nproc)}"
parallel=()
[ "$workers" -gt 1 ] && parallel=(-n "$workers" --dist loadfile)
exec python -m pytest tests "${tier[@]}" "${parallel[@]}" --durations=15 "$@"
