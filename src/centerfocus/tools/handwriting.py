"""The character benchmark with real handwriting: the scenes of `centerfocus.tools.characters`, with digits written by
people instead of rendered from fonts.

The glyphs are scikit-learn's copy of the UCI "Optical Recognition of Handwritten Digits" test set
(`sklearn.datasets.load_digits`, shipped inside the scikit-learn wheel; E. Alpaydin and C. Kaynak, 1998; UCI licence
CC BY 4.0): 1,797 digits written on NIST forms by 13 people, each an 8x8 grid of ink counts (0-16) of a 32x32 bitmap.
The file has no writer column, but it is in writer order: the digits come in form order (0, 1, ..., 9, 0, 1, ...),
59% of the digits have their nearest neighbour within 140 rows (16% if the rows were shuffled), and a 1-NN classifier
scores 0.95-0.99 on a held-out block of 360 consecutive rows against 0.99 on 360 random rows. So the split is by row
blocks: training glyphs are rows `[0, 1240)`, test glyphs rows `[1378, 1797)` (the last ~3 writers), with one average
writer's worth of rows (138) left out between them so that a writer whose rows straddle the boundary is not on both
sides.

Each glyph is upscaled from 8x8 (bicubic) to the digit's box in the scene, so the centre digit is a soft, blocky shape
of 100-134 px: nothing like a font's sharp strokes. Captions and metadata are the character benchmark's
("a red 7 in the centre with a small blue 3 at the left"), so `benchmarks/learning_quality.py` scores both.
"""

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from .characters import DIGITS, GlyphSource, write_digit_scenes


_KIND = 3  # random-stream family, after the character benchmark (2)
TRAIN_ROWS = (0, 1240)
TEST_ROWS = (1378, 1797)
_UPSCALE = 12  # 8x8 -> 96x96 before the scene's own resize, as the font glyphs are drawn at 96 px


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError("The handwriting benchmark reads scikit-learn's copy of the UCI handwritten digits; install "
                          "it with `pip install scikit-learn` (or the `train` extra).") from error
    images, labels = load_digits(return_X_y=True)
    return images.reshape(-1, 8, 8).astype(np.float32) / 16.0, labels.astype(int)


def handwritten_glyphs(rows: tuple[int, int]) -> GlyphSource:
    """Glyphs drawn from the handwritten digits in rows `[rows[0], rows[1])` of `load_digits`: the digit's ink counts
    as the alpha of a tile in the scene's colour, upscaled bicubically and cropped to the ink."""
    images, labels = _digits()
    images, labels = images[rows[0]:rows[1]], labels[rows[0]:rows[1]]
    by_digit = {d: images[labels == int(d)] for d in DIGITS}

    def glyph(digit: str, color: tuple, box: float, rng: np.random.Generator) -> Image.Image:
        pool = by_digit[digit]
        ink = pool[int(rng.integers(len(pool)))]
        alpha = Image.fromarray((ink * 255).astype(np.uint8)).resize((8 * _UPSCALE, 8 * _UPSCALE),
                                                                     Image.Resampling.BICUBIC)
        tile = Image.new("RGBA", alpha.size, (*color, 0))
        tile.putalpha(alpha)
        return tile.crop(alpha.getbbox() or (0, 0, 1, 1))

    return glyph


def generate_handwriting_dataset(output_dir: str | os.PathLike, num_train: int = 3000, num_test: int = 300,
                                 image_size: int = 224, seed: int = 0) -> Path:
    """Write the handwriting benchmark in the character benchmark's layout (`train/`, `test/`, `metadata.jsonl` with
    `text`, `center_phrase`, `center_digit`): training scenes from the glyphs of `TRAIN_ROWS`, test scenes from the
    writers of `TEST_ROWS`. A deterministic function of the arguments; an existing folder holding this very data set
    is returned untouched."""
    return write_digit_scenes(output_dir, "handwriting", _KIND, {"train": handwritten_glyphs(TRAIN_ROWS),
                                                                 "test": handwritten_glyphs(TEST_ROWS)},
                              num_train, num_test, image_size, seed, train_rows=list(TRAIN_ROWS),
                              test_rows=list(TEST_ROWS))
