"""`centerfocus demo`: the project's main job on its built-in data, end to end and offline.

1. writes the synthetic centred-object data set (train + held-out test) as an image folder;
2. trains a small captioner on it with `centerfocus train` (the HF Seq2SeqTrainer);
3. captions the held-out split, prints BLEU-4 / ROUGE-L / CIDEr-D and the centre-phrase exact match, and sample
   captions;
4. saves `captions.png`: held-out images with their generated captions and the learned centre-focus weighting drawn
   over them.
"""

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..modeling_centerfocus import CenterFocusCenterWeighting, CenterFocusForConditionalGeneration
from ..processing_centerfocus import CenterFocusProcessor
from .captioning import caption_images, centre_weighting_map, draw_centre_weighting
from .data import generate_caption_dataset
from .progress import progress_enabled


logger = logging.getLogger(__name__)

# Small enough to train to a useful captioner in a few minutes on 2 CPU cores. It names every field the small preset
# sets beyond sizes, so the demo's model does not change with the preset: the seed's two-convolution stem.
DEMO_CONFIG = ("hidden_size=128,num_attention_heads=4,encoder_layers=1,decoder_layers=2,intermediate_size=256,"
               "image_size=64,stem_channels=16|32,stem_kernel_sizes=5|3,image_tokenizer_grid_size=8,"
               "max_position_embeddings=64,stem_norm_type=none,edge_compensation_type=none,"
               "image_tokenizer_type=grid_pool,image_summary_type=none,center_loss_weight=0")


def _parser(prog: str, description: str = __doc__) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--output_dir", default="demo_output", help="Where data, model and picture go.")
    parser.add_argument("--num_train", type=int, default=2000, help="Training scenes.")
    parser.add_argument("--num_test", type=int, default=200, help="Held-out scenes.")
    parser.add_argument("--image_size", type=int, default=64, help="Scene size in pixels.")
    parser.add_argument("--describe_periphery", action="store_true", help="Captions also describe the periphery.")
    parser.add_argument("--seed", type=int, default=0, help="Data and training seed.")
    return parser


_DATA_DEFAULTS = {"shapes": {"num_train": 2000, "num_test": 200, "image_size": 64},
                  "characters": {"num_train": 3000, "num_test": 300, "image_size": 224},
                  "handwriting": {"num_train": 3000, "num_test": 300, "image_size": 224}}


def generate_data_main(argv: Optional[list[str]] = None) -> Path:
    """`centerfocus generate-data`: write a built-in data set to `--output_dir` (an image folder): `--kind shapes`
    (the demo's; 2000 + 200 scenes of 64 px by default) or `--kind characters` (fine detail in the centre: digits from
    matplotlib's fonts, test fonts disjoint from training fonts; 3000 + 300 scenes of 224 px by default) or `--kind
    handwriting` (the same scenes with real handwritten digits, test writers disjoint from training writers)."""
    parser = _parser("centerfocus generate-data", generate_data_main.__doc__)
    parser.add_argument("--kind", choices=sorted(_DATA_DEFAULTS), default="shapes", help="Which data set.")
    parser.set_defaults(num_train=None, num_test=None, image_size=None)
    args = parser.parse_args(argv)
    for name, value in _DATA_DEFAULTS[args.kind].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.kind in ("characters", "handwriting"):
        if args.describe_periphery:
            parser.error("--describe_periphery applies to --kind shapes; character captions always name the edge "
                         "digits.")
        if args.kind == "characters":
            from .characters import generate_character_dataset as generate
        else:
            from .handwriting import generate_handwriting_dataset as generate
        path = generate(args.output_dir, num_train=args.num_train, num_test=args.num_test,
                        image_size=args.image_size, seed=args.seed)
    else:
        path = generate_caption_dataset(args.output_dir, num_train=args.num_train, num_test=args.num_test,
                                        image_size=args.image_size, seed=args.seed,
                                        describe_periphery=args.describe_periphery)
    print(f"Wrote the data set to {path}")
    return path


def save_caption_picture(path: Path, images, captions, references, weighting: np.ndarray,
                         sigmas: list[float]) -> Path:
    """A grid of images with generated (and reference) captions, the centre weighting drawn as contours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(8, len(images))
    columns = 4
    rows = (count + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 4.8 * rows))
    for index, axis in enumerate(np.atleast_1d(axes).ravel()):
        axis.axis("off")
        if index >= count:
            continue
        draw_centre_weighting(axis, images[index], weighting)
        correct = captions[index] == references[index]
        axis.set_title(f"{captions[index]}\n(reference: {references[index]})", fontsize=8,
                       color="darkgreen" if correct else "darkred", wrap=True)
    sigma_text = ", ".join(f"{s:.3f}" for s in sigmas)
    figure.suptitle(f"CenterFocus demo: held-out captions; overlay = learned centre weighting (sigmas {sigma_text})")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def main(argv: Optional[list[str]] = None) -> dict:
    parser = _parser("centerfocus demo")
    parser.add_argument("--max_steps", type=int, default=2000, help="Training steps.")
    parser.add_argument("--batch_size", type=int, default=32, help="Training batch size.")
    parser.add_argument("--learning_rate", type=float, default=1e-3, help="Peak learning rate.")
    parser.add_argument("--config_overrides", default=DEMO_CONFIG,
                        help=f"Model config, replacing the demo's whole default (see centerfocus train); --image_size "
                             f"sets the model's image size. Default: {DEMO_CONFIG}")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    output = Path(args.output_dir)
    data_dir = generate_caption_dataset(output / "data", num_train=args.num_train, num_test=args.num_test,
                                        image_size=args.image_size, seed=args.seed,
                                        describe_periphery=args.describe_periphery)
    model_dir = output / "model"
    started = time.perf_counter()
    from .train import main as train_main

    train_main([
        "--dataset", str(data_dir), "--eval_split", "test", "--output_dir", str(model_dir),
        "--overwrite_output_dir", "true",  # the demo's own folder: a second demo run replaces its model
        "--config_overrides", args.config_overrides, "--image_size", str(args.image_size),
        "--max_steps", str(args.max_steps), "--per_device_train_batch_size", str(args.batch_size),
        "--per_device_eval_batch_size", "64", "--learning_rate", str(args.learning_rate),
        "--warmup_ratio", "0.05", "--lr_scheduler_type", "cosine", "--weight_decay", "0.01",
        "--seed", str(args.seed), "--use_cpu", "true", "--do_eval", "false", "--eval_strategy", "no",
        "--save_strategy", "steps", "--save_steps", str(max(1, args.max_steps // 2)), "--logging_steps", "50",
        "--max_target_length", "40", "--tokenizer_vocab_size", "200",
        # the Trainer's progress bar on a terminal; its plain log lines where the output is not one (CI)
        "--disable_tqdm", "false" if progress_enabled() else "true",
    ])
    train_seconds = time.perf_counter() - started

    model = CenterFocusForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = CenterFocusProcessor.from_pretrained(model_dir)
    from datasets import load_dataset

    test = load_dataset("imagefolder", data_dir=str(data_dir), split="test")
    images, references = list(test["image"]), [t.strip() for t in test["text"]]
    started = time.perf_counter()
    captions = caption_images(model, processor, images)
    caption_seconds = time.perf_counter() - started

    from .metrics import center_phrase, compute_caption_metrics

    metrics = compute_caption_metrics(captions, references)
    metrics["exact_match"] = float(np.mean([c == r for c, r in zip(captions, references)]))
    metrics["center_phrase_exact_match"] = float(np.mean([center_phrase(c) == p
                                                          for c, p in zip(captions, test["center_phrase"])]))
    metrics.update(train_seconds=round(train_seconds, 1), captions_per_second=round(len(images) / caption_seconds, 1),
                   num_train=args.num_train, num_test=len(images), max_steps=args.max_steps)
    sigmas = [float(m.sigma.detach()) for m in model.modules() if isinstance(m, CenterFocusCenterWeighting)]
    metrics["learned_sigmas"] = sigmas
    picture = save_caption_picture(output / "captions.png", images, captions, references,
                                   centre_weighting_map(model, args.image_size * 2), sigmas)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))

    print("\nHeld-out results (" + f"{len(images)} images):")
    for key in ("center_phrase_exact_match", "exact_match", "bleu4", "rougeL", "cider"):
        print(f"  {key:<27} {metrics[key]:.4f}")
    print(f"  training time               {train_seconds:.0f} s ({args.max_steps} steps)")
    print("\nSample captions (generated | reference):")
    for caption, reference in list(zip(captions, references))[:6]:
        print(f"  {caption} | {reference}")
    print(f"\nModel: {model_dir}  Picture: {picture}  Metrics: {output / 'metrics.json'}")
    return metrics


if __name__ == "__main__":
    main()
