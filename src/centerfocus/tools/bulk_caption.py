"""Captioning a data set of any size into a results file, resumably (`centerfocus caption --dataset DATA --output F`).

The data is read as a `datasets` stream in its stored order (an image folder, parquet / arrow / webdataset shards, or
a Hub data set), in batches: while the model captions one batch, a thread opens and preprocesses the next. Each row of
the results is `{"row", "source", "caption", "error"}`: `row` the position in the data, `source` the image's file
name or webdataset key, and for an image that cannot be decoded `caption` is null and `error` says why (the run goes
on). Results are written as they are made, so a crash loses at most the batch in flight:

- `.jsonl`: one line per row, flushed and fsynced after every batch; a torn last line is cut off on resume.
- `.parquet`: every batch is written as a part file (`F.parts/part-NNNNNN.parquet`, complete or absent: written under
  a temporary name and renamed), and the parts are joined into `F` when the data is done.

Run the same command again to resume: it counts the rows already written and starts after them (the data must be the
same, in the same order), so no row is captioned twice or lost. `caption_batch` is the function the Ray Data job in
`centerfocus.tools.ray_jobs` maps over batches, so a cluster writes the same rows.
"""

import concurrent.futures
import json
import logging
import os
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Optional

import datasets
import torch

from .progress import progress
from .streaming import decode_image


logger = logging.getLogger(__name__)

FORMATS = (".jsonl", ".parquet")


def caption_batch(model, processor, values: list, sources: list[str], **generate_kwargs) -> list[dict]:
    """Caption the images of one batch (`values`: what the data holds, PIL images or `{"bytes", "path"}` dicts).
    Returns one `{"source", "caption", "error"}` per image; an image that cannot be decoded gets its error, the others
    their captions."""
    images, results = [], []
    for value, source in zip(values, sources):
        try:
            images.append(decode_image(value, source))
            results.append({"source": source, "caption": None, "error": None})
        except ValueError as error:
            logger.warning(str(error))
            results.append({"source": source, "caption": None, "error": str(error)})
    readable = [r for r in results if r["error"] is None]
    if images:
        try:
            captions = _generate(model, processor, images, **generate_kwargs)
        except ValueError:  # an image the processor refuses (mode, size): caption them one by one to name it
            captions = []
            for image, row in zip(images, readable):
                try:
                    captions.append(_generate(model, processor, [image], **generate_kwargs)[0])
                except ValueError as error:
                    row["error"] = f"{row['source']}: {error}"
                    captions.append(None)
        for row, caption in zip(readable, captions):
            row["caption"] = caption
    return results


def _generate(model, processor, images, **generate_kwargs) -> list[str]:
    inputs = processor(images=images)
    with torch.inference_mode():
        output = model.generate(**inputs, **generate_kwargs)
    return [c.strip() for c in processor.batch_decode(output, skip_special_tokens=True)]


def load_rows(dataset: str, split: Optional[str] = None, config_name: Optional[str] = None,
              image_column: str = "image") -> tuple[datasets.IterableDataset, Optional[int]]:
    """The split to caption as a stream with undecoded images, and its number of rows when the data set says it."""
    from .caption_data import load_image_dataset
    from .streaming import SHARD_FORMATS, check_stream_columns, load_streaming_dataset

    path = Path(dataset)
    shards = path.is_dir() and any(p.suffix in SHARD_FORMATS for p in path.rglob("*"))
    lengths = {}
    if shards or not path.is_dir():
        splits = load_streaming_dataset(dataset, config_name)
    else:  # an image folder: its metadata is checked, then its Arrow cache is read as a stream
        in_memory = load_image_dataset(dataset, config_name)
        lengths = {name: len(split) for name, split in in_memory.items()}
        splits = datasets.IterableDatasetDict({name: split.to_iterable_dataset() for name, split in in_memory.items()})
    if split is None:
        if len(splits) != 1:
            raise ValueError(f"The data set has the splits {sorted(splits)}: name the one to caption with --split.")
        split = next(iter(splits))
    if split not in splits:
        raise ValueError(f"The data set has no split {split!r}; available splits: {sorted(splits)}.")
    rows = splits[split]
    check_stream_columns(rows, split, (image_column,))
    info = rows.info.splits.get(split) if rows.info and rows.info.splits else None
    total = lengths.get(split) or (info.num_examples if info else None) or None
    return rows.cast_column(image_column, datasets.Image(decode=False)), total


def _source(row: dict, image_column: str, position: int) -> str:
    value = row[image_column]
    path = value.get("path") if isinstance(value, dict) else None
    return row.get("__key__") or (os.path.basename(path) if path else f"row {position}")


class _JsonlWriter:
    def __init__(self, path: Path):
        self.path = path
        self.done = 0
        if path.exists():
            data = path.read_bytes()
            complete = data[: data.rfind(b"\n") + 1]  # a line torn by a crash is cut off and captioned again
            if len(complete) != len(data):
                path.write_bytes(complete)
            self.done = complete.count(b"\n")
        self.handle = path.open("a", encoding="utf-8")

    def write(self, rows: list[dict]) -> None:
        self.handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self, finished: bool = True) -> None:
        self.handle.close()


class _ParquetWriter:
    def __init__(self, path: Path):
        import pyarrow.parquet as pq

        self.pq, self.path = pq, path
        self.parts = path.with_name(path.name + ".parts")
        if path.exists() and not self.parts.exists():
            raise ValueError(f"{path} is a finished results file; captioning again would replace it: move it or "
                             "choose another --output.")
        self.parts.mkdir(exist_ok=True)
        for temporary in self.parts.glob("*.tmp"):
            temporary.unlink()
        self.files = sorted(self.parts.glob("part-*.parquet"))
        self.done = sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)

    def write(self, rows: list[dict]) -> None:
        import pyarrow as pa

        table = pa.Table.from_pylist(rows, schema=_schema())
        target = self.parts / f"part-{len(self.files):06d}.parquet"
        temporary = target.with_suffix(".tmp")
        self.pq.write_table(table, temporary)
        os.replace(temporary, target)  # a part is there whole or not at all
        self.files.append(target)

    def close(self, finished: bool = True) -> None:
        if not finished:
            return
        import pyarrow as pa

        tables = [self.pq.read_table(f) for f in self.files]
        table = pa.concat_tables(tables) if tables else _schema().empty_table()
        temporary = self.path.with_name(self.path.name + ".tmp")
        self.pq.write_table(table, temporary)
        os.replace(temporary, self.path)
        for part in self.files:
            part.unlink()
        self.parts.rmdir()


def _schema():
    import pyarrow as pa

    return pa.schema([("row", pa.int64()), ("source", pa.string()), ("caption", pa.string()), ("error", pa.string())])


def _batches(rows: Iterable[dict], size: int, start: int) -> Iterator[tuple[int, list[dict]]]:
    iterator = iter(rows)
    position = start
    while batch := list(islice(iterator, size)):
        yield position, batch
        position += len(batch)


def caption_dataset(model, processor, rows: datasets.IterableDataset, output: str, batch_size: int = 32,
                    image_column: str = "image", total: Optional[int] = None, **generate_kwargs) -> dict:
    """Caption every row of `rows` into `output` (`.jsonl` or `.parquet`), resuming after the rows it already holds.
    Returns `{"rows": rows written by this call, "errors": of those, the undecodable, "skipped": rows already done}`."""
    path = Path(output)
    if path.suffix not in FORMATS:
        raise ValueError(f"--output must end in {' or '.join(FORMATS)}, got {output!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = _JsonlWriter(path) if path.suffix == ".jsonl" else _ParquetWriter(path)
    done = writer.done
    if done:
        logger.info(f"{path} holds {done} rows already: resuming after them.")
    model.eval()
    written = errors = 0

    def prepare(item):  # runs in the reading thread: the stream's reading and decoding overlap the model's work
        position, batch = item
        sources = [_source(row, image_column, position + i) for i, row in enumerate(batch)]
        return position, [row[image_column] for row in batch], sources

    finished = False
    with progress(total=total, desc="Captioning", unit="image") as bar, \
            concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        bar.update(done)
        batches = _batches(rows.skip(done) if done else rows, batch_size, done)
        pending = pool.submit(lambda: next(map(prepare, batches), None))
        try:
            while (item := pending.result()) is not None:
                pending = pool.submit(lambda: next(map(prepare, batches), None))
                position, values, sources = item
                results = caption_batch(model, processor, values, sources, **generate_kwargs)
                writer.write([{"row": position + i, **r} for i, r in enumerate(results)])
                written += len(results)
                errors += sum(r["error"] is not None for r in results)
                bar.update(len(results))
            finished = True
        finally:
            writer.close(finished)
    return {"rows": written, "errors": errors, "skipped": done}
