"""ONNX Runtime (fp32 and INT8) against PyTorch generate() latency on CPU, batch 1 and 8, measured side by side in
one process, plus the caption agreement of INT8 with fp32. Where Optimum is installed (the 4.57 line) it exports and
runs with Optimum, elsewhere with torch.onnx and the package's runner (`onnx_runner` in the output says which).

    python benchmarks/onnx_latency.py --model demo_output/model --data demo_output/data --optimize O2 \
        --out benchmarks/results/onnx_latency_demo.json
    python benchmarks/onnx_latency.py --size base --repeats 3 --agreement_images 16 --optimize O2 \
        --out benchmarks/results/onnx_latency_base.json   # design size (768 wide, 6+6, vocab 30522), random weights
    python benchmarks/onnx_latency.py --model TRAINED_DIR --data DATA_DIR --repeats 5 --optimize O2 \
        --out benchmarks/results/onnx_latency_base_trained.json   # a trained model: INT8 agreement means something

With `--data` (a folder with test/*.png and test/metadata.jsonl, as `centerfocus generate-data` writes), every
backend's captions are also scored against the references (exact match after caption normalisation, BLEU-4).

Every figure is the median of `--repeats` timed runs after one warm-up; ratios are ORT time / PyTorch time.
"""

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import torch
from common import median_seconds, report  # benchmarks/ is run as scripts: python benchmarks/NAME.py

from centerfocus import (
    CenterFocusConfig,
    CenterFocusForConditionalGeneration,
    CenterFocusImageProcessor,
    CenterFocusProcessor,
)
from centerfocus.tools.caption import load_onnx_captioner as load_ort_model
from centerfocus.tools.onnx_folder import OPTIMIZATION_LEVELS, has_optimum_onnx


if has_optimum_onnx():  # Optimum's exporter and ORTModel (the 4.57 line)
    from centerfocus.tools.export import export_onnx
else:  # torch.onnx and the package's runner (any line)
    from centerfocus.tools.onnx_export import export_onnx_torch as export_onnx


BASE_VOCAB = 30522

def random_model_folder(size: str, folder: Path) -> Path:
    """A random-weight model and its processor. "base" is the design size with the issue's 30522-word vocabulary (a
    tokenizer over made-up words, so the output layer is as large as BERT's); "small" has a 54-word one."""
    from centerfocus.tools.tokenizer import train_caption_tokenizer

    if size == "base":
        tokenizer = train_caption_tokenizer([" ".join(f"w{i}" for i in range(BASE_VOCAB))], vocab_size=BASE_VOCAB)
    else:
        tokenizer = train_caption_tokenizer(["a red circle in the centre with a small blue square at the top left"])
    kwargs = {} if size == "base" else {"hidden_size": 256, "num_attention_heads": 4, "encoder_layers": 3,
                                        "decoder_layers": 3, "intermediate_size": 1024, "image_size": 112,
                                        "stem_channels": (32, 64)}
    config = CenterFocusConfig(vocab_size=len(tokenizer), **kwargs)
    torch.manual_seed(0)
    CenterFocusForConditionalGeneration(config).save_pretrained(folder)
    size_px = config.image_size
    CenterFocusProcessor(CenterFocusImageProcessor(size={"height": size_px, "width": size_px}),
                         tokenizer).save_pretrained(folder)
    return folder


def load_images(data: Path | None, count: int, size: int) -> tuple[list, list | None]:
    """Held-out images and, where the folder's metadata.jsonl has them, their reference captions."""
    from PIL import Image

    if data is not None:
        paths = sorted((data / "test").glob("*.png"))[:count]
        metadata = data / "test" / "metadata.jsonl"
        references = None
        if metadata.is_file():
            from centerfocus.tools.caption_data import _read_metadata  # what `centerfocus train` checks data with

            captions = {row["file_name"]: row["text"] for _, row in _read_metadata(metadata)}
            references = [captions[p.name] for p in paths] if all(p.name in captions for p in paths) else None
        return [Image.open(p).convert("RGB") for p in paths], references
    import numpy as np

    from centerfocus.tools.data import make_scene

    rng = np.random.default_rng(0)
    return [make_scene(rng, image_size=size).image for _ in range(count)], None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="A trained CenterFocus folder (default: a random model).")
    parser.add_argument("--size", choices=["small", "base"], default="small", help="Random model size.")
    parser.add_argument("--data", type=Path, help="Image folder with a test/ split for caption agreement.")
    parser.add_argument("--tokens", type=int, default=32, help="Tokens generated per caption (forced).")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--agreement_images", type=int, default=200)
    parser.add_argument("--optimize", choices=list(OPTIMIZATION_LEVELS), help="Also time a graph-optimised fp32 copy.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cf-bench-"))
    model_dir = args.model or random_model_folder(args.size, work / "model")
    onnx_dir = export_onnx(str(model_dir), str(work / "onnx"), quantize="int8", validate=False)
    model = CenterFocusForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = CenterFocusProcessor.from_pretrained(model_dir)
    fp32 = load_ort_model(str(onnx_dir))
    int8 = load_ort_model(str(onnx_dir / "int8"))
    optimized = None
    if args.optimize:
        optimized_dir = export_onnx(str(model_dir), str(work / "onnx_optimized"), optimize=args.optimize,
                                    validate=False)
        optimized = load_ort_model(str(optimized_dir))
    size = model.config.image_size
    images, references = load_images(args.data, max(8, args.agreement_images), size)
    forced = {"max_new_tokens": args.tokens, "min_new_tokens": args.tokens}  # equal work for every backend
    results = {"onnx_runner": type(fp32).__module__,
               "machine": {"python": sys.version.split()[0], "torch": torch.__version__,
                           "threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine()},
               "model": {"path": str(args.model) if args.model else f"random-{args.size}",
                         "hidden_size": model.config.hidden_size, "encoder_layers": model.config.encoder_layers,
                         "decoder_layers": model.config.decoder_layers, "vocab_size": model.config.vocab_size,
                         "image_tokens": model.config.num_image_tokens},
               "tokens": args.tokens, "repeats": args.repeats, "latency_seconds": {}, "ratio_to_pytorch": {}}
    for batch in (1, 8):
        inputs = processor(images=images[:batch])
        def timed(backend, repeats, inputs=inputs, **kwargs):
            return median_seconds(lambda: backend.generate(**inputs, **forced, **kwargs), repeats)

        with torch.inference_mode():
            timings = {
                "pytorch_cache": timed(model, args.repeats),
                "pytorch_no_cache": timed(model, max(1, args.repeats // 2), use_cache=False),
                "ort_fp32": timed(fp32, args.repeats),
                "ort_int8": timed(int8, args.repeats),
            }
            if optimized is not None:
                timings[f"ort_fp32_{args.optimize}"] = timed(optimized, args.repeats)
        results["latency_seconds"][f"batch_{batch}"] = {k: round(v, 4) for k, v in timings.items()}
        results["ratio_to_pytorch"][f"batch_{batch}"] = {
            k: round(v / timings["pytorch_cache"], 3) for k, v in timings.items() if k != "pytorch_cache"}
    captions = {}
    backends = [("pytorch", model), ("ort_fp32", fp32), ("ort_int8", int8)]
    if optimized is not None:
        backends.append((f"ort_fp32_{args.optimize}", optimized))
    for name, backend in backends:
        texts = []
        for start in range(0, len(images), 32):
            with torch.inference_mode():
                output = backend.generate(**processor(images=images[start:start + 32]))
            texts += [t.strip() for t in processor.batch_decode(output, skip_special_tokens=True)]
        captions[name] = texts
    results["caption_agreement"] = {
        "images": len(images),
        "ort_fp32_vs_pytorch": sum(a == b for a, b in zip(captions["ort_fp32"], captions["pytorch"])) / len(images),
        "ort_int8_vs_ort_fp32": sum(a == b for a, b in zip(captions["ort_int8"], captions["ort_fp32"])) / len(images),
    }
    if optimized is not None:
        results["caption_agreement"][f"ort_fp32_{args.optimize}_vs_pytorch"] = sum(
            a == b for a, b in zip(captions[f"ort_fp32_{args.optimize}"], captions["pytorch"])) / len(images)
    if references is not None:  # quality against the data set's captions, same normalisation as the metrics
        from centerfocus.tools.metrics import compute_caption_metrics, normalize_caption

        results["quality"] = {
            name: {"exact_match": round(sum(normalize_caption(a) == normalize_caption(b)
                                            for a, b in zip(texts, references)) / len(images), 3),
                   "bleu4": round(compute_caption_metrics(texts, references)["bleu4"], 4)}
            for name, texts in captions.items()}
    report(results, args.out)


if __name__ == "__main__":
    main()
