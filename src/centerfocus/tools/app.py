"""`centerfocus app`: a Gradio captioning page for a saved model (`pip install "centerfocus[app]"`).

    centerfocus app --model runs/captioner                  # http://127.0.0.1:7860
    centerfocus app --model runs/captioner --host 0.0.0.0 --port 8080 --share false

The Caption tab takes an uploaded or pasted image, an optional prompt and decoding options (greedy, beam search,
sampling with a seed) and shows the caption and the focus map: the model's learned centre weighting drawn over the
image. The Batch tab captions several files into a table. Image files in the model folder or its `examples/`
subfolder become clickable examples. Captions come from the model's `generate()` through its processor
(`captioning.caption_images`), so they equal `generate()`'s for the same options. Bad input (no image, an empty or
undecodable file, an image over --max_image_pixels, an option out of range) is answered in the page.

The page itself is `space_app.CaptionApp`, which `hub_upload.py --space` also publishes as a Hugging Face Space.
"""

import argparse
import functools
import importlib.util
import sys
from pathlib import Path
from typing import Any, Optional

from .cli import add_server_arguments
from .space_app import MAX_IMAGE_PIXELS, CaptionApp, find_examples


INSTALL_HINT = 'centerfocus app needs Gradio: pip install "centerfocus[app]"'


def load_caption_app(model_dir: Any, max_image_pixels: int = MAX_IMAGE_PIXELS) -> CaptionApp:
    """The app's behaviour for a saved model folder: the model (eval mode) and processor loaded once, captions by
    `caption_images`, the focus map by `focus_map_picture`."""
    from ..modeling_centerfocus import CenterFocusForConditionalGeneration
    from ..processing_centerfocus import CenterFocusProcessor
    from .captioning import caption_images, focus_map_picture

    model = CenterFocusForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = CenterFocusProcessor.from_pretrained(model_dir)

    def caption_fn(images: list, prompt: Optional[str], **generate_kwargs) -> list[str]:
        return caption_images(model, processor, images, None if prompt is None else [prompt] * len(images),
                              **generate_kwargs)

    return CaptionApp(model, processor, caption_fn=caption_fn, focus_fn=functools.partial(focus_map_picture, model),
                      examples=find_examples(model_dir), title=f"CenterFocus captioner: {Path(model_dir).name}",
                      max_pixels=max_image_pixels)


def build_app(model_dir: Any, max_image_pixels: int = MAX_IMAGE_PIXELS) -> Any:
    """The `gradio.Blocks` page for a saved model folder (its `CaptionApp` is `blocks.caption_app`)."""
    caption_app = load_caption_app(model_dir, max_image_pixels)
    blocks = caption_app.blocks()
    blocks.caption_app = caption_app
    return blocks


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in ("true", "1", "yes")


def app_main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="centerfocus app", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_arguments(parser, port=7860)
    parser.add_argument("--share", type=_boolean, default=False, metavar="{true,false}",
                        help="Also open a public gradio.live link (default false).")
    parser.add_argument("--max_image_pixels", type=int, default=MAX_IMAGE_PIXELS,
                        help=f"Refuse larger images (default {MAX_IMAGE_PIXELS:,}).")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("gradio") is None:
        print(f"centerfocus app: error: {INSTALL_HINT}", file=sys.stderr)
        raise SystemExit(1)
    if not Path(args.model).is_dir():
        raise ValueError(f"--model {args.model!r} is not a folder (a saved CenterFocus captioner).")
    blocks = build_app(args.model, args.max_image_pixels)
    examples = [str(Path(p).parent) for p in blocks.caption_app.examples]
    print(f"Serving {args.model} on http://{args.host}:{args.port} (Ctrl-C stops)", flush=True)
    blocks.queue().launch(server_name=args.host, server_port=args.port, share=args.share,
                          allowed_paths=sorted(set(examples)), max_file_size="100mb", show_error=False)


main = app_main
