#!/usr/bin/env bash
# Install vidssl into .venv (Python 3.11). Keeps an already installed torch (CPU or CUDA build): a torch in the
# base interpreter is reused through --system-site-packages instead of being downloaded again.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  if "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "install: reusing the torch already installed for $PY"
    "$PY" -m venv --system-site-packages .venv
  else
    "$PY" -m venv .venv
  fi
fi
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1

if python -c "import torch" >/dev/null 2>&1; then
  echo "install: keeping torch $(python -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  pip install -q "torch>=2.2"                     # a GPU machine: PyPI's default (CUDA) build
else
  # A CPU machine: never pull the multi-GB CUDA build. Set TORCH_CPU_INDEX to PyTorch's CPU wheel index
  # where the CPU wheel is not already on the local package index.
  pip install -q "torch==2.13.0" ${TORCH_CPU_INDEX:+--index-url "$TORCH_CPU_INDEX"}
fi
pip install -q -e ".[test]"
