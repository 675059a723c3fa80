"""Micro-benchmarks behind the design-size model's CPU speed choices (768 wide, 12 heads, batch 8 x 196 image tokens,
vocabulary 30522), each a median over repeated runs in one process unless noted:

* separate q/k/v projections against one fused 768 -> 2304 projection (forward + backward);
* the scaled_dot_product_attention kernels for the encoder's 196 x 196 attention (forward + backward);
* the tied 30522 x 768 embedding gradient: allocating and zero-filling 94 MB per step, in a fresh process with glibc's
  default malloc and in one with `centerfocus.tools.allocator.keep_freed_memory()`;
* batch-1 decoding's weight traffic: the decoder reads every weight once per new token, so the time of those matrix-
  vector products is a floor for any fp32 runtime (PyTorch or ONNX Runtime) at batch 1;
* with `--compile_step`: the design-size CenterFocus training step (batch 8, AdamW fused) in eager mode and under
  `torch.compile` (inductor), alternating steps in one process;
* with `--step_breakdown`: where a design-size training step's time goes (CenterFocus and VisionEncoderDecoder, as
  built by compare_captioners.py): every aten op is timed under a dispatch mode and summed by family (matrix
  products, attention, optimizer, convolution, the rest), the matrix products' own GFLOP/s against the matmul peak,
  and the fraction of the peak the step would reach if only the ops that carry counted FLOPs (matrix products,
  attention, convolutions) took time: the ceiling for anything short of faster kernels.

    python benchmarks/micro_ops.py --compile_step 6 --step_breakdown 4 --out benchmarks/results/micro_ops.json
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import median_seconds, report  # benchmarks/ runs as scripts: python benchmarks/NAME.py
from torch.utils import flop_counter


WIDTH, HEADS, TOKENS, BATCH, VOCAB, INNER, DECODER_LAYERS = 768, 12, 196, 8, 30522, 3072, 6


def median_ms(function, repeats: int) -> float:
    return round(median_seconds(function, repeats, warmup=3) * 1e3, 2)


def qkv(repeats: int) -> dict:
    torch.manual_seed(0)
    hidden = torch.randn(BATCH, TOKENS, WIDTH, requires_grad=True)
    separate = [torch.nn.Linear(WIDTH, WIDTH) for _ in range(3)]
    fused = torch.nn.Linear(WIDTH, 3 * WIDTH)
    grads = [torch.randn(BATCH, TOKENS, WIDTH) for _ in range(3)]

    def run_separate():
        torch.autograd.backward([layer(hidden) for layer in separate], grads)

    def run_fused():
        torch.autograd.backward(list(fused(hidden).split(WIDTH, dim=-1)), grads)

    times = {}
    for _ in range(2):  # alternate, so a drift of the machine's speed hits both
        times.setdefault("separate_ms", []).append(median_ms(run_separate, repeats))
        times.setdefault("fused_ms", []).append(median_ms(run_fused, repeats))
    return {k: min(v) for k, v in times.items()}


def attention(repeats: int) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    shape = (BATCH, HEADS, TOKENS, WIDTH // HEADS)
    query, key, value = (torch.randn(shape, requires_grad=True) for _ in range(3))
    grad = torch.randn(shape)
    result = {}
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("math", SDPBackend.MATH)):
        def run(backend=backend):
            with sdpa_kernel(backend):
                F.scaled_dot_product_attention(query, key, value).backward(grad)
        result[f"sdpa_{name}_ms"] = median_ms(run, repeats)
    return result


GRADIENT_FILL = """
import json, statistics, sys, time, torch
if sys.argv[1] == "keep":
    from centerfocus.tools.allocator import keep_freed_memory
    assert keep_freed_memory()
times = []
for _ in range(23):
    start = time.perf_counter()
    grad = torch.zeros(30522, 768)  # what the embedding's backward allocates every step
    grad.index_add_(0, torch.randint(0, 30522, (256,)), torch.randn(256, 768))
    total = grad + grad  # the tied output layer's gradient is added to it
    del grad, total
    times.append(time.perf_counter() - start)
print(json.dumps(round(statistics.median(times[3:]) * 1e3, 2)))
"""


def gradient_fill() -> dict:
    result = {}
    for mode in ("default", "keep"):
        output = subprocess.run([sys.executable, "-c", GRADIENT_FILL, mode], capture_output=True, text=True,
                                check=True)
        result[f"embedding_gradient_{mode}_malloc_ms"] = json.loads(output.stdout.strip().splitlines()[-1])
    return result


def decoding_floor(repeats: int) -> dict:
    """Matrix-vector products over the weights one batch-1 decoding step reads (self-attention q/k/v/o, cross-attention
    q/o, feed-forward, output layer; cross-attention keys/values are computed once per caption)."""
    torch.manual_seed(0)
    square = [torch.randn(WIDTH, WIDTH) for _ in range(6 * DECODER_LAYERS)]
    up = [torch.randn(INNER, WIDTH) for _ in range(DECODER_LAYERS)]
    down = [torch.randn(WIDTH, INNER) for _ in range(DECODER_LAYERS)]
    head = torch.randn(VOCAB, WIDTH)
    x, x_inner = torch.randn(1, WIDTH), torch.randn(1, INNER)

    def step():
        for weight in square:
            F.linear(x, weight)
        for weight in up:
            F.linear(x, weight)
        for weight in down:
            F.linear(x_inner, weight)
        F.linear(x, head)

    weights = sum(w.numel() for w in (*square, *up, *down, head))
    step_ms = median_ms(step, repeats)
    return {"decoder_step_weights_m": round(weights / 1e6, 1), "decoder_step_weight_mb": round(weights * 4 / 1e6, 1),
            "weight_matvec_floor_ms_per_token": step_ms,
            "effective_bandwidth_gb_s": round(weights * 4 / step_ms / 1e6, 1)}


def compile_step(steps: int) -> dict:
    from compare_captioners import adamw_step, build, random_batch

    from centerfocus.tools.allocator import keep_freed_memory

    keep_freed_memory()
    model, loss_fn = build("centerfocus", WIDTH, DECODER_LAYERS, HEADS)
    model.train()
    compiled = torch.compile(loss_fn)
    step = adamw_step(model, loss_fn, *random_batch(BATCH))
    start = time.perf_counter()
    step(compiled)
    compile_seconds = time.perf_counter() - start
    step(loss_fn)
    times = {"eager": [], "compiled": []}
    for _ in range(steps):
        for name, loss in (("eager", loss_fn), ("compiled", compiled)):
            start = time.perf_counter()
            step(loss)
            times[name].append(time.perf_counter() - start)
    return {"first_compiled_step_s": round(compile_seconds, 1),
            **{f"{name}_step_s": round(statistics.median(values), 3) for name, values in times.items()}}


MATMULS = {"aten.mm.default": flop_counter.mm_flop, "aten.addmm.default": flop_counter.addmm_flop,
           "aten.bmm.default": flop_counter.bmm_flop}  # torch's own formulas, over the operands' shapes


def op_family(name: str) -> str:
    if name in MATMULS:
        return "matmul"
    if "scaled_dot_product" in name or "softmax" in name:
        return "attention"
    if "adam" in name or name.startswith("aten._foreach"):
        return "optimizer"
    if "convolution" in name:
        return "convolution"
    return "other_ops"


def step_breakdown(steps: int, models=("centerfocus", "vision_encoder_decoder"), width: int = WIDTH,
                   layers: int = DECODER_LAYERS, heads: int = HEADS, batch: int = BATCH) -> dict:
    """Time every aten op of `steps` training steps under a dispatch mode (which adds its own per-op overhead, so the
    families are shares, and `framework` is Python, autograd and the mode), alongside `steps` plain steps and
    matmul peaks measured in between."""
    from common import count_cpu_flash_attention

    from centerfocus.tools.allocator import keep_freed_memory

    keep_freed_memory()
    count_cpu_flash_attention()
    return {name: _breakdown_one(name, steps, width, layers, heads, batch) for name in models}


def _breakdown_one(name: str, steps: int, width: int, layers: int, heads: int, batch: int) -> dict:
    from collections import defaultdict

    from compare_captioners import adamw_step, build, matmul_peak_gflops, random_batch, training_flops
    from torch.utils._python_dispatch import TorchDispatchMode

    model, loss_fn = build(name, width, layers, heads)
    model.train()
    pixels, labels = random_batch(batch)
    step_flops = training_flops(model, loss_fn, pixels, labels)
    step = adamw_step(model, loss_fn, pixels, labels)
    seconds, flops = defaultdict(float), defaultdict(int)

    class Timed(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            start = time.perf_counter()
            out = func(*args, **(kwargs or {}))
            key = str(func)
            seconds[op_family(key)] += time.perf_counter() - start
            if key in MATMULS:
                flops["matmul"] += MATMULS[key](*(a.shape for a in args[:3]))
            return out

    step()
    step()
    plain, timed, peaks = [], [], []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        with Timed():
            step()
        timed.append(time.perf_counter() - start)
        peaks.append(matmul_peak_gflops(repeats=3))
    peak = statistics.median(peaks)
    step_s, timed_s = statistics.median(plain), sum(timed) / steps
    family = {k: v / steps for k, v in seconds.items()}
    matmul_s = family["matmul"]
    flop_counted_s = sum(family.get(k, 0.0) for k in ("matmul", "attention", "convolution"))
    return {
        "step_s": round(step_s, 3),
        "matmul_peak_gflops": round(peak, 1),
        "fraction_of_peak": round(step_flops / step_s / 1e9 / peak, 3),
        "timed_step_s": round(timed_s, 3),
        "share_of_timed_step": {**{k: round(v / timed_s, 3) for k, v in sorted(family.items())},
                                "framework": round(1 - sum(family.values()) / timed_s, 3)},
        "matmul_flops_per_step": flops["matmul"] // steps,
        "matmul_flops_share": round(flops["matmul"] / steps / step_flops, 3),
        "matmul_gflops": round(flops["matmul"] / steps / matmul_s / 1e9, 1),
        "matmul_fraction_of_peak": round(flops["matmul"] / steps / matmul_s / 1e9 / peak, 3),
        "fraction_of_peak_if_only_flop_counted_ops_took_time": round(step_flops / flop_counted_s / 1e9 / peak, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--compile_step", type=int, default=0, metavar="STEPS",
                        help="Also time STEPS alternating eager / torch.compile design-size training steps.")
    parser.add_argument("--step_breakdown", type=int, default=0, metavar="STEPS",
                        help="Also break STEPS design-size training steps down by op family.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {"machine": {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
                           "processor": platform.processor() or platform.machine()},
               "qkv_projection_forward_backward": qkv(args.repeats),
               "encoder_attention_forward_backward": attention(args.repeats),
               "tied_embedding_gradient_per_step": gradient_fill(),
               "batch1_decoding_weight_traffic": decoding_floor(args.repeats)}
    if args.compile_step:
        results["training_step_eager_vs_compiled"] = compile_step(args.compile_step)
    if args.step_breakdown:
        results["training_step_breakdown"] = step_breakdown(args.step_breakdown)
    report(results, args.out)


if __name__ == "__main__":
    main()
