# Sourced by setup.sh, run.sh and test.sh: which Python the project uses.
# - an active virtual environment: that one;
# - Google Colab: the system Python (it keeps Colab's CUDA build of torch);
# - anywhere else: the project's own .venv (created by setup.sh), so nothing is installed into
#   the machine's global Python.
if [ -n "${VIRTUAL_ENV:-}" ]; then
  NEWLLM_PY=python
elif [ -n "${COLAB_RELEASE_TAG:-}" ] || python3 -c "import google.colab" 2>/dev/null; then
  NEWLLM_PY=python3
else
  NEWLLM_VENV="$(pwd)/.venv"
  NEWLLM_PY="$NEWLLM_VENV/bin/python"
  export PATH="$NEWLLM_VENV/bin:$PATH"   # dvc runs `python stages/...`: the venv's python
fi
