"""Images per second of `centerfocus caption --dataset` (batched, reading overlapped with captioning, written to a
results file) against the per-image loop it replaces (open an image, `processor`, `generate`, next), on the same
model and images, alternated run by run (docs/benchmarks.md, "Bulk captioning").

    python benchmarks/bulk_caption.py --model runs/NAME --data hw --split test --repeats 3 \
        --out benchmarks/results/bulk_caption.json
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import report  # benchmarks/ runs as scripts: python benchmarks/NAME.py
from PIL import Image

from centerfocus import CenterFocusForConditionalGeneration, CenterFocusProcessor
from centerfocus.tools.bulk_caption import caption_dataset, load_rows


def per_image_loop(model, processor, paths: list[Path]) -> list[str]:
    captions = []
    for path in paths:
        with Image.open(path) as image, torch.inference_mode():
            tokens = model.generate(**processor(images=[image]))
        captions.append(processor.batch_decode(tokens, skip_special_tokens=True)[0].strip())
    return captions


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="An image folder.")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None, help="Caption the first N images only.")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    model = CenterFocusForConditionalGeneration.from_pretrained(args.model).eval()
    processor = CenterFocusProcessor.from_pretrained(args.model)
    paths = sorted((Path(args.data) / args.split).glob("*.png"))[: args.limit]
    rows, _ = load_rows(args.data, args.split)
    if args.limit:
        rows = rows.take(args.limit)
    loop_s, bulk_s, agree = [], [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        loop = per_image_loop(model, processor, paths)
        loop_s.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            caption_dataset(model, processor, rows, f"{folder}/results.jsonl", batch_size=args.batch_size)
            bulk_s.append(time.perf_counter() - start)
            bulk = [json.loads(line)["caption"] for line in Path(f"{folder}/results.jsonl").read_text().splitlines()]
        agree.append(sum(a == b for a, b in zip(loop, bulk)) / len(paths))
    n = len(paths)
    results = {"command": "python benchmarks/bulk_caption.py " + " ".join(argv or sys.argv[1:]),
               "machine": {"torch_threads": torch.get_num_threads(), "torch": torch.__version__},
               "images": n, "batch_size": args.batch_size, "repeats": args.repeats,
               "per_image_loop_images_per_s": round(n / statistics.median(loop_s), 2),
               "bulk_images_per_s": round(n / statistics.median(bulk_s), 2),
               "speed_up": round(statistics.median(loop_s) / statistics.median(bulk_s), 2),
               "loop_seconds": [round(s, 2) for s in loop_s], "bulk_seconds": [round(s, 2) for s in bulk_s],
               "same_caption_fraction": agree}
    report(results, args.out)
    return results


if __name__ == "__main__":
    main()
