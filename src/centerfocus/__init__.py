"""CenterFocus: a centre-focused image-to-text model family for the Hugging Face stack.

Importing the package registers the model type ``centerfocus`` with the transformers Auto classes.
"""

from .configuration_centerfocus import CenterFocusConfig
from .image_processing_centerfocus import CenterFocusImageProcessor
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

    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForImageClassification,
        AutoModelForImageTextToText,
        AutoProcessor,
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # AutoModelForVision2Seq is deprecated but still used by 4.57's pipeline
        from transformers import AutoModelForVision2Seq

    AutoConfig.register(CenterFocusConfig.model_type, CenterFocusConfig, exist_ok=True)
    AutoModel.register(CenterFocusConfig, CenterFocusModel, exist_ok=True)
    AutoModelForVision2Seq.register(CenterFocusConfig, CenterFocusForConditionalGeneration, exist_ok=True)
    AutoModelForImageTextToText.register(CenterFocusConfig, CenterFocusForConditionalGeneration, exist_ok=True)
    AutoModelForImageClassification.register(CenterFocusConfig, CenterFocusForImageClassification, exist_ok=True)
    AutoImageProcessor.register(CenterFocusConfig, slow_image_processor_class=CenterFocusImageProcessor, exist_ok=True)
    AutoProcessor.register(CenterFocusConfig, CenterFocusProcessor, exist_ok=True)

    CenterFocusConfig.register_for_auto_class()
    CenterFocusForConditionalGeneration.register_for_auto_class("AutoModelForVision2Seq")
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
    "CenterFocusModel",
    "CenterFocusPreTrainedModel",
    "CenterFocusProcessor",
    "register_auto_classes",
]
