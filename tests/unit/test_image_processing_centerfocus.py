import numpy as np
import pytest
import torch
from PIL import Image

from centerfocus import CenterFocusImageProcessor

from ..conftest import make_image


@pytest.fixture
def processor():
    return CenterFocusImageProcessor(size={"height": 16, "width": 16})


def _reference(rgb_uint8: np.ndarray, size=16) -> np.ndarray:
    """Float64 reference: PIL float resize per channel, rescale, normalise with mean = std = 0.5."""
    channels = [np.asarray(Image.fromarray(rgb_uint8[..., c].astype(np.float32), mode="F").resize(
        (size, size), resample=Image.BICUBIC), dtype=np.float64) for c in range(3)]
    array = np.clip(np.stack(channels, axis=0), 0, 255) / 255.0
    return (array - 0.5) / 0.5


def test_pixel_values_match_a_float64_reference(processor):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
    pixel_values = processor(Image.fromarray(array), return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 16, 16) and pixel_values.dtype == torch.float32
    np.testing.assert_allclose(pixel_values[0].numpy(), _reference(array), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "1", "I;16", "I", "F", "YCbCr", "RGB"])
def test_every_pil_mode_becomes_three_channels(processor, mode):
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)).convert(mode)
    pixel_values = processor(image, return_tensors="np")["pixel_values"]
    assert pixel_values.shape == (1, 3, 16, 16)
    assert np.isfinite(pixel_values).all()
    assert pixel_values.min() >= -1 - 1e-3 and pixel_values.max() <= 1 + 1e-3


def test_grey_image_gives_equal_channels(processor):
    image = Image.fromarray((np.arange(400) % 256).astype(np.uint8).reshape(20, 20), mode="L")
    pixel_values = processor(image, return_tensors="np")["pixel_values"][0]
    np.testing.assert_array_equal(pixel_values[0], pixel_values[1])
    np.testing.assert_array_equal(pixel_values[1], pixel_values[2])


def test_rgba_is_composited_on_white(processor):
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # fully transparent black
    pixel_values = processor(image, return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(pixel_values, 1.0, atol=1e-5)


def test_numpy_and_torch_inputs_match_pil(processor):
    rng = np.random.default_rng(2)
    array = rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)
    expected = processor(Image.fromarray(array), return_tensors="np")["pixel_values"]
    variants = [
        array,  # HWC uint8
        array.transpose(2, 0, 1),  # CHW uint8
        array.astype(np.float32) / 255.0,  # HWC float in [0, 1]
        array.astype(np.float32),  # HWC float in [0, 255]
        torch.from_numpy(array.transpose(2, 0, 1).copy()),  # CHW uint8 tensor
        torch.from_numpy(array.astype(np.float32) / 255.0),  # HWC float tensor
    ]
    for variant in variants:
        np.testing.assert_allclose(processor(variant, return_tensors="np")["pixel_values"], expected, atol=1e-4)


def test_batches_and_4d_arrays(processor):
    rng = np.random.default_rng(3)
    arrays = rng.integers(0, 256, size=(3, 20, 22, 3), dtype=np.uint8)
    from_list = processor(list(arrays), return_tensors="pt")["pixel_values"]
    from_4d = processor(arrays, return_tensors="pt")["pixel_values"]
    assert from_list.shape == (3, 3, 16, 16)
    torch.testing.assert_close(from_list, from_4d)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((6, 6, 5), dtype=np.uint8), "channels"),
        (np.zeros((2, 4, 4, 3, 1), dtype=np.uint8), "dimensions"),
        (np.full((4, 4, 3), np.nan, dtype=np.float32), "NaN"),
        (np.full((4, 4, 3), 300.0, dtype=np.float32), r"\[0, 1\] or \[0, 255\]"),
        (np.zeros((4, 4, 3), dtype=np.int64), "dtype"),
        ("not an image", "Unsupported image type"),
        ([], "empty"),
    ],
)
def test_bad_images_raise_value_error(processor, image, message):
    with pytest.raises(ValueError, match=message):
        processor(image)


def test_settings_round_trip_and_defaults(tmp_path):
    processor = CenterFocusImageProcessor()
    assert processor.size == {"height": 224, "width": 224}
    processor.save_pretrained(tmp_path)
    loaded = CenterFocusImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    with pytest.raises(ValueError, match="size"):
        CenterFocusImageProcessor(size={"shortest_edge": 224})


@pytest.mark.parametrize("settings", [
    {}, {"size": {"height": 40, "width": 24}}, {"num_channels": 1}, {"num_channels": 4},
    {"resample": 2}, {"do_resize": False}, {"do_normalize": False, "do_rescale": False},
], ids=["default", "non-square", "grey", "rgba", "bilinear", "no-resize", "raw"])
def test_fast_image_processor_matches_the_slow_one(settings):
    from centerfocus import CenterFocusImageProcessorFast

    rng = np.random.default_rng(0)
    side = 32 if settings.get("do_resize") is False else None
    images = [make_image(i, size=side or s) for i, s in enumerate((48, 100, 31))]
    images.append(rng.integers(0, 65536, size=(side or 37, side or 53), dtype=np.uint16))  # 16-bit grey
    images.append(Image.fromarray(rng.integers(0, 256, size=(side or 20, side or 70, 4), dtype=np.uint8), "RGBA"))
    slow = CenterFocusImageProcessor(**settings)(images, return_tensors="pt")["pixel_values"]
    fast = CenterFocusImageProcessorFast(**settings)(images, return_tensors="pt")["pixel_values"]
    assert fast.shape == slow.shape and fast.dtype == slow.dtype == torch.float32
    # the same separable filter in float32 on both sides (PIL's float mode, torch's antialiased kernel): they differ
    # by accumulation order only, ~1e-6 of the 0-255 range; 1e-4 after normalisation (x 1/127.5) is ~1e-2 levels
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-4 * (255 if settings.get("do_rescale") is False else 1))


def test_fast_image_processor_is_the_auto_class_torchvision_backend(saved_folder):
    from transformers import AutoImageProcessor

    from centerfocus import CenterFocusImageProcessorFast
    from centerfocus._compat import REGISTERS_TORCH_FAST_IMAGE_PROCESSOR

    if not REGISTERS_TORCH_FAST_IMAGE_PROCESSOR:
        pytest.skip("transformers 4.57 registers as fast image processors only subclasses of its torchvision-based "
                    "BaseImageProcessorFast; CenterFocusImageProcessorFast is used directly there")
    fast = AutoImageProcessor.from_pretrained(saved_folder, backend="torchvision")
    assert type(fast) is CenterFocusImageProcessorFast
    assert fast.size == CenterFocusImageProcessor.from_pretrained(saved_folder).size
