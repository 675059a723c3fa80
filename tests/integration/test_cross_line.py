"""A folder saved under one transformers line loads under the other, where the package is not importable, and gives
the same tokens (greedy and beam). The other line is the Optimum-stack environment (`bash scripts/setup.sh export`,
transformers 4.57) seen from the current stack, or the current stack seen from it: $CENTERFOCUS_OTHER_PYTHON, else
the checkout's .venv-export or .venv, whichever is not the running python's line."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import transformers

from ..conftest import build_tiny_model
from ..fresh_process import run_without_package


ROOT = Path(__file__).resolve().parents[2]


def _other_python():
    named = os.environ.get("CENTERFOCUS_OTHER_PYTHON")
    candidates = [named] if named else [str(ROOT / ".venv-export" / "bin" / "python"), str(ROOT / ".venv" / "bin" /
                                                                                          "python")]
    for python in candidates:
        if not python or not os.path.isfile(python):
            continue
        version = subprocess.run([python, "-c", "import transformers; print(transformers.__version__)"],
                                 capture_output=True, text=True, timeout=120).stdout.strip()
        if version and version.split(".")[0] != transformers.__version__.split(".")[0]:
            return python, version
    return None, None


OTHER_PYTHON, OTHER_VERSION = _other_python()
pytestmark = pytest.mark.skipif(
    OTHER_PYTHON is None, reason="no environment on the other transformers line: `bash scripts/setup.sh export` builds "
    "one (transformers 4.57) beside the current stack, or set CENTERFOCUS_OTHER_PYTHON; CI runs this")

GENERATE = """
import json, sys
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
import transformers
folder, save_to, paths = {folder!r}, {save_to!r}, {paths!r}
model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
inputs = processor(images=[Image.open(p) for p in paths])
prompted = processor(images=[Image.open(p) for p in paths], text=["describe the image", ""] * (len(paths) // 2))
with torch.no_grad():
    result = {{"version": transformers.__version__, "module": type(model).__module__,
              "greedy": model.generate(**inputs).tolist(), "beam": model.generate(**inputs, num_beams=3).tolist(),
              "prompt": model.generate(**prompted, num_beams=2).tolist()}}
if save_to:
    model.save_pretrained(save_to)
    processor.save_pretrained(save_to)
print(json.dumps(result))
"""


def _tokens(model, processor, images) -> dict:
    inputs = processor(images=images)
    prompted = processor(images=images, text=["describe the image", ""] * (len(images) // 2))
    with torch.no_grad():
        return {"greedy": model.generate(**inputs).tolist(), "beam": model.generate(**inputs, num_beams=3).tolist(),
                "prompt": model.generate(**prompted, num_beams=2).tolist()}


@pytest.mark.parametrize("image_tokenizer_type", ["grid_pool", "foveated"])
def test_a_folder_saved_under_one_line_gives_the_same_tokens_under_the_other(tokenizer, tiny_processor, images,
                                                                             tmp_path, image_tokenizer_type):
    model = build_tiny_model(tokenizer, image_tokenizer_type=image_tokenizer_type)
    here = tmp_path / "saved_here"
    model.save_pretrained(here)
    tiny_processor.save_pretrained(here)
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"image_{i}.png"))
        image.save(paths[-1])
    expected = _tokens(model, tiny_processor, images)
    assert len({tuple(row) for row in expected["greedy"]}) > 1  # the captions vary: not a comparison of constants

    there = tmp_path / "saved_there"
    other = run_without_package(GENERATE.format(folder=str(here), save_to=str(there), paths=paths),
                                python=OTHER_PYTHON)
    assert other["version"] == OTHER_VERSION and other["module"].startswith("transformers_modules.")
    back = run_without_package(GENERATE.format(folder=str(there), save_to="", paths=paths))
    assert back["module"].startswith("transformers_modules.")
    for key in ("greedy", "beam", "prompt"):
        assert other[key] == expected[key], key  # saved here, loaded there
        assert back[key] == expected[key], key  # saved there, loaded here
    assert json.loads((there / "config.json").read_text())["transformers_version"] == OTHER_VERSION
