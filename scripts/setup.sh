#!/usr/bin/env bash
# Create the environments CenterFocus uses (idempotent). torch is installed first as the CPU build so that no
# multi-GB CUDA wheel is pulled in.
#   bash scripts/setup.sh          .venv: the current stack (transformers 5.x) with the train, export and dev extras
#   bash scripts/setup.sh export   .venv-export: Optimum's ONNX stack (optimum-onnx 0.1.0 requires transformers<4.58),
#                                  the 4.57 line the project also supports
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TARGET=${1:-main}
case "$TARGET" in
  main) VENV=.venv; EXTRAS="train,export,dev"; PINS=() ;;
  export) VENV=.venv-export; EXTRAS="train,optimum,dev"; PINS=("transformers>=4.57,<4.58" "huggingface_hub<1.0") ;;
  *) echo "usage: bash scripts/setup.sh [export]" >&2; exit 2 ;;
esac
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  "$VENV/bin/python" -m pip install --quiet "torch==2.13.0" || "$VENV/bin/python" -m pip install --quiet "torch>=2.4,<3" --index-url https://download.pytorch.org/whl/cpu
fi
"$VENV/bin/python" -m pip install --quiet -e ".[$EXTRAS]" ${PINS[@]+"${PINS[@]}"}
