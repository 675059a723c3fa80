"""Property-based tests (hypothesis): any valid image of any size and mode gives `pixel_values` of the configured
shape with finite values; any text gives token ids inside the vocabulary."""

from datetime import timedelta

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from centerfocus import CenterFocusImageProcessor


pytestmark = pytest.mark.timeout(120)

PROPERTY_SETTINGS = settings(max_examples=40, deadline=timedelta(seconds=10), database=None,
                             suppress_health_check=[HealthCheck.function_scoped_fixture])
MODES = ["RGB", "L", "LA", "P", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F", "1"]
LAYOUTS = ["HWC-uint8", "CHW-uint8", "HWC-float-0-1", "HWC-float-0-255", "torch-CHW-float", "HW-grey"]
SIDE = st.integers(min_value=1, max_value=300)
PROCESSOR = CenterFocusImageProcessor(size={"height": 24, "width": 40})


def _pil_image(mode: str, height: int, width: int, rng: np.random.Generator) -> Image.Image:
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, size=(height, width), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(-(2**31), 2**31 - 1, size=(height, width), dtype=np.int32))
    if mode == "F":
        return Image.fromarray((rng.standard_normal((height, width)) * 10.0 ** rng.integers(-3, 30)).astype(np.float32))
    channels = 4 if mode in ("RGBA", "LA") else 3
    array = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    return Image.fromarray(array, mode="RGBA" if channels == 4 else "RGB").convert(mode)


def _array_image(layout: str, height: int, width: int, rng: np.random.Generator):
    array = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    if layout == "HWC-uint8":
        return array
    if layout == "CHW-uint8":
        return array.transpose(2, 0, 1)
    if layout == "HWC-float-0-1":
        return array.astype(np.float32) / 255.0
    if layout == "HWC-float-0-255":
        return array.astype(np.float64)
    if layout == "torch-CHW-float":
        return torch.from_numpy(array.transpose(2, 0, 1).copy()).float() / 255.0
    return array[..., 0]  # HW-grey


@PROPERTY_SETTINGS
@given(mode=st.sampled_from(MODES), height=SIDE, width=SIDE, seed=st.integers(0, 2**32 - 1))
def test_any_pil_image_gives_finite_pixel_values_of_the_configured_shape(mode, height, width, seed):
    image = _pil_image(mode, height, width, np.random.default_rng(seed))
    pixel_values = PROCESSOR(image, return_tensors="np")["pixel_values"]
    assert pixel_values.shape == (1, 3, 24, 40) and pixel_values.dtype == np.float32
    assert np.isfinite(pixel_values).all()
    assert pixel_values.min() >= -1.0 - 1e-5 and pixel_values.max() <= 1.0 + 1e-5  # mean = std = 0.5


@PROPERTY_SETTINGS
@given(layout=st.sampled_from(LAYOUTS), height=st.integers(5, 300), width=st.integers(5, 300),  # 5+: unambiguous
       seed=st.integers(0, 2**32 - 1))
def test_any_array_image_gives_finite_pixel_values_of_the_configured_shape(layout, height, width, seed):
    image = _array_image(layout, height, width, np.random.default_rng(seed))
    pixel_values = PROCESSOR(image, return_tensors="np")["pixel_values"]
    assert pixel_values.shape == (1, 3, 24, 40) and np.isfinite(pixel_values).all()


@PROPERTY_SETTINGS
@given(texts=st.lists(st.text(max_size=200), min_size=1, max_size=4))
def test_any_text_gives_input_ids_inside_the_vocabulary(tiny_processor, texts):
    vocab_size = len(tiny_processor.tokenizer)
    batch = tiny_processor(text=texts)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape and ids.shape[0] == len(texts)
    assert ((ids >= 0) & (ids < vocab_size)).all()
    expected_minimum = torch.tensor([2 if text else 0 for text in texts])  # [BOS] [EOS]; an empty prompt is none
    assert (mask.sum(1) >= expected_minimum).all()
    assert (mask.sum(1)[expected_minimum == 0] == 0).all()


@PROPERTY_SETTINGS
@given(texts=st.lists(st.text(max_size=200), min_size=1, max_size=4))
def test_any_caption_gives_labels_inside_the_vocabulary_ending_in_eos(tiny_processor, texts):
    tokenizer = tiny_processor.tokenizer
    labels = tiny_processor(text_target=texts)["labels"]
    valid = labels != -100
    assert ((labels[valid] >= 0) & (labels[valid] < len(tokenizer))).all()
    lengths = valid.sum(1)
    assert (labels[torch.arange(len(texts)), lengths - 1] == tokenizer.eos_token_id).all()
