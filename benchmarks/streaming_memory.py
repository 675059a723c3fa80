"""Peak memory of `centerfocus train --streaming` as the data grows (docs/benchmarks.md, "Streaming training data").

Writes the built-in shapes data (64 px) as parquet shards, then the same shards ten times over (copies under new
names: a stream ten times as long), and runs the same short training on each, streamed and, for contrast, loaded the
usual way (`--dataset` without `--streaming`: `datasets` converts every shard to its Arrow cache and every image is
opened once before training). Each run is its own process; its peak resident memory is `ru_maxrss` of that child,
and the size of the `datasets` cache it wrote is measured after it.

    python benchmarks/streaming_memory.py --out benchmarks/results/streaming_memory.json
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import report  # benchmarks/ runs as scripts: python benchmarks/NAME.py

from centerfocus.tools.caption_data import load_image_dataset
from centerfocus.tools.data import generate_caption_dataset
from centerfocus.tools.streaming import write_shards


def peak_rss_mib(command: list[str], env: dict) -> tuple[float, float]:
    """Run `command` as a child and return (its peak resident memory in MiB, wall seconds). A fresh `python -c` parent
    runs it, so that `RUSAGE_CHILDREN` holds that one child only."""
    probe = ("import resource, subprocess, sys, json; r = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
             "sys.stderr.write(r.stderr[-2000:] if r.returncode else '');"
             "print(json.dumps([r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    returncode, kib = json.loads(result.stdout.strip().splitlines()[-1])
    if returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr}")
    return kib / 1024, seconds


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_train", type=int, default=2000, help="Scenes in the 1x data (64 px).")
    parser.add_argument("--shards", type=int, default=4, help="Parquet shards of the 1x data.")
    parser.add_argument("--factor", type=int, default=10, help="How many times the 1x shards the large data holds.")
    parser.add_argument("--max_steps", type=int, default=40)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="--dataloader_num_workers of the streamed runs.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="streaming-memory-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(work / "hf_cache")}
    try:
        folder = generate_caption_dataset(work / "scenes", num_train=args.num_train, num_test=16, seed=0)
        splits = load_image_dataset(str(folder))
        one = work / "x1"
        write_shards(splits["train"], one, "train", num_shards=args.shards)
        large = work / f"x{args.factor}"
        large.mkdir()
        total = args.shards * args.factor
        for copy in range(args.factor):
            for index, shard in enumerate(sorted(one.glob("train-*.parquet"))):
                number = copy * args.shards + index
                shutil.copy(shard, large / f"train-{number:05d}-of-{total:05d}.parquet")
        rows = []
        for name, data, examples in (("1x", one, args.num_train), (f"{args.factor}x", large,
                                                                   args.num_train * args.factor)):
            for streamed in (True, False):
                command = [sys.executable, "-m", "centerfocus.tools.cli", "train", "--dataset", str(data),
                           "--output_dir", str(work / "run"), "--overwrite_output_dir", "--model_size", "tiny",
                           "--image_size", "64", "--max_steps", str(args.max_steps), "--per_device_train_batch_size",
                           str(args.batch_size), "--eval_strategy", "no", "--do_eval", "false", "--save_strategy",
                           "no", "--report_to", "none", "--tokenizer_vocab_size", "200"]
                if streamed:
                    command += ["--streaming", "--dataloader_num_workers", str(args.workers)]
                shutil.rmtree(work / "hf_cache", ignore_errors=True)
                mib, seconds = peak_rss_mib(command, env)
                cache = sum(p.stat().st_size for p in (work / "hf_cache").rglob("*") if p.is_file())
                row = {"data": name, "examples": examples, "shards": len(list(Path(data).glob("*.parquet"))),
                       "streaming": streamed, "peak_rss_mib": round(mib, 1), "wall_s": round(seconds, 1),
                       "datasets_cache_mib": round(cache / 2**20, 1)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {"machine": {"cpu_count": os.cpu_count(), "python": sys.version.split()[0]},
               "command": "python benchmarks/streaming_memory.py " + " ".join(argv or sys.argv[1:]),
               "settings": vars(args) | {"out": str(args.out)}, "rows": rows,
               "note": "peak RSS of the largest single process of the run (ru_maxrss over the trainer and its "
                       "DataLoader workers); tiny preset at 64 px"}
    report(results, args.out)
    return results


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
