"""A folder saved by CenterFocus before the restructuring into `_compat.py` / `loading_centerfocus.py` (commit 8355b57,
transformers 5.25: a tiny foveated model with the edge stem and batch norms, `tests/fixtures/saved_before_restructuring`,
made by `scripts/make_saved_folder_fixture.py` with that commit's code) still loads and gives the tokens it gave when it was
saved: with this package on this line and on the other one, and with its own code through `trust_remote_code=True`
where the package is not importable."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

import centerfocus  # noqa: F401  (registers the model type)

from ..fresh_process import run_without_package
from .test_cross_line import OTHER_PYTHON


FOLDER = Path(__file__).resolve().parents[1] / "fixtures" / "saved_before_restructuring"
EXPECTED = json.loads((FOLDER / "expected_tokens.json").read_text())
IMAGES = [str(FOLDER / f"image_{i}.png") for i in range(4)]

GENERATE = """
import json
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
{imports}
folder, paths = {folder!r}, {paths!r}
model = AutoModelForImageTextToText.from_pretrained(folder, {remote}).eval()
processor = AutoProcessor.from_pretrained(folder, {remote})
inputs = processor(images=[Image.open(p) for p in paths])
with torch.no_grad():
    print(json.dumps({{"module": type(model).__module__, "greedy": model.generate(**inputs).tolist(),
                      "beam": model.generate(**inputs, num_beams=3).tolist()}}))
"""


def test_the_old_folder_gives_its_tokens_with_this_package():
    model = AutoModelForImageTextToText.from_pretrained(FOLDER).eval()
    processor = AutoProcessor.from_pretrained(FOLDER)
    assert type(model).__module__ == "centerfocus.modeling_centerfocus"
    inputs = processor(images=[Image.open(p) for p in IMAGES])
    with torch.no_grad():
        assert model.generate(**inputs).tolist() == EXPECTED["greedy"]
        assert model.generate(**inputs, num_beams=3).tolist() == EXPECTED["beam"]
    assert len({tuple(row) for row in EXPECTED["greedy"]}) > 1  # the captions vary: not a comparison of constants


def test_the_old_folder_gives_its_tokens_with_its_own_code():
    result = run_without_package(GENERATE.format(imports="", folder=str(FOLDER), paths=IMAGES,
                                                 remote="trust_remote_code=True"))
    assert result["module"].startswith("transformers_modules.")
    assert (result["greedy"], result["beam"]) == (EXPECTED["greedy"], EXPECTED["beam"])


@pytest.mark.skipif(OTHER_PYTHON is None, reason="no environment on the other transformers line: `bash scripts/setup.sh "
                    "export` builds one (transformers 4.57); CI runs this")
def test_the_old_folder_gives_its_tokens_with_this_package_on_the_other_line():
    code = GENERATE.format(imports="import centerfocus", folder=str(FOLDER), paths=IMAGES, remote="")
    result = subprocess.run([OTHER_PYTHON, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["module"] == "centerfocus.modeling_centerfocus"
    assert (loaded["greedy"], loaded["beam"]) == (EXPECTED["greedy"], EXPECTED["beam"])


def test_the_old_weights_load_in_the_new_names_and_shapes_and_are_saved_so(tmp_path):
    # 0.1 named the edge stem's colour projection `colour` (0.2: `color`) and stored each stage's log-sigma as a 0-d
    # scalar (0.2: a 1-element vector, which FSDP2 can shard); both are read (loading_centerfocus.upgraded_state_dict)
    from safetensors.torch import load_file

    stored = load_file(FOLDER / "model.safetensors")
    old_names = sorted(name for name in stored if ".edge_compensation.colour." in name)
    scalars = sorted(name for name in stored if name.endswith("log_sigma"))
    assert old_names and scalars and all(stored[name].ndim == 0 for name in scalars), "not an 0.1 checkpoint"
    model = AutoModelForImageTextToText.from_pretrained(FOLDER)
    state = model.state_dict()
    for name in old_names:
        assert torch.equal(state[name.replace(".colour.", ".color.")], stored[name]), name
    for name in scalars:
        assert state[name].shape == (1,) and state[name].item() == stored[name].item(), name
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert not any(".colour." in name for name in saved)
    assert all(torch.equal(saved[name.replace(".colour.", ".color.")], stored[name]) for name in old_names)
    assert all(saved[name].shape == (1,) for name in scalars)
    assert model.generation_config.to_dict() == AutoModelForImageTextToText.from_pretrained(tmp_path).generation_config.to_dict()
