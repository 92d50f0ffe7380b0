#!/usr/bin/env bash
# Sets up and runs the whole pipeline on the embedded default (bundled corpus, offline
# tokenizer), then prints the headline metrics and where the report is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
export TOKENIZERS_PARALLELISM=false
"$NEWLLM_PY" -m dvc repro "$@"
echo
echo "Headline metrics (dvc metrics show; every figure: dvc metrics show metrics/*.json):"
"$NEWLLM_PY" -m dvc metrics show
echo
echo "Report: $(pwd)/reports/report.html"
