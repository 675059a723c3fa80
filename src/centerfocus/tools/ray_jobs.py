"""Bulk captioning on a Ray cluster (`pip install "centerfocus[ray]"`): Ray Data reads the shards, one model replica
per actor captions batches with the same `caption_batch` as `centerfocus caption --dataset`, and the results are
written as parquet files, one row per image (`row` is absent: Ray numbers nothing; `source` names the image).

On one machine (a local Ray instance is started):

    python -m centerfocus.tools.ray_jobs --model runs/captioner --input shards/ --output captions/

On a cluster (every node needs centerfocus installed and the model folder and shards at the same path, e.g. shared
storage or s3://...):

    ray job submit --address http://HEAD:8265 -- \\
        python -m centerfocus.tools.ray_jobs --model /shared/captioner --input s3://bucket/shards/ \\
        --output s3://bucket/captions/ --replicas 8 --batch_size 64
"""

import argparse
import os
from typing import Optional

import numpy as np


class CaptionReplica:
    """A Ray Data callable class: loads the model once per actor and captions each batch of rows."""

    def __init__(self, model: str, image_column: str = "image", generate_kwargs: Optional[dict] = None):
        from ..modeling_centerfocus import CenterFocusForConditionalGeneration
        from ..processing_centerfocus import CenterFocusProcessor

        self.model = CenterFocusForConditionalGeneration.from_pretrained(model).eval()
        self.processor = CenterFocusProcessor.from_pretrained(model)
        self.image_column = image_column
        self.generate_kwargs = generate_kwargs or {}

    def __call__(self, batch: dict) -> dict:
        from .bulk_caption import caption_batch

        values = list(batch[self.image_column])
        sources = [_source(value, index) for index, value in enumerate(values)]
        results = caption_batch(self.model, self.processor, values, sources, **self.generate_kwargs)
        return {name: np.array([r[name] for r in results], dtype=object) for name in ("source", "caption", "error")}


def _source(value, index: int) -> str:
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"]).rsplit("/", 1)[-1]
    return f"batch row {index}"


def caption_with_ray(model: str, input_path: str, output_path: str, batch_size: int = 32, replicas: int = 1,
                     image_column: str = "image", **generate_kwargs) -> int:
    """Caption the parquet shards under `input_path` (an `image` column of `{"bytes", "path"}` structs, as
    `datasets` and `centerfocus.tools.streaming.write_shards` write them) into parquet files under `output_path`,
    with `replicas` model actors. Returns the number of rows written. Uses the running Ray instance, or starts a
    local one."""
    from pathlib import Path

    import ray

    # the actors run in other working folders: local paths are made absolute
    model, input_path, output_path = (str(Path(p).resolve()) if "://" not in p else p
                                      for p in (model, input_path, output_path))
    if not ray.is_initialized():
        # inside `ray job submit` (RAY_ADDRESS set) this joins the cluster; otherwise it starts a local instance
        ray.init(**({} if os.environ.get("RAY_ADDRESS") else {"include_dashboard": False, "log_to_driver": False}))
    rows = ray.data.read_parquet(input_path, columns=[image_column])
    captions = rows.map_batches(CaptionReplica, fn_constructor_kwargs={
        "model": model, "image_column": image_column, "generate_kwargs": generate_kwargs},
        batch_size=batch_size, concurrency=replicas, batch_format="numpy")
    captions.write_parquet(output_path)
    return ray.data.read_parquet(output_path).count()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m centerfocus.tools.ray_jobs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="A saved CenterFocus captioner folder.")
    parser.add_argument("--input", required=True, help="Parquet shards (a folder, a file, or a glob; s3:// works).")
    parser.add_argument("--output", required=True, help="Folder for the results' parquet files.")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--replicas", type=int, default=1, help="Model actors (one per CPU or GPU you give Ray).")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--num_beams", type=int, default=1)
    args = parser.parse_args(argv)
    count = caption_with_ray(args.model, args.input, args.output, args.batch_size, args.replicas,
                             args.image_column, num_beams=args.num_beams)
    print(f"{count} captions in {args.output}")
    return count


if __name__ == "__main__":
    main()
