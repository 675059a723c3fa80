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


__version__ = "0.2.0"


def register_auto_classes() -> None:
    """Register CenterFocus with the transformers Auto classes (idempotent) and mark the classes for
    ``save_pretrained`` to write ``auto_map`` entries and copy the model code (so saved folders load with
    ``trust_remote_code=True`` where this package is not installed)."""
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForImageClassification,
        AutoModelForImageTextToText,
        AutoProcessor,
    )

    from ._compat import (
        PIPELINES_LOOK_FOR_A_VIDEO_PROCESSOR,
        REGISTERS_TORCH_FAST_IMAGE_PROCESSOR,
        auto_model_for_vision2seq,
    )

    vision2seq = auto_model_for_vision2seq()
    AutoConfig.register(CenterFocusConfig.model_type, CenterFocusConfig, exist_ok=True)
    AutoModel.register(CenterFocusConfig, CenterFocusModel, exist_ok=True)
    if vision2seq is not None:
        vision2seq.register(CenterFocusConfig, CenterFocusForConditionalGeneration, exist_ok=True)
    AutoModelForImageTextToText.register(CenterFocusConfig, CenterFocusForConditionalGeneration, exist_ok=True)
    AutoModelForImageClassification.register(CenterFocusConfig, CenterFocusForImageClassification, exist_ok=True)
    # on 4.57 the fast class is not registered: it is used directly
    fast = {"fast_image_processor_class": CenterFocusImageProcessorFast} if REGISTERS_TORCH_FAST_IMAGE_PROCESSOR else {}
    AutoImageProcessor.register(CenterFocusConfig, slow_image_processor_class=CenterFocusImageProcessor, **fast,
                                exist_ok=True)
    AutoProcessor.register(CenterFocusConfig, CenterFocusProcessor, exist_ok=True)
    if PIPELINES_LOOK_FOR_A_VIDEO_PROCESSOR:
        # CenterFocus has none: an empty mapping, so that the pipeline goes on without one instead of asking
        from transformers.models.auto.video_processing_auto import AutoVideoProcessor  # real without torchvision

        AutoVideoProcessor.register(CenterFocusConfig, video_processor_classes={}, exist_ok=True)

    CenterFocusConfig.register_for_auto_class()
    # the config's auto_map names both model Auto classes (loading_centerfocus.AUTO_MAP)
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
