"""Run code in a fresh Python process in which the `centerfocus` package cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap

from centerfocus.tools.hub import IMPORT_BLOCKER


BLOCKER = IMPORT_BLOCKER + '''
try:
    import centerfocus  # noqa: F401
    raise SystemExit("centerfocus should not be importable here")
except ImportError:
    pass
'''


def run_without_package(code: str, timeout: int = 300, env: dict | None = None, python: str = sys.executable) -> dict:
    """Run `code` (which must print one JSON object on its last stdout line) with `python` (default: this one) and
    return that object."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    result = subprocess.run([python, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=timeout, env=full_env, cwd="/")
    if result.returncode != 0:
        raise AssertionError(f"fresh process failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
