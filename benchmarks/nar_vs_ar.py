"""Autoregressive against non-autoregressive (mask-predict) decoding on the built-in data: both trained with
`centerfocus train` on the same data, steps and model size; captions per second at batch 1 and 8 (medians) and
held-out quality.

    python benchmarks/nar_vs_ar.py --steps 2000 --out benchmarks/results/nar_vs_ar.json
"""

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import median_seconds, report  # benchmarks/ is run as scripts: python benchmarks/NAME.py
from datasets import load_dataset

from centerfocus import CenterFocusForConditionalGeneration, CenterFocusProcessor
from centerfocus.tools import train
from centerfocus.tools.captioning import caption_images
from centerfocus.tools.data import generate_caption_dataset
from centerfocus.tools.demo import DEMO_CONFIG
from centerfocus.tools.metrics import compute_caption_metrics


def captions_per_second(model, processor, images, batch: int, repeats: int, **kwargs) -> float:
    inputs = processor(images=images[:batch])
    with torch.inference_mode():
        return batch / median_seconds(lambda: model.generate(**inputs, **kwargs), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--describe_periphery", action="store_true", help="Long full-scene captions.")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cf-nar-"))
    data = generate_caption_dataset(work / "data", num_train=2000, num_test=200, image_size=64, seed=0,
                                    describe_periphery=args.describe_periphery)
    test = load_dataset("imagefolder", data_dir=str(data), split="test")
    images, references = list(test["image"]), [t.strip() for t in test["text"]]
    results = {"steps": args.steps, "describe_periphery": args.describe_periphery, "config": DEMO_CONFIG,
               "decoders": {}}
    for decoder_type, extra in (("autoregressive", {}), ("non_autoregressive", {"nar_iterations": 4}),
                                ("non_autoregressive_1pass", {"nar_iterations": 1})):
        output = work / decoder_type.replace("_1pass", "")
        if not (output / "model.safetensors").exists():
            train.main(["--dataset", str(data), "--eval_split", "test", "--output_dir", str(output),
                        "--config_overrides", DEMO_CONFIG, "--image_size", "64", "--max_steps", str(args.steps),
                        "--per_device_train_batch_size", "32", "--learning_rate", "1e-3", "--warmup_ratio", "0.05",
                        "--lr_scheduler_type", "cosine", "--use_cpu", "true", "--do_eval", "false",
                        "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none",
                        "--max_target_length", "40", "--tokenizer_vocab_size", "200", "--disable_tqdm", "true",
                        "--decoder_type", decoder_type.replace("_1pass", "")])
        model = CenterFocusForConditionalGeneration.from_pretrained(output).eval()
        processor = CenterFocusProcessor.from_pretrained(output)
        captions = caption_images(model, processor, images, **extra)
        metrics = compute_caption_metrics(captions, references)
        metrics["exact_match"] = float(np.mean([c == r for c, r in zip(captions, references)]))
        for batch in (1, 8):
            metrics[f"captions_per_second_b{batch}"] = round(
                captions_per_second(model, processor, images, batch, args.repeats, **extra), 1)
        metrics["sample"] = captions[:2]
        results["decoders"][decoder_type] = metrics
        print(decoder_type, json.dumps(metrics), flush=True)
    report(results, args.out)


if __name__ == "__main__":
    main()
