"""The README's commands and quickstart are what CI and users run: check them against the repository."""

import ast
import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_opens_with_the_demo_and_test_commands():
    first, second = _blocks("bash")[:2]
    assert README.index(first) < README.index("## ")  # before any section
    assert "scripts/setup.sh" in first and "centerfocus demo" in first
    assert "scripts/setup.sh" in second and "pytest" in second
    ci = (ROOT / ".ci" / "run").read_text()
    assert second.strip() in ci  # CI runs exactly the README's test command


def test_readme_quickstart_runs_against_a_demo_model(tmp_path, monkeypatch):
    """Train the demo briefly (same command, fewer steps), then execute the README's Python blocks and compare what
    they print with the expected-output comments."""
    command = [sys.executable, "-m", "centerfocus.tools.cli", "demo", "--output_dir", str(tmp_path / "demo_output"),
               "--num_test", "24", "--max_steps", "1200"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "center_phrase_exact_match" in result.stdout
    assert (tmp_path / "demo_output" / "captions.png").stat().st_size > 10_000
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in _blocks("python"):
        expected = [line[2:].strip() for line in block.splitlines() if line.startswith("# ")
                    and not line.startswith("# or")]
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            exec(compile(block, "README.md", "exec"), namespace)
        printed = [line.strip() for line in output.getvalue().splitlines()]
        if expected:
            assert printed == expected
        else:  # the generate() example prints a list with one non-empty caption
            captions = ast.literal_eval(printed[-1])
            assert isinstance(captions, list) and len(captions) == 1 and captions[0].strip()
    assert namespace["model"].config.model_type == "centerfocus"


@pytest.mark.parametrize("path", ["docs/design.md", "docs/deployment.md", "docs/hub.md", "docs/benchmarks.md",
                                  "docs/robustness.md", "docs/demo.md"])
def test_linked_docs_exist(path):
    assert path in README and (ROOT / path).is_file()


def test_readme_switch_table_lists_every_switch_of_the_config():
    from centerfocus.configuration_centerfocus import SWITCHES

    table = README.split("## Model switches", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(\w+)`", table, flags=re.MULTILINE))
    assert listed == set(SWITCHES)
