#!/usr/bin/env bash
# Create .venv (if missing) and install CenterFocus with every extra. Idempotent.
# torch is pinned to the CPU build first so that no multi-GB CUDA wheel is pulled in.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet "torch==2.13.0" || .venv/bin/python -m pip install --quiet "torch>=2.4,<3" --index-url https://download.pytorch.org/whl/cpu
fi
.venv/bin/python -m pip install --quiet -e ".[train,export,dev]"
