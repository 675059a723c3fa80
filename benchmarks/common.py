"""Shared by the benchmark scripts."""

import json
from pathlib import Path
from typing import Optional


def report(results: dict, out: Optional[Path]) -> None:
    """Print the results as JSON and, with `out`, write them there too."""
    text = json.dumps(results, indent=2)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
