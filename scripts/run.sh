#!/usr/bin/env bash
# Sets up and runs the whole pipeline on the embedded default (bundled corpus,
# offline tokenizer), then prints where the results are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TOKENIZERS_PARALLELISM=false
dvc repro "$@"
echo
echo "Metrics:"
dvc metrics show
echo
echo "Report: $(pwd)/reports/report.html"
