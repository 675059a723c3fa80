"""Image processor for CenterFocus: any PIL image, numpy array, torch tensor or image file -> normalised
`pixel_values`. Every input it cannot convert raises `ValueError` naming the input (its index and, for files, its
path); the conversions are listed in `docs/robustness.md`."""

import os
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageOps
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_utils import (
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    ChannelDimension,
    PILImageResampling,
)
from transformers.utils import logging


logger = logging.get_logger(__name__)

_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


# ITU-R 601-2 luma, the weights of PIL's "L" conversion
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _to_channels(array: np.ndarray, channels: Optional[int]) -> np.ndarray:
    """`(H, W, c)` float32 in [0, 255], c in {1, 3, 4} -> `(H, W, channels)` (None: as given). To 1: the luma of the
    RGB channels (PIL's "L" weights); to 3: grey repeated, alpha dropped; to 4: grey repeated and an opaque alpha
    appended where there is none."""
    have = array.shape[-1]
    if channels is None or channels == have:
        return array
    rgb = np.repeat(array, 3, axis=-1) if have == 1 else array[..., :3]
    if channels == 1:
        return (rgb @ _LUMA)[..., None].astype(np.float32)
    if channels == 3:
        return rgb
    return np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255.0, dtype=np.float32)], axis=-1)


def _pil_to_array(image: Image.Image, channels: Optional[int] = 3) -> np.ndarray:
    """A PIL image of any mode -> `(H, W, channels)` float32 in [0, 255] (`channels=None`: 1 for grey modes, 4 for
    modes with alpha, else 3).

    Conversions (listed in docs/robustness.md): the EXIF orientation is applied; an animated image gives its first frame;
    for 1 or 3 channels alpha is composited onto white, for 4 it is kept; palette, 1-bit, CMYK and YCbCr images go
    through PIL's RGB conversion (and its "L" conversion for 1 channel); 16-bit images are scaled by 255/65535
    without 8-bit rounding; 32-bit integer and float images are scaled from their own [min, max] range to [0, 255]
    (a constant image becomes black)."""
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
        return _to_channels(array.astype(np.float32)[..., None], channels)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if channels is None:
        channels = 4 if has_alpha else 1 if image.mode in ("1", "L") else 3
    if channels == 4:
        return np.asarray(image.convert("RGBA"), dtype=np.float32)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if channels == 1:
        return np.asarray(image.convert("L"), dtype=np.float32)[..., None]
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def _array_to_array(array: np.ndarray, channels: Optional[int] = 3, channels_last: Optional[bool] = None) -> np.ndarray:
    """A numpy array `(H, W)`, `(H, W, c)` or `(c, H, W)` with c in {1, 3, 4} -> `(H, W, channels)` float32 in
    [0, 255] (`channels=None`: c). `channels_last` says which axis holds the channels (`input_data_format`); when it
    is not given, the last axis is the channel axis when it has 1, 3 or 4 entries (a warning is logged when the first
    axis could be too), else the first. uint8 is taken as is, uint16 scaled by 255/65535, bool as {0, 255}; floats in
    [0, 1] are scaled by 255 and floats up to 255 taken as is. Channel conversions as in `_to_channels`."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"An image array must have 2 or 3 dimensions (H, W[, C] or C, H, W), got shape {array.shape}.")
    if channels_last is None:
        if array.shape[-1] in (1, 3, 4) and array.shape[0] in (1, 3, 4):
            logger.warning_once(f"The channel axis of an image array of shape {array.shape} is ambiguous; taking the "
                                "last axis as channels (H, W, C). Pass (H, W, C), `input_data_format` or a PIL image "
                                "to avoid this.")
        channels_last = not (array.shape[-1] not in (1, 3, 4) and array.shape[0] in (1, 3, 4))
    if not channels_last:
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
    return _to_channels(array, channels)


def _check_not_empty(array: np.ndarray) -> np.ndarray:
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"The image is empty (height {array.shape[0]}, width {array.shape[1]}).")
    return array


def _decode_pil(image: Image.Image, channels: Optional[int] = 3) -> np.ndarray:
    """`_pil_to_array` with every decoding failure of a lazily loaded image (truncated or corrupt data: PIL
    raises OSError, SyntaxError and others) turned into ValueError naming the file it came from."""
    try:
        array = _pil_to_array(image, channels)
    except (ValueError, MemoryError):
        raise
    except Exception as error:
        source = getattr(image, "filename", "") or "the PIL image"
        raise ValueError(f"Cannot decode {source!r} ({type(error).__name__}: {error}).") from None
    return _check_not_empty(array)


def load_image_file(path: Union[str, os.PathLike], channels: Optional[int] = 3) -> np.ndarray:
    """Open an image file with PIL, decode it completely (`Image.load()`) and convert it as `to_array` converts a
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
            array = _pil_to_array(image, channels)
    except MemoryError:
        raise
    except Exception as error:  # UnidentifiedImageError, OSError, DecompressionBombError, SyntaxError, ValueError
        raise ValueError(f"Cannot read image file {path!r} ({type(error).__name__}: {error}).") from None
    return _check_not_empty(array)


def to_array(image, channels: Optional[int] = 3, channels_last: Optional[bool] = None) -> np.ndarray:
    """Any supported image (PIL, numpy, torch, a path to an image file) -> `(H, W, channels)` float32 in [0, 255]
    (`channels=None`: the image's own channels)."""
    if isinstance(image, Image.Image):
        return _decode_pil(image, channels)
    if isinstance(image, (str, os.PathLike)):
        return load_image_file(image, channels)
    if type(image).__module__.startswith("torch") and hasattr(image, "detach"):
        image = image.detach().cpu().float().numpy() if image.is_floating_point() else image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        return _array_to_array(image, channels, channels_last)
    raise ValueError(f"Unsupported image type {type(image).__name__}; pass a PIL image, a numpy array, a torch "
                     "tensor or the path of an image file (URLs are not downloaded).")


def _resize_channels(array: np.ndarray, height: int, width: int, resample: int) -> np.ndarray:
    """Resize each channel of an `(H, W, c)` float image in PIL's float mode (no 8-bit rounding), clipped to
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
    Prepares images for CenterFocus: converts to `num_channels` channels (RGB by default), resizes to `size`,
    rescales to [0, 1] and normalises.

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
        image_mean (`list[float]`, *optional*, defaults to 0.5 per channel), image_std (`list[float]`, *optional*,
            defaults to 0.5 per channel): Normalisation statistics, one per channel (or one for all).
        do_convert_rgb (`bool`, *optional*, defaults to `True`): Convert every input to `num_channels` channels (see
            `to_array`). With `False` each input keeps its own channels (an array's `c`; 1 for a grey PIL image, 4
            for one with alpha), as transformers' processors do; the images of a batch must then agree.
        num_channels (`int`, *optional*, defaults to 3): Channels of `pixel_values`, the model's `num_channels`:
            1 (grey, the luma of colour inputs), 3 (RGB) or 4 (RGBA; an opaque alpha is added where there is none).

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
        num_channels: int = 3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.do_resize = do_resize
        self.size = dict(size) if size is not None else {"height": 224, "width": 224}
        self.resample = int(resample)  # as JSON gives it back: a saved and a loaded processor compare equal
        self.do_rescale = do_rescale
        self.rescale_factor = rescale_factor
        self.do_normalize = do_normalize
        if isinstance(num_channels, bool) or num_channels not in (1, 3, 4):
            raise ValueError(f"`num_channels` must be 1, 3 or 4, got {num_channels!r}.")
        self.num_channels = num_channels
        default_mean, default_std = ((IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD) if num_channels == 3
                                     else ([0.5] * num_channels, [0.5] * num_channels))
        self.image_mean = list(np.atleast_1d(image_mean if image_mean is not None else default_mean).tolist())
        self.image_std = list(np.atleast_1d(image_std if image_std is not None else default_std).tolist())
        self.do_convert_rgb = do_convert_rgb
        self._validate_settings(self.size, self.image_mean, self.image_std, num_channels if do_convert_rgb else None)

    @staticmethod
    def _validate_settings(size: dict, image_mean, image_std, channels: Optional[int]) -> None:
        if set(size) != {"height", "width"} or not all(isinstance(v, int) and v > 0 for v in size.values()):
            raise ValueError(f"`size` must be {{'height': int > 0, 'width': int > 0}}, got {size!r}.")
        if any(s == 0 for s in image_std):
            raise ValueError(f"`image_std` must not contain 0, got {list(image_std)!r}.")
        for name, values in (("image_mean", image_mean), ("image_std", image_std)):
            if channels is not None and len(values) not in (1, channels):
                raise ValueError(f"`{name}` has {len(values)} values but the images have {channels} channels "
                                 f"(`num_channels`); give one value per channel or one for all.")

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
        input_data_format: Optional[Union[str, ChannelDimension]] = None,
        **kwargs,
    ) -> BatchFeature:
        """Preprocess one image or a list of images; arguments override the processor's settings for this call.
        `input_data_format` ("channels_first" / "channels_last") says where an array's channel axis is (else it is
        inferred, see `to_array`).

        Returns:
            [`BatchFeature`] with `pixel_values` of shape `(batch_size, num_channels, height, width)`, float32.
        """
        do_resize = self.do_resize if do_resize is None else do_resize
        size = self.size if size is None else dict(size)
        resample = self.resample if resample is None else resample
        do_rescale = self.do_rescale if do_rescale is None else do_rescale
        rescale_factor = self.rescale_factor if rescale_factor is None else rescale_factor
        do_normalize = self.do_normalize if do_normalize is None else do_normalize
        do_convert_rgb = self.do_convert_rgb if do_convert_rgb is None else do_convert_rgb
        channels = self.num_channels if do_convert_rgb else None
        mean = np.atleast_1d(np.asarray(self.image_mean if image_mean is None else image_mean, dtype=np.float32))
        std = np.atleast_1d(np.asarray(self.image_std if image_std is None else image_std, dtype=np.float32))
        self._validate_settings(size, mean, std, channels)
        channels_last = None
        if input_data_format is not None:
            channels_last = ChannelDimension(input_data_format) == ChannelDimension.LAST

        arrays = []
        for index, image in enumerate(_flatten_images(images)):
            try:
                arrays.append(to_array(image, channels, channels_last))
            except ValueError as error:
                raise ValueError(f"Image {index}: {error}") from None
        if do_normalize:
            for index, array in enumerate(arrays):
                if len(mean) not in (1, array.shape[-1]) or len(std) not in (1, array.shape[-1]):
                    raise ValueError(f"Image {index} has {array.shape[-1]} channels but `image_mean` has {len(mean)} "
                                     f"values and `image_std` {len(std)}; give one value per channel or one for all.")
        pixel_values = self._transform(arrays, size if do_resize else None, int(resample),
                                       rescale_factor if do_rescale else None, (mean, std) if do_normalize else None,
                                       **self._transform_kwargs(kwargs))
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)

    def _transform_kwargs(self, kwargs: dict) -> dict:
        if kwargs:
            logger.warning_once(f"{type(self).__name__}.preprocess ignores unknown arguments {sorted(kwargs)}.")
        return {}

    @staticmethod
    def _check_same_shapes(shapes) -> None:
        if len(set(shapes)) > 1:
            raise ValueError(f"Images have different shapes (channels, height, width) {sorted(set(shapes))}: resize "
                             "them (`do_resize=True`) or give them the same channels (`do_convert_rgb=True`).")

    def _transform(self, arrays: list, size: Optional[dict], resample: int, rescale_factor: Optional[float],
                   normalize: Optional[tuple]) -> np.ndarray:
        """`(H, W, c)` float arrays in [0, 255] -> `(B, c, height, width)` float32: resize each channel with PIL,
        rescale, normalise."""
        batch = []
        for array in arrays:
            if size is not None:
                array = _resize_channels(array, size["height"], size["width"], resample)
            if rescale_factor is not None:
                array = array * rescale_factor
            if normalize is not None:
                array = (array - normalize[0]) / normalize[1]
            batch.append(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32))  # (c, H, W)
        self._check_same_shapes(a.shape for a in batch)
        return np.stack(batch)


_TORCH_MODES = {int(PILImageResampling.NEAREST): "nearest-exact", int(PILImageResampling.BILINEAR): "bilinear",
                int(PILImageResampling.BICUBIC): "bicubic"}


class CenterFocusImageProcessorFast(CenterFocusImageProcessor):
    r"""
    [`CenterFocusImageProcessor`] whose resize, rescale and normalisation run in torch on the whole batch, on CPU or
    on `device` (e.g. `processor(images, device="cuda")`): the transformers "fast" image processor. Decoding and the
    channel conversions are the slow processor's (every input type, the same errors). The resize is torch's
    antialiased bilinear/bicubic interpolation, the kernel torchvision's `resize` runs on tensors and the one that
    follows PIL's filters; its outputs match [`CenterFocusImageProcessor`] to float32 rounding (1e-5 after
    normalisation; tested). Needs torch only, not torchvision.
    """

    def to_dict(self) -> dict:
        # saved under the slow class's name, which 4.57, remote code and either backend load (transformers 5's own
        # pil processors save under their torchvision class's name the same way)
        return {**super().to_dict(), "image_processor_type": "CenterFocusImageProcessor"}

    def _transform_kwargs(self, kwargs: dict) -> dict:
        device = kwargs.pop("device", None)
        super()._transform_kwargs(kwargs)
        return {"device": device}

    def _transform(self, arrays: list, size: Optional[dict], resample: int, rescale_factor: Optional[float],
                   normalize: Optional[tuple], device=None):
        import torch
        import torch.nn.functional as F

        mode = _TORCH_MODES.get(resample)
        if size is not None and mode is None:
            raise ValueError(f"{type(self).__name__} resizes with NEAREST, BILINEAR or BICUBIC; got resample="
                             f"{PILImageResampling(resample).name}. Use CenterFocusImageProcessor for it.")
        batch = []
        for array in arrays:
            image = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).to(device)[None]  # (1, c, H, W)
            if size is not None and image.shape[-2:] != (size["height"], size["width"]):
                antialias = {"antialias": True} if mode != "nearest-exact" else {}
                image = F.interpolate(image, size=(size["height"], size["width"]), mode=mode, **antialias)
                image = image.clamp(0.0, 255.0)  # as the slow processor clips PIL's overshoot
            batch.append(image[0])
        self._check_same_shapes(tuple(image.shape) for image in batch)
        pixel_values = torch.stack(batch)
        if rescale_factor is not None:
            pixel_values = pixel_values * rescale_factor
        if normalize is not None:
            mean, std = (torch.as_tensor(v, dtype=torch.float32, device=pixel_values.device)[:, None, None]
                         for v in normalize)
            pixel_values = (pixel_values - mean) / std
        return pixel_values


__all__ = ["CenterFocusImageProcessor", "CenterFocusImageProcessorFast"]
