"""The built-in synthetic data set: layout, determinism, and captions checked against the pixels they describe."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from centerfocus.tools.data import (
    COLORS,
    POSITIONS,
    SHAPES,
    generate_caption_dataset,
    generate_classification_dataset,
    make_scene,
)


# Independent statement of the specification, not read from the module under test.
EXPECTED_SHAPES = ("circle", "square", "triangle", "star", "cross")
STRUCTURAL_WORDS = {"a", "small", "in", "the", "centre", "with", "at", "and"}
POSITION_WORDS = {"top", "bottom", "left", "right"}
# (row, column) of each position in the 3x3 grid whose middle cell is the central square.
POSITION_CELLS = {"top left": (0, 0), "top": (0, 1), "top right": (0, 2), "left": (1, 0), "right": (1, 2),
                  "bottom left": (2, 0), "bottom": (2, 1), "bottom right": (2, 2)}
BRIGHT = 128  # objects have a channel >= 200, the background stays dark


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(np.int16)


def square_bounds(size: int) -> tuple[int, int]:
    """Central square (side half the image side) as a pixel range [lo, hi)."""
    return size // 4, size - size // 4


def cell_slices(size: int, position: str) -> tuple[slice, slice]:
    lo, hi = square_bounds(size)
    bands = [slice(0, lo), slice(lo, hi), slice(hi, size)]
    row, col = POSITION_CELLS[position]
    return bands[row], bands[col]


def closest_color(rgb) -> str:
    return min(COLORS, key=lambda name: float(np.linalg.norm(np.subtract(COLORS[name], rgb, dtype=float))))


def color_mask(arr: np.ndarray, name: str) -> np.ndarray:
    return (arr == np.array(COLORS[name])).all(axis=-1)


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def classify_shape(mask: np.ndarray) -> str:
    """Shape from geometry alone: fill ratio of the bounding box and coverage of its bottom row.

    Expected (continuous) values: square 1.0 / 1.0, triangle 0.5 / 1.0, circle pi/4 / ~0, cross (arm 0.4) 0.64 / 0.4,
    five-pointed star (inner radius 0.5) about 0.43 / two tips.
    """
    x0, y0, x1, y1 = bbox(mask)
    box = mask[y0:y1, x0:x1]
    fill = box.mean()
    bottom = box[-1].mean()
    if bottom > 0.85:
        return "square" if fill > 0.8 else "triangle"
    if fill > 0.72:
        return "circle"
    return "cross" if fill > 0.53 else "star"


def read_metadata(split_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (split_dir / "metadata.jsonl").read_text().splitlines() if line]


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_tables_match_specification():
    assert SHAPES == EXPECTED_SHAPES
    assert len(COLORS) == 6
    values = [np.array(v, dtype=float) for v in COLORS.values()]
    # clearly distinct: every pair far apart in RGB, every colour bright enough to stand out from a dark background
    assert min(np.linalg.norm(a - b) for i, a in enumerate(values) for b in values[i + 1:]) > 80
    assert all(v.max() >= 200 for v in values)
    assert set(POSITIONS) <= set(POSITION_CELLS)


def test_generation_is_deterministic(tmp_path):
    first = generate_caption_dataset(tmp_path / "a", num_train=8, num_test=3, seed=0, describe_periphery=True)
    second = generate_caption_dataset(tmp_path / "b", num_train=8, num_test=3, seed=0, describe_periphery=True)
    other = generate_caption_dataset(tmp_path / "c", num_train=8, num_test=3, seed=1, describe_periphery=True)
    assert isinstance(first, Path) and first == tmp_path / "a"
    files_a, files_b, files_c = all_files(first), all_files(second), all_files(other)
    assert len([name for name in files_a if name.endswith(".png")]) == 11
    assert files_a == files_b
    for name in files_a:
        if name.endswith(".png"):
            assert files_a[name] != files_c[name], name
    # train and test come from different random streams
    assert not np.array_equal(pixels(Image.open(first / "train" / "00000.png")),
                              pixels(Image.open(first / "test" / "00000.png")))
    # no temporary folders left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]


@pytest.mark.parametrize("size", [32, 64, 224])
@pytest.mark.parametrize("shape", EXPECTED_SHAPES)
def test_centre_pixel_has_the_named_colour(size, shape):
    rng = np.random.default_rng(size)
    for _ in range(60 if size < 224 else 12):
        scene = make_scene(rng, image_size=size, center_shape=shape)
        arr = pixels(scene.image)
        assert scene.image.size == (size, size) and scene.image.mode == "RGB"
        named_color = scene.caption.split()[1]  # "a <color> <shape> in the centre"
        assert scene.caption.split()[2] == shape
        centre = arr[size // 2, size // 2]
        assert tuple(centre) == COLORS[named_color]
        assert closest_color(centre) == named_color


def test_random_scenes_name_the_centre_colour_and_shape():
    rng = np.random.default_rng(7)
    seen_shapes, seen_colors = set(), set()
    for _ in range(300):
        scene = make_scene(rng, image_size=64)
        words = scene.caption.split()
        assert scene.center_phrase == " ".join(words[:3])
        assert scene.caption == f"{scene.center_phrase} in the centre"
        assert tuple(pixels(scene.image)[32, 32]) == COLORS[words[1]]
        seen_colors.add(words[1])
        seen_shapes.add(words[2])
    assert seen_shapes == set(EXPECTED_SHAPES) and seen_colors == set(COLORS)


def test_centre_shape_is_drawn_as_named():
    rng = np.random.default_rng(3)
    size = 224
    lo, hi = square_bounds(size)
    for _ in range(40):
        scene = make_scene(rng, image_size=size)
        arr = pixels(scene.image)
        _, color, shape = scene.center_phrase.split()
        inner = color_mask(arr[lo:hi, lo:hi], color)
        assert classify_shape(inner) == shape, scene.caption


@pytest.mark.parametrize("size", [32, 64, 224])
def test_layout_centre_inside_central_square_distractors_outside(size):
    rng = np.random.default_rng(11)
    lo, hi = square_bounds(size)
    checked_unique = 0
    for i in range(80 if size < 224 else 20):
        scene = make_scene(rng, image_size=size, num_distractors=(3, 3) if i % 2 else (1, 3))
        arr = pixels(scene.image)
        bright = arr.max(axis=-1) > BRIGHT
        centre_rgb = np.array(COLORS[scene.center_color])
        # pixel evidence: the central square holds nothing bright but the centre object's colour
        inner = arr[lo:hi, lo:hi][bright[lo:hi, lo:hi]]
        assert (inner == centre_rgb).all()
        # the centre object is large and near the middle
        cx0, cy0, cx1, cy1 = bbox(color_mask(arr[lo:hi, lo:hi], scene.center_color))
        side = max(cx1 - cx0, cy1 - cy0)
        assert 0.35 * size - 2 <= side <= 0.45 * size + 1
        assert abs((cx0 + cx1) / 2 + lo - size / 2) <= 0.05 * size + 1
        # every bright pixel outside the central square belongs to a reported distractor box
        outside = bright.copy()
        outside[lo:hi, lo:hi] = False
        covered = np.zeros_like(outside)
        boxes = scene.distractor_boxes
        assert len(boxes) == len(scene.periphery) and 1 <= len(boxes) <= 3
        for (left, top, right, bottom), (color, _, _) in zip(boxes, scene.periphery):
            assert 0 <= left < right <= size and 0 <= top < bottom <= size
            overlaps_x = left < hi and right > lo
            overlaps_y = top < hi and bottom > lo
            assert not (overlaps_x and overlaps_y), "distractor box intersects the central square"
            assert max(right - left, bottom - top) <= 0.2 * size + 1
            patch = arr[top:bottom, left:right]
            assert (patch == np.array(COLORS[color])).all(axis=-1).sum() >= 2
            covered[top:bottom, left:right] = True
        assert not (outside & ~covered).any()
        # distractors at distinct positions and pairwise disjoint
        assert len({position for _, _, position in scene.periphery}) == len(scene.periphery)
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                (l1, t1, r1, b1), (l2, t2, r2, b2) = boxes[a], boxes[b]
                assert r1 <= l2 or r2 <= l1 or b1 <= t2 or b2 <= t1
        # with a centre colour no distractor shares, no pixel of that colour leaves the central square
        if all(color != scene.center_color for color, _, _ in scene.periphery):
            checked_unique += 1
            x0, y0, x1, y1 = bbox(color_mask(arr, scene.center_color))
            assert lo <= x0 and x1 <= hi and lo <= y0 and y1 <= hi
    assert checked_unique >= 5


def test_captions_describe_the_periphery_only_when_asked():
    vocabulary = STRUCTURAL_WORDS | POSITION_WORDS | set(COLORS) | set(EXPECTED_SHAPES)
    colors, shapes = "|".join(COLORS), "|".join(EXPECTED_SHAPES)
    positions = "|".join(sorted(POSITION_CELLS, key=len, reverse=True))
    item = rf"a small (?:{colors}) (?:{shapes}) at the (?:{positions})"
    grammar = re.compile(rf"a (?:{colors}) (?:{shapes}) in the centre with {item}(?:(?:, {item})* and {item})?")
    size = 64
    counts = set()
    rng_plain, rng_described = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(150):
        plain = make_scene(rng_plain, image_size=size)
        described = make_scene(rng_described, image_size=size, describe_periphery=True)
        # the flag changes only the caption, not the scene
        assert np.array_equal(pixels(plain.image), pixels(described.image))
        assert plain.caption == f"{plain.center_phrase} in the centre"
        assert not POSITION_WORDS & set(plain.caption.split()) and "small" not in plain.caption
        assert described.caption.startswith(plain.caption + " with ")
        assert grammar.fullmatch(described.caption), described.caption
        assert described.caption == described.caption.lower()
        assert set(described.caption.replace(",", "").split()) <= vocabulary
        mentioned = re.findall(rf"a small ({colors}) ({shapes}) at the ({positions})(?=,| and|$)", described.caption)
        assert len(mentioned) == len(described.periphery) == described.caption.count(" at the ")
        counts.add(len(mentioned))
        arr = pixels(described.image)
        for color, _, position in mentioned:
            rows, cols = cell_slices(size, position)
            assert color_mask(arr[rows, cols], color).sum() >= 4, (described.caption, position)
        # cells not mentioned hold no object
        for position in set(POSITION_CELLS) - {p for _, _, p in mentioned}:
            rows, cols = cell_slices(size, position)
            assert not (arr[rows, cols].max(axis=-1) > BRIGHT).any(), (described.caption, position)
    assert counts == {1, 2, 3}


def test_caption_dataset_layout_and_imagefolder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets
    out = generate_caption_dataset(tmp_path / "data", num_train=20, num_test=5, image_size=32, seed=3)
    for split, count in (("train", 20), ("test", 5)):
        records = read_metadata(out / split)
        assert len(records) == count
        for record in records:
            assert set(record) == {"file_name", "text", "center_phrase"}
            assert record["text"] == f"{record['center_phrase']} in the centre"
            image = Image.open(out / split / record["file_name"])
            assert image.size == (32, 32)
            assert tuple(pixels(image)[16, 16]) == COLORS[record["center_phrase"].split()[1]]
    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "cache"))
    assert set(loaded) == {"train", "test"}
    for split, count in (("train", 20), ("test", 5)):
        assert set(loaded[split].column_names) == {"image", "text", "center_phrase"}
        assert loaded[split].num_rows == count
        by_text = sorted(r["text"] for r in read_metadata(out / split))
        assert sorted(loaded[split]["text"]) == by_text
    row = loaded["train"][0]
    assert tuple(pixels(row["image"])[16, 16]) == COLORS[row["center_phrase"].split()[1]]


def test_classification_dataset_and_imagefolder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets
    size = 128
    out = generate_classification_dataset(tmp_path / "cls", num_per_class=5, image_size=size, seed=0)
    lo, hi = square_bounds(size)
    for split, count in (("train", 5), ("test", 1)):
        assert sorted(p.name for p in (out / split).iterdir()) == sorted(EXPECTED_SHAPES)
        for shape in EXPECTED_SHAPES:
            files = sorted((out / split / shape).glob("*.png"))
            assert len(files) == count
            for path in files:
                arr = pixels(Image.open(path))
                color = closest_color(arr[size // 2, size // 2])
                assert classify_shape(color_mask(arr[lo:hi, lo:hi], color)) == shape, path
    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "cache"))
    assert set(loaded) == {"train", "test"}
    assert loaded["train"].num_rows == 25 and loaded["test"].num_rows == 5
    names = loaded["train"].features["label"].names
    assert sorted(names) == sorted(EXPECTED_SHAPES)
    assert sorted(names[label] for label in loaded["train"]["label"]) == sorted(EXPECTED_SHAPES * 5)


def test_refuses_foreign_directory_and_reuses_identical(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError):
        generate_caption_dataset(foreign, num_train=4, num_test=2)
    with pytest.raises(ValueError):
        generate_classification_dataset(foreign, num_per_class=2)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"] and (foreign / "notes.txt").read_text() == "mine"

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError):
        generate_caption_dataset(a_file, num_train=4, num_test=2)
    assert a_file.read_text() == "x"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert generate_caption_dataset(empty, num_train=4, num_test=2) == empty
    assert len(list((empty / "train").glob("*.png"))) == 4

    out = generate_caption_dataset(tmp_path / "data", num_train=4, num_test=2, seed=5)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    os.utime(out / "train" / "00000.png", ns=(1, 1))  # a regeneration would reset this timestamp
    before[out / "train" / "00000.png"] = (1, before[out / "train" / "00000.png"][1])
    assert generate_caption_dataset(out, num_train=4, num_test=2, seed=5) == out
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    assert after == before
    with pytest.raises(ValueError):
        generate_caption_dataset(out, num_train=4, num_test=2, seed=6)
    with pytest.raises(ValueError):
        generate_caption_dataset(out, num_train=4, num_test=2, seed=5, describe_periphery=True)
    with pytest.raises(ValueError):
        generate_classification_dataset(out, num_per_class=4, seed=5)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()} == before

    cls = generate_classification_dataset(tmp_path / "cls", num_per_class=2, image_size=32)
    assert generate_classification_dataset(cls, num_per_class=2, image_size=32) == cls
    with pytest.raises(ValueError):
        generate_classification_dataset(cls, num_per_class=2, image_size=64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cls", "data", "empty", "file", "foreign"]


def test_character_benchmark_scenes_show_what_their_captions_say(tmp_path):
    import json as json_module

    from centerfocus.tools.characters import TEST_FONTS, TRAIN_FONTS, font_dir, generate_character_dataset
    from centerfocus.tools.data import COLORS

    assert not set(TRAIN_FONTS) & set(TEST_FONTS)  # held-out styles
    assert all((font_dir() / name).is_file() for name in TRAIN_FONTS + TEST_FONTS)  # matplotlib's own fonts
    path = generate_character_dataset(tmp_path / "chars", num_train=30, num_test=10, image_size=96, seed=3)
    assert generate_character_dataset(tmp_path / "chars", num_train=30, num_test=10, image_size=96, seed=3) == path
    digits = set()
    for split, count in (("train", 30), ("test", 10)):
        rows = [json_module.loads(line) for line in (path / split / "metadata.jsonl").read_text().splitlines()]
        assert len(rows) == count
        for row in rows:
            color, digit = row["center_phrase"].split()[1:]
            assert row["text"].startswith(row["center_phrase"] + " in the centre") and digit == row["center_digit"]
            digits.add(digit)
            # the centre's ink is the caption's colour: every colour has a channel >= 200, the background and the
            # clutter stay below 72 and 110 (blur and noise move them by some tens at most)
            pixels = np.asarray(Image.open(path / split / row["file_name"]).convert("RGB"), dtype=float)[29:67, 29:67]
            ink = pixels[pixels.max(axis=-1) > 150]
            assert len(ink) > 20, row
            nearest = min(COLORS, key=lambda name: np.abs(np.median(ink, axis=0) - COLORS[name]).sum())
            assert nearest == color, row
    assert len(digits) >= 8  # the identities vary


def test_generate_data_selects_the_character_benchmark(tmp_path, capsys):
    from centerfocus.tools.cli import main

    assert main(["generate-data", "--kind", "characters", "--output_dir", str(tmp_path / "c"), "--num_train", "3",
                 "--num_test", "2", "--image_size", "64"]) == 0
    assert json.loads((tmp_path / "c" / "centerfocus_dataset.json").read_text())["kind"] == "characters"
    assert len((tmp_path / "c" / "test" / "metadata.jsonl").read_text().splitlines()) == 2


def test_handwriting_benchmark_draws_train_and_test_digits_from_disjoint_writers(tmp_path):
    """Every glyph is one of the real scans of its split's rows, of the digit it is asked for: compared with the tile
    each single row gives, the training glyphs come from TRAIN_ROWS only and the test glyphs from TEST_ROWS only."""
    from sklearn.datasets import load_digits

    from centerfocus.tools.handwriting import TEST_ROWS, TRAIN_ROWS, handwritten_glyphs

    labels = load_digits().target
    assert 0 <= TRAIN_ROWS[0] < TRAIN_ROWS[1] < TEST_ROWS[0] < TEST_ROWS[1] <= len(labels)
    single = {row: handwritten_glyphs((row, row + 1)) for row in range(len(labels))}
    rng = np.random.default_rng(0)
    for rows in (TRAIN_ROWS, TEST_ROWS):
        glyph = handwritten_glyphs(rows)
        for digit in "0123456789":
            tile = np.asarray(glyph(digit, (255, 0, 0), 100.0, rng))
            sources = [row for row in range(len(labels)) if labels[row] == int(digit)
                       and np.array_equal(np.asarray(single[row](digit, (255, 0, 0), 100.0, rng)), tile)]
            assert sources and all(rows[0] <= row < rows[1] for row in sources), (digit, sources)
            assert tile[..., 3].max() > 200 and (tile[..., :3] == (255, 0, 0)).all()  # ink in the asked colour


def test_handwriting_benchmark_scenes_and_captions(tmp_path, capsys):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from learning_quality import CENTRE, EDGE

    from centerfocus.tools.cli import main

    folder = tmp_path / "hw"
    assert main(["generate-data", "--kind", "handwriting", "--output_dir", str(folder), "--num_train", "20",
                 "--num_test", "6", "--image_size", "96"]) == 0
    marker = json.loads((folder / "centerfocus_dataset.json").read_text())
    assert marker["kind"] == "handwriting"
    first = {split: (folder / split / "metadata.jsonl").read_text() for split in ("train", "test")}
    for split, count in (("train", 20), ("test", 6)):
        rows = [json.loads(line) for line in first[split].splitlines()]
        assert len(rows) == count
        for row in rows:
            match = CENTRE.match(row["text"])  # the benchmark's own parser reads every caption
            assert match and match.group(2) == row["center_digit"] and row["center_phrase"] == " ".join(
                ["a", match.group(1), match.group(2)])
            color = match.group(1)
            pixels = np.asarray(Image.open(folder / split / row["file_name"]).convert("RGB"), dtype=float)[29:67, 29:67]
            ink = pixels[pixels.max(axis=-1) > 150]
            assert len(ink) > 20, row
            assert min(COLORS, key=lambda name: np.abs(np.median(ink, axis=0) - COLORS[name]).sum()) == color, row
            tail = row["text"][match.end():]
            assert tail == "" or (tail.startswith(" with ") and EDGE.findall(tail)), row
    # deterministic: another folder with the same arguments holds the same captions and pixels
    again = tmp_path / "again"
    assert main(["generate-data", "--kind", "handwriting", "--output_dir", str(again), "--num_train", "20",
                 "--num_test", "6", "--image_size", "96"]) == 0
    for split in ("train", "test"):
        assert (again / split / "metadata.jsonl").read_text() == first[split]
        assert (again / split / "00003.png").read_bytes() == (folder / split / "00003.png").read_bytes()
