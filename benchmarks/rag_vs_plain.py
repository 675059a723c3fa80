"""Retrieval-augmented captioning against plain captioning on the built-in data's long full-scene captions, same
model and same training budget: both continue from one base model for the same number of steps, one with its
images' k nearest training captions as the prompt (`--retrieval_index`), one without.

    python benchmarks/rag_vs_plain.py --base_steps 1500 --steps 500 --out benchmarks/results/rag_vs_plain.json
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
from common import report  # benchmarks/ is run as scripts: python benchmarks/NAME.py
from datasets import load_dataset

from centerfocus import CenterFocusForConditionalGeneration, CenterFocusProcessor
from centerfocus.tools import train
from centerfocus.tools.captioning import caption_images
from centerfocus.tools.data import generate_caption_dataset
from centerfocus.tools.demo import DEMO_CONFIG
from centerfocus.tools.metrics import compute_caption_metrics
from centerfocus.tools.retrieval import CaptionIndex, retrieval_prompts


COMMON = ["--image_size", "64", "--per_device_train_batch_size", "32", "--learning_rate", "1e-3",
          "--warmup_ratio", "0.05", "--lr_scheduler_type", "cosine", "--use_cpu", "true", "--do_eval", "false",
          "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none", "--max_target_length", "48",
          "--tokenizer_vocab_size", "200", "--disable_tqdm", "true"]


def score(model_dir: Path, images, references, prompts=None) -> dict:
    model = CenterFocusForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = CenterFocusProcessor.from_pretrained(model_dir)
    captions = caption_images(model, processor, images, prompts)
    metrics = compute_caption_metrics(captions, references)
    metrics["exact_match"] = float(np.mean([c == r for c, r in zip(captions, references)]))
    metrics["sample"] = captions[:2]
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base_steps", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cf-rag-"))
    data = generate_caption_dataset(work / "data", num_train=2000, num_test=200, image_size=64, seed=0,
                                    describe_periphery=True)
    base = work / "base"
    train.main(["--dataset", str(data), "--output_dir", str(base), "--config_overrides",
                DEMO_CONFIG.replace("max_position_embeddings=64", "max_position_embeddings=160"),
                "--max_steps", str(args.base_steps), *COMMON])
    index_dir = CaptionIndex.build(str(base), *_split(data, "train")).save(str(work / "index"))
    plain, rag = work / "plain", work / "rag"
    for output, extra in ((plain, []), (rag, ["--retrieval_index", str(index_dir), "--retrieval_k", str(args.k)])):
        train.main(["--dataset", str(data), "--output_dir", str(output), "--model_name_or_path", str(base),
                    "--max_steps", str(args.steps), *COMMON, *extra])
    images, references = _split(data, "test")
    prompts = retrieval_prompts(CaptionIndex.load(str(index_dir)), images, args.k)
    results = {"base_steps": args.base_steps, "steps": args.steps, "k": args.k,
               "mean_reference_words": float(np.mean([len(r.split()) for r in references])),
               "plain": score(plain, images, references), "rag": score(rag, images, references, prompts)}
    report(results, args.out)


def _split(data: Path, name: str):
    split = load_dataset("imagefolder", data_dir=str(data), split=name)
    return list(split["image"]), [t.strip() for t in split["text"]]


if __name__ == "__main__":
    main()
