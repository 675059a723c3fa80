"""2:4 structured sparsity of the image branch (the design's deployment step for TensorRT sparse kernels).

In every group of 4 consecutive weights along the input dimension, the 2 of smallest magnitude are set to zero; that
is the pattern NVIDIA's sparse tensor cores (and TensorRT's `--sparsity`) accelerate. Pruned weights are plain zeros,
so the pattern survives `save_pretrained` (safetensors) and ONNX export; a short fine-tune re-applies the masks after
every optimizer step so the pattern is kept while the rest of the model adapts.
"""

import logging
from pathlib import Path
from typing import Optional

import torch
from torch import nn
from transformers import TrainerCallback

from ..modeling_centerfocus import CenterFocusForConditionalGeneration


logger = logging.getLogger(__name__)


def _grouped(weight: torch.Tensor) -> torch.Tensor:
    """View a Linear `(out, in)` or Conv2d `(out, in, kh, kw)` weight as `(..., in / 4, 4)` groups along `in`."""
    if weight.ndim == 4:  # groups run along input channels at each kernel position, as TensorRT expects
        weight = weight.permute(0, 2, 3, 1)
    return weight.reshape(-1, weight.shape[-1] // 4, 4)


def mask_2_4(weight: torch.Tensor) -> torch.Tensor:
    """0/1 mask of `weight`'s shape keeping the 2 largest-magnitude weights of every group of 4 inputs."""
    groups = _grouped(weight.detach().abs())
    keep = torch.zeros_like(groups).scatter(-1, groups.topk(2, dim=-1).indices, 1.0)
    if weight.ndim == 4:
        out, _, kh, kw = weight.shape
        return keep.reshape(out, kh, kw, -1).permute(0, 3, 1, 2).contiguous()
    return keep.reshape(weight.shape)


def is_2_4_sparse(weight: torch.Tensor) -> bool:
    """True when every group of 4 consecutive input weights holds at most 2 non-zeros."""
    return bool(((_grouped(weight) != 0).sum(-1) <= 2).all())


def prunable_image_layers(model: CenterFocusForConditionalGeneration) -> dict[str, nn.Module]:
    """The image branch's Conv2d and Linear layers whose input size is a multiple of 4 (the stem's RGB input layer,
    with 3 input channels, stays dense), by parameter-name prefix."""
    encoder = model.model.encoder
    layers = {}
    for prefix, root in (("model.encoder.vision_stem", encoder.vision_stem),
                         ("model.encoder.image_tokenizer", encoder.image_tokenizer)):
        for name, module in root.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)) and module.weight.shape[1] % 4 == 0 and (
                    not isinstance(module, nn.Conv2d) or module.groups == 1):
                layers[f"{prefix}.{name}.weight"] = module
    return layers


@torch.no_grad()
def prune_image_branch_2_4(model: CenterFocusForConditionalGeneration) -> dict[str, torch.Tensor]:
    """Apply 2:4 magnitude pruning to the image branch in place; returns the masks by parameter name."""
    masks = {}
    for name, module in prunable_image_layers(model).items():
        masks[name] = mask_2_4(module.weight)
        module.weight.mul_(masks[name])
    logger.info(f"2:4-pruned {len(masks)} image-branch weights.")
    return masks


class KeepSparsityCallback(TrainerCallback):
    """Re-applies the 2:4 masks after every optimizer step, so fine-tuning keeps the pattern."""

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor]):
        parameters = dict(model.named_parameters())
        self.pairs = [(parameters[name], mask) for name, mask in masks.items()]

    def on_train_begin(self, args, state, control, **kwargs):
        # the Trainer has placed the model by now: move the masks once, not after every step
        self.pairs = [(parameter, mask.to(parameter.device, parameter.dtype)) for parameter, mask in self.pairs]

    @torch.no_grad()
    def on_step_end(self, args, state, control, **kwargs):
        for parameter, mask in self.pairs:
            parameter.mul_(mask)


def check_output_folder(model_dir: str, output_dir: str) -> None:
    """Refuse an output folder that is the model folder or holds anything: sparsify would replace the model there
    and leave its other files (checkpoints, results) beside the pruned one."""
    output = Path(output_dir)
    if output.resolve() == Path(model_dir).resolve():
        raise ValueError(f"The output folder {output_dir} is the model folder {model_dir}: sparsify would replace the "
                         "dense model. Name a new or empty output folder.")
    if output.exists() and not output.is_dir():
        raise ValueError(f"The output folder {output_dir} is a file, not a folder. Name a new or empty output folder.")
    if output.is_dir() and any(output.iterdir()):
        raise ValueError(f"The output folder {output_dir} is not empty; sparsify would mix the pruned model with what "
                         "is there. Name a new or empty output folder.")


def main(argv: Optional[list[str]] = None) -> dict:
    """`centerfocus sparsify MODEL_DIR OUT_DIR [--dataset D --finetune_steps N]`: prune, optionally fine-tune on
    `--dataset`, save, and report the caption quality before and after on the data set's evaluation split."""
    import argparse
    import json

    from ..processing_centerfocus import CenterFocusProcessor
    from . import train
    from .caption_data import check_caption_dataset, load_image_dataset
    from .captioning import caption_images
    from .metrics import compute_caption_metrics

    parser = argparse.ArgumentParser(prog="centerfocus sparsify", description=main.__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("output_dir")
    parser.add_argument("--dataset", help="Image-caption data (as for centerfocus train) to fine-tune and evaluate.")
    parser.add_argument("--finetune_steps", type=int, default=0)
    parser.add_argument("--learning_rate", type=float, default=2e-4)
    parser.add_argument("--max_eval_samples", type=int, default=200)
    args = parser.parse_args(argv)
    if args.finetune_steps and not args.dataset:
        raise ValueError("--finetune_steps needs --dataset: the data set to fine-tune on (and to evaluate with).")
    check_output_folder(args.model_dir, args.output_dir)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)

    model = CenterFocusForConditionalGeneration.from_pretrained(args.model_dir).eval()
    processor = CenterFocusProcessor.from_pretrained(args.model_dir)
    evaluation = None
    if args.dataset:
        _, evaluation = check_caption_dataset(load_image_dataset(args.dataset), "image", "text")
        evaluation = evaluation.select(range(min(args.max_eval_samples, len(evaluation))))

    def quality(current) -> dict:
        if evaluation is None:
            return {}
        captions = caption_images(current, processor, list(evaluation["image"]))
        references = [t.strip() for t in evaluation["text"]]
        metrics = compute_caption_metrics(captions, references)
        metrics["exact_match"] = sum(c == r for c, r in zip(captions, references)) / len(references)
        return metrics

    report = {"dense": quality(model)}
    masks = prune_image_branch_2_4(model)
    report["pruned"] = quality(model)
    output = Path(args.output_dir)
    model.save_pretrained(output)
    processor.save_pretrained(output)
    if args.finetune_steps:
        model_args, data_args, training_args = train.parse_args([
            "--dataset", args.dataset, "--model_name_or_path", str(output), "--output_dir", str(output),
            "--max_steps", str(args.finetune_steps), "--learning_rate", str(args.learning_rate),
            "--eval_strategy", "no", "--do_eval", "false", "--save_strategy", "no", "--report_to", "none",
            "--overwrite_output_dir", "true"])  # `output` holds only the pruned model just saved: train over it
        callback = KeepSparsityCallback(model, masks)  # the pruned model just saved to `output`
        train.run_training(model_args, data_args, training_args, callbacks=[callback], model=model)
        model = CenterFocusForConditionalGeneration.from_pretrained(output).eval()
        report["pruned_finetuned"] = quality(model)
    report["pruned_weights"] = sorted(masks)
    report["all_2_4"] = all(is_2_4_sparse(dict(model.named_parameters())[name]) for name in masks)
    (output / "sparsity_report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "pruned_weights"}, indent=2))
    return report
