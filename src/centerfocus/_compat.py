"""The differences between the two transformers lines CenterFocus runs on, 4.57 and 5.x, in one place.

`TRANSFORMERS_5` is the only test of which line is installed; every other module reads the named facts below instead
of looking at transformers itself. Shipped beside the model files as remote code (they import it relatively), so it
imports nothing but transformers, torch and the standard library.
"""

import warnings

import transformers


#: The installed line: 5.x (True) or 4.57 (False).
TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5

# ---- model files ----


def __getattr__(name: str):
    """The two facts that need torch, computed when first imported (the processor files import this module too, and
    do not need torch):

    - `CACHE_FIELD`: later 5.x releases renamed the KV cache from `past_key_values` to `cache` (forward argument and
      output field; 5.0 still has the old name, so this is read off the output class, not the version). Outputs are
      built with the installed name; forwards accept both (4.57's generate() and Optimum's exporter pass the old one).
    - `init`: 5.x builds a model on the meta device before loading a checkpoint, so `_init_weights` uses its
      `initialization` functions, which leave loaded tensors alone; on 4.57 torch's own init functions are right.
    """
    if name == "CACHE_FIELD":
        from transformers.modeling_outputs import Seq2SeqLMOutput

        return "cache" if "cache" in Seq2SeqLMOutput.__dataclass_fields__ else "past_key_values"
    if name == "init":
        try:
            from transformers import initialization
        except ImportError:  # 4.57
            from torch.nn import init as initialization
        return initialization
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: 4.57 finds a processor's parts through `<part>_class` attributes; 5.x through the Auto mappings (and warns about an
#: `image_processor_class` attribute).
PROCESSOR_NAMES_ITS_IMAGE_PROCESSOR_CLASS = not TRANSFORMERS_5

#: 5.x records a tokenizers-backed tokenizer as "TokenizersBackend", a class 4.57 lacks; this name both lines load.
PORTABLE_FAST_TOKENIZER_CLASS = "PreTrainedTokenizerFast"

# ---- Auto classes and pipelines ----


def auto_model_for_vision2seq():
    """4.57's `AutoModelForVision2Seq` (deprecated there, yet its image-to-text pipeline resolves it); None on 5.x,
    which removed it."""
    if TRANSFORMERS_5:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return transformers.AutoModelForVision2Seq


#: The Auto class Optimum's exporter loads a captioner with: 4.57's `AutoModelForVision2Seq`, which 5.x removed for
#: `AutoModelForImageTextToText`.
EXPORT_AUTO_CLASS = "AutoModelForImageTextToText" if TRANSFORMERS_5 else "AutoModelForVision2Seq"

#: 5.x's image processors have "pil" and "torchvision" backends, and the fast one may be any torch-only class; 4.57 takes
#: as fast processors only subclasses of its torchvision-based `BaseImageProcessorFast`.
REGISTERS_TORCH_FAST_IMAGE_PROCESSOR = TRANSFORMERS_5

#: 5.x's pipelines also look for a video processor and guess one from the image processor's auto_map, asking at a
#: terminal whether to run custom code; CenterFocus registers an empty mapping there.
PIPELINES_LOOK_FOR_A_VIDEO_PROCESSOR = TRANSFORMERS_5

#: The captioning pipeline tasks: 5.x's "image-to-text" opens "image-text-to-text", which needs text for every
#: model (`text=""` captions); 4.57 has both tasks.
CAPTIONING_TASKS = ("image-text-to-text",) if TRANSFORMERS_5 else ("image-text-to-text", "image-to-text")

# ---- training ----

#: Flags 5.x dropped from `TrainingArguments` that `centerfocus train` keeps on both lines, so that a command written
#: for one runs on the other (5.x reads a float `--warmup_steps` below 1 as the warm-up ratio).
TRAINING_ARGUMENTS_DROPPED = ("overwrite_output_dir", "warmup_ratio") if TRANSFORMERS_5 else ()

#: 4.57's VisionEncoderDecoderModel trains against labels shifted twice (its loss falls back to the causal-LM loss,
#: which shifts again); fixed after 4.57. Benchmarks against it give it a plain cross-entropy.
VISION_ENCODER_DECODER_SHIFTS_LABELS_TWICE = not TRANSFORMERS_5
