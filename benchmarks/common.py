"""Shared by the benchmark scripts."""

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional


def report(results: dict, out: Optional[Path]) -> None:
    """Print the results as JSON and, with `out`, write them there too."""
    text = json.dumps(results, indent=2)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def median_seconds(function: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of `repeats` calls of `function` after `warmup` untimed calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_cpu_flash_attention() -> None:
    """Give torch's FLOP counter a formula for the CPU flash-attention kernel that `scaled_dot_product_attention` runs
    on CPU. torch 2.13 registers formulas only for the CUDA kernels, so without this every SDPA model (CenterFocus,
    ViT, BERT) would count its attention products as 0 FLOPs on CPU while eager models (BLIP, GIT) count theirs.
    Counted like eager attention: forward QK^T and PV, backward twice the forward (the kernel's recomputation of the
    scores is not counted, so the count does not depend on the attention implementation). Idempotent."""
    import torch
    from torch.utils import flop_counter

    aten = torch.ops.aten
    forward_op = aten._scaled_dot_product_flash_attention_for_cpu
    if forward_op in flop_counter.flop_registry or forward_op.default in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(forward_op)
    def forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    @flop_counter.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)
