"""Data that does not fit in memory: image-caption shards read as a `datasets` stream (`streaming=True`).

`centerfocus train --streaming` reads local parquet or arrow shards, or webdataset-style tar shards (`000001.png` +
`000001.txt` per example), through `datasets.load_dataset(..., streaming=True)`: nothing is read before the first step,
images stay encoded in the stream and are decoded by the collator, that is in the DataLoader's workers
(`--dataloader_num_workers`, which `datasets` gives whole shards each), and the training order comes from a seeded
shuffle buffer. Memory depends on the buffer and the batch, not on the number of shards
(`benchmarks/streaming_memory.py`).

Resuming (`--resume_from_checkpoint`) continues at the checkpoint's step on the same order: the Trainer replays the
stream up to that step (the same seed, shards and shuffle buffer give the same batches) and skips what it replayed,
so within an epoch no example is trained on twice and none is left out (`tests/integration/test_streaming.py`).
"""

import io
import logging
from pathlib import Path
from typing import Optional

import datasets
from PIL import Image


logger = logging.getLogger(__name__)

#: Suffixes of the shard files `--streaming` reads from a folder, and the `datasets` builder for each.
SHARD_FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".tar": "webdataset"}


def load_streaming_dataset(path_or_name: str, config_name: Optional[str] = None) -> datasets.IterableDatasetDict:
    """A `datasets` stream of every split of a folder of shards (split by file name as `datasets` does:
    `train-00000.parquet`, `test-00000.tar`, or `train/` and `test/` sub-folders), or of anything
    `datasets.load_dataset(..., streaming=True)` accepts."""
    path = Path(path_or_name)
    if path.is_dir():
        suffixes = {p.suffix for p in path.rglob("*") if p.suffix in SHARD_FORMATS}
        if not suffixes:
            raise ValueError(f"--streaming: {path} holds no shard files ({', '.join(sorted(SHARD_FORMATS))}). "
                             "Write shards with `centerfocus.tools.streaming.write_shards`, or train without "
                             "--streaming.")
        if len(suffixes) > 1:
            raise ValueError(f"--streaming: {path} mixes shard formats {sorted(suffixes)}; keep one per folder.")
    elif path_or_name.startswith((".", "/", "~")):
        raise ValueError(f"Data set path {path_or_name!r} does not exist.")
    loaded = datasets.load_dataset(path_or_name, config_name, streaming=True)
    if not isinstance(loaded, datasets.IterableDatasetDict):
        loaded = datasets.IterableDatasetDict({"train": loaded})
    return loaded


def check_stream_columns(split: datasets.IterableDataset, split_name: str, columns: tuple[str, ...]) -> None:
    """`ValueError` naming a missing column and the columns the stream has (read from its first example when the
    builder does not know its features in advance, as for webdataset shards)."""
    names = list(split.features) if split.features is not None else list(next(iter(split.take(1)), {}))
    for column in columns:
        if column not in names:
            hint = (" Webdataset shards name columns after the file suffixes (e.g. --image_column png "
                    "--caption_column txt).") if any(n in names for n in ("__key__", "__url__")) else ""
            raise ValueError(f"Split {split_name!r} has no column {column!r}; columns: {names}. Use --image_column / "
                             f"--caption_column to name them.{hint}")


def undecoded_images(split: datasets.IterableDataset, image_column: str) -> datasets.IterableDataset:
    """The stream with its images left encoded (bytes or path), for the collator to decode in the DataLoader's workers;
    a column of paths is read as images too."""
    return split.cast_column(image_column, datasets.Image(decode=False))


def decode_image(value, where: str) -> Image.Image:
    """A PIL image from what a data set row holds (a PIL image, `{"bytes": ..., "path": ...}`, or a path), fully read;
    `ValueError` naming `where` and the file for anything that is not a readable image."""
    if isinstance(value, Image.Image):
        return value
    source = value.get("path") if isinstance(value, dict) else value
    try:
        data = value.get("bytes") if isinstance(value, dict) else None
        image = Image.open(io.BytesIO(data) if data else source)
        image.load()
        return image
    except Exception as error:  # PIL raises many types for bad files; report them all as bad data
        raise ValueError(f"Unreadable image at {where}{f' ({source})' if source else ''}: {error}") from None


def write_shards(dataset: datasets.Dataset, output_dir: str, split: str = "train", num_shards: int = 1,
                 format: str = "parquet") -> list[Path]:
    """Write `dataset` (with an `image` column of images or paths) as `num_shards` files `{split}-0000i-of-0000n` in
    `output_dir`, in `format` "parquet" or "webdataset" (tar files of `<key>.png` + `<key>.txt`, the caption from the
    `text` column). Returns the paths written."""
    import tarfile

    if format not in ("parquet", "webdataset"):
        raise ValueError(f"format must be 'parquet' or 'webdataset', got {format!r}.")
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if "image" in dataset.column_names and isinstance(dataset.features["image"], datasets.Value):
        dataset = dataset.cast_column("image", datasets.Image())
    paths = []
    for index in range(num_shards):
        shard = dataset.shard(num_shards, index, contiguous=True)
        name = f"{split}-{index:05d}-of-{num_shards:05d}"
        if format == "parquet":
            path = output / f"{name}.parquet"
            shard.to_parquet(str(path))
        else:
            path = output / f"{name}.tar"
            raw = shard.cast_column("image", datasets.Image(decode=False))
            with tarfile.open(path, "w") as tar:
                for row_index, row in enumerate(raw):
                    key = f"{index:05d}{row_index:07d}"
                    image = row["image"]
                    data = image["bytes"] if image.get("bytes") else Path(image["path"]).read_bytes()
                    for suffix, payload in (("png", data), ("txt", row["text"].encode("utf-8"))):
                        info = tarfile.TarInfo(f"{key}.{suffix}")
                        info.size = len(payload)
                        tar.addfile(info, io.BytesIO(payload))
        paths.append(path)
    return paths
