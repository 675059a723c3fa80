"""Loading and checking image-caption data sets, and the training collator."""

import csv
import io
import json
import logging
import re
from pathlib import Path
from typing import Optional

import datasets
from PIL import Image

from ..processing_centerfocus import CenterFocusProcessor
from .streaming import decode_image


logger = logging.getLogger(__name__)

_METADATA_NAMES = ("metadata.jsonl", "metadata.csv")


def _read_metadata(path: Path) -> list[tuple[int, dict]]:
    """`(line number, row)` pairs of a metadata.jsonl / metadata.csv file (the CSV header is line 1). Read as
    "utf-8-sig": a byte-order mark (Excel's UTF-8 CSV) is dropped, not taken into the first column's name."""
    try:
        if path.suffix == ".jsonl":
            rows = []
            with path.open(encoding="utf-8-sig") as handle:
                for number, line in enumerate(handle, start=1):
                    if line.strip():
                        try:
                            row = json.loads(line)
                        except json.JSONDecodeError as error:
                            raise ValueError(f"{path}: line {number} is not valid JSON ({error.msg}).") from None
                        if not isinstance(row, dict):
                            raise ValueError(f"{path}: line {number} is not a JSON object "
                                             f"(got {type(row).__name__}).")
                        rows.append((number, row))
            return rows
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            return [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text.") from None


def check_image_folder(folder: Path, required_columns: tuple[str, ...] = ()) -> None:
    """Before `load_dataset("imagefolder")`: every metadata file has `file_name` and the `required_columns`, and
    every row names a file that exists."""
    metadata_files = [p for name in _METADATA_NAMES for p in folder.rglob(name)]
    for metadata in metadata_files:
        rows = _read_metadata(metadata)
        if not rows:
            raise ValueError(f"{metadata} has no rows.")
        first = rows[0][1]
        for column in ("file_name", *required_columns):
            if column not in first:
                columns = sorted(name for name in first if isinstance(name, str))  # csv puts extra fields under None
                raise ValueError(f"{metadata} has no column {column!r} (columns: {columns}). Use "
                                 "--caption_column / --prompt_column to name the columns.")
        for number, row in rows:
            file_name = row.get("file_name")
            if file_name is None or not str(file_name).strip():
                raise ValueError(f"{metadata}, line {number}: the row has no 'file_name' "
                                 "(every row must name its image file).")
            image_path = metadata.parent / str(file_name)
            if not image_path.is_file():
                raise ValueError(f"Image file {image_path} listed in {metadata} does not exist (line {number}).")


def load_image_dataset(path_or_name: str, config_name: Optional[str] = None,
                       required_columns: tuple[str, ...] = ()) -> datasets.DatasetDict:
    """An image folder (the `imagefolder` convention), a folder saved with `save_to_disk`, or anything
    `datasets.load_dataset` accepts. `required_columns` are checked in image-folder metadata before loading."""
    path = Path(path_or_name)
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            loaded = datasets.load_from_disk(str(path))
            return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
        if any(path.rglob("metadata.*")):
            check_image_folder(path, required_columns)
            if any(path.glob("metadata.*")) and any(p.suffix.lower() in _IMAGE_SUFFIXES for p in path.iterdir()):
                return _load_flat_image_folder(path)
            return datasets.load_dataset("imagefolder", data_dir=str(path))
        return datasets.load_dataset(str(path), config_name)
    if path_or_name.startswith((".", "/", "~")):
        raise ValueError(f"Data set path {path_or_name!r} does not exist.")
    return datasets.load_dataset(path_or_name, config_name)


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# datasets' own split keywords in file names (its `data_files` patterns), first match wins
_SPLIT_NAMES = {"train": ("train", "training"), "validation": ("validation", "valid", "val", "dev"),
                "test": ("test", "testing", "eval", "evaluation")}


def _split_of(file_name: str) -> str:
    stem = file_name.lower()
    for split, keywords in _SPLIT_NAMES.items():
        if any(re.match(rf"{keyword}(?:[-._ 0-9]|$)", stem) for keyword in keywords):
            return split
    return "train"


def _load_flat_image_folder(path: Path) -> datasets.DatasetDict:
    """Images and their metadata side by side in one folder. `datasets` would assign files named after a split
    (`train_00000.png`, `test_0.png`) to that split by name and leave the metadata file out of every split, losing
    the captions; here every file is loaded as one split with its metadata, then divided by the same file-name
    keywords (one split, "train", when the names carry none)."""
    full = datasets.load_dataset("imagefolder", data_files={"train": str(path / "**")})["train"]
    names = [Path(value["path"]).name for value in full.cast_column("image", datasets.Image(decode=False))["image"]]
    splits = [_split_of(name) for name in names]
    if len(set(splits)) <= 1:
        return datasets.DatasetDict({splits[0] if splits else "train": full})
    return datasets.DatasetDict({split: full.select([i for i, s in enumerate(splits) if s == split])
                                 for split in _SPLIT_NAMES if split in splits})


def _image_source(value) -> str:
    if isinstance(value, dict):
        return value.get("path") or "<in-memory image bytes>"
    return str(value)


def _check_images(split: datasets.Dataset, image_column: str, split_name: str) -> None:
    """Open every image once so that a corrupt file stops the run before training, naming the file."""
    raw = split.cast_column(image_column, datasets.Image(decode=False))
    for index, value in enumerate(raw[image_column]):
        source = _image_source(value)
        try:
            data = value.get("bytes") if isinstance(value, dict) else None
            handle = io.BytesIO(data) if data else (value["path"] if isinstance(value, dict) else value)
            with Image.open(handle) as image:
                image.load()
        except Exception as error:  # PIL raises many types for bad files; report them all as bad data
            raise ValueError(f"Unreadable image in split {split_name!r}, row {index}: {source} ({error}).") from None


def check_caption_dataset(
    dataset: datasets.DatasetDict,
    image_column: str,
    caption_column: str,
    train_split: str = "train",
    eval_split: Optional[str] = None,
    validation_fraction: float = 0.1,
    seed: int = 42,
    prompt_column: Optional[str] = None,
) -> tuple[datasets.Dataset, Optional[datasets.Dataset]]:
    """Validate the data before any training and pick the train / evaluation splits.

    Raises:
        ValueError: naming the split, column, row or file: a missing split or column, an empty split, an empty or
            non-string caption, an unreadable image.
    """
    if train_split not in dataset:
        raise ValueError(f"The data set has no split {train_split!r}; available splits: {sorted(dataset)}.")
    if eval_split is None:
        eval_split = next((name for name in ("validation", "valid", "val", "test") if name in dataset), None)
    elif eval_split not in dataset:
        raise ValueError(f"The data set has no split {eval_split!r}; available splits: {sorted(dataset)}.")
    splits = {train_split: dataset[train_split]}
    if eval_split is not None:
        splits[eval_split] = dataset[eval_split]
    for name, split in splits.items():
        if len(split) == 0:
            raise ValueError(f"Split {name!r} is empty.")
        for column in filter(None, (image_column, caption_column, prompt_column)):
            if column not in split.column_names:
                raise ValueError(f"Split {name!r} has no column {column!r}; columns: {split.column_names}. Use "
                                 "--image_column / --caption_column to name them.")
        if isinstance(split.features[image_column], datasets.Value):  # a column of paths
            split = split.cast_column(image_column, datasets.Image())
        for index, caption in enumerate(split[caption_column]):
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError(f"Split {name!r}, row {index}: caption column {caption_column!r} holds {caption!r}; "
                                 "every caption must be non-empty text.")
        _check_images(split, image_column, name)
        splits[name] = split
    train = splits[train_split]
    if eval_split is not None:
        return train, splits[eval_split]
    if len(train) < 2 or validation_fraction <= 0:
        return train, None
    parts = train.train_test_split(test_size=validation_fraction, seed=seed)
    logger.info(f"No evaluation split: holding out {len(parts['test'])} of {len(train)} training examples.")
    return parts["train"], parts["test"]


def _where(feature: dict, image_column: str) -> str:
    key = feature.get("__key__")
    return f"image column {image_column!r}" + (f", key {key!r}" if key is not None else "")


class CaptionCollator:
    """Turns raw data-set rows (PIL images, caption strings, optional prompts) into model inputs with the processor:
    `pixel_values`, `labels` (-100 padded) and, with prompts, `input_ids` / `attention_mask`.

    Given the (autoregressive) `model`, it also adds `decoder_input_ids` derived from the labels, as transformers'
    `DataCollatorForSeq2Seq` does: the Trainer's `label_smoothing_factor` takes `labels` out of the batch before the
    forward pass, and the model then needs its decoder inputs from elsewhere."""

    def __init__(self, processor: CenterFocusProcessor, image_column: str = "image", caption_column: str = "text",
                 prompt_column: Optional[str] = None, max_target_length: Optional[int] = None, model=None):
        self.processor = processor
        self.image_column = image_column
        self.caption_column = caption_column
        self.prompt_column = prompt_column
        self.max_target_length = max_target_length
        self.model = model if model is not None and not getattr(model, "is_non_autoregressive", False) else None

    def __call__(self, features: list[dict]) -> dict:
        # a stream's images arrive encoded and are decoded here, in the DataLoader's workers
        images = [decode_image(feature[self.image_column], _where(feature, self.image_column)) for feature in features]
        captions = [feature[self.caption_column] for feature in features]
        prompts = [feature[self.prompt_column] for feature in features] if self.prompt_column else None
        batch = dict(self.processor(images=images, text=prompts, text_target=captions,
                                    max_target_length=self.max_target_length, return_tensors="pt"))
        if self.model is not None:
            batch["decoder_input_ids"] = self.model.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
        return batch
