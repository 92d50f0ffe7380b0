#!/usr/bin/env bash
# Installs the project on a fresh machine (Python 3.11). Installs the CPU build of
# torch 2.13.0 first when no torch is present, so the range in pyproject.toml never
# pulls a multi-GB CUDA build; an existing torch (e.g. Colab's) is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
"$PY" -m pip install -q -e ".[dev]"
