#!/usr/bin/env bash
# Installs what is missing: a Python environment (.venv) with the pinned requirements, and Nextflow
# from Maven Central. Idempotent; quick when everything is already there.
# Usage: source scripts/setup_env.sh   (puts .venv/bin, Nextflow and bin/ on PATH)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VIRNUCPRO_VENV:-$repo/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv" >&2
    "$python" -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
want="$(cat "$repo/requirements.txt" "$repo/requirements-test.txt" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing Python requirements (torch is large: several GB the first time)" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        -r "$repo/requirements.txt" -r "$repo/requirements-test.txt" >&2
    echo "$want" > "$stamp"
fi
nextflow_bin="$("$repo/scripts/install_nextflow.sh" | tail -n 1)"

export PATH="$repo/bin:$venv/bin:$nextflow_bin:$PATH"
export NXF_OFFLINE="${NXF_OFFLINE:-true}"
set +euo pipefail
