#!/usr/bin/env bash
# Every stage on a CUDA GPU through `dvc repro` in a temporary copy of the repository: small and
# 100k tokens, bf16 and fp16, and a kill -9 + resume in Phase 1 and Phase 2. Exit 1 on any
# failure. Options: --jsonl FILE (local data for the 100k runs), --quick, --keep.
set -euo pipefail
cd "$(dirname "$0")/.."
# the project's virtual environment when there is one (dvc runs `python stages/...` from PATH)
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x .venv/bin/python ]; then export PATH="$PWD/.venv/bin:$PATH"; fi
PY=${PYTHON:-python3}
export TOKENIZERS_PARALLELISM=false
exec "$PY" scripts/gpu_check.py "$@"
