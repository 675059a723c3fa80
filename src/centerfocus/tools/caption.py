"""`centerfocus caption`: caption images with PyTorch or ONNX Runtime (an exported folder; the `export` extra), on
either stack line."""

import argparse
import json
from typing import Optional

import torch
from PIL import Image

from ..processing_centerfocus import CenterFocusProcessor
from .progress import progress


def caption_main(argv: Optional[list[str]] = None) -> list[str]:
    """`centerfocus caption (--onnx DIR | --model DIR) IMAGE... [--provider ...] [--prompt TEXT] [--num_beams N]
    [--trt_fp16] [--trt_engine_cache DIR]`: print one caption per image.

    `centerfocus caption --model DIR --dataset DATA --output results.parquet|results.jsonl [--split S]`: caption a data
    set of any size (an image folder, parquet / arrow / webdataset shards, a Hub data set) in batches into a results
    file, resuming after the rows it already holds when run again (`centerfocus.tools.bulk_caption`)."""
    parser = argparse.ArgumentParser(prog="centerfocus caption", description=caption_main.__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--onnx", help="An exported folder (centerfocus export).")
    source.add_argument("--model", help="A saved PyTorch model folder.")
    parser.add_argument("images", nargs="*", help="Image files (or --dataset).")
    parser.add_argument("--dataset", help="A data set to caption into --output (instead of IMAGE...).")
    parser.add_argument("--output", help="With --dataset: the results file, .jsonl or .parquet.")
    parser.add_argument("--split", help="With --dataset: the split to caption (default: the only one).")
    parser.add_argument("--image_column", default="image", help="With --dataset: the column holding the images.")
    parser.add_argument("--provider", default="CPUExecutionProvider",
                        choices=["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"])
    parser.add_argument("--prompt", help="Encoder prompt (needs a --variant prompt export for --onnx).")
    parser.add_argument("--index", help="Caption index (centerfocus index): the k nearest captions become the prompt.")
    parser.add_argument("--k", type=_positive_int, default=2, help="Captions retrieved per image with --index.")
    parser.add_argument("--num_beams", type=_positive_int, default=1)
    parser.add_argument("--max_new_tokens", type=_positive_int, default=None)
    parser.add_argument("--batch_size", type=_positive_int, default=16,
                        help="Images opened and captioned at a time (one JSON line each, as they are done).")
    parser.add_argument("--trt_fp16", action="store_true", help="TensorRT: build fp16 engines.")
    parser.add_argument("--trt_engine_cache", help="TensorRT: engine and timing cache folder.")
    args = parser.parse_args(argv)
    if args.prompt and args.index:
        parser.error("--prompt and --index both set the encoder prompt: pass one of them.")
    if bool(args.dataset) == bool(args.images):
        parser.error("pass image files or --dataset (with --output), not both and not neither.")
    if args.dataset and not args.output:
        parser.error("--dataset needs --output (a .jsonl or .parquet results file).")
    if args.dataset and (args.onnx or args.prompt or args.index):
        parser.error("--dataset captions with --model, without a prompt.")
    if args.dataset:
        return _caption_dataset(args)
    folder = args.onnx or args.model
    if args.onnx:
        from .onnx_folder import check_onnx_folder

        check_onnx_folder(args.onnx)  # before the processor, which a bare folder lacks too
    processor = CenterFocusProcessor.from_pretrained(folder)
    if args.onnx:
        options = {}
        if args.provider == "TensorrtExecutionProvider":
            if args.trt_fp16:
                options["trt_fp16_enable"] = "True"
            if args.trt_engine_cache:
                options.update(trt_engine_cache_enable="True", trt_engine_cache_path=args.trt_engine_cache,
                               trt_timing_cache_enable="True")
        model = load_onnx_captioner(args.onnx, args.provider, options or None)
    else:
        from ..modeling_centerfocus import CenterFocusForConditionalGeneration

        model = CenterFocusForConditionalGeneration.from_pretrained(folder).eval()
    for path in args.images:  # every path readable as an image before any captioning (headers only)
        try:
            Image.open(path).close()
        except (OSError, ValueError) as error:
            raise SystemExit(f"Cannot read image {path}: {error}") from None
    index = None
    if args.index:
        from .retrieval import CaptionIndex, retrieval_prompts

        index = CaptionIndex.load(args.index)
    kwargs = {"num_beams": args.num_beams}
    if args.max_new_tokens:
        kwargs["max_new_tokens"] = args.max_new_tokens
    captions = []
    bar = progress(total=len(args.images), desc="Captioning", unit="image")
    for start in range(0, len(args.images), args.batch_size):
        paths = args.images[start:start + args.batch_size]
        images = [Image.open(path) for path in paths]
        prompts = [args.prompt] * len(images) if args.prompt else None
        if index is not None:
            prompts = retrieval_prompts(index, images, args.k)
        inputs = processor(images=images, text=prompts)
        for image in images:
            image.close()
        with torch.inference_mode():
            batch = processor.batch_decode(model.generate(**inputs, **kwargs), skip_special_tokens=True)
        for path, caption in zip(paths, batch):
            print(json.dumps({"image": path, "caption": caption.strip()}), flush=True)
        captions += batch
        bar.update(len(batch))
    bar.close()
    return captions


def load_onnx_captioner(folder: str, provider: str = "CPUExecutionProvider", options: Optional[dict] = None):
    """An exported folder ready for `generate()`: Optimum's ORTModel where Optimum is installed (the 4.57 line, with
    the merged decoder except on TensorRT), else the package's own runner (onnx_runner.py, any line)."""
    from .onnx_folder import has_optimum_onnx

    if has_optimum_onnx():
        from .export import load_ort_model

        return load_ort_model(folder, provider=provider, provider_options=options,
                              use_merged=False if provider == "TensorrtExecutionProvider" else None)
    from .onnx_runner import load_onnx_model

    return load_onnx_model(folder, provider, options)


def _caption_dataset(args) -> dict:
    from ..modeling_centerfocus import CenterFocusForConditionalGeneration
    from .bulk_caption import FORMATS, caption_dataset, load_rows

    if not args.output.endswith(FORMATS):
        raise ValueError(f"--output must end in {' or '.join(FORMATS)}, got {args.output!r}.")
    processor = CenterFocusProcessor.from_pretrained(args.model)
    model = CenterFocusForConditionalGeneration.from_pretrained(args.model).eval()
    rows, total = load_rows(args.dataset, args.split, image_column=args.image_column)
    kwargs = {"num_beams": args.num_beams}
    if args.max_new_tokens:
        kwargs["max_new_tokens"] = args.max_new_tokens
    summary = caption_dataset(model, processor, rows, args.output, batch_size=args.batch_size,
                              image_column=args.image_column, total=total, **kwargs)
    print(json.dumps({"output": args.output, **summary}), flush=True)
    return summary


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
