#!/usr/bin/env bash
# Sets up and runs the test suite (no network needed). On a machine with a CUDA GPU the tests
# marked `gpu` run too; elsewhere pytest skips them and says why.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$NEWLLM_PY" -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15 -rs "$@"
