import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_check_script_runs_end_to_end_in_its_cpu_dry_run(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], capture_output=True,
                            text=True, timeout=600, env={**os.environ, "PYTHON": sys.executable,
                                                         "GPU_CHECK_JSON": str(tmp_path / "rows.json"),
                                                         "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    table = result.stdout[result.stdout.index("| check | ms | value |"):]
    for check in ("training step, fp32", "training step, bf16", "generate, batch 1, KV cache",
                  "generate, batch 32, no cache", "ONNX Runtime CUDA provider"):
        assert f"| {check}" in table, check
    import json

    rows = json.loads((tmp_path / "rows.json").read_text())
    assert all(row["ms"] > 0 for row in rows if row["ms"] is not None)
    if not __import__("torch").cuda.is_available():
        assert "skipped" in result.stdout  # the GPU tests ran through pytest and skipped, saying why
