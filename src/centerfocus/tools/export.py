"""Optimum ONNX export and ONNX Runtime inference for CenterFocus.

Importing this module registers the `centerfocus` model type with Optimum's TasksManager for `image-to-text` and
`image-to-text-with-past`, so `main_export`, `ORTModelForVision2Seq.from_pretrained(..., export=True,
trust_remote_code=True)` (Optimum infers the library from the folder's remote code) and the `centerfocus-optimum-cli`
entry point work. Two variants (`--variant`):

- `image` (default): the encoder takes `pixel_values` only; decoders take `input_ids` and `encoder_hidden_states`.
- `prompt`: the encoder also takes the prompt (`input_ids`, `attention_mask`); decoders take `encoder_attention_mask`.
  Prompts must be at least one token long (a zero-length dimension is not portable across execution providers).
"""

import logging
from pathlib import Path
from typing import Optional

import torch
from optimum.exporters.onnx.base import ConfigBehavior, OnnxSeq2SeqConfigWithPast
from optimum.exporters.onnx.model_configs import register_tasks_manager_onnx
from optimum.exporters.tasks import TasksManager
from optimum.onnxruntime import ORTModelForVision2Seq
from optimum.onnxruntime.modeling_seq2seq import ORTEncoder
from optimum.utils import (
    DummySeq2SeqDecoderTextInputGenerator,
    DummySeq2SeqPastKeyValuesGenerator,
    DummyTextInputGenerator,
    DummyVisionInputGenerator,
    NormalizedSeq2SeqConfig,
)
from transformers.modeling_outputs import BaseModelOutput

from .._compat import EXPORT_AUTO_CLASS
from ..configuration_centerfocus import CenterFocusConfig
from ..modeling_centerfocus import (
    CenterFocusEncoderOutput,
    cap_generated_length,
    check_finite_pixel_values,
    encoder_attention_mask,
)
from .onnx_folder import (  # noqa: F401 (the folder's checks and the TensorRT report, as they were imported here)
    MAX_OPSET,
    MIN_OPSET,
    ONNX_FILES,
    OPTIMIZATION_LEVELS,
    TASKS,
    VARIANTS,
    check_export_request,
    check_exportable_decoder,
    check_onnx_file,
    check_onnx_folder,
    check_output_folder,
    copy_support_files,
    graph_operators,
    move_into_place,
    optimize_onnx,
    tensorrt_profiles,
    tensorrt_report,
    tensorrt_supported_operators,
    write_export,
)


logger = logging.getLogger(__name__)

MODEL_TYPE = CenterFocusConfig.model_type




@register_tasks_manager_onnx(MODEL_TYPE, *TASKS)
class CenterFocusOnnxConfig(OnnxSeq2SeqConfigWithPast):
    """Optimum ONNX config: encoder, decoder, decoder-with-past and (through post-processing) the merged decoder."""

    DEFAULT_ONNX_OPSET = 17  # SDPA needs >= 14; 17 has LayerNormalization
    ATOL_FOR_VALIDATION = 1e-4
    VARIANTS = VARIANTS
    DEFAULT_VARIANT = "image"
    NORMALIZED_CONFIG_CLASS = NormalizedSeq2SeqConfig.with_args(
        encoder_num_layers="encoder_layers", decoder_num_layers="decoder_layers", num_layers="decoder_layers",
        encoder_num_attention_heads="num_attention_heads", decoder_num_attention_heads="num_attention_heads",
        allow_new=True)
    DUMMY_INPUT_GENERATOR_CLASSES = (DummyVisionInputGenerator, DummyTextInputGenerator,
                                     DummySeq2SeqDecoderTextInputGenerator, DummySeq2SeqPastKeyValuesGenerator)

    def __init__(self, config, *args, **kwargs):
        # also covers exports that do not go through export_onnx (centerfocus-optimum-cli, export=True)
        check_exportable_decoder(getattr(config, "decoder_type", "autoregressive"), "The model")
        super().__init__(config, *args, **kwargs)

    @property
    def uses_prompt(self) -> bool:
        return self.variant == "prompt"

    def with_behavior(self, *args, **kwargs) -> "CenterFocusOnnxConfig":
        config = super().with_behavior(*args, **kwargs)
        config.variant = self.variant  # Optimum's copy drops the variant
        return config

    @property
    def inputs(self) -> dict[str, dict[int, str]]:
        inputs = {}
        if self._behavior in {ConfigBehavior.ENCODER, ConfigBehavior.MONOLITH}:
            inputs["pixel_values"] = {0: "batch_size"}  # channels, height and width stay static (TensorRT)
            if self.uses_prompt:
                inputs["input_ids"] = {0: "batch_size", 1: "prompt_sequence_length"}
                inputs["attention_mask"] = {0: "batch_size", 1: "prompt_sequence_length"}
        else:
            inputs["encoder_outputs"] = {0: "batch_size", 1: "encoder_sequence_length"}
            if self.uses_prompt:  # exported as `encoder_attention_mask`
                inputs["attention_mask"] = {0: "batch_size", 1: "encoder_sequence_length"}
        if self._behavior in {ConfigBehavior.DECODER, ConfigBehavior.MONOLITH}:
            inputs["decoder_input_ids"] = {0: "batch_size", 1: "decoder_sequence_length"}
            if self.use_past_in_inputs:
                self.add_past_key_values(inputs, direction="inputs")
        return inputs

    def _encoder_length(self, prompt_length: int) -> int:
        return self._config.num_image_tokens + (prompt_length if self.uses_prompt else 0)

    def _create_dummy_input_generator_classes(self, **kwargs) -> list:
        prompt_length = kwargs.get("sequence_length", 16)
        kwargs["encoder_sequence_length"] = self._encoder_length(prompt_length)
        return [cls(self.task, self._normalized_config, **kwargs) for cls in self.DUMMY_INPUT_GENERATOR_CLASSES]

    def overwrite_shape_and_generate_input(self, dummy_input_gen, input_name: str, framework: str,
                                           input_shapes: dict):
        decoder_side = self._behavior is ConfigBehavior.DECODER
        if decoder_side and input_name in ("encoder_outputs", "attention_mask"):
            # the decoder attends over [image tokens ; prompt]: N (+ L) positions
            original = dummy_input_gen.sequence_length
            dummy_input_gen.sequence_length = self._encoder_length(original)
            dummy = dummy_input_gen.generate(input_name, framework=framework, int_dtype=self.int_dtype,
                                             float_dtype=self.float_dtype)
            dummy_input_gen.sequence_length = original
            return dummy
        return super().overwrite_shape_and_generate_input(dummy_input_gen, input_name, framework, input_shapes)


def register_optimum() -> None:
    """Make `main_export` load CenterFocus through the Auto class registry (idempotent). Optimum matches the
    image-to-text loader against transformers' static mapping, which knows nothing of registered or remote-code
    models; `_CUSTOM_CLASSES` is the TasksManager's own table for such models (a private attribute, used in this one
    place and covered by tests/integration/test_onnx_export.py)."""
    for task in TASKS:
        TasksManager._CUSTOM_CLASSES[("pt", MODEL_TYPE, task.replace("-with-past", ""))] = (
            "transformers", EXPORT_AUTO_CLASS)


register_optimum()


# ----------------------------------------------------------------------------------------------------------------
# ONNX Runtime model
# ----------------------------------------------------------------------------------------------------------------


class CenterFocusORTEncoder(ORTEncoder):
    """ONNX Runtime encoder feeding `pixel_values` and, for the `prompt` variant, the prompt. Returns the full
    `[image ; prompt]` mask with the hidden states, as the PyTorch encoder does."""

    main_input_name = "pixel_values"

    def forward(self, pixel_values: torch.FloatTensor, input_ids: Optional[torch.LongTensor] = None,
                attention_mask: Optional[torch.LongTensor] = None, **kwargs) -> BaseModelOutput:
        uses_prompt = "input_ids" in self.input_names
        if uses_prompt and input_ids is None:
            raise ValueError("This ONNX export was made with --variant prompt: pass a prompt (input_ids), or export "
                             "with --variant image to caption without one.")
        if not uses_prompt and input_ids is not None:
            raise ValueError("This ONNX export was made with --variant image and cannot read a prompt; export with "
                             "--variant prompt to caption with prompts.")
        check_finite_pixel_values(pixel_values)  # as the PyTorch model refuses them
        inputs = {"pixel_values": pixel_values}
        if uses_prompt:
            if input_ids.shape[1] == 0:
                raise ValueError("The prompt must hold at least one token.")
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            inputs.update(input_ids=input_ids, attention_mask=attention_mask)
        use_torch = isinstance(pixel_values, torch.Tensor)
        outputs = self._prepare_onnx_outputs(use_torch, self.session.run(None,
                                                                         self._prepare_onnx_inputs(use_torch, inputs)))
        hidden = outputs["last_hidden_state"]
        full_mask = None
        if uses_prompt:  # numpy in, numpy out, as Optimum's encoders do
            prompt_mask = torch.as_tensor(attention_mask).to(torch.long).cpu()
            image = torch.ones(prompt_mask.shape[0], hidden.shape[1] - prompt_mask.shape[1], dtype=torch.long)
            full_mask = torch.cat([image, prompt_mask], dim=1)
            full_mask = full_mask.to(hidden.device) if use_torch else full_mask.numpy()
        return CenterFocusEncoderOutput(last_hidden_state=hidden, attention_mask=full_mask)


class CenterFocusORTModelForVision2Seq(ORTModelForVision2Seq):
    """`ORTModelForVision2Seq` for CenterFocus exports, with the optional prompt routed to the encoder only (as in the
    PyTorch model). `generate()` and `pipeline("image-to-text")` use it unchanged."""

    _ort_encoder_class = CenterFocusORTEncoder

    def _prepare_generated_length(self, generation_config, *args, **kwargs):
        # the exported decoder has the same position table as the PyTorch one: stop at it the same way
        generation_config = super()._prepare_generated_length(generation_config, *args, **kwargs)
        return cap_generated_length(generation_config, self.config.max_position_embeddings)

    def forward(self, pixel_values=None, input_ids=None, attention_mask=None, decoder_input_ids=None,
                encoder_outputs=None, **kwargs):
        if encoder_outputs is None:
            encoder_outputs = self.encoder(pixel_values=pixel_values, input_ids=input_ids,
                                           attention_mask=attention_mask)
            attention_mask = encoder_outputs.attention_mask
        else:  # precomputed encoder states: the same mask rules as the PyTorch model (a prompt-only mask is widened)
            attention_mask = encoder_attention_mask(encoder_outputs, attention_mask, self.config.num_image_tokens)
        return super().forward(pixel_values=pixel_values, attention_mask=attention_mask,
                               decoder_input_ids=decoder_input_ids, encoder_outputs=encoder_outputs, **kwargs)

    def _prepare_encoder_decoder_kwargs_for_generation(self, inputs_tensor, model_kwargs, model_input_name,
                                                       generation_config):
        if model_kwargs.get("input_ids") is None:
            model_kwargs.pop("attention_mask", None)  # generate() invents a (B, C) mask from pixel_values
        encoder_outputs = self.encoder(pixel_values=inputs_tensor, input_ids=model_kwargs.pop("input_ids", None),
                                       attention_mask=model_kwargs.pop("attention_mask", None))
        model_kwargs["encoder_outputs"] = encoder_outputs
        model_kwargs["attention_mask"] = encoder_outputs.attention_mask
        return model_kwargs


# ----------------------------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------------------------



def quantize_int8(folder: Path, output: Path) -> Path:
    """INT8 dynamic quantization of every ONNX file in `folder` with Optimum's ORTQuantizer; writes a loadable
    folder (same file names, support files copied) to `output`."""
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    output.mkdir(parents=True, exist_ok=True)
    config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
    for name in ONNX_FILES:
        if not (folder / name).exists():
            continue
        quantizer = ORTQuantizer.from_pretrained(folder, file_name=name)
        quantizer.quantize(save_dir=output, quantization_config=config, file_suffix="")
    copy_support_files(folder, output)
    return output




def export_onnx(model_dir: str, output_dir: str, task: str = "image-to-text-with-past", variant: str = "image",
                opset: int = 17, optimize: Optional[str] = None, quantize: Optional[str] = None,
                validate: bool = True, merge: bool = True, overwrite: bool = False) -> Path:
    """Export a saved CenterFocus folder with Optimum's `main_export`; the result loads with
    `CenterFocusORTModelForVision2Seq.from_pretrained(output_dir)` (and with `trust_remote_code=True` in a process
    without the package). `quantize="int8"` writes the quantized model to `output_dir/int8`.

    `output_dir` must be new or empty unless `overwrite=True`, which replaces its contents. The export is written to a
    hidden folder beside `output_dir` and renamed into place only once everything (export, validation, quantization,
    optimisation) succeeded; on failure the hidden folder is removed and `output_dir` is left as it was."""
    from optimum.exporters.onnx import main_export

    model_path, output = check_export_request(model_dir, output_dir, task, variant, opset, optimize, quantize,
                                              overwrite)

    def write_graphs(folder: Path) -> None:
        main_export(str(model_path), str(folder), task=task, opset=opset, trust_remote_code=True, _variant=variant,
                    do_validation=validate, no_post_process=not merge, library_name="transformers")

    return write_export(model_path, output, overwrite, write_graphs, quantize_int8, optimize, quantize)



def load_ort_model(onnx_dir: str, provider: str = "CPUExecutionProvider", provider_options: Optional[dict] = None,
                   use_merged: Optional[bool] = None, use_cache: bool = True) -> CenterFocusORTModelForVision2Seq:
    """Load an exported folder for generation on an ONNX Runtime execution provider. For TensorRT, CUDA is added as
    the fallback provider, so `provider_options` (TensorRT options) apply to TensorRT only."""
    check_onnx_folder(onnx_dir)
    folder = Path(onnx_dir)
    if folder.is_dir() and not any(folder.glob("*decoder*with_past*.onnx")) and not any(
            folder.glob("*decoder*merged*.onnx")):
        use_cache, use_merged = False, False  # an `--task image-to-text` export: decoder graphs without a KV cache
    kwargs = {"use_merged": use_merged, "use_cache": use_cache}
    if provider == "TensorrtExecutionProvider":
        kwargs.update(providers=["TensorrtExecutionProvider", "CUDAExecutionProvider"],
                      provider_options=[provider_options or {}, {}])
    else:
        kwargs.update(provider=provider, provider_options=provider_options)
    try:
        return CenterFocusORTModelForVision2Seq.from_pretrained(onnx_dir, **kwargs)
    except Exception as error:
        for path in sorted(folder.glob("*.onnx")) if folder.is_dir() else []:
            check_onnx_file(path, error)
        raise


def export_main(argv: Optional[list[str]] = None) -> Path:
    """`centerfocus export` (onnx_export.export_main), which takes this exporter where Optimum is installed."""
    from .onnx_export import export_main as main

    return main(argv)


def optimum_cli_main() -> None:
    """`centerfocus-optimum-cli ...`: `optimum-cli` with CenterFocus registered (the plain CLI has no plugin hook
    for new model types), e.g. `centerfocus-optimum-cli export onnx --model DIR --task image-to-text-with-past
    --trust-remote-code OUT`."""
    from optimum.commands.optimum_cli import main

    main()
