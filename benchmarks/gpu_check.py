"""What only a GPU shows, in one table (run by `benchmarks/gpu_check.sh`): training-step time and loss in fp32, bf16
and fp16 (autocast, as the Trainer's `--bf16` / `--fp16` do), `generate()` milliseconds per token at batch 1 and 32
with and without the KV cache, and the torch.onnx export on ONNX Runtime's CUDA provider when it is installed.

    python benchmarks/gpu_check.py                 # on a CUDA machine: the small preset at 224 px
    python benchmarks/gpu_check.py --dry_run       # anywhere: a tiny model on the CPU, to check the script runs
"""

import argparse
import json
import statistics
import time

import torch

from centerfocus import CenterFocusConfig, CenterFocusForConditionalGeneration


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_rows(config: CenterFocusConfig, device, batch: int, steps: int, repeats: int) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(batch, 3, config.image_size, config.image_size, generator=generator).to(device)
    labels = torch.randint(4, config.vocab_size, (batch, 16), generator=generator).to(device)
    rows = []
    for precision in ("fp32", "bf16", "fp16"):
        if precision == "fp16" and device.type != "cuda":
            continue  # fp16 autocast on CPU is not what the Trainer does there
        torch.manual_seed(0)
        model = CenterFocusForConditionalGeneration(config).to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

        def step(model=model, optimizer=optimizer, scaler=scaler, dtype=dtype):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = model(pixel_values=pixel_values, labels=labels).loss
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            return loss

        losses = [float(step()) for _ in range(steps)]
        seconds = _timed(step, device, repeats)
        rows.append({"check": f"training step, {precision}, batch {batch}", "ms": round(1000 * seconds, 2),
                     "value": f"loss {losses[0]:.4f} -> {losses[-1]:.4f} after {steps} steps"})
    return rows


def generate_rows(config: CenterFocusConfig, device, new_tokens: int, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    model = CenterFocusForConditionalGeneration(config).to(device).eval()
    rows = []
    for batch in (1, 32):
        pixel_values = torch.randn(batch, 3, config.image_size, config.image_size).to(device)
        for use_cache in (True, False):
            def run(pixel_values=pixel_values, use_cache=use_cache):
                with torch.inference_mode():
                    return model.generate(pixel_values=pixel_values, max_new_tokens=new_tokens,
                                          min_new_tokens=new_tokens, use_cache=use_cache)
            seconds = _timed(run, device, repeats)
            rows.append({"check": f"generate, batch {batch}, {'KV cache' if use_cache else 'no cache'}",
                         "ms": round(1000 * seconds / new_tokens, 3), "value": "ms per generated token"})
    return rows


def onnxruntime_rows(config: CenterFocusConfig, device, new_tokens: int, repeats: int) -> list[dict]:
    """The random model exported with torch.onnx (`centerfocus export --backend torch`) and captioned by the package's
    runner on ONNX Runtime's CUDA provider (the CPU provider in a dry run): ms per token at batch 1 and 32, and
    whether the tokens equal PyTorch's on the same device (reported, not asserted: random weights can tie)."""
    import tempfile
    from pathlib import Path

    try:
        import onnx  # noqa: F401 (the exporter writes with it)
        import onnxruntime
    except ImportError as error:
        return [{"check": "ONNX Runtime CUDA provider", "ms": None, "value": f"{error.name} not installed"}]
    provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    available = onnxruntime.get_available_providers()
    if provider not in available:
        return [{"check": "ONNX Runtime CUDA provider", "ms": None,
                 "value": f"onnxruntime {onnxruntime.__version__}: absent ({', '.join(available)})"}]
    from centerfocus.tools.onnx_export import export_onnx_torch
    from centerfocus.tools.onnx_runner import load_onnx_model

    torch.manual_seed(0)
    model = CenterFocusForConditionalGeneration(config).eval()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(Path(folder) / "model")
        export_onnx_torch(str(Path(folder) / "model"), str(Path(folder) / "onnx"))
        runner = load_onnx_model(str(Path(folder) / "onnx"), provider)
        model.to(device)
        for batch in (1, 32):
            pixel_values = torch.randn(batch, 3, config.image_size, config.image_size)
            kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens}

            def run(pixel_values=pixel_values, kwargs=kwargs):
                with torch.inference_mode():
                    return runner.generate(pixel_values=pixel_values, **kwargs)

            seconds = _timed(run, torch.device("cpu"), repeats)  # the runner returns host tensors: nothing to sync
            with torch.inference_mode():
                same = torch.equal(run().cpu(), model.generate(pixel_values=pixel_values.to(device), **kwargs).cpu())
            rows.append({"check": f"ONNX Runtime CUDA provider, generate, batch {batch}" if device.type == "cuda"
                         else f"ONNX Runtime CUDA provider (dry run: CPU provider), generate, batch {batch}",
                         "ms": round(1000 * seconds / new_tokens, 3),
                         "value": f"ms per token; tokens {'equal' if same else 'differ from'} PyTorch's"})
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry_run", action="store_true", help="A tiny model on the CPU: checks that everything runs.")
    parser.add_argument("--json", help="Also write the rows here.")
    args = parser.parse_args(argv)
    if args.dry_run:
        device = torch.device("cpu")
        config = CenterFocusConfig(vocab_size=100, hidden_size=32, num_attention_heads=4, encoder_layers=1,
                                   decoder_layers=1, intermediate_size=64, image_size=32, stem_channels=(8, 16),
                                   stem_kernel_sizes=(3, 3), image_tokenizer_grid_size=8, max_position_embeddings=64)
        batch, steps, repeats, new_tokens = 4, 2, 2, 4
    else:
        if not torch.cuda.is_available():
            raise SystemExit("No CUDA device: run with --dry_run to check the script on a CPU.")
        device = torch.device("cuda")
        from centerfocus.tools.train import MODEL_PRESETS

        config = CenterFocusConfig(**{**MODEL_PRESETS["small"], "vocab_size": 1000})
        batch, steps, repeats, new_tokens = 32, 20, 10, 32
    rows = [{"check": "device", "ms": None, "value": torch.cuda.get_device_name() if device.type == "cuda" else
             "cpu (dry run)"}]
    rows += training_rows(config, device, batch, steps, repeats)
    rows += generate_rows(config, device, new_tokens, repeats)
    rows += onnxruntime_rows(config, device, new_tokens, repeats)
    print("| check | ms | value |\n| --- | --- | --- |")
    for row in rows:
        print(f"| {row['check']} | {'' if row['ms'] is None else row['ms']} | {row['value']} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)
    return rows


if __name__ == "__main__":
    main()
