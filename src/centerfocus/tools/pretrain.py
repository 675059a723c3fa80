"""`centerfocus pretrain-vision`: stage 1 of the design's staged training, the CNN as an image classifier.

Trains a CenterFocusForImageClassification with the HF Trainer on an image folder of class sub-folders
(`datasets` imagefolder: `train/<class>/*.png`, optionally `test/<class>/*.png`), or on images labelled by a metadata
column (`--label_column center_digit` on the character benchmark's folder). The saved folder initialises a captioner's
vision weights with `centerfocus train --vision_init FOLDER`. With `--caption_words` the labels come from the captions
themselves (no class labels): each image learns the words of its caption as a multi-label classifier.
"""

import dataclasses
import json
import logging
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Optional

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import HfArgumentParser, IntervalStrategy, Trainer, TrainingArguments, set_seed

from ..configuration_centerfocus import CenterFocusConfig
from ..image_processing_centerfocus import CenterFocusImageProcessor
from ..modeling_centerfocus import CenterFocusForImageClassification
from .allocator import keep_freed_memory
from .caption_data import load_image_dataset
from .train import (
    MODEL_PRESETS,
    CenterFocusTrainingArguments,
    apply_overrides,
    check_output_dir,
    preset,
    with_default_flags,
)


logger = logging.getLogger(__name__)

#: The stage-1 arguments (`PretrainArguments`) as JSON, written next to the classifier.
PRETRAIN_ARGS_FILE = "centerfocus_pretrain_args.json"


@dataclass
class PretrainArguments:
    """Stage-1 data and model."""

    dataset: str = field(metadata={"help": "Image folder with one sub-folder per class (imagefolder convention), or "
                                           "images with a label column in metadata.jsonl/csv (--label_column)."})
    image_column: str = field(default="image", metadata={"help": "Column holding the images."})
    label_column: str = field(default="label", metadata={
        "help": "Column holding the class labels: the class sub-folders' `label`, or a metadata column of names or "
                "numbers (e.g. the character benchmark's `center_digit`)."})
    model_size: str = field(default="small", metadata={"help": f"Vision preset: {sorted(MODEL_PRESETS)}."})
    config_overrides: Optional[str] = field(default=None, metadata={"help": "CenterFocusConfig overrides k=v,..."})
    image_size: Optional[int] = field(default=None, metadata={"help": "Image size (overrides the preset)."})
    edge_object_scale: Optional[float] = field(default=None, metadata={
        "help": "Also train the edge stem (edge_compensation_type=stem, as in the small preset) on the same labels, "
                "read from each image shrunk by about this factor: the size of the periphery's objects relative to "
                "the labelled centre object (0.3 on the character benchmark: 31-40 px edge digits, 100-134 px centre "
                "digits). Captions alone teach the edge stem slowly; this gives it features for small objects."})
    caption_words: bool = field(default=False, metadata={
        "help": "Labels from the captions themselves instead of --label_column: each image's targets are the words of "
                "its caption (--caption_column), multi-hot over the words that at least --min_word_count training "
                "captions use and not every one does, learnt as multi-label classification (binary cross-entropy; "
                "Joulin et al. 2016, 'Learning Visual Features from Large Weakly Supervised Data'). With "
                "--edge_object_scale the edge stem learns the same words from the shrunk images."})
    caption_column: str = field(default="text", metadata={"help": "Column holding the captions (--caption_words)."})
    min_word_count: int = field(default=5, metadata={
        "help": "--caption_words: a word is a label when at least this many training captions use it."})
    keep_freed_memory: bool = field(default=True, metadata={
        "help": "Let glibc's malloc reuse freed memory (see centerfocus.tools.allocator; values unchanged)."})


def caption_words(caption: str) -> list[str]:
    """The words of a caption as `--caption_words` counts them: lower-cased runs of letters and digits."""
    return re.findall(r"\w+", caption.lower())


def word_vocabulary(captions: list[str], min_count: int) -> list[str]:
    """The label words of `--caption_words`, sorted: those at least `min_count` captions use and not every one (a word
    in every caption says nothing about the image). Refuses captions that leave no such word."""
    if not captions or not all(isinstance(c, str) for c in captions):
        raise ValueError("--caption_words needs a caption (a string) for every training image.")
    if min_count < 1:
        raise ValueError(f"--min_word_count must be at least 1, got {min_count}.")
    counts = {}
    for caption in captions:
        for word in set(caption_words(caption)):
            counts[word] = counts.get(word, 0) + 1
    words = sorted(w for w, n in counts.items() if min_count <= n < len(captions))
    if not words:
        raise ValueError(f"No caption word is used by at least {min_count} of the {len(captions)} training captions "
                         "and missing from some: nothing to learn from. Lower --min_word_count or check the captions.")
    return words


class ClassificationCollator:
    """Rows with a PIL image and an integer label -> `pixel_values`, `labels`; with `words` (`--caption_words`), the
    label column holds captions and `labels` are `(B, len(words))` multi-hot floats of their words; with
    `edge_object_scale`, also `edge_pixel_values` (`shrink_to_periphery_size`)."""

    def __init__(self, image_processor: CenterFocusImageProcessor, image_column: str, label_column: str,
                 edge_object_scale: Optional[float] = None, stride: int = 1, words: Optional[list[str]] = None):
        self.image_processor = image_processor
        self.image_column = image_column
        self.label_column = label_column
        self.edge_object_scale = edge_object_scale
        self.stride = stride
        self.word_ids = None if words is None else {w: i for i, w in enumerate(words)}
        self._backgrounds = {}  # image mode -> (C,) pixel values of black

    def __call__(self, features: list[dict]) -> dict:
        pixel_values = self.image_processor([f[self.image_column] for f in features], return_tensors="pt")
        if self.word_ids is None:
            labels = torch.tensor([f[self.label_column] for f in features], dtype=torch.long)
        else:
            labels = torch.zeros(len(features), len(self.word_ids))
            for row, f in enumerate(features):
                ids = [self.word_ids[w] for w in caption_words(f[self.label_column]) if w in self.word_ids]
                labels[row, ids] = 1.0
        batch = {"pixel_values": pixel_values["pixel_values"], "labels": labels}
        if self.edge_object_scale:
            batch["edge_pixel_values"] = shrink_to_periphery_size(
                batch["pixel_values"], self.edge_object_scale, self.background(features[0][self.image_column].mode),
                self.stride)
        return batch

    def background(self, mode: str) -> torch.Tensor:
        """`(C,)`: black, as the processor turns an image of `mode` into pixel values; computed once per mode."""
        if mode not in self._backgrounds:
            black = Image.new(mode, (8, 8))
            self._backgrounds[mode] = self.image_processor(black, return_tensors="pt")["pixel_values"][0, :, 0, 0]
        return self._backgrounds[mode]


def shrink_to_periphery_size(pixel_values: torch.Tensor, scale: float, background: torch.Tensor, stride: int,
                             generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """`(B, C, S, S)` images -> `(B, C, s, s)`: each shrunk by a random factor in `[0.85, 1.15] * scale` and pasted at
    a random offset (up to a quarter of the canvas) on a `background`-filled canvas of side `s` = 1.5 x the shrunk
    side, rounded up to a multiple of `stride`. The canvas keeps the shrunk centre object whole and little else, as a
    peripheral cell's neighbourhood does; the jitter stands for where the object sits in it."""
    size = pixel_values.shape[-1]
    side = max(stride, math.ceil(1.5 * scale * size / stride) * stride)
    canvas = background.to(pixel_values.dtype)[None, :, None, None].expand(len(pixel_values), -1, side, side).clone()
    for i, image in enumerate(pixel_values):
        factor = scale * (0.85 + 0.3 * torch.rand((), generator=generator).item())
        small = max(1, round(size * factor))
        shrunk = F.interpolate(image[None], size=(small, small), mode="bilinear", antialias=True, align_corners=False)
        # place the shrunk image's centre near the canvas centre; crop what falls outside
        jitter = (torch.rand(2, generator=generator) - 0.5) * (side / 2)
        top, left = (round(side / 2 - small / 2 + float(j)) for j in jitter)
        y0, x0 = max(0, top), max(0, left)
        y1, x1 = min(side, top + small), min(side, left + small)
        canvas[i, :, y0:y1, x0:x1] = shrunk[0, :, y0 - top:y1 - top, x0 - left:x1 - left]
    return canvas


def class_labels(train, evaluation, column: str):
    """`train` and `evaluation` with `column` as a `ClassLabel`: class sub-folders give one already; a metadata column
    of names or numbers (`metadata.jsonl` beside the images, e.g. the character benchmark's `center_digit`) is
    encoded with the sorted values seen in training, and the evaluation split with the same ids. A label the
    training split never has is refused, naming it."""
    if isinstance(train.features[column], datasets.ClassLabel):
        return train, evaluation
    values = train.unique(column)
    if any(v is None for v in values):
        raise ValueError(f"The label column {column!r} has empty values in the training split.")
    names = sorted({str(v) for v in values})
    feature = datasets.ClassLabel(names=names)

    def encode(split, name):
        unknown = sorted({str(v) for v in split.unique(column)} - set(names))
        if unknown:
            raise ValueError(f"The {name} split's label column {column!r} has values the training split never has: "
                             f"{unknown[:5]}.")
        split = split.map(lambda value: {column: feature.str2int(str(value))}, input_columns=column,
                          desc=f"Encoding {column}")
        return split.cast_column(column, feature)

    return encode(train, "training"), None if evaluation is None else encode(evaluation, "evaluation")


def run_pretraining(args: PretrainArguments, training_args: TrainingArguments,
                    evaluate_when_possible: bool = False) -> dict:
    """Train and save the stage-1 classifier; returns the metrics. With `evaluate_when_possible` (the command's
    default), evaluation each epoch is switched off when the data has no validation or test split."""
    check_output_dir(training_args)
    kwargs = preset(args.model_size)
    set_seed(training_args.seed)
    data = load_image_dataset(args.dataset)
    if "train" not in data:
        raise ValueError(f"{args.dataset!r} has no 'train' split; splits: {sorted(data)}.")
    train = data["train"]
    label_column = args.caption_column if args.caption_words else args.label_column
    for column in (args.image_column, label_column):
        if column not in train.column_names:
            raise ValueError(f"The stage-1 data set has no column {column!r}; columns: {train.column_names}. Use "
                             "class sub-folders (imagefolder), --label_column, or --caption_words with "
                             "--caption_column.")
    evaluation = next((data[s] for s in ("validation", "test") if s in data), None)
    words = None
    if args.caption_words:
        if evaluation is not None and label_column not in evaluation.column_names:
            raise ValueError(f"The evaluation split has no caption column {label_column!r}.")
        names = words = word_vocabulary(list(train[label_column]), args.min_word_count)
        logger.info("--caption_words: %d label words from %d training captions", len(words), len(train))
    else:
        train, evaluation = class_labels(train, evaluation, label_column)
        names = train.features[label_column].names
    if args.image_size:
        kwargs["image_size"] = args.image_size
    apply_overrides(kwargs, args.config_overrides)
    if words is not None:
        kwargs["problem_type"] = "multi_label_classification"
    config = CenterFocusConfig(**kwargs, num_labels=len(names), id2label=dict(enumerate(names)),
                               label2id={n: i for i, n in enumerate(names)})
    if args.edge_object_scale is not None:
        if not 0 < args.edge_object_scale < 1:
            raise ValueError(f"--edge_object_scale must be in (0, 1), got {args.edge_object_scale}.")
        if config.edge_compensation_type != "stem":
            raise ValueError("--edge_object_scale trains the edge stem, and this config has none (edge_compensation_"
                             f"type={config.edge_compensation_type!r}); use the small preset or edge_compensation_type"
                             "=stem.")
        if config.edge_stem_width_ratio < 1:
            logger.warning(
                "--edge_object_scale with edge_stem_width_ratio=%s (the small preset's is 0.5): on the character "
                "benchmark a half-width edge stem learned the edge task slowly; after 600 steps of it the captioner "
                "named 0.19 of the edge digits, against 0.95 with edge_stem_width_ratio=1.0 (docs/benchmarks.md, runs "
                "s1e600 and s1e600w). Consider --config_overrides edge_stem_width_ratio=1.0.",
                config.edge_stem_width_ratio)
    model = CenterFocusForImageClassification(config)
    image_processor = CenterFocusImageProcessor(size={"height": config.image_size, "width": config.image_size},
                                                num_channels=config.num_channels)
    if evaluation is None and evaluate_when_possible:
        training_args.eval_strategy = IntervalStrategy.NO

    def compute_metrics(prediction) -> dict:
        logits, labels = prediction.predictions, prediction.label_ids
        if words is None:
            return {"accuracy": float(np.mean(logits.argmax(-1) == labels))}
        # every word of the caption predicted present and no other (logit > 0), and the micro F1 of the words
        predicted = logits > 0
        truth = labels > 0.5
        hits = float((predicted & truth).sum())
        return {"exact_match": float(np.mean((predicted == truth).all(-1))),
                "word_f1": 2 * hits / max(1.0, float(predicted.sum() + truth.sum()))}

    trainer = Trainer(model=model, args=training_args, train_dataset=train, eval_dataset=evaluation,
                      data_collator=ClassificationCollator(image_processor, args.image_column, label_column,
                                                           args.edge_object_scale, math.prod(config.stem_strides),
                                                           words),
                      compute_metrics=compute_metrics)
    metrics = dict(trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint).metrics)
    if evaluation is not None:
        metrics.update(trainer.evaluate())
    if trainer.is_world_process_zero():
        trainer.save_model(training_args.output_dir)
        image_processor.save_pretrained(training_args.output_dir)
        trainer.save_metrics("all", metrics)
        # what this stage 1 was (the Trainer keeps its own arguments only as a pickle)
        with open(os.path.join(training_args.output_dir, PRETRAIN_ARGS_FILE), "w") as f:
            json.dump(dataclasses.asdict(args), f, indent=2)
    return metrics


def main(argv: Optional[list[str]] = None) -> dict:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = {"--output_dir": "centerfocus-vision", "--remove_unused_columns": "false", "--report_to": "tensorboard",
                "--save_strategy": "epoch", "--eval_strategy": "epoch", "--save_total_limit": "2",
                "--logging_steps": "10"}
    full = with_default_flags(argv, defaults)
    evaluation_defaulted = "--eval_strategy" in full[len(argv):]
    args, training_args = HfArgumentParser((PretrainArguments, CenterFocusTrainingArguments)).parse_args_into_dataclasses(full)
    if args.keep_freed_memory:
        keep_freed_memory()  # see centerfocus.tools.allocator; CENTERFOCUS_KEEP_FREED_MEMORY=0 turns it off
    return run_pretraining(args, training_args, evaluate_when_possible=evaluation_defaulted)


if __name__ == "__main__":
    main()
