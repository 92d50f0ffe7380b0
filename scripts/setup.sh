#!/usr/bin/env bash
# Installs the project (Python 3.10+) into the environment scripts/env.sh picks: a project
# virtual environment .venv unless one is active or this is Colab. Installs the CPU build of
# torch 2.13.0 first when that environment has no torch, so the range in pyproject.toml never
# pulls a multi-GB CUDA build; an existing torch (Colab's CUDA build) is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
if [ -n "${NEWLLM_VENV:-}" ] && [ ! -x "$NEWLLM_PY" ]; then
  "${PYTHON:-python3}" -m venv "$NEWLLM_VENV"
fi
if ! "$NEWLLM_PY" -c "import torch" 2>/dev/null; then
  "$NEWLLM_PY" -m pip install -q "torch==2.13.0"
fi
"$NEWLLM_PY" -m pip install -q -e ".[dev]"
if [ -n "${NEWLLM_VENV:-}" ]; then
  echo "installed into $NEWLLM_VENV (activate it with: source .venv/bin/activate)"
fi
