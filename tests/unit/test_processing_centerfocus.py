import pytest
import torch

from centerfocus import CenterFocusProcessor

from ..conftest import make_image


def test_prompt_labels_and_pixels(tiny_processor, tokenizer):
    images = [make_image(0), make_image(1)]
    batch = tiny_processor(images=images, text=["describe the image", "a red"],
                           text_target=["a red circle in the centre", "a yellow star"])
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum()
    # labels: caption tokens without bos, then eos, padded with -100
    expected = tokenizer("a yellow star", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert batch["labels"][1, : len(expected)].tolist() == expected
    assert (batch["labels"][1, len(expected):] == -100).all()
    assert tiny_processor.batch_decode(batch["labels"][:1].clamp(min=0), skip_special_tokens=True) == [
        "a red circle in the centre"]
    assert "token_type_ids" not in batch


def test_mismatched_counts_raise(tiny_processor):
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        tiny_processor(images=[make_image(0), make_image(1)], text=["one"])
    with pytest.raises(ValueError, match="captions"):
        tiny_processor(images=[make_image(0)], text_target=["a", "b"])
    with pytest.raises(ValueError, match="at least one"):
        tiny_processor()


def test_truncation_warns(tiny_processor):
    from transformers.testing_utils import CaptureLogger
    from transformers.utils import logging

    from centerfocus import processing_centerfocus

    with CaptureLogger(logging.get_logger(processing_centerfocus.__name__)) as captured:
        batch = tiny_processor(text_target=["a red circle in the centre with a green triangle"], max_target_length=4)
    assert "truncated" in captured.out
    assert batch["labels"].shape[1] == 4 and batch["labels"][0, -1] == tiny_processor.tokenizer.eos_token_id


def test_processor_does_not_mutate_the_tokenizer(tokenizer, tiny_processor):
    before = (len(tokenizer), tokenizer.padding_side, dict(tokenizer.special_tokens_map))
    tiny_processor(images=[make_image(0)], text=["describe"], text_target=["a red circle"])
    assert (len(tokenizer), tokenizer.padding_side, dict(tokenizer.special_tokens_map)) == before


def test_save_and_load(tmp_path, tiny_processor):
    tiny_processor.save_pretrained(tmp_path)
    loaded = CenterFocusProcessor.from_pretrained(tmp_path)
    batch_a = tiny_processor(images=[make_image(0)], text=["describe the image"])
    batch_b = loaded(images=[make_image(0)], text=["describe the image"])
    for key in batch_a:
        assert torch.equal(batch_a[key], batch_b[key])
