"""Quality per compute on the built-in data: CenterFocus (8x8 grid: 64 tokens, and foveated: 28) and
VisionEncoderDecoder (ViT + BERT decoder) of the same width and depth, trained for the same number of steps through
the same Seq2SeqTrainer, collator, tokenizer and data; held-out centre-phrase exact match and BLEU-4 against training
FLOPs (torch.utils.flop_counter, forward + backward, times steps x batch).

    python benchmarks/quality_per_compute.py --steps 1000 --out benchmarks/results/quality_per_compute.json

VisionEncoderDecoder gets a plain cross-entropy loss: its 4.57 loss_function shifts the labels a second time.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch.nn.functional as F
from common import count_cpu_flash_attention, report  # benchmarks/ is run as scripts: python benchmarks/NAME.py
from datasets import load_dataset
from torch.utils.flop_counter import FlopCounterMode
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, set_seed

from centerfocus import (
    CenterFocusConfig,
    CenterFocusForConditionalGeneration,
    CenterFocusImageProcessor,
    CenterFocusProcessor,
)
from centerfocus.tools.caption_data import CaptionCollator
from centerfocus.tools.captioning import caption_images
from centerfocus.tools.data import generate_caption_dataset
from centerfocus.tools.metrics import center_phrase, compute_caption_metrics
from centerfocus.tools.tokenizer import train_caption_tokenizer


WIDTH, HEADS, ENCODER_LAYERS, DECODER_LAYERS, INTERMEDIATE = 128, 4, 1, 2, 256


def plain_cross_entropy(logits, labels, vocab_size=None, **kwargs):
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def build(name: str, tokenizer, image_size: int):
    special = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                   eos_token_id=tokenizer.eos_token_id)
    if name.startswith("centerfocus"):
        config = CenterFocusConfig(
            vocab_size=len(tokenizer), hidden_size=WIDTH, num_attention_heads=HEADS, encoder_layers=ENCODER_LAYERS,
            decoder_layers=DECODER_LAYERS, intermediate_size=INTERMEDIATE, image_size=image_size,
            stem_channels=(16, 32), stem_kernel_sizes=(5, 3), image_tokenizer_grid_size=8, foveated_center_size=4,
            image_tokenizer_type="foveated" if name.endswith("foveated") else "grid_pool",
            max_position_embeddings=64, decoder_start_token_id=tokenizer.bos_token_id, **special)
        return CenterFocusForConditionalGeneration(config)
    from transformers import BertConfig, BertLMHeadModel, VisionEncoderDecoderModel, ViTConfig, ViTModel

    encoder = ViTModel(ViTConfig(hidden_size=WIDTH, num_hidden_layers=ENCODER_LAYERS, num_attention_heads=HEADS,
                                 intermediate_size=INTERMEDIATE, image_size=image_size, patch_size=8),
                       add_pooling_layer=False)  # 8x8 patches on 64 px: 64 tokens, as CenterFocus's 8x8 grid
    decoder = BertLMHeadModel(BertConfig(vocab_size=len(tokenizer), hidden_size=WIDTH,
                                         num_hidden_layers=DECODER_LAYERS, num_attention_heads=HEADS,
                                         intermediate_size=INTERMEDIATE, is_decoder=True, add_cross_attention=True,
                                         max_position_embeddings=64, **special))
    model = VisionEncoderDecoderModel(encoder=encoder, decoder=decoder)
    model.config.decoder_start_token_id = tokenizer.bos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.loss_function = plain_cross_entropy
    return model


def training_flops(model, collator, rows) -> float:
    batch = collator(rows)
    model.train()
    count_cpu_flash_attention()
    with FlopCounterMode(display=False) as counter:
        model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def evaluate(model, processor, test) -> dict:
    captions = caption_images(model, processor, list(test["image"]), max_new_tokens=24, num_beams=1)
    references = [t.strip() for t in test["text"]]
    metrics = compute_caption_metrics(captions, references)
    metrics["center_phrase_exact_match"] = float(np.mean([center_phrase(c) == p
                                                          for c, p in zip(captions, test["center_phrase"])]))
    metrics["sample"] = captions[:3]
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--models", nargs="+", default=["centerfocus", "centerfocus_foveated",
                                                        "vision_encoder_decoder"])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--flops_only", action="store_true",
                        help="Only recount the training FLOPs and update them in an existing --out file.")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cf-quality-"))
    data = generate_caption_dataset(work / "data", num_train=2000, num_test=200, image_size=64, seed=0)
    splits = load_dataset("imagefolder", data_dir=str(data))
    tokenizer = train_caption_tokenizer(splits["train"]["text"], vocab_size=200)
    tokenizer.model_max_length = 64
    processor = CenterFocusProcessor(CenterFocusImageProcessor(size={"height": 64, "width": 64}), tokenizer)
    collator = CaptionCollator(processor, max_target_length=24)
    results = {"steps": args.steps, "batch_size": args.batch_size,
               "width": WIDTH, "encoder_layers": ENCODER_LAYERS, "decoder_layers": DECODER_LAYERS, "models": {}}
    for name in args.models:
        set_seed(0)
        model = build(name, tokenizer, 64)
        flops_per_step = training_flops(model, collator, [splits["train"][i] for i in range(args.batch_size)])
        if args.flops_only:
            results["models"][name] = {"training_tflops": round(flops_per_step * args.steps / 1e12, 2)}
            continue
        training_args = Seq2SeqTrainingArguments(
            output_dir=str(work / name), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
            learning_rate=1e-3, warmup_ratio=0.05, lr_scheduler_type="cosine", weight_decay=0.01, use_cpu=True,
            save_strategy="no", report_to="none", remove_unused_columns=False, logging_steps=100, seed=0,
            disable_tqdm=True)
        trainer = Seq2SeqTrainer(model=model, args=training_args, train_dataset=splits["train"],
                                 data_collator=collator)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        measured = evaluate(model, processor, splits["test"])
        measured.update(parameters_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
                        training_tflops=round(flops_per_step * args.steps / 1e12, 2),
                        train_seconds=round(seconds, 1))
        results["models"][name] = measured
        print(name, json.dumps(measured), flush=True)
    if args.flops_only and args.out and args.out.exists():
        previous = json.loads(args.out.read_text())
        for name, counted in results["models"].items():
            previous["models"].setdefault(name, {}).update(counted)
        results = previous
    report(results, args.out)


if __name__ == "__main__":
    main()
