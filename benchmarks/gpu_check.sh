#!/usr/bin/env bash
# What only a GPU shows, in under 8 minutes on one H100: the test suite's GPU tests, training steps in fp32 / bf16 /
# fp16, generate() ms per token at batch 1 and 32 with and without the KV cache, and ONNX Runtime's CUDA provider if
# it installs; one table at the end (benchmarks/gpu_check.py).
#
#   bash benchmarks/gpu_check.sh              # on a machine with CUDA torch (and transformers 5) already installed
#   bash benchmarks/gpu_check.sh --dry-run    # anywhere: the same steps on the CPU with a tiny model (a test runs this)
#
# It installs only what the image lacks, from PyPI: this package without touching torch / transformers, pytest, and
# (not in a dry run) onnxruntime-gpu, whose failure to install is reported in the table, not fatal.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
DRY=""
if [ "${1:-}" = "--dry-run" ]; then DRY="--dry_run"; fi
started=$(date +%s)

"$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'| transformers', transformers.__version__)"
if ! "$PYTHON" -c "import centerfocus" 2>/dev/null; then
  "$PYTHON" -m pip install --quiet --no-deps -e .
fi
for package in pytest pytest-timeout tokenizers safetensors pillow; do
  module=$(echo "$package" | sed 's/pillow/PIL/; s/-/_/g')
  "$PYTHON" -c "import $module" 2>/dev/null || "$PYTHON" -m pip install --quiet "$package" \
    || echo "gpu_check.sh: could not install $package (no PyPI here?)"
done
if [ -z "$DRY" ]; then
  "$PYTHON" -c "import onnxruntime" 2>/dev/null || "$PYTHON" -m pip install --quiet onnxruntime-gpu \
    || echo "onnxruntime-gpu did not install: the table says so"
  "$PYTHON" -c "import onnx" 2>/dev/null || "$PYTHON" -m pip install --quiet onnx \
    || echo "onnx did not install: the table says so"
fi

# the GPU-marked tests (they skip where there is no CUDA device, which is what a dry run shows)
if "$PYTHON" -c "import pytest" 2>/dev/null; then
  "$PYTHON" -m pytest -q -m gpu tests/integration/test_gpu.py -p no:cacheprovider -o addopts="" -rs
else
  echo "gpu_check.sh: pytest is not installed: the GPU tests did not run"
fi
"$PYTHON" benchmarks/gpu_check.py $DRY --json "${GPU_CHECK_JSON:-/tmp/gpu_check.json}"
echo "gpu_check.sh: $(( $(date +%s) - started )) s"
