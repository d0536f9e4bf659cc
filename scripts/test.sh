#!/usr/bin/env bash
# The whole test suite (installs what is missing first). Extra arguments go to pytest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/scripts/setup_env.sh"
set -euo pipefail
cd "$repo"
exec python -m pytest tests "$@"
