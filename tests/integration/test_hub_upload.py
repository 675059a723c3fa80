"""hub_upload.py / centerfocus.tools.hub (with hub_card and hub_verify): assemble, verify and upload a trained folder
as a Hub repository.

Everything is offline: the upload path runs against a fake HfApi that records its calls.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import CommitOperationAdd, ModelCard

from centerfocus import CenterFocusConfig
from centerfocus._compat import auto_model_for_vision2seq
from centerfocus.tools import hub, hub_card

from ..conftest import make_image
from ..fresh_process import run_without_package


ROOT = Path(__file__).resolve().parents[2]
REPO_ID = "cf-tests/tiny-captioner"
REVISION = "v1"
SECRET = "hf_TestSecretValue9Kq2Zx7Lm4Np8Rt"  # looks like a token; must never appear in outputs or files
METRICS = {"eval_bleu4": 0.43217, "eval_rougeL": 0.65432, "eval_cider": 1.23456, "eval_exact_match": 0.25,
           "eval_loss": 1.5, "eval_runtime": 0.51, "eval_samples_per_second": 10.0, "epoch": 3.0, "train_loss": 2.0}
DATASETS = ["cf-tests/centred-shapes"]
NOT_UPLOADED = ("checkpoint-12", "runs", "all_results.json", hub.TRAINING_INFO_FILE)


class FakeApi:
    """Records every call made on it; `create_commit` also reads the files it is given."""

    def __init__(self, **init_kwargs):
        self.init_kwargs = init_kwargs
        self.calls: list[tuple[str, tuple, dict]] = []
        self.files: dict[str, bytes] = {}

    def create_repo(self, *args, **kwargs):
        self.calls.append(("create_repo", args, kwargs))
        return f"https://huggingface.co/{args[0]}"

    def create_branch(self, *args, **kwargs):
        self.calls.append(("create_branch", args, kwargs))

    def create_commit(self, *args, operations, **kwargs):
        operations = list(operations)
        for operation in operations:
            self.files[operation.path_in_repo] = Path(operation.path_or_fileobj).read_bytes()
        self.calls.append(("create_commit", args, {**kwargs, "operations": operations}))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{args[0]}/commit/0123abc")

    def __getattr__(self, name):  # any other client method (upload_folder, upload_file, ...) is recorded too
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
        return record


def _all_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_TOKEN": SECRET}
    return subprocess.run([sys.executable, str(ROOT / "hub_upload.py"), *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def expected_files(saved_folder) -> list[str]:
    """What the repository must hold: everything save_pretrained wrote for model + processor, plus the card."""
    return sorted([p.name for p in saved_folder.iterdir()] + ["README.md"])


@pytest.fixture(scope="module")
def source_folder(saved_folder, tmp_path_factory) -> Path:
    """A folder laid out like `centerfocus train` output: model, metrics, checkpoint with pickled trainer state,
    TensorBoard runs, and the recorded training data set."""
    folder = tmp_path_factory.mktemp("hub") / "trained"
    shutil.copytree(saved_folder, folder)
    (folder / "all_results.json").write_text(json.dumps(METRICS))
    (folder / hub.TRAINING_INFO_FILE).write_text(json.dumps({"datasets": DATASETS}))
    checkpoint = folder / "checkpoint-12"
    checkpoint.mkdir()
    for name in ("optimizer.pt", "rng_state.pth", "training_args.bin"):
        torch.save({"state": name}, checkpoint / name)
    shutil.copy(folder / "model.safetensors", checkpoint / "model.safetensors")
    (checkpoint / "trainer_state.json").write_text(json.dumps({"log_history": [{"loss": 3.0, "step": 12}]}))
    torch.save({"state": "args"}, folder / "training_args.bin")  # what Trainer.save_model writes next to the model
    (folder / "runs" / "run0").mkdir(parents=True)
    (folder / "runs" / "run0" / "events.out.tfevents.0").write_bytes(b"tensorboard")
    return folder


@pytest.fixture(scope="module")
def dry_run(source_folder, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("dry") / "repo"
    result = _run_cli(str(source_folder), "--repo-id", REPO_ID, "--revision", REVISION, "--dry-run", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return result, out


@pytest.fixture(scope="module")
def expected_captions(tiny_model, tiny_processor, images) -> list[str]:
    with torch.inference_mode():
        output = tiny_model.generate(**tiny_processor(images=images))
    return tiny_processor.batch_decode(output, skip_special_tokens=True)


def _copy_source(source_folder: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "trained"
    shutil.copytree(source_folder, folder)
    return folder


def test_cli_dry_run_writes_only_the_repository_files(dry_run, source_folder, expected_files):
    result, out = dry_run
    assert "Dry run: nothing uploaded" in result.stdout
    assert hub.list_repo_files(out) == expected_files
    for name in expected_files:
        assert f"  {name}\n" in result.stdout, name
    assert not any((out / name).exists() for name in NOT_UPLOADED)
    for name in ["model.safetensors", *hub.CODE_FILES, "tokenizer.json", "generation_config.json"]:
        assert (out / name).read_bytes() == (source_folder / name).read_bytes(), name
    # the modules the model files import relatively are shipped, and the card names every code file to review
    shipped = hub.code_files(out)
    assert {"_compat.py", "loading_centerfocus.py"} <= set(shipped) <= set(expected_files)
    card = (out / "README.md").read_text()
    assert all(f"`{name}`" in card for name in shipped)
    auto_map = json.loads((out / "config.json").read_text())["auto_map"]
    assert auto_map == hub.CONFIG_AUTO_MAP
    # no token in anything the command printed or wrote
    assert SECRET not in result.stdout + result.stderr
    assert not [name for name, data in _all_bytes(out).items() if SECRET.encode() in data]


def test_dry_run_folder_loads_and_captions_without_the_package(dry_run, images, expected_captions, tmp_path):
    _, out = dry_run
    paths = []
    for i, image in enumerate(images):
        image.save(tmp_path / f"image_{i}.png")
        paths.append(str(tmp_path / f"image_{i}.png"))
    # AutoModelForVision2Seq on 4.57 (transformers 5 removed it)
    vision2seq = "AutoModelForImageTextToText" if auto_model_for_vision2seq() is None else "AutoModelForVision2Seq"
    result = run_without_package(f"""
        import json, warnings
        from PIL import Image
        from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor, pipeline
        warnings.simplefilter("ignore", FutureWarning)
        import transformers
        vision2seq = getattr(transformers, {vision2seq!r})
        folder = {str(out)!r}
        v2s = vision2seq.from_pretrained(folder, trust_remote_code=True).eval()
        itt = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
        base = AutoModel.from_pretrained(folder, trust_remote_code=True)
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        images = [Image.open(p) for p in {paths!r}]
        inputs = processor(images=images)
        captioner = pipeline("image-text-to-text", model=folder, trust_remote_code=True)
        print(json.dumps({{
            "modules": [type(x).__module__ for x in (v2s, itt, base, processor)],
            "classes": [type(x).__name__ for x in (v2s, itt, base, processor)],
            "v2s": processor.batch_decode(v2s.generate(**inputs), skip_special_tokens=True),
            "itt": processor.batch_decode(itt.generate(**inputs), skip_special_tokens=True),
            "pipeline": [r["generated_text"] for r in captioner(images={paths!r}, text=[""] * len({paths!r}),
                                                                 return_full_text=False)],
        }}))
    """)
    assert all(m.startswith("transformers_modules.") for m in result["modules"])
    assert result["classes"] == ["CenterFocusForConditionalGeneration", "CenterFocusForConditionalGeneration",
                                 "CenterFocusModel", "CenterFocusProcessor"]
    assert len(set(expected_captions)) > 1  # the reference is not a constant caption
    assert result["v2s"] == expected_captions
    assert result["itt"] == expected_captions
    assert result["pipeline"] == expected_captions


def test_model_card_metadata_and_content(dry_run, source_folder):
    _, out = dry_run
    card = ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "image-to-text"
    assert data["library_name"] == "transformers"
    assert data["license"] == "apache-2.0"
    assert {"centerfocus", "image-to-text", "image-captioning", "custom_code"} <= set(data["tags"])
    assert data["datasets"] == DATASETS
    assert set(data["metrics"]) == {"bleu", "rouge", "cider", "exact_match"}
    results = {m["type"]: m["value"] for m in data["model-index"][0]["results"][0]["metrics"]}
    assert results["bleu"] == round(METRICS["eval_bleu4"], 4)
    assert results["cider"] == round(METRICS["eval_cider"], 4)
    config = json.loads((source_folder / "config.json").read_text())
    for key in hub_card.SWITCH_FIELDS:
        value = config[key]
        assert re.search(rf"\| `{key}` \| `?{re.escape(str(value))}`? \|", card.text), key
    for key in ("hidden_size", "encoder_layers", "decoder_layers", "vocab_size", "image_size"):
        assert f"| `{key}` | {config[key]} |" in card.text, key
    for key in ("eval_bleu4", "eval_rougeL", "eval_cider", "eval_exact_match"):
        assert f"| {METRICS[key]:.4f} |" in card.text, key
    assert f"{METRICS['eval_runtime']:.4f}" not in card.text
    assert "## Limitations" in card.text and "synthetic" in card.text


def test_model_card_usage_snippets_run_against_the_folder(dry_run, images, expected_captions, tmp_path):
    _, out = dry_run
    text = (out / "README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(snippets) == 2
    assert "pipeline(" in snippets[0] and ".generate(" in snippets[1]
    local = []
    for code in snippets:
        assert f'"{REPO_ID}"' in code and f'revision="{REVISION}"' in code and "trust_remote_code=True" in code
        local.append(code.replace(f'"{REPO_ID}"', repr(str(out))).replace(f'revision="{REVISION}", ', ""))
        assert "revision=" not in local[-1] and REPO_ID not in local[-1]
    images[1].save(tmp_path / "image.png")
    result = run_without_package(f"""
        import contextlib, io, json, os
        os.chdir({str(tmp_path)!r})
        printed = []
        for code in {local!r}:
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                exec(code, {{"__name__": "__main__"}})
            printed.append(buffer.getvalue().strip())
        print(json.dumps({{"printed": printed}}))
    """)
    assert result["printed"] == [expected_captions[1].strip()] * 2


def _add_root_pickle(folder: Path) -> str:
    torch.save({"weight": torch.zeros(2)}, folder / "pytorch_model.bin")
    return "pytorch_model.bin"


def _add_nested_pickle(folder: Path) -> str:
    (folder / "extra").mkdir()
    torch.save({"weight": torch.zeros(2)}, folder / "extra" / "weights.pt")
    return "extra/weights.pt"


def _remove_code_file(folder: Path) -> str:
    (folder / "modeling_centerfocus.py").unlink()
    return "modeling_centerfocus.py"


def _corrupt_weights(folder: Path) -> str:
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[:64] = b"\xff" * 64
    (folder / "model.safetensors").write_bytes(bytes(data))
    return "model.safetensors is not a readable safetensors file"


def _truncate_weights(folder: Path) -> str:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    return "model.safetensors is not a readable safetensors file"


def _config_does_not_match(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text())
    config["encoder_layers"] += 1  # the weights have no tensors for the extra layer
    (folder / "config.json").write_text(json.dumps(config))
    return "config.json does not match the weights"


def _token_in_a_file(folder: Path) -> str:
    config = json.loads((folder / "generation_config.json").read_text())
    config["note"] = SECRET
    (folder / "generation_config.json").write_text(json.dumps(config))
    return "generation_config.json contains your Hugging Face token"


@pytest.mark.parametrize("break_folder", [_add_root_pickle, _add_nested_pickle, _remove_code_file, _corrupt_weights,
                                          _truncate_weights, _config_does_not_match, _token_in_a_file])
def test_bad_folders_are_refused_and_nothing_is_uploaded(source_folder, tmp_path, monkeypatch, caplog, capsys,
                                                         break_folder):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    folder = _copy_source(source_folder, tmp_path)
    message = break_folder(folder)
    api = FakeApi()
    with caplog.at_level("DEBUG"), pytest.raises(hub.HubUploadError, match=re.escape(message)) as error:
        hub.publish(folder, REPO_ID, revision=REVISION, api=api, verify_timeout=120)
    assert api.calls == []
    captured = capsys.readouterr()
    assert SECRET not in str(error.value) + captured.out + captured.err + caplog.text


def test_cli_refuses_a_pickle_and_writes_nothing(source_folder, tmp_path):
    folder = _copy_source(source_folder, tmp_path)
    _add_root_pickle(folder)
    out = tmp_path / "out"
    result = _run_cli(str(folder), "--repo-id", REPO_ID, "--dry-run", str(out))
    assert result.returncode == 1
    assert "refused, nothing uploaded" in result.stderr and "pytorch_model.bin" in result.stderr
    assert not out.exists()
    assert SECRET not in result.stdout + result.stderr


def test_cli_upload_makes_one_commit_with_the_repository_files(source_folder, expected_files, monkeypatch, capsys,
                                                              caplog):
    import huggingface_hub

    monkeypatch.setenv("HF_TOKEN", SECRET)
    api = FakeApi()
    created = []
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda **kwargs: created.append(kwargs) or api)
    spec = importlib.util.spec_from_file_location("hub_upload_cli", ROOT / "hub_upload.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    with caplog.at_level("DEBUG"):
        code = cli.main([str(source_folder), "--repo-id", REPO_ID, "--private", "--revision", REVISION,
                         "--commit-message", "Add the tiny captioner"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert created == [{}]  # the client finds the token itself; it is never passed around
    assert [name for name, _, _ in api.calls] == ["create_repo", "create_branch", "create_commit"]
    assert api.calls[0][1] == (REPO_ID,)
    assert api.calls[0][2]["private"] is True and api.calls[0][2]["exist_ok"] is True
    assert api.calls[1][1] == (REPO_ID,) and api.calls[1][2]["branch"] == REVISION
    assert api.calls[1][2]["exist_ok"] is True
    commit = api.calls[2][2]
    assert api.calls[2][1] == (REPO_ID,)
    assert commit["revision"] == REVISION and commit["commit_message"] == "Add the tiny captioner"
    assert all(isinstance(op, CommitOperationAdd) for op in commit["operations"])
    assert sorted(op.path_in_repo for op in commit["operations"]) == expected_files
    for name in ["model.safetensors", *hub.CODE_FILES, "tokenizer.json"]:
        assert api.files[name] == (source_folder / name).read_bytes(), name
    assert "https://huggingface.co/cf-tests/tiny-captioner/commit/0123abc" in captured.out
    assert SECRET not in captured.out + captured.err + caplog.text
    assert not [name for name, data in api.files.items() if SECRET.encode() in data]


def test_upload_to_main_needs_no_branch(dry_run, expected_files):
    _, out = dry_run
    api = FakeApi()
    url = hub.upload_folder_to_hub(out, REPO_ID, api=api)
    assert url.endswith("/commit/0123abc")
    assert [name for name, _, _ in api.calls] == ["create_repo", "create_commit"]
    assert api.calls[0][2]["private"] is False
    assert api.calls[1][2]["revision"] == "main"
    assert sorted(api.files) == expected_files
    assert api.files["README.md"] == (out / "README.md").read_bytes()


def test_verification_is_bounded_by_a_timeout(dry_run):
    _, out = dry_run
    with pytest.raises(hub.HubUploadError, match="did not finish within"):
        hub.verify_repo_folder(out, timeout=0.05)


def test_verification_program_runs_by_path_without_the_package(tmp_path):
    # hub_verify.py blocks centerfocus before anything else (else its first check, "isolation", fails) and names the
    # check a folder failed
    result_path = tmp_path / "result.json"
    payload = {"folder": str(tmp_path / "missing"), "result": str(result_path), "snippets": [], "vision2seq": False,
               "pipeline_tasks": []}
    process = subprocess.run([sys.executable, str(hub.VERIFY_PROGRAM), json.dumps(payload)], capture_output=True,
                             text=True, timeout=300, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert process.returncode == 1, process.stderr[-2000:]
    result = json.loads(result_path.read_text())
    assert result["ok"] is False and result["checks"] == [] and result["step"] == "AutoConfig", result


def test_refresh_code_and_onnx_and_missing_auto_map(source_folder, tmp_path):
    folder = _copy_source(source_folder, tmp_path)
    (folder / "modeling_centerfocus.py").unlink()
    (folder / "processor_config.json").unlink()
    config = json.loads((folder / "config.json").read_text())
    del config["auto_map"]["AutoModel"]
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "onnx").mkdir()
    (folder / "onnx" / "encoder_model.onnx").write_bytes(b"onnx")
    (folder / "onnx" / "config.json").write_text("{}")
    with pytest.raises(hub.HubUploadError, match=re.escape("modeling_centerfocus.py")):
        hub.assemble_repo_folder(folder, tmp_path / "refused", REPO_ID)
    assert not (tmp_path / "refused").exists()
    files = hub.assemble_repo_folder(folder, tmp_path / "repo", REPO_ID, refresh_code=True)
    package = Path(hub.__file__).resolve().parent.parent
    for name in hub.CODE_FILES:
        assert (tmp_path / "repo" / name).read_bytes() == (package / name).read_bytes(), name
    assert {"onnx/encoder_model.onnx", "onnx/config.json", "processor_config.json"} <= set(files)
    assert json.loads((tmp_path / "repo" / "config.json").read_text())["auto_map"] == hub.CONFIG_AUTO_MAP
    processor_config = json.loads((tmp_path / "repo" / "processor_config.json").read_text())
    assert processor_config["auto_map"] == hub.PROCESSOR_AUTO_MAP
    assert "onnx" in ModelCard.load(tmp_path / "repo" / "README.md").data.tags


def test_a_model_whose_caption_is_empty_passes_the_dry_run(saved_folder, tmp_path):
    # a random "tiny-random" checkpoint or a briefly trained one can say nothing: an empty caption is a caption
    folder = tmp_path / "silent"
    shutil.copytree(saved_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    generation = json.loads((folder / "generation_config.json").read_text())
    generation["suppress_tokens"] = [i for i in range(config["vocab_size"]) if i != config["eos_token_id"]]
    (folder / "generation_config.json").write_text(json.dumps(generation))
    from centerfocus import CenterFocusForConditionalGeneration, CenterFocusProcessor

    model, processor = CenterFocusForConditionalGeneration.from_pretrained(folder), CenterFocusProcessor.from_pretrained(
        folder)
    assert processor.batch_decode(model.generate(**processor(images=[make_image(0)])), skip_special_tokens=True) == [""]
    result = _run_cli(str(folder), "--repo-id", REPO_ID, "--dry-run", str(tmp_path / "repo"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Dry run: nothing uploaded" in result.stdout


def test_model_card_names_every_switch_and_setting_of_a_config_with_every_switch_changed():
    from centerfocus.configuration_centerfocus import SWITCHES

    changed = {name: (0.5 if values is None else next(v for v in values if v != getattr(CenterFocusConfig(), name)))
               for name, (values, _) in SWITCHES.items()}
    changed.update(edge_stem_width_ratio=1.0, edge_stem_residual_blocks=1, stem_norm_type="batch")
    config = CenterFocusConfig(**changed).to_dict()
    card = hub_card.build_model_card(config, "someone/centerfocus-test")
    for name in SWITCHES:
        value = config[name]
        assert value != CenterFocusConfig().to_dict()[name], name
        assert re.search(rf"\| `{name}` \| `?{re.escape(str(value))}`? \|", card), name
    for name in hub_card.SETTING_FIELDS:
        if name in config:
            assert f"| `{name}` |" in card, name
    assert "| `edge_stem_residual_blocks` | 1 |" in card and "| `nar_iterations` |" in card
