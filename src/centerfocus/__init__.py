"""CenterFocus: a centre-focused image-to-text model family for the Hugging Face stack.

Importing the package registers the model type ``centerfocus`` with the transformers Auto classes.
"""

from .configuration_centerfocus import CenterFocusConfig
from .image_processing_centerfocus import CenterFocusImageProcessor, CenterFocusImageProcessorFast
from .modeling_centerfocus import (
    CenterFocusDecoder,
    CenterFocusEncoder,
    CenterFocusForConditionalGeneration,
    CenterFocusForImageClassification,
    CenterFocusModel,
    CenterFocusPreTrainedModel,
)
from .processing_centerfocus import CenterFocusProcessor


__version__ = "0.1.0"


def register_auto_classes() -> None:
    """Register CenterFocus with the transformers Auto classes (idempotent) and mark the classes for
    ``save_pretrained`` to write ``auto_map`` entries and copy the model code (so saved folders load with
    ``trust_remote_code=True`` where this package is not installed)."""
    import warnings

    import transformers
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForImageClassification,
        AutoModelForImageTextToText,
        AutoProcessor,
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated in 4.57, whose pipeline still resolves it
        vision2seq = getattr(transformers, "AutoModelForVision2Seq", None)  # removed in transformers 5

    AutoConfig.register(CenterFocusConfig.model_type, CenterFocusConfig, exist_ok=True)
    AutoModel.register(CenterFocusConfig, CenterFocusModel, exist_ok=True)
    if vision2seq is not None:
        vision2seq.register(CenterFocusConfig, CenterFocusForConditionalGeneration, exist_ok=True)
    AutoModelForImageTextToText.register(CenterFocusConfig, CenterFocusForConditionalGeneration, exist_ok=True)
    AutoModelForImageClassification.register(CenterFocusConfig, CenterFocusForImageClassification, exist_ok=True)
    # 5.x: the "pil" and "torchvision" backends (the fast one needs torch only). 4.57 takes as fast processors only
    # subclasses of its torchvision-based BaseImageProcessorFast: there the fast class is used directly.
    fast = {"fast_image_processor_class": CenterFocusImageProcessorFast} if vision2seq is None else {}
    AutoImageProcessor.register(CenterFocusConfig, slow_image_processor_class=CenterFocusImageProcessor, **fast,
                                exist_ok=True)
    AutoProcessor.register(CenterFocusConfig, CenterFocusProcessor, exist_ok=True)
    if vision2seq is None:
        # transformers 5's pipelines also look for a video processor, and guess one from the image processor's
        # auto_map ("CenterFocusVideoProcessor"), which asks "Do you wish to run the custom code?" at a terminal:
        # CenterFocus has none, registered as an empty mapping (the pipeline then goes on without one)
        from transformers.models.auto.video_processing_auto import AutoVideoProcessor  # real without torchvision

        AutoVideoProcessor.register(CenterFocusConfig, video_processor_classes={}, exist_ok=True)

    CenterFocusConfig.register_for_auto_class()
    # the config's auto_map names both model Auto classes (see modeling_centerfocus._AUTO_MAP)
    CenterFocusForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
    CenterFocusImageProcessor.register_for_auto_class("AutoImageProcessor")
    CenterFocusProcessor.register_for_auto_class("AutoProcessor")
    CenterFocusForImageClassification.register_for_auto_class("AutoModelForImageClassification")


register_auto_classes()

__all__ = [
    "CenterFocusConfig",
    "CenterFocusDecoder",
    "CenterFocusEncoder",
    "CenterFocusForConditionalGeneration",
    "CenterFocusForImageClassification",
    "CenterFocusImageProcessor",
    "CenterFocusImageProcessorFast",
    "CenterFocusModel",
    "CenterFocusPreTrainedModel",
    "CenterFocusProcessor",
    "register_auto_classes",
]
