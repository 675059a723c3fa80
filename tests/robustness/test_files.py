"""Damaged or mismatched files: model weights, config, tokenizer and processor files, and a crash while the final
model is saved over a previous one. Each case is a row of docs/robustness.md."""

import json
import os
import shutil
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

from centerfocus import CenterFocusForConditionalGeneration, CenterFocusProcessor
from centerfocus.tools import train

from ..conftest import build_tiny_model, make_image, only_transformers_4


pytestmark = pytest.mark.timeout(120)


def _variant(saved_folder: Path, tmp_path: Path, mutate) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(saved_folder, folder)
    mutate(folder)
    return folder


def _edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _weights(folder: Path) -> bytes:
    return (folder / "model.safetensors").read_bytes()


def _header_length(data: bytes) -> int:
    return struct.unpack("<Q", data[:8])[0]


def _truncate(folder):
    data = _weights(folder)
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def _break_header_json(folder):
    data = _weights(folder)
    (folder / "model.safetensors").write_bytes(data[:8] + b"\x00" * _header_length(data) + data[8 + _header_length(data):])


def _bad_dtype(folder):
    (folder / "model.safetensors").write_bytes(_weights(folder).replace(b'"dtype":"F32"', b'"dtype":"X32"', 1))


def _bad_offsets(folder):
    (folder / "model.safetensors").write_bytes(_weights(folder).replace(b'"data_offsets":[0,', b'"data_offsets":[4,', 1))


# ---------------------------------------------------------------------------------------------------- weights


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(_truncate, "incomplete metadata, file not fully covered", id="truncated"),
        pytest.param(lambda f: (f / "model.safetensors").write_bytes(b""), "header too small", id="zero-byte"),
        pytest.param(lambda f: (f / "model.safetensors").write_bytes(os.urandom(4096)), "header too large",
                     id="random-bytes"),
        pytest.param(_break_header_json, "invalid JSON in header", id="header-not-json"),
        pytest.param(_bad_dtype, "invalid JSON in header: unknown variant `X32`", id="header-bad-dtype"),
        pytest.param(_bad_offsets, "invalid offset for tensor", id="header-bad-offsets"),
    ],
)
@pytest.mark.parametrize("loader", [CenterFocusForConditionalGeneration, AutoModelForImageTextToText],
                         ids=["CenterFocus", "Auto"])
def test_damaged_safetensors_raise_naming_the_file(saved_folder, tmp_path, mutate, message, loader):
    folder = _variant(saved_folder, tmp_path, mutate)
    with pytest.raises(OSError, match=rf"model\.safetensors is damaged \(SafetensorError: Error while deserializing "
                                      rf"header: {message}.*\); .*copy or download it again"):
        loader.from_pretrained(folder)


def test_damaged_tensor_data_loads_undetected(saved_folder, tmp_path, tiny_model):
    """Known limitation: safetensors has no checksum, so bytes changed inside tensor data load silently."""
    def flip(folder):
        data = bytearray(_weights(folder))
        start = 8 + _header_length(data) + 1000
        data[start:start + 64] = b"\x7f" * 64
        (folder / "model.safetensors").write_bytes(bytes(data))

    loaded = CenterFocusForConditionalGeneration.from_pretrained(_variant(saved_folder, tmp_path, flip))
    original = tiny_model.state_dict()
    assert any(not torch.equal(v, original[k]) for k, v in loaded.state_dict().items())


def test_missing_weights_raise_os_error(saved_folder, tmp_path):
    folder = _variant(saved_folder, tmp_path, lambda f: (f / "model.safetensors").unlink())
    with pytest.raises(OSError, match=r"no file named .*model\.safetensors"):
        CenterFocusForConditionalGeneration.from_pretrained(folder)


# ----------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        # 4.57: "size mismatch for weight: copying a param with shape torch.Size([64, 32])..."; 5.x: its load report,
        # "... | Reinit due to size mismatch - ckpt: torch.Size([64, 32]) vs model: ..."
        pytest.param({"hidden_size": 48}, r"size mismatch.*torch.Size\(\[\d+, 32\]\)", id="hidden_size"),
        pytest.param({"vocab_size": 300}, r"size mismatch.*torch.Size\(\[300, 32\]\)", id="vocab_size"),
        pytest.param({"intermediate_size": 128}, r"size mismatch", id="intermediate_size"),
    ],
)
def test_config_that_does_not_match_the_weights_raises_runtime_error(saved_folder, tmp_path, changes, message):
    folder = _variant(saved_folder, tmp_path, lambda f: _edit_json(f / "config.json", **changes))
    with pytest.raises(RuntimeError, match=message):
        CenterFocusForConditionalGeneration.from_pretrained(folder)


def test_config_with_more_layers_than_the_weights_only_warns(saved_folder, tmp_path):
    """Known gap (transformers' behaviour): missing layers are initialised randomly with a warning, not refused.
    `output_loading_info=True` lists them."""
    folder = _variant(saved_folder, tmp_path, lambda f: _edit_json(f / "config.json", decoder_layers=3))
    model, info = CenterFocusForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
    assert model.config.decoder_layers == 3
    assert info["missing_keys"] and all(k.startswith("model.decoder.layers.2.") for k in info["missing_keys"])


def test_invalid_value_in_a_saved_config_raises_naming_the_field(saved_folder, tmp_path):
    folder = _variant(saved_folder, tmp_path, lambda f: _edit_json(f / "config.json", image_tokenizer_type="patches"))
    with pytest.raises(ValueError, match="`image_tokenizer_type` must be one of"):
        CenterFocusForConditionalGeneration.from_pretrained(folder)


def test_config_that_is_not_json_raises_os_error(saved_folder, tmp_path):
    folder = _variant(saved_folder, tmp_path, lambda f: (f / "config.json").write_text('{"hidden_size": 3'))
    with pytest.raises(OSError, match=r"config.json' is not a valid JSON file"):
        CenterFocusForConditionalGeneration.from_pretrained(folder)


# ------------------------------------------------------------------------------------- tokenizer and processor


def _drop_image_processor_settings(folder) -> None:
    """Remove the image-processor settings in both layouts: preprocessor_config.json (4.x) and the
    "image_processor" entry of processor_config.json (5.x writes both)."""
    (folder / "preprocessor_config.json").unlink()
    if (folder / "processor_config.json").is_file():
        settings = json.loads((folder / "processor_config.json").read_text())
        settings.pop("image_processor", None)
        (folder / "processor_config.json").write_text(json.dumps(settings))


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        pytest.param(lambda f: (f / "tokenizer.json").unlink(), FileNotFoundError,
                     r"has no tokenizer vocabulary file .*tokenizer.json", id="missing-tokenizer.json"),
        pytest.param(lambda f: (f / "tokenizer_config.json").unlink(), FileNotFoundError,
                     r"has no tokenizer_config.json", id="missing-tokenizer_config.json"),
        pytest.param(lambda f: [(f / n).unlink(missing_ok=True) for n in ("tokenizer.json", "tokenizer_config.json",
                                                                           "special_tokens_map.json")],
                     FileNotFoundError, r"has no tokenizer_config.json", id="no-tokenizer-files"),
        pytest.param(lambda f: (f / "tokenizer.json").write_text((f / "tokenizer.json").read_text()[:500]), OSError,
                     r"tokenizer.json' is not a valid JSON file .*truncated or corrupted", id="truncated-tokenizer.json"),
        pytest.param(lambda f: (f / "tokenizer_config.json").write_bytes(b"\xff\xfe{"), OSError,
                     r"tokenizer_config.json' is not a valid JSON file", id="corrupt-tokenizer_config.json"),
        pytest.param(lambda f: (f / "tokenizer.json").write_text('{"version": "1.0"}'), OSError,
                     r"Cannot load a CenterFocusProcessor from .*model", id="tokenizer.json-wrong-content"),
        pytest.param(_drop_image_processor_settings, FileNotFoundError, r"has no preprocessor_config.json",
                     id="missing-preprocessor_config.json"),
    ],
)
@pytest.mark.parametrize("loader", [CenterFocusProcessor, AutoProcessor], ids=["CenterFocus", "Auto"])
def test_missing_or_broken_processor_files_raise_naming_the_file(saved_folder, tmp_path, mutate, error, message,
                                                                loader):
    folder = _variant(saved_folder, tmp_path, mutate)
    with pytest.raises(error, match=message):
        loader.from_pretrained(folder)


def test_intact_processor_folder_still_loads(saved_folder, tiny_processor):
    loaded = CenterFocusProcessor.from_pretrained(saved_folder)
    assert loaded.tokenizer.get_vocab() == tiny_processor.tokenizer.get_vocab()
    assert loaded.image_processor.size == tiny_processor.image_processor.size


def test_pipeline_with_missing_tokenizer_file_names_it(saved_folder, tmp_path):
    # image-text-to-text loads the processor through CenterFocusProcessor.from_pretrained
    folder = _variant(saved_folder, tmp_path, lambda f: (f / "tokenizer.json").unlink())
    with pytest.raises(FileNotFoundError, match="has no tokenizer vocabulary file"):
        pipeline("image-text-to-text", model=str(folder))


@only_transformers_4
def test_image_to_text_pipeline_with_missing_tokenizer_file_raises_transformers_error(saved_folder, tmp_path):
    """Known gap (4.57's image-to-text pipeline): it loads the tokenizer with AutoTokenizer, not through
    CenterFocusProcessor, so a missing tokenizer.json gives transformers' unclear AttributeError. Load
    `CenterFocusProcessor.from_pretrained(folder)` first to get the clear FileNotFoundError."""
    folder = _variant(saved_folder, tmp_path, lambda f: (f / "tokenizer.json").unlink())
    with pytest.raises(AttributeError):
        pipeline("image-to-text", model=str(folder))


# --------------------------------------------------------------------------------------- interrupted final save


def _save_final(model, processor, output: Path) -> None:
    train.save_final(SimpleNamespace(model=model), processor, str(output), SimpleNamespace(lora_r=0, merge_lora=False))


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def previous_run(tmp_path, tiny_model, tiny_processor):
    """An output folder with a good final model from an earlier run, its checkpoints and results."""
    output = tmp_path / "output"
    output.mkdir()
    _save_final(tiny_model, tiny_processor, output)
    (output / "checkpoint-4").mkdir()
    (output / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (output / "all_results.json").write_text('{"eval_bleu4": 0.5}')
    return output


@pytest.fixture(scope="module")
def new_model(tokenizer):
    """The next run's model: a different size, so a half-replaced folder would not load at all."""
    return build_tiny_model(tokenizer, seed=1, hidden_size=48, intermediate_size=96)


def _crash_on_move(monkeypatch, index: int) -> None:
    real_replace = os.replace
    moves = []

    def replace(src, dst, *args, **kwargs):
        if ".final-" in str(src):
            moves.append(src)
            if len(moves) == index:
                raise OSError(28, "No space left on device (injected)")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def _crash_in(monkeypatch, target, name: str) -> None:
    real = getattr(target, name)

    def save_pretrained(folder, *args, **kwargs):
        real(folder, *args, **kwargs)
        written = sorted(p for p in Path(folder).iterdir() if p.is_file())
        written[0].write_bytes(written[0].read_bytes()[:10])  # a half-written file in the staging folder
        raise RuntimeError("killed during save (injected)")

    monkeypatch.setattr(target, name, save_pretrained)


@pytest.mark.parametrize("crash", ["model.save_pretrained", "processor.save_pretrained", "move-1", "move-3",
                                   "move-6", "move-last"])
def test_crash_during_final_save_keeps_the_previous_model(previous_run, new_model, tiny_processor, tiny_model,
                                                          monkeypatch, crash):
    before = _snapshot(previous_run)
    if crash == "model.save_pretrained":
        _crash_in(monkeypatch, new_model, "save_pretrained")
    elif crash == "processor.save_pretrained":
        _crash_in(monkeypatch, tiny_processor, "save_pretrained")
    else:
        moved_files = sum(1 for name in before if "/" not in name and not name.startswith(("all_results",)))
        _crash_on_move(monkeypatch, moved_files if crash == "move-last" else int(crash.split("-")[1]))
    with pytest.raises((OSError, RuntimeError), match="injected"):
        _save_final(new_model, tiny_processor, previous_run)
    monkeypatch.undo()

    assert _snapshot(previous_run) == before  # every file as it was, nothing added
    assert not [p.name for p in previous_run.iterdir() if p.name.startswith(".")]  # no staging or backup folder
    model = CenterFocusForConditionalGeneration.from_pretrained(previous_run).eval()
    processor = CenterFocusProcessor.from_pretrained(previous_run)
    batch = processor(images=[make_image(0)])
    with torch.no_grad():
        assert torch.equal(model.generate(**batch), tiny_model.generate(**batch))


def test_final_save_replaces_the_previous_model_when_nothing_fails(previous_run, new_model, tiny_processor):
    _save_final(new_model, tiny_processor, previous_run)
    assert CenterFocusForConditionalGeneration.from_pretrained(previous_run).config.hidden_size == 48
    assert (previous_run / "checkpoint-4" / "trainer_state.json").read_text() == "{}"
    assert (previous_run / "all_results.json").is_file()
    assert not [p.name for p in previous_run.iterdir() if p.name.startswith(".")]


def _cut_short(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # what an interrupted copy leaves


def test_truncated_weights_file_is_named_with_what_to_do(saved_folder, tmp_path):
    folder = _variant(saved_folder, tmp_path, lambda f: _cut_short(f / "model.safetensors"))
    with pytest.raises(OSError, match=r"model\.safetensors is damaged .*copy or download it again"):
        CenterFocusForConditionalGeneration.from_pretrained(folder)


def test_truncated_caption_index_is_named(saved_folder, tmp_path, images):
    from centerfocus.tools.retrieval import CaptionIndex

    CaptionIndex.build(str(saved_folder), images, ["a"] * len(images)).save(tmp_path / "index")
    _cut_short(tmp_path / "index" / "embeddings.safetensors")
    with pytest.raises(OSError, match=r"embeddings\.safetensors is damaged"):
        CaptionIndex.load(tmp_path / "index")
