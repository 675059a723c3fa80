"""Robustness of CenterFocusImageProcessor: bad files, every PIL mode, EXIF, animation, array layouts and ranges,
non-finite values, empty and mixed inputs. Each case is a row of docs/robustness.md."""

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from centerfocus import CenterFocusImageProcessor


pytestmark = pytest.mark.timeout(120)

SIZE = 16


@pytest.fixture(scope="module")
def processor():
    return CenterFocusImageProcessor(size={"height": SIZE, "width": SIZE})


def raw(processor, image, **kwargs) -> np.ndarray:
    """The converted image before resizing, rescaling and normalising: `(H, W, 3)` in [0, 255]."""
    out = processor(image, do_resize=False, do_rescale=False, do_normalize=False, return_tensors="np", **kwargs)
    return out["pixel_values"][0].transpose(1, 2, 0)


def rgb_array(seed: int = 0, height: int = 20, width: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """Good and broken image files."""
    folder = tmp_path_factory.mktemp("images")
    image = Image.fromarray(rgb_array(0, 64, 48))
    image.save(folder / "good.png")
    image.save(folder / "good.jpg", quality=95)
    png, jpg = (folder / "good.png").read_bytes(), (folder / "good.jpg").read_bytes()
    paths = {"good.png": folder / "good.png", "good.jpg": folder / "good.jpg"}

    def write(name: str, data: bytes) -> None:
        (folder / name).write_bytes(data)
        paths[name] = folder / name

    write("truncated.png", png[: len(png) // 2])
    write("truncated.jpg", jpg[: len(jpg) // 2])
    idat = png.find(b"IDAT")
    write("corrupt.png", png[: idat + 20] + b"\x00" * 20 + png[idat + 40:])  # zeroed compressed data
    write("corrupt.jpg", jpg[:20] + b"\x00" * 64 + jpg[84:])  # zeroed JPEG header tables
    write("zero-byte.png", b"")
    write("text.jpg", b"this is a text file, not an image\n")
    paths["missing.png"] = folder / "missing.png"
    paths["directory.png"] = folder / "directory.png"
    paths["directory.png"].mkdir()
    return paths


# ------------------------------------------------------------------------------------------------------- bad files


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("truncated.png", "image file is truncated"),
        ("truncated.jpg", "image file is truncated"),
        ("corrupt.png", "broken data stream"),
        ("corrupt.jpg", "broken data stream"),
        ("zero-byte.png", "cannot identify image file"),
        ("text.jpg", "cannot identify image file"),
        ("missing.png", "does not exist"),
        ("directory.png", "is not a file"),
    ],
)
@pytest.mark.parametrize("as_path", [True, False], ids=["Path", "str"])
def test_unreadable_files_raise_value_error_naming_the_path(processor, files, name, message, as_path):
    path = files[name] if as_path else str(files[name])
    with pytest.raises(ValueError, match=message) as error:
        processor(path)
    assert str(files[name]) in str(error.value) and str(error.value).startswith("Image 0:")
    assert not ImageFile.LOAD_TRUNCATED_IMAGES  # never switched on to "rescue" a truncated file


def test_bad_file_in_a_list_is_named_by_index_and_path(processor, files):
    with pytest.raises(ValueError, match=r"^Image 2: Cannot read image file .*truncated\.jpg") as error:
        processor([files["good.png"], str(files["good.jpg"]), files["truncated.jpg"]])
    assert "OSError" in str(error.value)


def test_good_files_match_the_pil_image(processor, files):
    for name in ("good.png", "good.jpg"):
        with Image.open(files[name]) as image:
            expected = processor(image.convert("RGB"), return_tensors="np")["pixel_values"]
        np.testing.assert_array_equal(processor(files[name], return_tensors="np")["pixel_values"], expected)
        np.testing.assert_array_equal(processor(str(files[name]), return_tensors="np")["pixel_values"], expected)


def test_damaged_jpeg_scan_data_decodes_to_a_garbled_image_without_error(processor, files, tmp_path):
    """Known limitation: libjpeg recovers from damaged entropy-coded data with a warning only, so the file decodes
    (garbled) and nothing can tell it from a good one."""
    data = bytearray(files["good.jpg"].read_bytes())
    start = data.find(b"\xff\xda") + 400  # inside the scan data, after the start-of-scan header
    data[start:start + 32] = b"\x00" * 32
    (tmp_path / "garbled.jpg").write_bytes(bytes(data))
    garbled = raw(processor, tmp_path / "garbled.jpg")
    assert np.abs(garbled - raw(processor, files["good.jpg"])).mean() > 10


def test_lazily_opened_pil_image_of_a_truncated_file_raises_naming_it(processor, files):
    image = Image.open(files["truncated.png"])  # opening reads only the header; decoding fails later
    with pytest.raises(ValueError, match=r"^Image 0: Cannot decode .*truncated\.png.*OSError"):
        processor(image)


@pytest.mark.parametrize("url", ["https://example.com/cat.png", "http://example.com/cat.jpg",
                                 "data:image/png;base64,iVBORw0KGgo="])
def test_urls_are_refused_not_downloaded(processor, url):
    with pytest.raises(ValueError, match="is a URL"):
        processor(url)


def test_decompression_bomb_becomes_a_value_error_naming_the_file(processor, files, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # good.png has 64 * 48 = 3072 > 2 * 1000 pixels
    with pytest.raises(ValueError, match=r"DecompressionBombError.*exceeds limit") as error:
        processor(files["good.png"])
    assert str(files["good.png"]) in str(error.value)


def test_image_between_the_warning_and_the_error_limit_warns_and_converts(processor, files, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 3072 pixels: over the limit, under twice the limit
    with pytest.warns(Image.DecompressionBombWarning):
        pixel_values = processor(files["good.png"], return_tensors="np")["pixel_values"]
    assert pixel_values.shape == (1, 3, SIZE, SIZE)


# ------------------------------------------------------------------------------------------------------- PIL modes


def expected_rgb(image: Image.Image) -> np.ndarray:
    """The documented conversion of each mode, written out independently of the processor."""
    mode = image.mode
    if mode in ("RGBA", "LA"):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
        alpha = rgba[..., 3:] / 255.0
        return rgba[..., :3] * alpha + 255.0 * (1 - alpha)  # composited onto white
    if mode == "I;16":
        grey = np.asarray(image, dtype=np.float64) * 255.0 / 65535.0
    elif mode in ("I", "F"):
        grey = np.asarray(image, dtype=np.float64)
        grey = (grey - grey.min()) * 255.0 / (grey.max() - grey.min())
    else:  # L, P, CMYK, 1: PIL's own RGB conversion
        return np.asarray(image.convert("RGB"), dtype=np.float64)
    return np.repeat(grey[..., None], 3, axis=-1)


def make_mode_image(mode: str) -> Image.Image:
    rgb = Image.fromarray(rgb_array(1))
    rng = np.random.default_rng(2)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, size=(20, 24), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(-70000, 70000, size=(20, 24), dtype=np.int32))
    if mode == "F":
        return Image.fromarray(rng.normal(0, 1000, size=(20, 24)).astype(np.float32))
    if mode in ("LA", "RGBA"):
        rgba = np.concatenate([rgb_array(1), rng.integers(0, 256, size=(20, 24, 1), dtype=np.uint8)], axis=-1)
        return Image.fromarray(rgba).convert(mode)
    return rgb.convert(mode)


MODES = ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("source", ["pil", "tiff-file"])
def test_every_pil_mode_converts_as_documented(processor, mode, source, tmp_path):
    image = make_mode_image(mode)
    assert image.mode == mode
    expected = expected_rgb(image)
    if source == "tiff-file":
        image.save(tmp_path / "image.tiff")
        with Image.open(tmp_path / "image.tiff") as reloaded:
            assert reloaded.mode == mode
        image = tmp_path / "image.tiff"
    np.testing.assert_allclose(raw(processor, image), expected, atol=0.51)  # PIL rounds to 8 bits in places
    pixel_values = processor(image, return_tensors="np")["pixel_values"]
    assert pixel_values.shape == (1, 3, SIZE, SIZE) and np.isfinite(pixel_values).all()


def test_transparent_palette_image_is_composited_on_white(processor):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0] * 256)
    image.info["transparency"] = 0
    np.testing.assert_allclose(raw(processor, image), 255.0)


def test_constant_32_bit_image_becomes_black(processor):
    np.testing.assert_array_equal(raw(processor, Image.new("I", (5, 3), 12345)), 0.0)
    np.testing.assert_array_equal(raw(processor, Image.new("F", (5, 3), 7.5)), 0.0)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_float_mode_image_is_refused(processor, value):
    array = np.zeros((4, 4), dtype=np.float32)
    array[1, 2] = value
    with pytest.raises(ValueError, match=r"Image 0: The 'F'-mode image contains NaN or infinite"):
        processor(Image.fromarray(array))


# ---------------------------------------------------------------------------------------------- sizes, EXIF, frames


def test_one_pixel_image_is_resized(processor):
    pixel_values = processor(Image.new("RGB", (1, 1), (255, 0, 0)), return_tensors="np")["pixel_values"]
    assert pixel_values.shape == (1, 3, SIZE, SIZE)
    np.testing.assert_allclose(pixel_values[0, :, 0, 0], [1.0, -1.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(pixel_values[0].std(axis=(1, 2)), 0.0, atol=1e-6)  # still constant


@pytest.mark.parametrize("size", [(1, 300), (300, 1), (2400, 1800)], ids=["1x300", "300x1", "2400x1800"])
def test_extreme_aspect_ratios_and_large_in_memory_images_are_resized(processor, size):
    image = Image.new("RGB", size, (10, 200, 30))
    pixel_values = processor(image, return_tensors="np")["pixel_values"]
    assert pixel_values.shape == (1, 3, SIZE, SIZE)
    np.testing.assert_allclose(pixel_values[0, :, 5, 5], np.array([10, 200, 30]) / 127.5 - 1, atol=1e-5)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_empty_pil_image_is_refused(processor, mode):
    with pytest.raises(ValueError, match=r"Image 0: The image is empty \(height 5, width 0\)"):
        processor(Image.new(mode, (0, 5)))


@pytest.mark.parametrize("source", ["pil", "png-file", "jpeg-file"])
def test_exif_orientation_6_is_applied(processor, source, tmp_path):
    array = rgb_array(4, height=12, width=20)  # landscape as stored
    image = Image.fromarray(array)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was rotated; display rotated 90 degrees clockwise
    fmt = {"pil": "PNG", "png-file": "PNG", "jpeg-file": "JPEG"}[source]
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, exif=exif, **({"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}))
    stored = Image.open(io.BytesIO(buffer.getvalue()))
    assert stored.getexif()[0x0112] == 6 and stored.size == (20, 12)
    manual = np.asarray(stored.convert("RGB").transpose(Image.Transpose.ROTATE_270), dtype=np.float32)
    assert manual.shape == (20, 12, 3)  # portrait after rotation
    if source == "pil":
        converted = raw(processor, stored)
    else:
        path = tmp_path / f"rotated.{fmt.lower()}"
        path.write_bytes(buffer.getvalue())
        converted = raw(processor, path)
    assert converted.shape == manual.shape
    np.testing.assert_array_equal(converted, manual)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_images_give_their_first_frame(processor, fmt, tmp_path):
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (8, 8), color) for color in colors]
    path = tmp_path / f"animated.{fmt.lower()}"
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], duration=50, loop=0,
                   **({"lossless": True} if fmt == "WEBP" else {}))
    np.testing.assert_allclose(raw(processor, path), np.broadcast_to(colors[0], (8, 8, 3)), atol=1)
    image = Image.open(path)
    assert image.n_frames == 3
    image.seek(2)  # even when the caller left the image on another frame
    np.testing.assert_allclose(raw(processor, image), np.broadcast_to(colors[0], (8, 8, 3)), atol=1)


# ------------------------------------------------------------------------------------------ numpy and torch arrays


ARRAY = rgb_array(5)


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(lambda a: a, id="HWC-uint8"),
        pytest.param(lambda a: a.transpose(2, 0, 1), id="CHW-uint8"),
        pytest.param(lambda a: a.astype(np.float32) / 255.0, id="HWC-float-0-1"),
        pytest.param(lambda a: a.astype(np.float64), id="HWC-float-0-255"),
        pytest.param(lambda a: (a.astype(np.float32) / 255.0).transpose(2, 0, 1), id="CHW-float-0-1"),
        pytest.param(lambda a: a.astype(np.float16).transpose(2, 0, 1), id="CHW-float16-0-255"),
        pytest.param(lambda a: a.astype(np.uint16) * 257, id="HWC-uint16"),
        pytest.param(lambda a: torch.from_numpy(a.transpose(2, 0, 1).copy()), id="torch-CHW-uint8"),
        pytest.param(lambda a: torch.from_numpy(a.copy()).float() / 255.0, id="torch-HWC-float-0-1"),
        pytest.param(lambda a: torch.from_numpy(a.copy()).float().requires_grad_(), id="torch-requires-grad"),
    ],
)
def test_array_layouts_and_ranges_convert_like_pil(processor, variant):
    expected = processor(Image.fromarray(ARRAY), return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(processor(variant(ARRAY), return_tensors="np")["pixel_values"], expected, atol=1e-4)


def test_bfloat16_tensor_is_close_to_pil(processor):
    expected = processor(Image.fromarray(ARRAY), return_tensors="np")["pixel_values"]
    tensor = (torch.from_numpy(ARRAY.transpose(2, 0, 1).copy()).float() / 255).bfloat16()
    np.testing.assert_allclose(processor(tensor, return_tensors="np")["pixel_values"], expected, atol=0.02)


def test_grey_arrays_and_alpha_arrays(processor):
    grey = ARRAY[..., 0]
    np.testing.assert_array_equal(raw(processor, grey), np.repeat(grey[..., None], 3, -1).astype(np.float32))
    rgba = np.concatenate([ARRAY, np.zeros_like(ARRAY[..., :1])], axis=-1)
    np.testing.assert_array_equal(raw(processor, rgba), ARRAY.astype(np.float32))  # alpha channel dropped
    mask = np.eye(6, dtype=bool)
    np.testing.assert_array_equal(raw(processor, mask)[..., 0], mask * 255.0)


def test_ambiguous_channel_axis_takes_the_last_axis_and_warns(processor):
    from transformers.testing_utils import CaptureLogger
    from transformers.utils import logging

    from centerfocus import image_processing_centerfocus as module

    array = np.random.default_rng(6).integers(0, 256, size=(3, 7, 4), dtype=np.uint8)  # (C=3, H, W=4) or (H, W, C=4)?
    with CaptureLogger(logging.get_logger(module.__name__)) as captured:
        converted = raw(processor, array)
    assert "ambiguous" in captured.out and converted.shape == (3, 7, 3)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        pytest.param(np.zeros((6, 6, 2), np.uint8), r"1, 3 or 4 channels, got shape \(6, 6, 2\)", id="HWC-2-channels"),
        pytest.param(np.zeros((6, 6, 5), np.uint8), r"1, 3 or 4 channels, got shape \(6, 6, 5\)", id="HWC-5-channels"),
        pytest.param(np.zeros((2, 6, 6), np.uint8), r"1, 3 or 4 channels", id="CHW-2-channels"),
        pytest.param(np.zeros((5, 6, 6), np.uint8), r"1, 3 or 4 channels", id="CHW-5-channels"),
        pytest.param(torch.zeros(6, 6, 6), r"1, 3 or 4 channels", id="torch-6-channels"),
        pytest.param(np.zeros((2, 4, 4, 3, 1), np.uint8), "2 or 3 dimensions", id="5-D"),
        pytest.param(np.zeros(7, np.uint8), "2 or 3 dimensions", id="1-D"),
        pytest.param(np.zeros((0, 6, 3), np.uint8), "must not be empty", id="zero-height"),
        pytest.param(np.full((4, 4, 3), np.nan, np.float32), "NaN or infinite", id="nan"),
        pytest.param(np.full((4, 4, 3), np.inf, np.float64), "NaN or infinite", id="inf"),
        pytest.param(torch.full((3, 4, 4), float("nan")), "NaN or infinite", id="torch-nan"),
        pytest.param(np.full((4, 4, 3), 300.0, np.float32), r"\[0, 1\] or \[0, 255\], got \[300.0, 300.0\]",
                     id="float-above-255"),
        pytest.param(np.full((4, 4, 3), -0.5, np.float32), r"\[0, 1\] or \[0, 255\]", id="float-negative"),
        pytest.param(np.zeros((4, 4, 3), np.int64), "dtype int64", id="int64"),
        pytest.param(np.zeros((4, 4, 3), np.complex64), "dtype complex64", id="complex"),
        pytest.param(np.zeros((4, 4, 3), object), "dtype object", id="object"),
        pytest.param(None, "Unsupported image type NoneType", id="None"),
        pytest.param(b"\x89PNG", "Unsupported image type bytes", id="bytes"),
        pytest.param(12, "Unsupported image type int", id="int"),
        pytest.param("not a file", "does not exist", id="str-not-a-path"),
    ],
)
def test_bad_arrays_and_objects_raise_value_error_naming_the_index(processor, image, message):
    with pytest.raises(ValueError, match=r"^Image 0: .*" + message):
        processor(image)


@pytest.mark.parametrize(
    "images",
    [
        pytest.param([], id="empty-list"),
        pytest.param(((),), id="nested-empty"),
        pytest.param(np.zeros((0, 8, 8, 3), np.uint8), id="empty-4D-array"),
        pytest.param(torch.zeros(0, 3, 8, 8), id="empty-4D-tensor"),
    ],
)
def test_empty_inputs_are_refused(processor, images):
    with pytest.raises(ValueError, match=r"`images` is (an )?empty"):
        processor(images)


def test_mixed_list_converts_every_item_as_documented(processor, files):
    with Image.open(files["good.png"]) as opened:
        image = opened.convert("RGB")
    array = np.asarray(image)
    expected = processor(image, return_tensors="np")["pixel_values"][0]
    mixed = [image, array, array.transpose(2, 0, 1), torch.from_numpy(array.copy()), array / 255.0,
             str(files["good.png"]), Path(files["good.png"]), [image]]
    pixel_values = processor(mixed, return_tensors="np")["pixel_values"]
    assert pixel_values.shape == (len(mixed), 3, SIZE, SIZE)
    for index in range(len(mixed)):
        np.testing.assert_allclose(pixel_values[index], expected, atol=1e-4, err_msg=f"item {index}")


def test_bad_item_in_a_mixed_list_is_named_by_index(processor, files):
    mixed = [Image.new("RGB", (4, 4)), np.zeros((4, 4, 3), np.uint8), torch.zeros(3, 4, 4), np.zeros((5, 5, 2))]
    with pytest.raises(ValueError, match=r"^Image 3: An image array must have 1, 3 or 4 channels"):
        processor(mixed)


def test_different_sizes_without_resizing_are_refused(processor):
    with pytest.raises(ValueError, match="different shapes"):
        processor([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)], do_resize=False)


def test_processor_accepts_paths_too(tiny_processor, files):
    batch = tiny_processor(images=[files["good.png"], str(files["good.jpg"])], text=["describe", "describe"])
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"Image 0: Cannot read image file .*zero-byte\.png"):
        tiny_processor(images=files["zero-byte.png"])


def test_no_warning_or_error_for_ordinary_inputs(processor, files):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        processor([Image.new("RGB", (30, 20)), files["good.png"], np.zeros((20, 30, 3), np.uint8)])
