#!/usr/bin/env bash
# Sets up and runs the test suite (no network needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pytest -q -n 2 --durations=15 "$@"
