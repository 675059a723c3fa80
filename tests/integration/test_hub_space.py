"""hub_upload.py --space / centerfocus.tools.hub_space: a Gradio Space that captions with the published model,
assembled, run without the centerfocus package against the assembled model folder, and uploaded (to a fake client)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import SpaceCard

from ..conftest import make_image
from .test_hub_upload import FakeApi


gr = pytest.importorskip("gradio", reason="the app extra: pip install -e '.[app]'")

from centerfocus.tools import hub, hub_space  # noqa: E402


ROOT = Path(__file__).resolve().parents[2]
REPO_ID = "cf-tests/tiny-captioner"
SPACE_ID = "cf-tests/tiny-captioner-demo"


@pytest.fixture(scope="module")
def model_dir(saved_folder, tmp_path_factory):
    folder = tmp_path_factory.mktemp("space") / "model"
    shutil.copytree(saved_folder, folder)
    (folder / "examples").mkdir()
    make_image(9).save(folder / "examples" / "scene.png")
    return folder


@pytest.fixture(scope="module")
def dry_run(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("dry") / "out"
    result = subprocess.run([sys.executable, str(ROOT / "hub_upload.py"), str(model_dir), "--repo-id", REPO_ID,
                             "--space", SPACE_ID, "--dry-run", str(out)], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


def test_dry_run_assembles_a_space_for_the_model(dry_run, model_dir):
    out, stdout = dry_run
    space = out / "space"
    assert hub.list_repo_files(space) == ["README.md", "app.py", "examples/00-scene.png", "requirements.txt"]
    assert (out / "model" / "model.safetensors").is_file()
    metadata = SpaceCard((space / "README.md").read_text()).data.to_dict()
    assert metadata["sdk"] == "gradio" and metadata["app_file"] == "app.py" and metadata["models"] == [REPO_ID]
    assert metadata["sdk_version"] == gr.__version__
    saved_with = json.loads((model_dir / "config.json").read_text())["transformers_version"]
    requirements = (space / "requirements.txt").read_text().split()
    assert f"transformers=={saved_with}" in requirements and f"gradio=={gr.__version__}" in requirements
    app_source = (space / "app.py").read_text()
    assert f"MODEL_REPO = {json.dumps(REPO_ID)}" in app_source and "import centerfocus" not in app_source
    assert "Verified the Space's 4 files" in stdout and "nothing uploaded" in stdout


def test_space_check_compares_the_app_caption_with_generate(dry_run):
    out, stdout = dry_run
    expected = stdout.split("test caption: ")[1].split(")")[0].strip("'\"")
    assert hub_space.verify_space_folder(out / "space", out / "model", expected) == expected
    with pytest.raises(hub.HubUploadError, match="captions the test image"):
        hub_space.verify_space_folder(out / "space", out / "model", expected + " not this")


def test_space_check_refuses_an_app_that_imports_centerfocus(dry_run, tmp_path):
    out, _ = dry_run
    broken = tmp_path / "space"
    shutil.copytree(out / "space", broken)
    (broken / "app.py").write_text("import centerfocus\n" + (broken / "app.py").read_text())
    with pytest.raises(hub.HubUploadError, match="centerfocus is blocked"):
        hub_space.verify_space_folder(broken, out / "model", "anything")


def test_upload_creates_a_gradio_space_and_uploads_after_the_checks(model_dir):
    api = FakeApi()
    model, space = hub_space.publish_with_space(model_dir, REPO_ID, SPACE_ID, api=api)
    names = [name for name, _, _ in api.calls]
    assert names == ["create_repo", "create_commit", "create_repo", "upload_folder"]
    _, args, kwargs = api.calls[2]
    assert args == (SPACE_ID,) and kwargs["repo_type"] == "space" and kwargs["space_sdk"] == "gradio"
    assert api.calls[3][2]["repo_type"] == "space" and api.calls[3][2]["repo_id"] == SPACE_ID
    assert model.commit_url == f"https://huggingface.co/{REPO_ID}/commit/0123abc"
    assert space.caption == model.caption


def test_space_only_uploads_only_the_space(model_dir):
    api = FakeApi()
    hub_space.publish_with_space(model_dir, REPO_ID, SPACE_ID, space_only=True, api=api)
    assert [(name, kwargs.get("repo_type")) for name, _, kwargs in api.calls] == [("create_repo", "space"),
                                                                                  ("upload_folder", "space")]
