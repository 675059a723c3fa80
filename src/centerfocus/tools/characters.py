"""A built-in benchmark that needs fine detail in the centre: digits rendered from the fonts that ship with
matplotlib, with random affine distortion, stroke width, blur, noise and peripheral clutter.

Each scene has one large coloured digit in the centre and 0-2 small coloured digits at the edge; its caption names
colour, identity and position of each: "a red 7 in the centre with a small blue 3 at the left". Colours and positions
are read at a glance; the centre digit's identity needs its strokes. Test scenes are drawn in font styles that no
training scene uses (`TRAIN_FONTS` / `TEST_FONTS`), so a model that learns the glyphs of the training fonts by heart
does not pass. The layout on disk is `centerfocus generate-data`'s (`train/`, `test/`, `metadata.jsonl` with `text` and
`center_phrase`); `centerfocus generate-data --kind characters` writes it.
"""

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .data import (
    COLORS,
    POSITIONS,
    _background,
    _check_count,
    _check_image_size,
    _check_seed,
    _join,
    _marker,
    _save_png,
    _split_rng,
    _write_atomically,
)


logger = logging.getLogger(__name__)

DIGITS = tuple("0123456789")
# matplotlib's own fonts (mpl-data/fonts/ttf): training and test styles are disjoint families and slants
TRAIN_FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "cmr10.ttf",
               "STIXGeneral.ttf", "DejaVuSerif-Bold.ttf", "cmss10.ttf")
TEST_FONTS = ("DejaVuSans-Oblique.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono-Bold.ttf", "STIXGeneralBol.ttf",
              "cmtt10.ttf")
_EDGE_POSITIONS = ("top", "left", "right", "bottom")  # one small digit per edge at most
_KIND = 2  # random-stream family, after the shapes (0) and the classification set (1)


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@dataclass
class CharacterScene:
    image: Image.Image
    caption: str
    center_phrase: str
    center_digit: str


def _glyph(digit: str, font_path: Path, size: int, color: tuple, stroke: int, rng: np.random.Generator
           ) -> Image.Image:
    """An RGBA tile holding `digit` in `color`, rotated and sheared at random, cropped to its ink."""
    font = ImageFont.truetype(str(font_path), size)
    tile = Image.new("RGBA", (size * 2, size * 2), (0, 0, 0, 0))
    ImageDraw.Draw(tile).text((size // 2, size // 4), digit, font=font, fill=(*color, 255), stroke_width=stroke,
                              stroke_fill=(*color, 255))
    shear = rng.uniform(-0.25, 0.25)
    tile = tile.transform(tile.size, Image.Transform.AFFINE, (1, shear, -shear * size, 0, 1, 0),
                          resample=Image.Resampling.BILINEAR)
    tile = tile.rotate(rng.uniform(-20, 20), resample=Image.Resampling.BILINEAR, expand=True)
    box = tile.getbbox() or (0, 0, 1, 1)
    return tile.crop(box)


def _paste_fit(canvas: Image.Image, glyph: Image.Image, centre: tuple[float, float], box: float) -> None:
    """Scale `glyph` to fit a `box`-sided square and paste it centred at `centre`."""
    scale = box / max(glyph.size)
    glyph = glyph.resize((max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))),
                         Image.Resampling.LANCZOS)
    canvas.alpha_composite(glyph, (round(centre[0] - glyph.width / 2), round(centre[1] - glyph.height / 2)))


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """A few dim strokes near the border, which the captions do not describe."""
    for _ in range(int(rng.integers(2, 6))):
        edge = rng.integers(0, 4)
        a, b = rng.uniform(0, size, 2)
        near, far = rng.uniform(0, 0.12 * size, 2)
        points = [(a, near), (b, far)] if edge == 0 else [(a, size - near), (b, size - far)] if edge == 1 else \
            [(near, a), (far, b)] if edge == 2 else [(size - near, a), (size - far, b)]
        shade = tuple(int(v) for v in rng.integers(60, 110, 3))
        draw.line(points, fill=(*shade, 255), width=int(rng.integers(1, max(2, size // 48))))


#: `glyph(digit, color, box, rng)` -> an RGBA tile of `digit` in the RGB `color`, cropped to its ink, for a square of
#: side `box` px; draws from `rng` only.
GlyphSource = Callable[[str, tuple, float, np.random.Generator], Image.Image]


def font_glyphs(fonts: tuple[str, ...] = TRAIN_FONTS) -> GlyphSource:
    """Digits rendered from one of `fonts` (matplotlib's) at random, with a random stroke width, shear and rotation."""
    folder = font_dir()

    def glyph(digit: str, color: tuple, box: float, rng: np.random.Generator) -> Image.Image:
        font = folder / fonts[int(rng.integers(len(fonts)))]
        stroke = int(rng.integers(0, max(1, round(box / 40)) + 1))
        return _glyph(digit, font, 96, color, stroke, rng)

    return glyph


def make_character_scene(rng: np.random.Generator, image_size: int = 224, fonts: tuple[str, ...] = TRAIN_FONTS,
                         max_periphery: int = 2, glyphs: Optional[GlyphSource] = None) -> CharacterScene:
    """One scene: a large digit (45-60% of the side) near the centre, 0-`max_periphery` small digits (14-18%) in the
    middle of distinct edges, clutter, then blur and noise. The digits come from `glyphs` (default: rendered from
    `fonts`; `centerfocus.tools.handwriting` gives real handwritten ones). Deterministic in `rng`'s state."""
    glyphs = glyphs or font_glyphs(fonts)
    canvas = Image.fromarray(_background(rng, image_size)).convert("RGBA")
    _clutter(ImageDraw.Draw(canvas), rng, image_size)
    names = list(COLORS)

    def draw_digit(centre, box):
        digit, color = DIGITS[int(rng.integers(len(DIGITS)))], names[int(rng.integers(len(names)))]
        _paste_fit(canvas, glyphs(digit, COLORS[color], box, rng), centre, box)
        return digit, color

    jitter = 0.04 * image_size
    centre = (image_size / 2 + rng.uniform(-jitter, jitter), image_size / 2 + rng.uniform(-jitter, jitter))
    digit, color = draw_digit(centre, rng.uniform(0.45, 0.60) * image_size)
    count = int(rng.integers(0, max_periphery + 1))
    chosen = sorted(rng.choice(len(_EDGE_POSITIONS), size=count, replace=False).tolist())
    periphery = []
    for index in chosen:
        position = _EDGE_POSITIONS[index]
        box = rng.uniform(0.14, 0.18) * image_size
        margin = 0.5 * box + 0.03 * image_size
        along = image_size / 2 + rng.uniform(-0.08, 0.08) * image_size
        where = {"top": (along, margin), "bottom": (along, image_size - margin), "left": (margin, along),
                 "right": (image_size - margin, along)}[position]
        small_digit, small_color = draw_digit(where, box)
        periphery.append((small_color, small_digit, position))
    image = canvas.convert("RGB").filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.2)))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0.0, rng.uniform(2.0, 10.0), (image_size, image_size, 3))
    image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    center_phrase = f"a {color} {digit}"
    caption = f"{center_phrase} in the centre"
    periphery.sort(key=lambda item: POSITIONS.index(item[2]))
    if periphery:
        caption += " with " + _join([f"a small {c} {d} at the {p}" for c, d, p in periphery])
    return CharacterScene(image=image, caption=caption, center_phrase=center_phrase, center_digit=digit)


def generate_character_dataset(output_dir: str | os.PathLike, num_train: int = 3000, num_test: int = 300,
                               image_size: int = 224, seed: int = 0) -> Path:
    """Write the character benchmark in the imagefolder layout: `train/` in `TRAIN_FONTS`, `test/` in `TEST_FONTS`,
    each with `metadata.jsonl` (`file_name`, `text`, `center_phrase`, `center_digit`), and the data-set marker. A
    deterministic function of the arguments; an existing folder holding this very data set is returned untouched."""
    return write_digit_scenes(output_dir, "characters", _KIND, {"train": font_glyphs(TRAIN_FONTS),
                                                                "test": font_glyphs(TEST_FONTS)},
                              num_train, num_test, image_size, seed)


def write_digit_scenes(output_dir: str | os.PathLike, kind: str, stream: int, glyphs: dict[str, GlyphSource],
                       num_train: int, num_test: int, image_size: int, seed: int, **marker_params) -> Path:
    """`num_train` / `num_test` scenes (`make_character_scene`) drawn with `glyphs["train"]` / `glyphs["test"]`, in the
    imagefolder layout under the data-set marker of `kind` (with `marker_params`); `stream` is the kind's random-stream
    family. An existing folder holding this very data set is returned untouched."""
    _check_count("num_train", num_train, 1)
    _check_count("num_test", num_test, 1)
    _check_image_size(image_size)
    _check_seed(seed)
    params = {"num_train": int(num_train), "num_test": int(num_test), "image_size": int(image_size),
              "seed": int(seed), **marker_params}

    def fill(root: Path) -> None:
        start = time.perf_counter()
        for split_index, (split, count) in enumerate((("train", num_train), ("test", num_test))):
            rng = _split_rng(seed, stream, split_index)
            (root / split).mkdir()
            lines = []
            for i in range(count):
                scene = make_character_scene(rng, image_size=image_size, glyphs=glyphs[split])
                file_name = f"{i:05d}.png"
                _save_png(scene.image, root / split / file_name)
                lines.append(json.dumps({"file_name": file_name, "text": scene.caption,
                                         "center_phrase": scene.center_phrase, "center_digit": scene.center_digit}))
            (root / split / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        logger.info("Generated %d %s scenes (%dx%d) in %.1fs", num_train + num_test, kind, image_size, image_size,
                    time.perf_counter() - start)

    result = _write_atomically(Path(output_dir), _marker(kind, params), fill)
    logger.info("%s data set at %s", kind.capitalize(), result)
    return result
