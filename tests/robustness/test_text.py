"""Robustness of CenterFocusProcessor's text side: empty, long, non-UTF-8, control-character and mismatched prompts
and captions. Each case is a row of docs/robustness.md."""

import copy
import json

import pytest
import torch
from transformers import pipeline
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from centerfocus import CenterFocusForConditionalGeneration, CenterFocusProcessor, processing_centerfocus
from centerfocus.tools import train
from centerfocus.tools.data import generate_caption_dataset

from ..conftest import make_image, pipeline_captions


pytestmark = pytest.mark.timeout(120)

LONG_PROMPT = " ".join(["a red circle in the centre"] * 40)  # 240 words, far over 64 positions


def _logger():
    return logging.get_logger(processing_centerfocus.__name__)


@pytest.fixture(scope="module")
def limited_processor(tiny_processor, tiny_model):
    """The tiny processor with the tokenizer limit a trained folder has: model_max_length = max_position_embeddings."""
    tokenizer = copy.deepcopy(tiny_processor.tokenizer)
    tokenizer.model_max_length = tiny_model.config.max_position_embeddings
    return CenterFocusProcessor(tiny_processor.image_processor, tokenizer)


def _caption(model, processor, **inputs) -> str:
    with torch.no_grad():
        tokens = model.generate(**processor(**inputs))
    return processor.batch_decode(tokens, skip_special_tokens=True)[0]


def test_an_empty_prompt_is_no_prompt(tiny_processor, tiny_model):
    # what transformers 5's image-text-to-text pipeline sends for a plain caption (text="")
    batch = tiny_processor(images=[make_image(0)], text=[""])
    assert batch["input_ids"].shape == (1, 0) and batch["input_ids"].dtype == torch.long
    assert _caption(tiny_model, tiny_processor, images=[make_image(0)], text=[""]) == _caption(
        tiny_model, tiny_processor, images=[make_image(0)])


@pytest.mark.parametrize("prompt", ["   ", "\t\n "], ids=["spaces", "whitespace"])
def test_whitespace_prompts_encode_to_special_tokens_and_caption(tiny_processor, tiny_model, tokenizer, prompt):
    batch = tiny_processor(images=[make_image(0)], text=[prompt])
    assert batch["input_ids"].tolist() == [[tokenizer.bos_token_id, tokenizer.eos_token_id]]
    caption = _caption(tiny_model, tiny_processor, images=[make_image(0)], text=[prompt])
    assert isinstance(caption, str) and caption.strip()


def test_long_prompt_is_truncated_to_model_max_length_with_a_warning(limited_processor, tiny_model):
    with CaptureLogger(_logger()) as captured:
        batch = limited_processor(images=[make_image(0)], text=[LONG_PROMPT])
    assert "longer than max_length=64 tokens and was truncated" in captured.out
    assert "Token indices sequence length" not in captured.out
    assert batch["input_ids"].shape == (1, 64)
    assert batch["input_ids"][0, -1] == limited_processor.tokenizer.eos_token_id  # the template's eos is kept
    with torch.no_grad():
        assert tiny_model.generate(**batch).shape[0] == 1


def test_explicit_max_length_overrides_the_default(limited_processor):
    with CaptureLogger(_logger()) as captured:
        batch = limited_processor(text=[LONG_PROMPT], max_length=10)
    assert batch["input_ids"].shape == (1, 10) and "max_length=10" in captured.out


def test_long_prompt_without_a_tokenizer_limit_is_refused_by_the_model(tiny_processor, tiny_model):
    assert tiny_processor.tokenizer.model_max_length > 1e6  # no real limit: nothing to truncate to
    batch = tiny_processor(images=[make_image(0)], text=[LONG_PROMPT])
    assert batch["input_ids"].shape[1] > 64
    with pytest.raises(ValueError, match=r"The prompt has \d+ tokens, more than `max_position_embeddings` \(64\)"):
        tiny_model.generate(**batch)


def test_long_caption_is_truncated_to_model_max_length_with_a_warning(limited_processor, tiny_model):
    with CaptureLogger(_logger()) as captured:
        batch = limited_processor(images=[make_image(0)], text_target=[LONG_PROMPT])
    assert "longer than max_target_length=64 tokens and was truncated" in captured.out
    assert batch["labels"].shape == (1, 64) and batch["labels"][0, -1] == limited_processor.tokenizer.eos_token_id
    assert torch.isfinite(tiny_model(**batch).loss)


@pytest.mark.parametrize("value", [0, -3, 2.5, True], ids=["zero", "negative", "float", "bool"])
@pytest.mark.parametrize("name", ["max_length", "max_target_length"])
def test_invalid_length_limits_are_refused(tiny_processor, name, value):
    with pytest.raises(ValueError, match=rf"`{name}` must be a positive integer or None, got {value!r}"):
        tiny_processor(text=["a"], text_target=["a"], **{name: value})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"text": b"describe the image"}, r"`text` must be text \(str\), got bytes; decode it first",
                     id="text-bytes"),
        pytest.param({"text": [b"\xff\xfe not utf-8"]}, r"`text` item 0 is bytes, not text \(str\)",
                     id="text-list-non-utf8-bytes"),
        pytest.param({"text": ["fine", bytearray(b"\xc3\x28")]}, r"`text` item 1 is bytearray", id="text-bytearray"),
        pytest.param({"text_target": b"\x80abc"}, r"`text_target` must be text \(str\), got bytes",
                     id="caption-bytes"),
        pytest.param({"text_target": ["ok", b"caption"]}, r"`text_target` item 1 is bytes", id="caption-list-bytes"),
        pytest.param({"text": 5}, r"`text` must be a string or a list of strings, got int", id="text-int"),
        pytest.param({"text": [None]}, r"`text` must be a string or a list of strings; item 0 is NoneType",
                     id="text-None-item"),
        pytest.param({"text": []}, r"`text` is an empty list", id="text-empty-list"),
        pytest.param({"text_target": []}, r"`text_target` is an empty list", id="caption-empty-list"),
    ],
)
def test_non_text_prompts_and_captions_are_refused_naming_the_argument(tiny_processor, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_processor(**kwargs)


def test_control_characters_are_tokenized_and_still_caption(tiny_processor, tiny_model, tokenizer):
    prompt = "\x00\x07 describe\tthe\r\nimage\x1b \u200b\x7f"
    batch = tiny_processor(images=[make_image(1)], text=[prompt])
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    # \t \r \n split words like spaces; a word containing another control character becomes [UNK]
    assert tokens == ["[BOS]", "[UNK]", "describe", "the", "[UNK]", "[UNK]", "[EOS]"]
    assert _caption(tiny_model, tiny_processor, images=[make_image(1)], text=[prompt]).strip()


def test_control_characters_in_captions_give_valid_labels(tiny_processor, tokenizer):
    labels = tiny_processor(text_target=["a red\x00 circle\x1b"])["labels"][0].tolist()
    assert all(0 <= token < len(tokenizer) for token in labels) and labels[-1] == tokenizer.eos_token_id


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"images": [make_image(0), make_image(1)], "text": ["one"]}, "Got 2 images but 1 prompts",
                     id="2-images-1-prompt"),
        pytest.param({"images": [make_image(0), make_image(1)], "text": "one"}, "Got 2 images but 1 prompts",
                     id="2-images-str-prompt"),
        pytest.param({"images": [make_image(0)], "text": ["one", "two"]}, "Got 1 images but 2 prompts",
                     id="1-image-2-prompts"),
        pytest.param({"images": [make_image(0)], "text_target": ["a", "b"]}, "Got 1 images but 2 captions",
                     id="1-image-2-captions"),
        pytest.param({}, "at least one of `images`, `text` or `text_target`", id="nothing"),
    ],
)
def test_mismatched_numbers_of_images_and_texts_are_refused(tiny_processor, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_processor(**kwargs)


def test_pipeline_prompt_longer_than_the_model_is_refused_by_the_model(saved_folder):
    captioner = pipeline("image-text-to-text", model=str(saved_folder))
    with pytest.raises(ValueError, match="more than `max_position_embeddings`"):
        pipeline_captions(captioner, make_image(0), prompt=LONG_PROMPT)


@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory):
    """One training step of the tiny preset: what `centerfocus train` saves."""
    root = tmp_path_factory.mktemp("train")
    data = generate_caption_dataset(root / "scenes", num_train=8, num_test=2, seed=3)
    output = root / "out"
    train.main(["--dataset", str(data), "--output_dir", str(output), "--model_size", "tiny", "--use_cpu", "true",
                "--per_device_train_batch_size", "4", "--max_steps", "1", "--do_eval", "false",
                "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true",
                "--tokenizer_vocab_size", "80", "--max_target_length", "16", "--predict_with_generate", "false"])
    return output


def test_trained_folder_saves_the_prompt_limit_and_truncates_long_prompts(trained_folder):
    config = json.loads((trained_folder / "config.json").read_text())
    tokenizer_config = json.loads((trained_folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["model_max_length"] == config["max_position_embeddings"] == 128
    processor = CenterFocusProcessor.from_pretrained(trained_folder)
    model = CenterFocusForConditionalGeneration.from_pretrained(trained_folder).eval()
    prompt = " ".join(["describe the centre"] * 100)
    with CaptureLogger(_logger()) as captured:
        batch = processor(images=[make_image(2)], text=[prompt])
    assert "truncated" in captured.out and batch["input_ids"].shape == (1, 128)
    with torch.no_grad():
        caption = processor.batch_decode(model.generate(**batch, max_new_tokens=4), skip_special_tokens=True)[0]
    assert isinstance(caption, str)
