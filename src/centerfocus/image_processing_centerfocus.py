"""Image processor for CenterFocus: any PIL image, numpy array, torch tensor or image file -> normalised
`pixel_values`. Every input it cannot convert raises `ValueError` naming the input (its index and, for files, its
path); the conversions are listed in `docs/robustness.md`."""

import os
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageOps
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_utils import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, PILImageResampling
from transformers.utils import logging


logger = logging.get_logger(__name__)

_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _pil_to_rgb_array(image: Image.Image) -> np.ndarray:
    """A PIL image of any mode -> `(H, W, 3)` float32 in [0, 255].

    Conversions (listed in docs/robustness.md): the EXIF orientation is applied; an animated image gives its first frame;
    alpha is composited onto white; palette, grey, 1-bit, CMYK and YCbCr images go through PIL's RGB conversion;
    16-bit images are scaled by 255/65535; 32-bit integer and float images are scaled from their own [min, max]
    range to [0, 255] (a constant image becomes black)."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    image = ImageOps.exif_transpose(image)
    if image.mode in _HIGH_DEPTH_MODES:
        array = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            array = array * (255.0 / 65535.0)
        else:
            if not np.isfinite(array).all():
                raise ValueError(f"The {image.mode!r}-mode image contains NaN or infinite pixel values.")
            low, high = float(array.min()), float(array.max())
            array = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
        return np.repeat(array.astype(np.float32)[..., None], 3, axis=-1)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def _array_to_rgb_array(array: np.ndarray) -> np.ndarray:
    """A numpy array `(H, W)`, `(H, W, c)` or `(c, H, W)` with c in {1, 3, 4} -> `(H, W, 3)` float32 in [0, 255].
    The last axis is the channel axis when it has 1, 3 or 4 entries (a warning is logged when the first axis could
    be too), else the first. uint8 is taken as is, uint16 scaled by 255/65535, bool as {0, 255}; floats in [0, 1]
    are scaled by 255 and floats up to 255 taken as is; a 4th (alpha) channel is dropped."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"An image array must have 2 or 3 dimensions (H, W[, C] or C, H, W), got shape {array.shape}.")
    if array.shape[-1] in (1, 3, 4) and array.shape[0] in (1, 3, 4):
        logger.warning_once(f"The channel axis of an image array of shape {array.shape} is ambiguous; taking the "
                            "last axis as channels (H, W, C). Pass (H, W, C) or a PIL image to avoid this.")
    if array.shape[-1] not in (1, 3, 4) and array.shape[0] in (1, 3, 4):
        array = np.transpose(array, (1, 2, 0))  # channels-first -> (H, W, c)
    if array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"An image array must have 1, 3 or 4 channels, got shape {array.shape}.")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"An image array must not be empty, got shape {array.shape}.")
    if array.dtype == np.bool_:
        array = array.astype(np.float32) * 255.0
    elif array.dtype == np.uint8:
        array = array.astype(np.float32)
    elif array.dtype == np.uint16:
        array = array.astype(np.float32) * (255.0 / 65535.0)
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise ValueError("The image array contains NaN or infinite pixel values.")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 255:
            raise ValueError(f"A float image array must hold values in [0, 1] or [0, 255], got [{low}, {high}].")
        if high <= 1.0:
            array = array * 255.0
    else:
        raise ValueError(f"Unsupported image array dtype {array.dtype}; use uint8, uint16, bool or float.")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array[..., :3]  # drops alpha


def _check_not_empty(array: np.ndarray) -> np.ndarray:
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"The image is empty (height {array.shape[0]}, width {array.shape[1]}).")
    return array


def _decode_pil(image: Image.Image) -> np.ndarray:
    """`_pil_to_rgb_array` with every decoding failure of a lazily loaded image (truncated or corrupt data: PIL
    raises OSError, SyntaxError and others) turned into ValueError naming the file it came from."""
    try:
        array = _pil_to_rgb_array(image)
    except (ValueError, MemoryError):
        raise
    except Exception as error:
        source = getattr(image, "filename", "") or "the PIL image"
        raise ValueError(f"Cannot decode {source!r} ({type(error).__name__}: {error}).") from None
    return _check_not_empty(array)


def load_image_file(path: Union[str, os.PathLike]) -> np.ndarray:
    """Open an image file with PIL, decode it completely (`Image.load()`) and convert it as `to_rgb_array` converts a
    PIL image. Truncated images are never accepted (`ImageFile.LOAD_TRUNCATED_IMAGES` is left alone). A missing
    file, a file that is not an image, truncated or corrupt data and an image over PIL's decompression-bomb limit
    (`Image.MAX_IMAGE_PIXELS`) raise ValueError naming the path."""
    given_str = isinstance(path, str)
    path = os.fspath(path)
    if not isinstance(path, str):
        raise ValueError(f"Image paths must be str or pathlib.Path, got {type(path).__name__}.")
    if path.startswith(("http://", "https://", "data:")):
        raise ValueError(f"{path[:80]!r} is a URL; CenterFocusImageProcessor reads only local files. Download it "
                         "and pass the file or the PIL image.")
    if not os.path.isfile(path):
        problem = "is not a file" if os.path.exists(path) else "does not exist"
        hint = " (Unsupported image type str: a string must be the path of an image file)" if given_str else ""
        raise ValueError(f"Image file {path!r} {problem}{hint}.")
    try:
        with Image.open(path) as image:
            image.load()  # decodes everything now: truncated or corrupt data fails here
            array = _pil_to_rgb_array(image)
    except MemoryError:
        raise
    except Exception as error:  # UnidentifiedImageError, OSError, DecompressionBombError, SyntaxError, ValueError
        raise ValueError(f"Cannot read image file {path!r} ({type(error).__name__}: {error}).") from None
    return _check_not_empty(array)


def to_rgb_array(image) -> np.ndarray:
    """Any supported image (PIL, numpy, torch, a path to an image file) -> `(H, W, 3)` float32 in [0, 255]."""
    if isinstance(image, Image.Image):
        return _decode_pil(image)
    if isinstance(image, (str, os.PathLike)):
        return load_image_file(image)
    if type(image).__module__.startswith("torch") and hasattr(image, "detach"):
        image = image.detach().cpu().float().numpy() if image.is_floating_point() else image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        return _array_to_rgb_array(image)
    raise ValueError(f"Unsupported image type {type(image).__name__}; pass a PIL image, a numpy array, a torch "
                     "tensor or the path of an image file (URLs are not downloaded).")


def _resize_channels(array: np.ndarray, height: int, width: int, resample: int) -> np.ndarray:
    """Resize each channel of an `(H, W, 3)` float image in PIL's float mode (no 8-bit rounding), clipped to
    [0, 255] as an 8-bit resize would be (bicubic filters overshoot)."""
    if array.shape[:2] == (height, width):
        return array
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(array[..., c]), mode="F").resize((width, height),
                                                                                              resample=resample))
                for c in range(array.shape[-1])]
    return np.clip(np.stack(channels, axis=-1), 0.0, 255.0)


def _flatten_images(images) -> list:
    if isinstance(images, (list, tuple)):
        flat = []
        for item in images:
            flat.extend(item if isinstance(item, (list, tuple)) else [item])
        if not flat:
            raise ValueError("`images` is empty: pass at least one image.")
        return flat
    is_tensor = type(images).__module__.startswith("torch") and hasattr(images, "ndim")
    if (isinstance(images, np.ndarray) or is_tensor) and images.ndim == 4:
        if len(images) == 0:
            raise ValueError(f"`images` is an empty batch of shape {tuple(images.shape)}: pass at least one image.")
        return list(images)
    return [images]


class CenterFocusImageProcessor(BaseImageProcessor):
    r"""
    Prepares images for CenterFocus: converts to RGB, resizes to `size`, rescales to [0, 1] and normalises.

    Accepts one image or a list of images, each a PIL image, a numpy array, a torch tensor or the path (`str` or
    `pathlib.Path`) of an image file, in any mix; a 4-D array or tensor is a batch. An input that cannot be
    converted raises `ValueError` naming its index (and, for a file, its path).

    Args:
        do_resize (`bool`, *optional*, defaults to `True`): Resize to `size`.
        size (`dict[str, int]`, *optional*, defaults to `{"height": 224, "width": 224}`): Output size; must match
            the model's `image_size`.
        resample (`PILImageResampling`, *optional*, defaults to `BICUBIC`): Resampling filter.
        do_rescale (`bool`, *optional*, defaults to `True`): Multiply pixel values by `rescale_factor`.
        rescale_factor (`float`, *optional*, defaults to `1/255`): Rescale factor.
        do_normalize (`bool`, *optional*, defaults to `True`): Normalise with `image_mean` and `image_std`.
        image_mean (`list[float]`, *optional*, defaults to `[0.5, 0.5, 0.5]`), image_std (`list[float]`, *optional*,
            defaults to `[0.5, 0.5, 0.5]`): Normalisation statistics.
        do_convert_rgb (`bool`, *optional*, defaults to `True`): Kept for API compatibility; every input is
            converted to 3-channel RGB as documented in `to_rgb_array`.

    Example:

    ```python
    >>> from PIL import Image
    >>> from centerfocus import CenterFocusImageProcessor
    >>> processor = CenterFocusImageProcessor(size={"height": 32, "width": 32})
    >>> processor(Image.new("L", (50, 40)), return_tensors="pt")["pixel_values"].shape
    torch.Size([1, 3, 32, 32])
    ```
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        do_resize: bool = True,
        size: Optional[dict[str, int]] = None,
        resample: PILImageResampling = PILImageResampling.BICUBIC,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: Optional[Union[float, list[float]]] = None,
        image_std: Optional[Union[float, list[float]]] = None,
        do_convert_rgb: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.do_resize = do_resize
        self.size = dict(size) if size is not None else {"height": 224, "width": 224}
        self.resample = resample
        self.do_rescale = do_rescale
        self.rescale_factor = rescale_factor
        self.do_normalize = do_normalize
        self.image_mean = list(image_mean) if image_mean is not None else list(IMAGENET_STANDARD_MEAN)
        self.image_std = list(image_std) if image_std is not None else list(IMAGENET_STANDARD_STD)
        self.do_convert_rgb = do_convert_rgb
        self._validate_settings(self.size, self.image_std)

    @staticmethod
    def _validate_settings(size: dict, image_std: list) -> None:
        if set(size) != {"height", "width"} or not all(isinstance(v, int) and v > 0 for v in size.values()):
            raise ValueError(f"`size` must be {{'height': int > 0, 'width': int > 0}}, got {size!r}.")
        if any(s == 0 for s in image_std):
            raise ValueError(f"`image_std` must not contain 0, got {image_std!r}.")

    def preprocess(
        self,
        images,
        do_resize: Optional[bool] = None,
        size: Optional[dict[str, int]] = None,
        resample: Optional[PILImageResampling] = None,
        do_rescale: Optional[bool] = None,
        rescale_factor: Optional[float] = None,
        do_normalize: Optional[bool] = None,
        image_mean: Optional[Union[float, list[float]]] = None,
        image_std: Optional[Union[float, list[float]]] = None,
        do_convert_rgb: Optional[bool] = None,
        return_tensors: Optional[str] = None,
        **kwargs,
    ) -> BatchFeature:
        """Preprocess one image or a list of images; arguments override the processor's settings for this call.

        Returns:
            [`BatchFeature`] with `pixel_values` of shape `(batch_size, 3, height, width)`, float32.
        """
        if kwargs:
            logger.warning_once(f"CenterFocusImageProcessor.preprocess ignores unknown arguments {sorted(kwargs)}.")
        do_resize = self.do_resize if do_resize is None else do_resize
        size = self.size if size is None else dict(size)
        resample = self.resample if resample is None else resample
        do_rescale = self.do_rescale if do_rescale is None else do_rescale
        rescale_factor = self.rescale_factor if rescale_factor is None else rescale_factor
        do_normalize = self.do_normalize if do_normalize is None else do_normalize
        mean = np.asarray(self.image_mean if image_mean is None else image_mean, dtype=np.float32)
        std = np.asarray(self.image_std if image_std is None else image_std, dtype=np.float32)
        self._validate_settings(size, list(np.atleast_1d(std)))

        batch = []
        for index, image in enumerate(_flatten_images(images)):
            try:
                array = to_rgb_array(image)
            except ValueError as error:
                raise ValueError(f"Image {index}: {error}") from None
            if do_resize:
                array = _resize_channels(array, size["height"], size["width"], int(resample))
            if do_rescale:
                array = array * rescale_factor
            if do_normalize:
                array = (array - mean) / std
            batch.append(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32))  # (3, H, W)
        shapes = {a.shape for a in batch}
        if len(shapes) > 1:
            raise ValueError(f"Images have different sizes {sorted(shapes)} and `do_resize=False`; resize them.")
        return BatchFeature(data={"pixel_values": np.stack(batch)}, tensor_type=return_tensors)


__all__ = ["CenterFocusImageProcessor"]
