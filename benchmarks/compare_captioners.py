"""CenterFocus (196 tokens and foveated) against the captioners users would pick instead, built from configs of the
same width and depth with random weights (nothing downloaded): VisionEncoderDecoder (ViT + BERT decoder), BLIP, GIT.

    python benchmarks/compare_captioners.py --out benchmarks/results/compare.json            # full size (slow)
    python benchmarks/compare_captioners.py --width 256 --layers 2 --out /tmp/small.json  # a quick look

For each model, in a fresh subprocess (so peak memory is its own): parameters, FLOPs per training example
(torch.utils.flop_counter over forward + backward), training samples/s (AdamW step included; median of --steps
steps after a warm-up), the fraction of the measured fp32 matmul peak that represents (the peak is also re-measured
between the timed steps, since the shared machine drifts), peak RSS, and generate()
latency for 32 new tokens with and without the KV cache at batch 1 and 8 (medians).
"""

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from common import (  # benchmarks/ runs as scripts: python benchmarks/NAME.py
    count_cpu_flash_attention,
    median_seconds,
    report,
)

from centerfocus._compat import VISION_ENCODER_DECODER_SHIFTS_LABELS_TWICE


MODELS = ("centerfocus", "centerfocus_foveated", "vision_encoder_decoder", "blip", "git")
CAPTION_TOKENS = 32
VOCAB = 30522
# on 4.57 VisionEncoderDecoder gets a plain cross-entropy; on 5.x its own loss is that
VED_SHIFTS_LABELS_TWICE = VISION_ENCODER_DECODER_SHIFTS_LABELS_TWICE


def matmul_peak_gflops(size: int = 2048, repeats: int = 7) -> float:
    """Median fp32 GFLOP/s of a large square matmul: the practical peak of this CPU with this torch build. The output
    is preallocated: a fresh 16 MB result per call would time glibc's page faults too (3-5% lower, and noisier)."""
    a, b, out = torch.randn(size, size), torch.randn(size, size), torch.empty(size, size)
    return 2 * size**3 / median_seconds(lambda: torch.matmul(a, b, out=out), repeats) / 1e9


def build(name: str, width: int, layers: int, heads: int):
    """Model, and a function turning (pixel_values, labels) into its training loss."""
    from transformers import (
        BertConfig,
        BertLMHeadModel,
        BlipConfig,
        BlipForConditionalGeneration,
        GitConfig,
        GitForCausalLM,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTModel,
    )

    torch.manual_seed(0)
    inner = 4 * width
    if name.startswith("centerfocus"):
        from centerfocus import CenterFocusConfig, CenterFocusForConditionalGeneration

        config = CenterFocusConfig(hidden_size=width, num_attention_heads=heads, encoder_layers=layers,
                                   decoder_layers=layers, intermediate_size=inner, vocab_size=VOCAB,
                                   image_tokenizer_type="foveated" if name.endswith("foveated") else "grid_pool")
        model = CenterFocusForConditionalGeneration(config)
        return model, lambda pixels, labels: model(pixel_values=pixels, labels=labels).loss
    vit = dict(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=inner,
               image_size=224, patch_size=16)
    if name == "vision_encoder_decoder":
        decoder = BertLMHeadModel(BertConfig(vocab_size=VOCAB, hidden_size=width, num_hidden_layers=layers,
                                             num_attention_heads=heads, intermediate_size=inner, is_decoder=True,
                                             add_cross_attention=True))
        model = VisionEncoderDecoderModel(encoder=ViTModel(ViTConfig(**vit), add_pooling_layer=False), decoder=decoder)
        model.config.decoder_start_token_id, model.config.pad_token_id = 101, 0

        def loss(pixels, labels):
            output = model(pixel_values=pixels, labels=labels)
            if not VED_SHIFTS_LABELS_TWICE:
                return output.loss
            # plain CE: 4.57's VED loss_function shifts the labels a second time ; fixed in 5.x
            logits = output.logits
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)

        return model, loss
    if name == "blip":
        config = BlipConfig(vision_config=dict(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                                               intermediate_size=inner, image_size=224, patch_size=16),
                            text_config=dict(vocab_size=VOCAB + 2,  # + BLIP's [DEC], [ENC] tokens
                                             hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                                             intermediate_size=inner, encoder_hidden_size=width))
        model = BlipForConditionalGeneration(config)
        return model, lambda pixels, labels: model(pixel_values=pixels, input_ids=labels.clamp(min=0),
                                                   labels=labels).loss
    if name == "git":
        config = GitConfig(vision_config=dict(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                                              intermediate_size=inner, image_size=224, patch_size=16),
                           vocab_size=VOCAB, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                           intermediate_size=inner)
        model = GitForCausalLM(config)
        return model, lambda pixels, labels: model(pixel_values=pixels, input_ids=labels.clamp(min=0),
                                                   labels=labels).loss
    raise ValueError(name)


def random_batch(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 224-px images and 32-token captions: what every training measurement here runs on."""
    return torch.randn(batch, 3, 224, 224), torch.randint(1000, VOCAB, (batch, CAPTION_TOKENS))


def training_flops(model, loss_fn, pixels, labels) -> int:
    """FLOPs of one forward + backward (torch.utils.flop_counter; call `count_cpu_flash_attention()` first)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss_fn(pixels, labels).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def adamw_step(model, loss_fn, pixels, labels):
    """`step(loss=loss_fn)`: one training step on the batch with AdamW fused (the Trainer's default,
    adamw_torch_fused); `loss` can be a compiled `loss_fn`."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step(loss=loss_fn):
        optimizer.zero_grad(set_to_none=True)
        loss(pixels, labels).backward()
        optimizer.step()

    return step


def generate_latency(model, name: str, batch: int, use_cache: bool, repeats: int) -> float:
    pixels = torch.randn(batch, 3, 224, 224)
    kwargs = {"max_new_tokens": CAPTION_TOKENS, "min_new_tokens": CAPTION_TOKENS, "use_cache": use_cache,
              "do_sample": False, "num_beams": 1}
    if name == "git":
        kwargs["input_ids"] = torch.full((batch, 1), 101)
    if name == "blip":  # BLIP's generate() drops the prompt's last ([SEP]) token
        kwargs["input_ids"] = torch.tensor([[101, 102]] * batch)
    if name == "vision_encoder_decoder":
        kwargs.update(decoder_start_token_id=101, pad_token_id=0, eos_token_id=102)
    if name == "git":
        kwargs.update(pad_token_id=0, eos_token_id=102)
    with torch.inference_mode():
        return median_seconds(lambda: model.generate(pixel_values=pixels, **kwargs), repeats)


def measure(name: str, args) -> dict:
    if args.allocator == "keep":
        from centerfocus.tools.allocator import keep_freed_memory

        keep_freed_memory()
    count_cpu_flash_attention()
    model, loss_fn = build(name, args.width, args.layers, args.heads)
    model.train()
    batch = args.batch_size
    pixels, labels = random_batch(batch)
    flops_per_example = training_flops(model, loss_fn, pixels, labels) / batch
    # with --compile, what the Trainer's --torch_compile does: the forward compiled, backward through AOTAutograd
    step = functools.partial(adamw_step(model, loss_fn, pixels, labels),
                             torch.compile(loss_fn) if args.compile else loss_fn)
    start = time.perf_counter()
    step()
    first_step_seconds = time.perf_counter() - start  # includes the compilation with --compile
    step()
    times, peaks = [], []
    for _ in range(args.steps):  # the machine's speed drifts: the peak is re-measured between the timed steps
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        peaks.append(matmul_peak_gflops(repeats=3))
    step_seconds = statistics.median(times)
    model.eval()
    result = {
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "train_gflops_per_example": round(flops_per_example / 1e9, 2),
        "train_samples_per_second": round(batch / step_seconds, 3),
        "train_achieved_gflops": round(flops_per_example * batch / step_seconds / 1e9, 1),
        "interleaved_matmul_peak_gflops": round(statistics.median(peaks), 1),
        "fraction_of_interleaved_peak": round(statistics.median(
            flops_per_example * batch / t / 1e9 / p for t, p in zip(times, peaks)), 3),
        "allocator": "keep_freed_memory" if args.allocator == "keep" else "glibc_default",
    }
    if args.compile:
        result["torch_compile_first_step_s"] = round(first_step_seconds, 1)
    for batch_size in (1, 8) if not args.train_only else ():
        for use_cache in (True, False):
            if not use_cache and args.skip_no_cache_batch8 and batch_size == 8:
                continue
            key = f"generate_b{batch_size}_{'cache' if use_cache else 'no_cache'}_s"
            result[key] = round(generate_latency(model, name, batch_size, use_cache, args.generate_repeats), 3)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--generate_repeats", type=int, default=3)
    parser.add_argument("--skip_no_cache_batch8", action="store_true")
    parser.add_argument("--allocator", choices=["keep", "default"], default="keep",
                        help="'keep': glibc malloc reuses freed memory (centerfocus.tools.allocator), applied to every "
                             "model alike; 'default': glibc's own setting.")
    parser.add_argument("--train_only", action="store_true", help="Measure training only (no generate()).")
    parser.add_argument("--compile", action="store_true",
                        help="Train every model's loss under torch.compile (inductor), as the Trainer's --torch_compile "
                             "does; generate() stays eager.")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one model in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args)))
        return
    peak = matmul_peak_gflops()
    results = {"machine": {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
                           "transformers": transformers.__version__,
                           "processor": platform.processor() or platform.machine(),
                           "fp32_matmul_peak_gflops": round(peak, 1)},
               "setup": {"width": args.width, "layers": args.layers, "heads": args.heads,
                         "batch_size": args.batch_size, "caption_tokens": CAPTION_TOKENS, "image_size": 224,
                         "vocab_size": VOCAB, "optimizer": "AdamW fused", "timed_steps": args.steps,
                         "torch_compile": args.compile}, "models": {}}
    forwarded = sys.argv[1:]  # the --one child measures and prints; it never writes --out
    for name in args.models:
        output = subprocess.run([sys.executable, __file__, "--one", name, *forwarded], capture_output=True,
                                text=True, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
        if output.returncode != 0:
            results["models"][name] = {"error": output.stderr.strip().splitlines()[-1]}
            continue
        measured = json.loads(output.stdout.strip().splitlines()[-1])
        measured["fraction_of_matmul_peak"] = round(measured["train_achieved_gflops"] / peak, 3)
        results["models"][name] = measured
        print(name, json.dumps(measured), flush=True)
    reference = results["models"].get("vision_encoder_decoder", {}).get("train_samples_per_second")
    if reference:
        for measured in results["models"].values():
            if "train_samples_per_second" in measured:
                measured["train_speed_vs_ved"] = round(measured["train_samples_per_second"] / reference, 3)
    report(results, args.out)


if __name__ == "__main__":
    main()
