"""Loading CenterFocus folders: the `auto_map` every saved folder carries, and `from_pretrained` errors that name what
is wrong (a damaged weights file, weights whose shapes config.json does not give).

Shipped beside the model files as remote code (the modeling file imports it relatively); it imports nothing but the
standard library, safetensors and transformers' logger.
"""

import logging
import os
import re
from pathlib import Path


#: Every Auto class a saved folder answers to with `trust_remote_code=True` (`save_pretrained` records one model class
#: by itself): the one source of the config's `auto_map`, for `save_pretrained` and for the Hub upload alike.
#: AutoModelForVision2Seq is deprecated on 4.57, whose image-to-text pipeline still resolves it.
AUTO_MAP = {
    "AutoConfig": "configuration_centerfocus.CenterFocusConfig",
    "AutoModel": "modeling_centerfocus.CenterFocusModel",
    "AutoModelForVision2Seq": "modeling_centerfocus.CenterFocusForConditionalGeneration",
    "AutoModelForImageTextToText": "modeling_centerfocus.CenterFocusForConditionalGeneration",
}
#: The `auto_map` of a saved processor (`processor_config.json`, `tokenizer_config.json`) and image processor.
PROCESSOR_AUTO_MAP = {"AutoProcessor": "processing_centerfocus.CenterFocusProcessor"}
IMAGE_PROCESSOR_AUTO_MAP = {"AutoImageProcessor": "image_processing_centerfocus.CenterFocusImageProcessor",
                            **PROCESSOR_AUTO_MAP}

DAMAGED_HINT = ("an interrupted copy or download leaves a file cut short: copy or download it again, or save the "
                "model again")


def check_safetensors_file(path) -> None:
    """Raise `OSError` naming `path` when its safetensors header cannot be read (a truncated or corrupted file)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as error:  # SafetensorError, HeaderTooLarge, ...
        raise OSError(f"{path} is damaged ({type(error).__name__}: {error}); {DAMAGED_HINT}.") from None


class _LoadReport(logging.Handler):
    """Keeps the load report transformers 5 logs from `from_pretrained` (ANSI colours removed)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.text = ""

    def emit(self, record):
        message = record.getMessage()
        if "LOAD REPORT" in message:
            self.text = re.sub(r"\x1b\[[0-9;]*m", "", message)

    def __enter__(self):
        logging.getLogger("transformers").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("transformers").removeHandler(self)


#: Weight names that changed, as `from_pretrained(key_mapping=...)` reads them (a regular expression -> its
#: replacement): checkpoints saved before still load. 0.2 spells the edge stem's colour projection as every other name
#: in the code does (`color`, like `center`).
RENAMED_WEIGHTS = {r"edge_compensation\.colour\.": "edge_compensation.color."}


def load_with_clear_errors(load, *args, **kwargs):
    """`load(*args, **kwargs)` (a `from_pretrained`), with two errors made readable:

    - a safetensors file that cannot be read: `OSError` naming the damaged file and what to do;
    - config.json that does not match the weights: transformers 5 logs a table and raises "You set
      `ignore_mismatched_sizes` to `False`..."; the `RuntimeError` here carries that table (which weights, which
      shapes), as 4.57's "size mismatch for ..." did.

    transformers gives both only as messages, so they are recognised by their text; anything else is raised as it is.
    """
    with _LoadReport() as report:
        try:
            return load(*args, **kwargs)
        except Exception as error:
            if "safetensor" in type(error).__name__.lower() or "deserializing header" in str(error):
                folder = args[0] if args else kwargs.get("pretrained_model_name_or_path")
                if isinstance(folder, (str, os.PathLike)) and os.path.isdir(folder):
                    for path in sorted(Path(folder).glob("*.safetensors")):
                        check_safetensors_file(path)  # OSError naming the damaged file
                raise OSError(f"Cannot read the weights of {folder} ({type(error).__name__}: {error}); "
                              f"{DAMAGED_HINT}.") from None
            if not isinstance(error, RuntimeError) or "ignore_mismatched_sizes" not in str(error) or not report.text:
                raise
            raise RuntimeError(f"size mismatch: the checkpoint's weights do not have the shapes its config.json "
                               f"gives (pass `ignore_mismatched_sizes=True` to re-initialise them):\n"
                               f"{report.text}") from None
