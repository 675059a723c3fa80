"""A Gradio captioning app for a CenterFocus model: one image (upload or paste) with an optional prompt and decoding
options, or a batch of files as a table.

This module imports nothing of the `centerfocus` package: `hub_upload.py --space` copies its source as a Hugging Face
Space's `app.py`, where the model loads from its Hub repository with `trust_remote_code=True` (`load_space_app`) and
the package is not installed. `centerfocus app` (`centerfocus.tools.app`) builds the same page around a model loaded
with the package's classes, adding the focus map (the learned centre weighting drawn over the image).

    python app.py                                      # in a Space: the model repository named by MODEL_REPO
    CENTERFOCUS_SPACE_MODEL=path/to/repo python app.py  # any repository id or local repository folder

Every bad input is answered in the page (`gr.Error`, `gr.Warning`) with what is wrong: no image, an empty or
undecodable file, an image over `MAX_IMAGE_PIXELS`, an option out of range. Captions come from the model's own
`generate()` through its processor, so they are exactly what `generate()` gives for the same options (sampling is
seeded with `torch.manual_seed(seed)` first).
"""

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional


#: The model repository the Space captions with (`hub_space.assemble_space_folder` writes it into the Space's copy).
MODEL_REPO = None
#: Its revision (branch, tag or commit; None: the default branch).
MODEL_REVISION = None
#: Overrides MODEL_REPO: a repository id or a local repository folder (the Space check points it at the assembled one).
MODEL_ENV = "CENTERFOCUS_SPACE_MODEL"

#: Larger images are refused before they are decoded (PIL's own decompression-bomb limit is about 179 megapixels).
MAX_IMAGE_PIXELS = 50_000_000
STRATEGIES = ("greedy", "beam", "sampling")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
MAX_NEW_TOKENS_LIMIT = 512
BATCH_HEADERS = ["file", "caption", "problem"]


class InputError(ValueError):
    """An input the app refuses; the message says what is wrong and is shown in the page."""


def _gradio():
    import gradio

    return gradio


# ----------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------


def _file_of(value: Any) -> tuple[Optional[str], str]:
    """The path and shown name of an upload: a path, or Gradio's file payload (`{"path", "orig_name", ...}`)."""
    if isinstance(value, dict):
        path = value.get("path")
        return path, value.get("orig_name") or (os.path.basename(path) if path else "the upload")
    path = os.fspath(value)
    return path, os.path.basename(path)


def read_image(value: Any, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[Any, str]:
    """The fully decoded PIL image of an upload (a PIL image, a path or Gradio's file payload) and its name.

    Raises:
        InputError: No upload, an empty file, a file PIL cannot decode (not an image, truncated), or an image of more
            than `max_pixels` pixels (checked from the header, before decoding; PIL's DecompressionBombError too).
    """
    from PIL import Image

    if value is None or (isinstance(value, (str, dict)) and not value):
        raise InputError("No image: upload or paste an image first.")
    if isinstance(value, Image.Image):
        image, name = value, "the image"
        _check_pixels(image, name, max_pixels)
        return image, name
    path, name = _file_of(value)
    if not path or not os.path.isfile(path):
        raise InputError(f"{name}: the upload did not arrive; upload it again.")
    if os.path.getsize(path) == 0:
        raise InputError(f"{name} is empty (0 bytes): upload an image file.")
    try:
        image = Image.open(path)
        _check_pixels(image, name, max_pixels)
        image.load()  # decodes everything now: truncated or corrupt data fails here
    except InputError:
        raise
    except Image.DecompressionBombError as error:
        raise InputError(f"{name} is too large to decode safely ({error}); the limit is {max_pixels:,} pixels.") \
            from None
    except Exception as error:  # UnidentifiedImageError, OSError, SyntaxError, ...: PIL's many ways to fail
        raise InputError(f"{name} is not a readable image ({type(error).__name__}: {error}).") from None
    return image, name


def _check_pixels(image: Any, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise InputError(f"{name} is {width}x{height} = {width * height:,} pixels, over the limit of "
                         f"{max_pixels:,} ({max_pixels / 1e6:g} megapixels): make it smaller.")
    if width == 0 or height == 0:
        raise InputError(f"{name} has no pixels ({width}x{height}).")


def _number(value: Any, name: str, low: float, high: float, integer: bool) -> Any:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}.") from None
    if integer and not number.is_integer():
        raise InputError(f"{name} must be a whole number, got {value!r}.")
    if not low <= number <= high:
        raise InputError(f"{name} must be between {low:g} and {high:g}, got {value!r}.")
    return int(number) if integer else number


def generation_options(strategy: str = "greedy", num_beams: Any = 4, temperature: Any = 1.0, top_p: Any = 1.0,
                       top_k: Any = 50, max_new_tokens: Any = 32, seed: Any = None) -> tuple[dict, Optional[int]]:
    """`generate()` keyword arguments for a decoding strategy, and the seed (sampling only; None: unseeded).

    Raises:
        InputError: An unknown strategy or an option out of range.
    """
    if strategy not in STRATEGIES:
        raise InputError(f"Decoding must be one of {', '.join(STRATEGIES)}, got {strategy!r}.")
    kwargs: dict[str, Any] = {
        "max_new_tokens": _number(max_new_tokens, "max_new_tokens", 1, MAX_NEW_TOKENS_LIMIT, integer=True)}
    if strategy == "greedy":
        return {**kwargs, "do_sample": False, "num_beams": 1}, None
    if strategy == "beam":
        return {**kwargs, "do_sample": False, "num_beams": _number(num_beams, "num_beams", 2, 32, integer=True)}, None
    kwargs.update(do_sample=True, num_beams=1,
                  temperature=_number(temperature, "temperature", 0.01, 10.0, integer=False),
                  top_p=_number(top_p, "top_p", 0.01, 1.0, integer=False),
                  top_k=_number(top_k, "top_k (0: off)", 0, 100_000, integer=True))
    if seed is None or seed == "":
        return kwargs, None
    return kwargs, _number(seed, "seed", 0, 2**32 - 1, integer=True)


def find_examples(folder: Any) -> list[str]:
    """Example images of a model (or Space) folder: image files in it and in its `examples/` subfolder, sorted."""
    if folder is None or not Path(folder).is_dir():
        return []
    found = []
    for place in (Path(folder), Path(folder) / "examples"):
        if place.is_dir():
            found += sorted(str(p) for p in place.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return found


# ----------------------------------------------------------------------------------------------------------------
# The app
# ----------------------------------------------------------------------------------------------------------------


def generate_captions(model: Any, processor: Any, images: list, prompt: Optional[str] = None,
                      **generate_kwargs) -> list[str]:
    """Captions of `images` by `model.generate()` through the processor (one optional prompt for every image)."""
    import torch

    inputs = processor(images=images, text=None if prompt is None else [prompt] * len(images))
    with torch.inference_mode():
        output = model.generate(**inputs, **generate_kwargs)
    return [c.strip() for c in processor.batch_decode(output, skip_special_tokens=True)]


class CaptionApp:
    """The page's behaviour: `caption` (one image) and `caption_files` (a batch), and `blocks()`, the page.

    Args:
        model: The captioner, in eval mode.
        processor: Its processor.
        caption_fn: `caption_fn(images, prompt, **generate_kwargs) -> captions`; default `generate_captions`.
        focus_fn: `focus_fn(image) -> PIL image` drawing the focus map; None: no focus map on the page.
        examples: Example image paths.
        title: The page's title.
        max_pixels: Larger images are refused.
    """

    def __init__(self, model: Any, processor: Any, caption_fn: Optional[Callable[..., list[str]]] = None,
                 focus_fn: Optional[Callable[[Any], Any]] = None, examples: Sequence[str] = (),
                 title: str = "CenterFocus captioner", max_pixels: int = MAX_IMAGE_PIXELS):
        self.model = model
        self.processor = processor
        self.caption_fn = caption_fn or (lambda images, prompt, **kw: generate_captions(model, processor, images,
                                                                                         prompt, **kw))
        self.focus_fn = focus_fn
        self.examples = list(examples)
        self.title = title
        self.max_pixels = max_pixels
        # Gradio runs handlers in worker threads: seeding and sampling happen together, one request at a time
        self._lock = threading.Lock()
        config = model.generation_config
        # max_length counts the decoder start token: max_length - 1 new tokens is generate()'s own default
        self.default_max_new_tokens = min(config.max_new_tokens or max(1, (config.max_length or 21) - 1),
                                          MAX_NEW_TOKENS_LIMIT)

    def _captions(self, images: list, prompt: Optional[str], options: tuple) -> list[str]:
        import torch

        kwargs, seed = generation_options(*options)
        try:
            with self._lock:
                if seed is not None:
                    torch.manual_seed(seed)
                return self.caption_fn(images, (prompt or "").strip() or None, **kwargs)
        except ValueError as error:  # what the processor or generate() refuses (an image mode, an option), named
            raise InputError(" ".join(str(error).split())) from None

    def caption(self, image: Any, prompt: Optional[str] = "", strategy: str = "greedy", num_beams: Any = 4,
                temperature: Any = 1.0, top_p: Any = 1.0, top_k: Any = 50, max_new_tokens: Any = None,
                seed: Any = 0) -> Any:
        """The caption of one image (and the focus map picture when the app draws one). Bad input: `gr.Error`."""
        gr = _gradio()
        max_new_tokens = self.default_max_new_tokens if max_new_tokens is None else max_new_tokens
        try:
            picture, _ = read_image(image, self.max_pixels)
            caption = self._captions([picture], prompt, (strategy, num_beams, temperature, top_p, top_k,
                                                         max_new_tokens, seed))[0]
        except InputError as error:
            raise gr.Error(str(error), title="Cannot caption this") from None
        if self.focus_fn is None:
            return caption
        return caption, self.focus_fn(picture)

    def caption_files(self, files: Any, prompt: Optional[str] = "", strategy: str = "greedy", num_beams: Any = 4,
                      temperature: Any = 1.0, top_p: Any = 1.0, top_k: Any = 50, max_new_tokens: Any = None,
                      seed: Any = 0) -> list[list[str]]:
        """Rows `[file, caption, problem]` for a batch of files; unreadable files get their problem (and a
        `gr.Warning`), the others are captioned together. No files or a bad option: `gr.Error`."""
        gr = _gradio()
        max_new_tokens = self.default_max_new_tokens if max_new_tokens is None else max_new_tokens
        options = (strategy, num_beams, temperature, top_p, top_k, max_new_tokens, seed)
        if not files:
            raise gr.Error("No files: upload one or more images first.", title="Cannot caption this")
        rows, images = [], []
        for value in files:
            try:
                image, name = read_image(value, self.max_pixels)
                images.append(image)
                rows.append([name, "", ""])
            except InputError as error:
                gr.Warning(str(error))
                rows.append([_file_of(value)[1] if value else "?", "", str(error)])
        try:
            generation_options(*options)  # a bad option is the whole batch's problem
            captions = self._captions(images, prompt, options) if images else []
        except InputError as error:
            raise gr.Error(str(error), title="Cannot caption this") from None
        for row, caption in zip((r for r in rows if not r[2]), captions):
            row[1] = caption
        return rows

    def blocks(self) -> Any:
        """The page: a Caption tab (image, prompt, decoding options, caption, focus map, examples) and a Batch tab."""
        gr = _gradio()
        with gr.Blocks(title=self.title) as demo:
            gr.Markdown(f"# {self.title}\nUpload or paste an image and press **Caption**. The caption is the "
                        "model's `generate()` output for the chosen decoding options."
                        + (" The focus map shows the learned centre weighting over the image (bright: weighted "
                           "most)." if self.focus_fn else ""))
            with gr.Tab("Caption"):
                with gr.Row():
                    with gr.Column():
                        image = gr.Image(label="Image", sources=["upload", "clipboard"], type="filepath",
                                         height=300, elem_id="cf-image")
                        prompt = gr.Textbox(label="Prompt (optional)", placeholder="e.g. what is in the centre",
                                            elem_id="cf-prompt")
                        options = self._option_inputs(gr)
                        button = gr.Button("Caption", variant="primary", elem_id="cf-caption-button")
                    with gr.Column():
                        caption = gr.Textbox(label="Caption", interactive=False, lines=2, elem_id="cf-caption")
                        outputs = [caption]
                        if self.focus_fn is not None:
                            outputs.append(gr.Image(label="Focus map: learned centre weighting", interactive=False,
                                                    height=300, elem_id="cf-focus"))
                if self.examples:
                    gr.Examples(examples=[[p] for p in self.examples], inputs=[image], label="Examples")
            with gr.Tab("Batch"):
                files = gr.File(label="Images", file_count="multiple", file_types=["image"], elem_id="cf-files")
                batch_button = gr.Button("Caption all", variant="primary", elem_id="cf-batch-button")
                table = gr.Dataframe(headers=BATCH_HEADERS, interactive=False, elem_id="cf-table")
            # preprocess=False: the handlers read the uploads themselves, so a file that is not an image is answered
            # with its problem instead of failing in Gradio's own decoding
            button.click(self.caption, inputs=[image, prompt, *options], outputs=outputs, api_name="caption",
                         preprocess=False)
            prompt.submit(self.caption, inputs=[image, prompt, *options], outputs=outputs, preprocess=False)
            batch_button.click(self.caption_files, inputs=[files, prompt, *options], outputs=[table],
                               api_name="caption_batch", preprocess=False)
        return demo

    def _option_inputs(self, gr: Any) -> list:
        with gr.Row():
            strategy = gr.Radio(list(STRATEGIES), value="greedy", label="Decoding", elem_id="cf-strategy")
            max_new_tokens = gr.Slider(1, MAX_NEW_TOKENS_LIMIT, value=self.default_max_new_tokens, step=1,
                                       label="max_new_tokens")
        with gr.Accordion("Beam search and sampling options", open=False):
            with gr.Row():
                num_beams = gr.Slider(2, 16, value=4, step=1, label="num_beams (beam)")
                temperature = gr.Slider(0.05, 2.0, value=1.0, step=0.05, label="temperature (sampling)")
            with gr.Row():
                top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top_p (sampling)")
                top_k = gr.Slider(0, 200, value=50, step=1, label="top_k (sampling; 0: off)")
                seed = gr.Number(value=0, precision=0, label="seed (sampling)")
        return [strategy, num_beams, temperature, top_p, top_k, max_new_tokens, seed]


def load_space_app(repo: Optional[str] = None, revision: Optional[str] = None) -> CaptionApp:
    """The app of a model repository (id or local folder; default $CENTERFOCUS_SPACE_MODEL, else MODEL_REPO), loaded
    with transformers' Auto classes and `trust_remote_code=True`; examples from this file's `examples/` folder."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    repo = repo or os.environ.get(MODEL_ENV) or MODEL_REPO
    if not repo:
        raise ValueError(f"No model: set MODEL_REPO in this file or ${MODEL_ENV}.")
    revision = revision or (None if os.environ.get(MODEL_ENV) else MODEL_REVISION)
    model = AutoModelForImageTextToText.from_pretrained(repo, revision=revision, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(repo, revision=revision, trust_remote_code=True)
    return CaptionApp(model, processor, examples=find_examples(Path(__file__).resolve().parent / "examples"),
                      title=f"CenterFocus captioner: {repo}")


if __name__ == "__main__":
    load_space_app().blocks().launch()
