"""Why captions do not teach the edge digits of the character benchmark (docs/benchmarks.md, "Reading the edge
digits"): diagnostics, not a user path.

    # the edge stem first trained as a classifier of labelled 80 px edge crops (the "oracle" rows), then the captioner
    python benchmarks/edge_diagnostics.py caption --data chars --mode oracle --output_dir runs/oracle_rb1_ft \
        --config_overrides edge_stem_residual_blocks=1
    # --mode oracle-frozen keeps it frozen; --mode scale trains it on the centre labels of scenes shrunk ~3.4x instead
    # the crop probe: a stage-1 folder's edge head (pretrain-vision --edge_object_scale) on the test edge crops
    python benchmarks/edge_diagnostics.py probe --data chars --stage1 runs/s1e600w-s1

`caption` runs the character benchmark's command (width 256, 4+4 layers, 224 px, 600 steps of batch 32, lr 5e-4) through
`centerfocus train`'s `run_training`, with the edge stem's layers pre-trained by a plain loop (600 steps of batch 32,
AdamW, one-cycle lr 1e-3). The crops are 80 px squares around the middle of each edge, where the generator puts the
edge digits (`centerfocus.tools.characters`); their labels come from the captions, which no user path reads.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from learning_quality import EDGE  # benchmarks/ runs as scripts: python benchmarks/NAME.py
from PIL import Image

from centerfocus import (
    CenterFocusForConditionalGeneration,
    CenterFocusForImageClassification,
    CenterFocusImageProcessor,
)
from centerfocus.tools import train


CROP = 80


def crop_boxes(size: int = 224) -> dict:
    """Top-left corner of the `CROP`-sided square around the middle of each edge."""
    middle = (size - CROP) // 2
    return {"top": (middle, 0), "bottom": (middle, size - CROP), "left": (0, middle), "right": (size - CROP, middle)}


def edge_crops(data: Path, split: str, processor: CenterFocusImageProcessor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every edge digit of `split` as a processed crop, labelled by the digit its caption names."""
    boxes, crops, labels = crop_boxes(), [], []
    for line in (data / split / "metadata.jsonl").read_text().splitlines():
        row = json.loads(line)
        found = EDGE.findall(row["text"])
        if not found:
            continue
        pixels = processor(Image.open(data / split / row["file_name"]).convert("RGB"), return_tensors="pt")
        for _, digit, position in found:
            x, y = boxes[position]
            crops.append(pixels["pixel_values"][0, :, y:y + CROP, x:x + CROP])
            labels.append(int(digit))
    return torch.stack(crops), torch.tensor(labels)


def shrunk_centres(data: Path, processor: CenterFocusImageProcessor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Every training scene shrunk by 1/U(2.8, 4.0) into a `CROP`-sided black square, within 15 px of its middle,
    labelled by its centre digit: the centre labels at the edge digits' size."""
    rng, crops, labels = np.random.default_rng(seed), [], []
    black = processor(Image.new("RGB", (8, 8)), return_tensors="pt")["pixel_values"][0, :, 0, 0]
    for line in (data / "train" / "metadata.jsonl").read_text().splitlines():
        row = json.loads(line)
        image = Image.open(data / "train" / row["file_name"]).convert("RGB")
        side = int(image.width / rng.uniform(2.8, 4.0))
        small = processor(image, return_tensors="pt")["pixel_values"][0]
        small = F.interpolate(small[None], size=(side, side), mode="bilinear", antialias=True)[0]
        canvas = black[:, None, None].expand(-1, CROP + 2 * side, CROP + 2 * side).clone()
        top, left = side + CROP // 2 - side // 2 + rng.integers(-15, 16, 2)
        canvas[:, top:top + side, left:left + side] = small
        crops.append(canvas[:, side:side + CROP, side:side + CROP])
        labels.append(int(row["center_digit"]))
    return torch.stack(crops), torch.tensor(labels)


def pretrain_edge_stem(layers: nn.Module, width: int, crops: torch.Tensor, labels: torch.Tensor,
                       steps: int = 600) -> nn.Module:
    """Train `layers` (`width` output channels) + global average pooling + a linear head as a 10-way classifier;
    returns the head."""
    torch.manual_seed(0)
    head = nn.Linear(width, 10)
    net = nn.Sequential(layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=steps, pct_start=0.1)
    for _ in range(steps):
        batch = torch.randint(0, len(labels), (32,))
        loss = F.cross_entropy(net(crops[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return head


def probe(layers: nn.Module, head: nn.Module, crops: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy of `head(mean over the map of layers(crops))`, with the layers in eval mode."""
    layers.eval()
    with torch.no_grad():
        predicted = head(layers(crops).mean(dim=(2, 3))).argmax(dim=1)
    return float((predicted == labels).float().mean())


def caption(args) -> dict:
    argv = ["--dataset", str(args.data), "--eval_split", "test", "--output_dir", args.output_dir,
            "--overwrite_output_dir", "--model_size", "small", "--config_overrides",
            "encoder_layers=4,decoder_layers=4,image_size=224" + (f",{args.config_overrides}" if args.config_overrides
                                                                 else ""),
            "--max_steps", "600", "--per_device_train_batch_size", "32", "--learning_rate", "5e-4", "--warmup_steps",
            "50", "--eval_strategy", "no", "--do_eval", "false", "--save_strategy", "steps", "--save_steps", "600",
            "--save_total_limit", "1", "--report_to", "none", "--logging_steps", "25"]
    model_args, data_args, training_args = train.parse_args(argv)

    def builder(model_args, data_args, tokenizer):
        model = CenterFocusForConditionalGeneration(train.new_model_config(model_args, data_args, tokenizer))
        processor = CenterFocusImageProcessor(size={"height": 224, "width": 224})
        edge_stem = model.model.encoder.vision_stem.edge_compensation
        layers = edge_stem.layers
        crops, labels = (edge_crops(args.data, "train", processor) if args.mode.startswith("oracle")
                         else shrunk_centres(args.data, processor))
        head = pretrain_edge_stem(layers, edge_stem.width, crops, labels)
        print(f"crop probe: {probe(layers, head, *edge_crops(args.data, 'test', processor)):.3f}", flush=True)
        layers.train()
        if args.mode == "oracle-frozen":
            layers.requires_grad_(False)
            layers.register_forward_pre_hook(lambda module, _: module.eval() and None)  # keep its batch statistics
        return model

    return train.run_training(model_args, data_args, training_args, model_builder=builder)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("caption", help="Pre-train the edge stem on crops, then train the captioner.")
    run.add_argument("--data", type=Path, required=True)
    run.add_argument("--mode", choices=("oracle", "oracle-frozen", "scale"), required=True)
    run.add_argument("--output_dir", required=True)
    run.add_argument("--config_overrides", default="")
    check = commands.add_parser("probe", help="A stage-1 folder's edge head on the test edge crops.")
    check.add_argument("--data", type=Path, required=True)
    check.add_argument("--stage1", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "caption":
        caption(args)
        return
    classifier = CenterFocusForImageClassification.from_pretrained(args.stage1)
    processor = CenterFocusImageProcessor.from_pretrained(args.stage1)
    crops, labels = edge_crops(args.data, "test", processor)
    names = [classifier.config.id2label[i] for i in range(classifier.config.num_labels)]
    labels = torch.tensor([names.index(str(int(label))) for label in labels])
    print(f"{args.stage1.name}: crop probe {probe(classifier.vision_stem.edge_compensation.layers, classifier.edge_classifier, crops, labels):.3f}")


if __name__ == "__main__":
    main()
