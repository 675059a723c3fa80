"""Processor for CenterFocus: an image processor plus any tokenizer (prompt -> `input_ids`, caption -> `labels`)."""

from typing import Optional, Union

from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging


logger = logging.get_logger(__name__)


def _as_list(text: Union[str, list[str]], name: str) -> list[str]:
    texts = [text] if isinstance(text, str) else list(text)
    for index, item in enumerate(texts):
        if not isinstance(item, str):
            raise ValueError(f"`{name}` must be a string or a list of strings; item {index} is {type(item).__name__}.")
    return texts


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
    image_processor_class = "AutoImageProcessor"
    tokenizer_class = "AutoTokenizer"

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)

    def __call__(
        self,
        images=None,
        text: Optional[Union[str, list[str]]] = None,
        text_target: Optional[Union[str, list[str]]] = None,
        padding: Union[bool, str] = True,
        max_length: Optional[int] = None,
        max_target_length: Optional[int] = None,
        return_tensors: Optional[str] = "pt",
        **image_kwargs,
    ) -> BatchFeature:
        """
        Args:
            images: one image or a list (PIL, numpy or torch); see [`CenterFocusImageProcessor`].
            text: optional prompt(s) for the encoder, one per image.
            text_target: optional caption(s) to train on, one per image.
            padding: tokenizer padding for prompts (labels are always padded to the longest caption).
            max_length: longest prompt in tokens; longer prompts are truncated with a warning.
            max_target_length: longest caption in tokens including the eos token; truncated with a warning.
            return_tensors: `"pt"`, `"np"` or None.
        """
        if images is None and text is None and text_target is None:
            raise ValueError("Pass at least one of `images`, `text` or `text_target`.")
        data = {}
        if images is not None:
            data.update(self.image_processor(images, return_tensors=None, **image_kwargs))
        batch_size = len(data["pixel_values"]) if "pixel_values" in data else None
        if text is not None:
            data.update(self._encode_prompts(_as_list(text, "text"), batch_size, padding, max_length))
        if text_target is not None:
            data["labels"] = self._encode_labels(_as_list(text_target, "text_target"), batch_size, max_target_length)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _encode_prompts(self, prompts: list[str], batch_size: Optional[int], padding, max_length) -> dict:
        if batch_size is not None and len(prompts) != batch_size:
            raise ValueError(f"Got {batch_size} images but {len(prompts)} prompts; pass one prompt per image.")
        encoded = self.tokenizer(prompts, padding=padding, truncation=max_length is not None, max_length=max_length,
                                 return_token_type_ids=False, return_attention_mask=True)
        if max_length is not None:
            untruncated = self.tokenizer(prompts, return_attention_mask=False)["input_ids"]
            if any(len(ids) > max_length for ids in untruncated):
                logger.warning(f"A prompt is longer than max_length={max_length} tokens and was truncated.")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

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

    def batch_decode(self, *args, **kwargs):
        """Forwards to the tokenizer's `batch_decode`."""
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        """Forwards to the tokenizer's `decode`."""
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["pixel_values", "input_ids", "attention_mask"]


__all__ = ["CenterFocusProcessor"]
