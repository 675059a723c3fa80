"""The built-in synthetic data set: a centred object among peripheral distractors, generated with no download.

Every scene has a dark, noisy background, one large object near the image centre (inside the central square whose side
is half the image side, the model's default centre region) and a few small distractor objects in the periphery, each
in its own cell of the 3x3 grid whose middle cell is that central square, so a distractor never touches the centre
region. Captions name the centre object (`"a red circle in the centre"`) and, optionally, every distractor
(`"... with a small blue square at the top left and a small green star at the bottom right"`).

Two on-disk layouts follow the `datasets` "imagefolder" convention:

* `generate_caption_dataset`: `train/` and `test/` folders of PNGs, each with a `metadata.jsonl` giving `text` (the
  caption) and `center_phrase` for every `file_name`; load with `datasets.load_dataset("imagefolder", data_dir=...)`.
* `generate_classification_dataset`: `train/<shape>/*.png` and `test/<shape>/*.png`, where the class is the centre
  object's shape (stage-1 image pre-training); imagefolder turns the folder names into a `label` column.

Both write a `centerfocus_dataset.json` marker with their parameters. A folder that already holds that marker with the
same parameters is reused as is; any other non-empty folder is refused, so user files are never overwritten.
"""

import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw


logger = logging.getLogger(__name__)

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLORS = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (40, 100, 240),
    "yellow": (240, 220, 40),
    "purple": (170, 70, 220),
    "white": (245, 245, 245),
}
# Reading order; captions list the distractors in this order. Each position is one outer cell of the 3x3 grid.
POSITIONS = ("top left", "top", "top right", "left", "right", "bottom left", "bottom", "bottom right")
_POSITION_CELLS = {
    "top left": (0, 0), "top": (0, 1), "top right": (0, 2),
    "left": (1, 0), "right": (1, 2),
    "bottom left": (2, 0), "bottom": (2, 1), "bottom right": (2, 2),
}

MARKER_FILENAME = "centerfocus_dataset.json"
FORMAT_VERSION = 1
MIN_IMAGE_SIZE = 16

_CENTER_SIZE_RANGE = (0.35, 0.45)  # centre object side, as a fraction of the image side
_CENTER_JITTER = 0.05  # largest offset of the centre object from the image centre, as a fraction of the side
_DISTRACTOR_SIZE_RANGE = (0.15, 0.20)  # distractor side, as a fraction of the image side
_EDGE_JITTER = 0.08  # jitter of the edge-middle positions ("top", "left", ...) along the edge
_STAR_INNER_RATIO = 0.5  # inner radius of the star over its outer radius
_CROSS_ARM_RATIO = 0.4  # arm thickness of the cross over its side
_BACKGROUND_MAX = 72  # no background channel value exceeds this; every object colour has a channel >= 230


@dataclass
class Scene:
    """One generated scene and its description.

    Attributes:
        image: The RGB image.
        caption: The full caption, lower case, e.g. `"a red circle in the centre"`.
        center_phrase: The phrase naming the centre object, e.g. `"a red circle"`.
        center_color: Colour name of the centre object (a key of `COLORS`).
        center_shape: Shape of the centre object (one of `SHAPES`).
        periphery: `(color, shape, position)` of every distractor, in `POSITIONS` order.
        distractor_boxes: Pixel bounding box `(left, top, right, bottom)` of every distractor, right and bottom
            exclusive (like `PIL.Image.Image.getbbox`), in the same order as `periphery`.
        center_box: Pixel bounding box of the centre object, same convention.
    """

    image: Image.Image
    caption: str
    center_phrase: str
    center_color: str
    center_shape: str
    periphery: list[tuple[str, str, str]] = field(default_factory=list)
    distractor_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    center_box: tuple[int, int, int, int] = (0, 0, 0, 0)


def central_square(image_size: int) -> tuple[int, int]:
    """Pixel range `[low, high)` of the central square (side half the image side) along either axis.

    Args:
        image_size: Side of the square image, in pixels.

    Returns:
        `(low, high)` with `low = image_size // 4` and `high = image_size - image_size // 4`.
    """
    return image_size // 4, image_size - image_size // 4


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _object_phrase(color: str, shape: str, small: bool = False) -> str:
    words = (["small"] if small else []) + [color, shape]
    return f"{_article(words[0])} {' '.join(words)}"


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def _caption(center_phrase: str, periphery: list[tuple[str, str, str]], describe_periphery: bool) -> str:
    caption = f"{center_phrase} in the centre"
    if describe_periphery and periphery:
        parts = [f"{_object_phrase(color, shape, small=True)} at the {position}" for color, shape, position in periphery]
        caption += f" with {_join(parts)}"
    return caption


def _background(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """Dark texture: a smooth random luminance field, a slight colour tint and per-pixel noise."""
    grid = max(2, image_size // 8)
    coarse = rng.normal(0.0, 9.0, size=(grid, grid)).astype(np.float32)
    smooth = np.asarray(Image.fromarray(coarse).resize((image_size, image_size), Image.Resampling.BILINEAR))
    base = rng.uniform(14.0, 34.0) + rng.uniform(-6.0, 6.0, size=3)
    noise = rng.normal(0.0, 6.0, size=(image_size, image_size, 3))
    pixels = base[None, None, :] + smooth[:, :, None] + noise
    return np.clip(pixels, 0, _BACKGROUND_MAX).astype(np.uint8)


def _safe_radius(shape: str, side: int) -> float:
    """Radius of a disc around the box centre that lies inside `shape` drawn in a `side`-pixel box."""
    radius = (side - 1) / 2
    if shape in ("circle", "square"):
        return radius
    if shape == "triangle":  # distance from the box centre to the slanted edges (the base is further away)
        return radius / math.sqrt(5)
    if shape == "star":  # the inscribed circle of the inner pentagon
        return _STAR_INNER_RATIO * radius * math.cos(math.pi / 5)
    if shape == "cross":
        return _CROSS_ARM_RATIO * (side - 1) / 2
    raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPES}.")


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, left: int, top: int, side: int,
                color: tuple[int, int, int]) -> None:
    """Draw `shape` filling the pixels `[left, left + side) x [top, top + side)` at most."""
    right, bottom = left + side - 1, top + side - 1  # inclusive, as PIL draws them
    cx, cy, radius = (left + right) / 2, (top + bottom) / 2, (side - 1) / 2
    if shape == "circle":
        draw.ellipse((left, top, right, bottom), fill=color)
    elif shape == "square":
        draw.rectangle((left, top, right, bottom), fill=color)
    elif shape == "triangle":
        draw.polygon([(cx, top), (right, bottom), (left, bottom)], fill=color)
    elif shape == "star":
        points = []
        for k in range(10):
            r = radius if k % 2 == 0 else radius * _STAR_INNER_RATIO
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + r * math.cos(angle), cy + r * math.sin(angle)))
        draw.polygon(points, fill=color)
    elif shape == "cross":
        half = _CROSS_ARM_RATIO * (side - 1) / 2
        draw.rectangle((round(cx - half), top, round(cx + half), bottom), fill=color)
        draw.rectangle((left, round(cy - half), right, round(cy + half)), fill=color)
    else:
        raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPES}.")


def _center_origin(rng: np.random.Generator, shape: str, side: int, image_size: int) -> tuple[int, int]:
    """Top-left corner of the centre object: jittered, inside the central square, and covering the centre pixel.

    The probe pixel `(image_size // 2, image_size // 2)` must lie well inside the shape (by at least a pixel), so a
    jitter that would move the shape off it is re-drawn; after a few misses the object is placed without jitter.
    """
    low, high = central_square(image_size)
    probe = image_size // 2
    nominal = probe - (side - 1) // 2  # puts the box centre on the probe or half a pixel after it
    max_jitter = round(_CENTER_JITTER * image_size)
    safe = _safe_radius(shape, side) - 1.0
    for _ in range(8):
        jx, jy = rng.integers(-max_jitter, max_jitter + 1, size=2)
        x0 = int(np.clip(nominal + jx, low, high - side))
        y0 = int(np.clip(nominal + jy, low, high - side))
        center = (side - 1) / 2
        if math.hypot(probe - (x0 + center), probe - (y0 + center)) <= safe:
            return x0, y0
    x0 = int(np.clip(nominal, low, high - side))
    return x0, x0


def _axis_start(rng: np.random.Generator, band: int, side: int, image_size: int) -> int:
    """Start coordinate of a `side`-pixel object inside band 0 (before the centre), 1 (centre) or 2 (after it)."""
    low, high = central_square(image_size)
    if band == 0:
        first, last = min(1, low - side), low - side
    elif band == 2:
        first, last = high, max(high, image_size - side - 1)
    else:
        jitter = round(_EDGE_JITTER * image_size)
        middle = (image_size - side) // 2
        first, last = max(low, middle - jitter), min(high - side, middle + jitter)
    return int(rng.integers(first, last + 1))


def _check_image_size(image_size: int) -> None:
    if not isinstance(image_size, (int, np.integer)) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}.")


def make_scene(rng: np.random.Generator, image_size: int = 64, describe_periphery: bool = False,
               num_distractors: tuple[int, int] = (1, 3), *, center_shape: str | None = None,
               center_color: str | None = None) -> Scene:
    """Draw one random scene: a large centred object and a few small peripheral distractors on a dark background.

    The centre object's side is 35-45% of the image side; it is offset from the image centre by at most 5% of the
    side (less where needed so it stays inside the central square and always covers the pixel
    `(image_size // 2, image_size // 2)`). Each distractor (side 15-20% of the image side) sits in its own outer cell
    of the 3x3 grid around the central square, so it never overlaps the central square or another distractor.
    Distractors may repeat the centre object's colour or shape.

    Args:
        rng: Source of randomness; the scene is a deterministic function of its state.
        image_size: Side of the square image in pixels (at least 16).
        describe_periphery: Also name every distractor and its position in the caption.
        num_distractors: Inclusive `(min, max)` number of distractors, within `[0, len(POSITIONS)]`.
        center_shape: Force the centre object's shape (one of `SHAPES`) instead of drawing it at random.
        center_color: Force the centre object's colour (a key of `COLORS`) instead of drawing it at random.

    Returns:
        The `Scene`, with the image, its caption and the layout of its objects.

    Raises:
        ValueError: For an image size, distractor range, shape or colour out of range.
    """
    _check_image_size(image_size)
    min_count, max_count = num_distractors
    if not 0 <= min_count <= max_count <= len(POSITIONS):
        raise ValueError(f"num_distractors must satisfy 0 <= min <= max <= {len(POSITIONS)}, got {num_distractors}.")
    if center_shape is not None and center_shape not in SHAPES:
        raise ValueError(f"Unknown center_shape {center_shape!r}; expected one of {SHAPES}.")
    if center_color is not None and center_color not in COLORS:
        raise ValueError(f"Unknown center_color {center_color!r}; expected one of {tuple(COLORS)}.")
    color_names = tuple(COLORS)

    pixels = _background(rng, image_size)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)

    shape = center_shape if center_shape is not None else SHAPES[int(rng.integers(len(SHAPES)))]
    color = center_color if center_color is not None else color_names[int(rng.integers(len(color_names)))]
    side = max(3, round(rng.uniform(*_CENTER_SIZE_RANGE) * image_size))
    x0, y0 = _center_origin(rng, shape, side, image_size)
    _draw_shape(draw, shape, x0, y0, side, COLORS[color])
    center_box = (x0, y0, x0 + side, y0 + side)

    count = int(rng.integers(min_count, max_count + 1))
    chosen = sorted(rng.choice(len(POSITIONS), size=count, replace=False).tolist())
    band_width = central_square(image_size)[0]
    periphery, boxes = [], []
    for index in chosen:
        position = POSITIONS[index]
        d_color = color_names[int(rng.integers(len(color_names)))]
        d_shape = SHAPES[int(rng.integers(len(SHAPES)))]
        d_side = min(band_width, max(2, round(rng.uniform(*_DISTRACTOR_SIZE_RANGE) * image_size)))
        row, col = _POSITION_CELLS[position]
        left = _axis_start(rng, col, d_side, image_size)
        top = _axis_start(rng, row, d_side, image_size)
        _draw_shape(draw, d_shape, left, top, d_side, COLORS[d_color])
        periphery.append((d_color, d_shape, position))
        boxes.append((left, top, left + d_side, top + d_side))

    center_phrase = _object_phrase(color, shape)
    return Scene(image=image, caption=_caption(center_phrase, periphery, describe_periphery),
                 center_phrase=center_phrase, center_color=color, center_shape=shape, periphery=periphery,
                 distractor_boxes=boxes, center_box=center_box)


def _split_rng(seed: int, kind: int, split: int) -> np.random.Generator:
    """Independent stream per (seed, data set kind, split)."""
    return np.random.default_rng([seed, kind, split])


def _check_count(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _check_seed(seed: int) -> None:
    _check_count("seed", seed, 0)


def _marker(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"generator": __name__, "format_version": FORMAT_VERSION, "kind": kind, "params": params}


def _existing_matches(output_dir: Path, marker: dict[str, Any]) -> bool:
    """True if `output_dir` already holds this data set; False if it is absent or empty; raise otherwise."""
    if not output_dir.exists():
        return False
    if not output_dir.is_dir():
        raise ValueError(f"{output_dir} exists and is not a directory.")
    if not any(output_dir.iterdir()):
        return False
    marker_path = output_dir / MARKER_FILENAME
    found = None
    if marker_path.is_file():
        try:
            found = json.loads(marker_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            found = None
    if found == marker:
        return True
    if isinstance(found, dict) and found.get("generator") == __name__:
        raise ValueError(f"{output_dir} holds a CenterFocus data set generated with other parameters "
                         f"({found.get('kind')}: {found.get('params')}; asked for {marker['kind']}: "
                         f"{marker['params']}). Choose another output directory or remove it yourself.")
    raise ValueError(f"{output_dir} already exists, is not empty and was not written by this generator with these "
                     "parameters. Refusing to write into it; choose another output directory.")


def _write_atomically(output_dir: Path, marker: dict[str, Any], fill: Callable[[Path], None]) -> Path:
    """Run `fill(tmp_dir)` in a fresh sibling folder, add the marker, then rename it to `output_dir`.

    Nothing is ever written inside an existing non-empty folder; if another process finished the same data set first,
    its copy is kept.
    """
    if _existing_matches(output_dir, marker):
        logger.info("Reusing the data set already at %s", output_dir)
        return output_dir
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = output_dir.parent / f".{output_dir.name}.tmp-{uuid.uuid4().hex}"
    tmp_dir.mkdir()  # default permissions (unlike tempfile.mkdtemp's 0o700), as the final folder keeps them
    try:
        fill(tmp_dir)
        (tmp_dir / MARKER_FILENAME).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        try:
            os.rename(tmp_dir, output_dir)  # POSIX replaces an empty directory; never a non-empty one
        except OSError:
            if output_dir.is_dir() and not any(output_dir.iterdir()):
                output_dir.rmdir()
                os.rename(tmp_dir, output_dir)
            elif not _existing_matches(output_dir, marker):  # raises unless someone else wrote the same data set
                raise
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)  # only our own temporary folder
    return output_dir


def _save_png(image: Image.Image, path: Path) -> None:
    image.save(path, format="PNG", compress_level=6)


def generate_caption_dataset(output_dir: str | os.PathLike, num_train: int = 2000, num_test: int = 200,
                             image_size: int = 64, seed: int = 0, describe_periphery: bool = False) -> Path:
    """Write the captioning data set in the `datasets` imagefolder layout.

    Layout: `train/00000.png ...` and `train/metadata.jsonl`, the same under `test/`, and a `centerfocus_dataset.json`
    marker. Each metadata line is `{"file_name": ..., "text": <caption>, "center_phrase": ...}`. The files are a
    deterministic function of the arguments; train and test draw from independent random streams.

    Args:
        output_dir: Folder to create. It may exist if it is empty, or if it holds this very data set (same
            parameters), in which case it is returned untouched.
        num_train: Number of training images.
        num_test: Number of held-out images.
        image_size: Side of the square images in pixels (at least 16).
        seed: Non-negative random seed.
        describe_periphery: Also describe every distractor in the captions.

    Returns:
        The output folder, as a `Path`; load it with `datasets.load_dataset("imagefolder", data_dir=str(path))`.

    Raises:
        ValueError: If `output_dir` is a non-empty folder not written by this function with the same parameters, or
            for invalid arguments.
    """
    _check_count("num_train", num_train, 1)
    _check_count("num_test", num_test, 1)
    _check_image_size(image_size)
    _check_seed(seed)
    output_dir = Path(output_dir)
    params = {"num_train": int(num_train), "num_test": int(num_test), "image_size": int(image_size),
              "seed": int(seed), "describe_periphery": bool(describe_periphery)}

    def fill(root: Path) -> None:
        start = time.perf_counter()
        for split_index, (split, count) in enumerate((("train", num_train), ("test", num_test))):
            rng = _split_rng(seed, 0, split_index)
            split_dir = root / split
            split_dir.mkdir()
            lines = []
            for i in range(count):
                scene = make_scene(rng, image_size=image_size, describe_periphery=describe_periphery)
                file_name = f"{i:05d}.png"
                _save_png(scene.image, split_dir / file_name)
                lines.append(json.dumps({"file_name": file_name, "text": scene.caption,
                                         "center_phrase": scene.center_phrase}))
            (split_dir / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        logger.info("Generated %d caption images (%dx%d) in %.1fs", num_train + num_test, image_size, image_size,
                    time.perf_counter() - start)

    result = _write_atomically(output_dir, _marker("caption", params), fill)
    logger.info("Caption data set at %s", result)
    return result


def generate_classification_dataset(output_dir: str | os.PathLike, num_per_class: int = 200, image_size: int = 64,
                                    seed: int = 0) -> Path:
    """Write the stage-1 classification data set (class = shape of the centre object) in the imagefolder layout.

    Layout: `train/<shape>/00000.png ...` with `num_per_class` images per shape, `test/<shape>/...` with
    `max(1, round(0.2 * num_per_class))` per shape, and a `centerfocus_dataset.json` marker. Scenes are those of
    `make_scene` (with 1-3 distractors of any shape), so the label is only predictable from the centre.

    Args:
        output_dir: Folder to create. It may exist if it is empty, or if it holds this very data set (same
            parameters), in which case it is returned untouched.
        num_per_class: Number of training images per shape.
        image_size: Side of the square images in pixels (at least 16).
        seed: Non-negative random seed.

    Returns:
        The output folder, as a `Path`; `datasets.load_dataset("imagefolder", data_dir=str(path))` gives `image` and
        a `label` column whose class names are the shapes.

    Raises:
        ValueError: If `output_dir` is a non-empty folder not written by this function with the same parameters, or
            for invalid arguments.
    """
    _check_count("num_per_class", num_per_class, 1)
    _check_image_size(image_size)
    _check_seed(seed)
    output_dir = Path(output_dir)
    num_test = max(1, round(0.2 * num_per_class))
    params = {"num_per_class": int(num_per_class), "num_test_per_class": num_test, "image_size": int(image_size),
              "seed": int(seed)}

    def fill(root: Path) -> None:
        start = time.perf_counter()
        for split_index, (split, count) in enumerate((("train", num_per_class), ("test", num_test))):
            rng = _split_rng(seed, 1, split_index)
            for shape in SHAPES:
                (root / split / shape).mkdir(parents=True)
            for i in range(count):
                for shape in SHAPES:  # interleaved so that every class sees the same stretch of the random stream
                    scene = make_scene(rng, image_size=image_size, center_shape=shape)
                    _save_png(scene.image, root / split / shape / f"{i:05d}.png")
        logger.info("Generated %d classification images (%dx%d) in %.1fs", (num_per_class + num_test) * len(SHAPES),
                    image_size, image_size, time.perf_counter() - start)

    result = _write_atomically(output_dir, _marker("classification", params), fill)
    logger.info("Classification data set at %s", result)
    return result
