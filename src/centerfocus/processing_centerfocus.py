"""Processor for CenterFocus: an image processor plus any tokenizer (prompt -> `input_ids`, caption -> `labels`)."""

import json
import os
from typing import Optional, Union

import numpy as np
from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import ImagesKwargs, ProcessingKwargs, ProcessorMixin, TextKwargs, Unpack
from transformers.utils import logging

from ._compat import PORTABLE_FAST_TOKENIZER_CLASS, PROCESSOR_NAMES_ITS_IMAGE_PROCESSOR_CLASS


logger = logging.get_logger(__name__)

# A tokenizer's `model_max_length` at or above this is transformers' "no limit" placeholder (VERY_LARGE_INTEGER).
_NO_LENGTH_LIMIT = 1_000_000
# Files that can hold a tokenizer's vocabulary: tokenizers' JSON, WordPiece, BPE, SentencePiece.
_TOKENIZER_VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "tokenizer.model",
                          "sentencepiece.bpe.model")


def _as_list(text: Union[str, list[str]], name: str) -> list[str]:
    if isinstance(text, (bytes, bytearray)):
        raise ValueError(f"`{name}` must be text (str), got {type(text).__name__}; decode it first, e.g. "
                         f"`{name}.decode('utf-8')`.")
    if isinstance(text, str):
        return [text]
    if not isinstance(text, (list, tuple)):
        raise ValueError(f"`{name}` must be a string or a list of strings, got {type(text).__name__}.")
    if not text:
        raise ValueError(f"`{name}` is an empty list: pass one string per image.")
    for index, item in enumerate(text):
        if isinstance(item, (bytes, bytearray)):
            raise ValueError(f"`{name}` item {index} is {type(item).__name__}, not text (str); decode it first, e.g. "
                             "with `.decode('utf-8')`.")
        if not isinstance(item, str):
            raise ValueError(f"`{name}` must be a string or a list of strings; item {index} is {type(item).__name__}.")
    return list(text)


def _check_length(value: Optional[int], name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"`{name}` must be a positive integer or None, got {value!r}.")


def _read_json(folder: str, name: str) -> dict:
    """A JSON file of the folder as a dict; {} when it is absent."""
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (ValueError, UnicodeDecodeError) as error:
        raise OSError(f"{path!r} is not a valid JSON file ({error}); the file is truncated or corrupted.") from None


def _check_processor_folder(folder: str) -> None:
    """Before loading a local processor folder: raise FileNotFoundError / OSError naming the missing or unreadable
    file, where transformers would fail with an unrelated KeyError or AttributeError."""
    files = set(os.listdir(folder))
    if "tokenizer_config.json" not in files:
        raise FileNotFoundError(f"{folder!r} has no tokenizer_config.json: the tokenizer was not saved there (save the "
                                "processor with `processor.save_pretrained(folder)`).")
    for name in ("tokenizer_config.json", "tokenizer.json"):
        _read_json(folder, name)  # OSError naming a truncated or corrupted file
    if not files & set(_TOKENIZER_VOCAB_FILES):
        raise FileNotFoundError(f"{folder!r} has no tokenizer vocabulary file (one of {list(_TOKENIZER_VOCAB_FILES)}; "
                                "a CenterFocus tokenizer is saved as tokenizer.json).")
    if "preprocessor_config.json" not in files and "image_processor" not in _read_json(folder, "processor_config.json"):
        raise FileNotFoundError(f"{folder!r} has no preprocessor_config.json (nor image-processor settings in "
                                "processor_config.json): the image size and normalisation were not saved there.")


def portable_tokenizer_config(folder: str) -> None:
    """Name a tokenizers-backed tokenizer in `folder/tokenizer_config.json` as "PreTrainedTokenizerFast", which
    transformers 4.57 and 5.x both load (5.x writes "TokenizersBackend", unknown to 4.57)."""
    path = os.path.join(folder, "tokenizer_config.json")
    config = _read_json(folder, "tokenizer_config.json")
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = PORTABLE_FAST_TOKENIZER_CLASS
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2, sort_keys=True, ensure_ascii=False)
            handle.write("\n")


class CenterFocusTextKwargs(TextKwargs, total=False):
    max_target_length: Optional[int]


class CenterFocusImagesKwargs(ImagesKwargs, total=False):
    num_channels: Optional[int]


class CenterFocusProcessorKwargs(ProcessingKwargs, total=False):
    text_kwargs: CenterFocusTextKwargs
    images_kwargs: CenterFocusImagesKwargs
    _defaults = {"text_kwargs": {"padding": True}, "common_kwargs": {"return_tensors": "pt"}}


class CenterFocusProcessor(ProcessorMixin):
    r"""
    Wraps a [`CenterFocusImageProcessor`] and a tokenizer into one processor.

    `processor(images=..., text=..., text_target=...)` returns `pixel_values`; with `text`, the encoder prompt as
    `input_ids`/`attention_mask` (with the tokenizer's special tokens); with `text_target`, caption `labels`: the
    caption tokens followed by the tokenizer's end-of-sequence token, padded with -100 (ignored by the loss).

    Args:
        image_processor ([`CenterFocusImageProcessor`]): The image processor.
        tokenizer ([`PreTrainedTokenizerBase`]): Any tokenizer with a pad and an eos token. It is not modified.
    """

    attributes = ["image_processor", "tokenizer"]
    valid_processor_kwargs = CenterFocusProcessorKwargs
    if PROCESSOR_NAMES_ITS_IMAGE_PROCESSOR_CLASS:
        image_processor_class = "AutoImageProcessor"
    tokenizer_class = "AutoTokenizer"

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`ProcessorMixin.from_pretrained`, with clear errors for a local folder whose files are missing or broken:
        `FileNotFoundError` for a missing tokenizer or image-processor file, `OSError` for an unreadable one (naming
        the file), where transformers would raise a KeyError, AttributeError or a bare Exception."""
        source = os.fspath(pretrained_model_name_or_path)
        subfolder = kwargs.get("subfolder") or ""
        if isinstance(source, str) and os.path.isdir(os.path.join(source, subfolder)):
            _check_processor_folder(os.path.join(source, subfolder))
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except (OSError, ValueError, ImportError, MemoryError):
            raise
        except Exception as error:  # e.g. the tokenizers library's bare Exception for a malformed tokenizer.json
            raise OSError(f"Cannot load a CenterFocusProcessor from {source!r} ({type(error).__name__}: {error}).") \
                from None

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """`ProcessorMixin.save_pretrained`, writing the image-processor settings once, as `preprocessor_config.json`
        (the layout both lines read; transformers 5 would nest them in `processor_config.json`, where 4.57 and its
        image-to-text pipeline do not look, and a second copy could disagree with the first once edited)."""
        had_auto_map = [hasattr(part, "auto_map") for part in (self, self.image_processor)]
        files = super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        for part, had in zip((self, self.image_processor), had_auto_map):
            if not had and "auto_map" in vars(part):  # written to the files, not left on the objects: a saved
                del part.auto_map                        # processor and the one loaded back compare equal
        if not os.path.isfile(os.path.join(save_directory, "preprocessor_config.json")):
            files = [*files, *self.image_processor.save_pretrained(save_directory)]
        settings = _read_json(save_directory, "processor_config.json")
        if "image_processor" in settings:
            del settings["image_processor"]
            with open(os.path.join(save_directory, "processor_config.json"), "w", encoding="utf-8") as handle:
                json.dump(settings, handle, indent=2, sort_keys=True, ensure_ascii=False)
                handle.write("\n")
        portable_tokenizer_config(save_directory)
        return files

    def __call__(self, images=None, text: Optional[Union[str, list[str]]] = None,
                 **kwargs: Unpack[CenterFocusProcessorKwargs]) -> BatchFeature:
        """
        Args:
            images: one image or a list (PIL, numpy, torch or image file paths); see [`CenterFocusImageProcessor`].
            text: optional prompt(s) for the encoder, one per image (`str`; `bytes` are refused: decode them). An empty
                prompt is no prompt.
            text_target: optional caption(s) to train on, one per image.
            padding: tokenizer padding for prompts, default `True` (labels are always padded to the longest caption).
            max_length: longest prompt in tokens; longer prompts are truncated with a warning. Defaults to the
                tokenizer's `model_max_length` when that is a real limit (a trained CenterFocus folder sets it to
                the model's `max_position_embeddings`), else no limit.
            max_target_length: longest caption in tokens including the eos token; truncated with a warning.
                Defaults like `max_length`.
            return_tensors: `"pt"` (default), `"np"` or None.
            Other keyword arguments go to the image processor (`size`, `image_mean`, `device`, ...) or the tokenizer
            (`add_special_tokens`, `pad_to_multiple_of`, ...), flat or as `images_kwargs={...}` / `text_kwargs={...}`,
            as transformers' processors take them (`ProcessorMixin._merge_kwargs`; the tokenizer's own init settings,
            e.g. its `padding`, are defaults).
        """
        merged = self._merge_kwargs(CenterFocusProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs,
                                    **kwargs)
        text_kwargs, images_kwargs = dict(merged["text_kwargs"]), dict(merged["images_kwargs"])
        text_target = text_kwargs.pop("text_target", None)
        if images is None and text is None and text_target is None:
            raise ValueError("Pass at least one of `images`, `text` or `text_target`.")
        return_tensors = text_kwargs.pop("return_tensors", "pt")
        images_kwargs.pop("return_tensors", None)
        padding = text_kwargs.pop("padding", True)
        max_length = text_kwargs.pop("max_length", None)
        max_target_length = text_kwargs.pop("max_target_length", None)
        _check_length(max_length, "max_length")
        _check_length(max_target_length, "max_target_length")
        max_length = self._default_max_length() if max_length is None else max_length
        max_target_length = self._default_max_length() if max_target_length is None else max_target_length
        for owned in ("truncation", "return_token_type_ids", "return_attention_mask"):  # set by the prompt encoding
            text_kwargs.pop(owned, None)
        data = {}
        if images is not None:
            data.update(self.image_processor(images, return_tensors=None, **images_kwargs))
        batch_size = len(data["pixel_values"]) if "pixel_values" in data else None
        if text is not None:
            data.update(self._encode_prompts(_as_list(text, "text"), batch_size, padding, max_length, text_kwargs))
        if text_target is not None:
            data["labels"] = self._encode_labels(_as_list(text_target, "text_target"), batch_size, max_target_length)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _default_max_length(self) -> Optional[int]:
        """The tokenizer's `model_max_length` when it is a real limit, else None."""
        limit = getattr(self.tokenizer, "model_max_length", None)
        return limit if isinstance(limit, int) and 0 < limit < _NO_LENGTH_LIMIT else None

    def _encode_prompts(self, prompts: list[str], batch_size: Optional[int], padding, max_length,
                        tokenizer_kwargs: Optional[dict] = None) -> dict:
        """Prompts -> `input_ids` / `attention_mask`. An empty prompt is no prompt: it gets no tokens (a row of
        padding in a batch with other prompts; `(B, 0)` arrays when every prompt is empty, which the model reads as
        no prompt). transformers 5's image-text-to-text pipeline, which "image-to-text" now names, needs some text:
        `text=""` asks for a plain caption."""
        if batch_size is not None and len(prompts) != batch_size:
            raise ValueError(f"Got {batch_size} images but {len(prompts)} prompts; pass one prompt per image.")
        given = [prompt for prompt in prompts if prompt]
        if not given:
            empty = np.zeros((len(prompts), 0), dtype=np.int64)
            return {"input_ids": empty, "attention_mask": empty.copy()}
        encoded = self.tokenizer(given, padding=padding, truncation=max_length is not None, max_length=max_length,
                                 return_token_type_ids=False, return_attention_mask=True, **(tokenizer_kwargs or {}))
        if max_length is not None:
            # verbose=False: the tokenizer's own "longer than the specified maximum" message would mislead here
            untruncated = self.tokenizer(given, return_attention_mask=False, verbose=False)["input_ids"]
            if any(len(ids) > max_length for ids in untruncated):
                logger.warning(f"A prompt is longer than max_length={max_length} tokens and was truncated.")
        rows = iter(zip(encoded["input_ids"], encoded["attention_mask"]))
        width = max(len(ids) for ids in encoded["input_ids"]) if padding not in (False, "do_not_pad") else 0
        input_ids, attention_mask = [], []
        for prompt in prompts:
            ids, mask = next(rows) if prompt else ([self.tokenizer.pad_token_id] * width, [0] * width)
            input_ids.append(list(ids))
            attention_mask.append(list(mask))
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def _encode_labels(self, captions: list[str], batch_size: Optional[int], max_target_length) -> list[list[int]]:
        if batch_size is not None and len(captions) != batch_size:
            raise ValueError(f"Got {batch_size} images but {len(captions)} captions; pass one caption per image.")
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ValueError("The tokenizer has no eos token; CenterFocus captions must end with one.")
        ids = [[*row, eos] for row in self.tokenizer(captions, add_special_tokens=False)["input_ids"]]
        if max_target_length is not None and any(len(row) > max_target_length for row in ids):
            logger.warning(f"A caption is longer than max_target_length={max_target_length} tokens and was truncated.")
            ids = [[*row[:max_target_length - 1], eos] if len(row) > max_target_length else row for row in ids]
        longest = max(len(row) for row in ids)
        return [row + [-100] * (longest - len(row)) for row in ids]

    @property
    def model_input_names(self) -> list[str]:
        return ["pixel_values", "input_ids", "attention_mask"]


__all__ = ["CenterFocusProcessor"]
