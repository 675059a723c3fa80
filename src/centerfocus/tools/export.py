"""Optimum ONNX export and ONNX Runtime inference for CenterFocus.

Importing this module registers the `centerfocus` model type with Optimum's TasksManager for `image-to-text` and
`image-to-text-with-past`, so `main_export`, `ORTModelForVision2Seq.from_pretrained(..., export=True,
trust_remote_code=True)` (Optimum infers the library from the folder's remote code) and the `centerfocus-optimum-cli`
entry point work. Two variants (`--variant`):

- `image` (default): the encoder takes `pixel_values` only; decoders take `input_ids` and `encoder_hidden_states`.
- `prompt`: the encoder also takes the prompt (`input_ids`, `attention_mask`); decoders take `encoder_attention_mask`.
  Prompts must be at least one token long (a zero-length dimension is not portable across execution providers).
"""

import json
import logging
import shutil
import uuid
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

from ..configuration_centerfocus import CenterFocusConfig
from ..modeling_centerfocus import (
    CenterFocusEncoderOutput,
    cap_generated_length,
    check_finite_pixel_values,
    encoder_attention_mask,
)


logger = logging.getLogger(__name__)

MODEL_TYPE = CenterFocusConfig.model_type
TASKS = ("image-to-text", "image-to-text-with-past")
ONNX_FILES = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "decoder_model_merged.onnx")


def check_exportable_decoder(decoder_type: str, source: str) -> None:
    """ONNX Runtime decodes token by token, so only the autoregressive decoder exports: a `non_autoregressive` model
    decodes with mask-predict, and its ONNX captions would have nothing to do with the PyTorch ones."""
    if decoder_type != "autoregressive":
        raise ValueError(f"{source} has decoder_type={decoder_type!r}: ONNX export supports decoder_type="
                         "'autoregressive' only (ONNX Runtime decodes token by token, this model decodes with "
                         "mask-predict); caption it with PyTorch (centerfocus caption --model).")


@register_tasks_manager_onnx(MODEL_TYPE, *TASKS)
class CenterFocusOnnxConfig(OnnxSeq2SeqConfigWithPast):
    """Optimum ONNX config: encoder, decoder, decoder-with-past and (through post-processing) the merged decoder."""

    DEFAULT_ONNX_OPSET = 17  # SDPA needs >= 14; 17 has LayerNormalization
    ATOL_FOR_VALIDATION = 1e-4
    VARIANTS = {
        "image": "The encoder takes pixel_values only (captioning without a prompt).",
        "prompt": "The encoder also takes a prompt (input_ids, attention_mask); decoders take encoder_attention_mask.",
    }
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
            "transformers", "AutoModelForVision2Seq")


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


def _copy_support_files(model_dir: Path, output: Path) -> None:
    """The exporter saves preprocessors only for classes it can import without trust_remote_code; copy the processor,
    tokenizer, generation config and model code so the folder loads in a process without the package."""
    for path in model_dir.iterdir():
        if path.is_file() and (path.suffix in (".py", ".json", ".txt") or path.name == "tokenizer.model") \
                and not (output / path.name).exists() and path.name not in ("all_results.json", "train_results.json",
                                                                            "trainer_state.json"):
            shutil.copy2(path, output / path.name)


OPTIMIZATION_LEVELS = {"O1": "ORT_ENABLE_BASIC", "O2": "ORT_ENABLE_EXTENDED", "O3": "ORT_ENABLE_ALL"}


def optimize_onnx(folder: Path, level: str) -> list[Path]:
    """Offline graph optimisation with ONNX Runtime (`O1` basic, `O2` extended, `O3` all) of every ONNX file in
    `folder`, in place. Optimum's ORTOptimizer only knows its built-in model types, so the runtime's own optimiser is
    used. O1 keeps standard ONNX operators; O2/O3 add ONNX Runtime contrib operators (fused attention, GELU, layer
    norm), so those graphs run on ONNX Runtime only."""
    import onnxruntime as ort

    if level not in OPTIMIZATION_LEVELS:
        raise ValueError(f"--optimize must be one of {list(OPTIMIZATION_LEVELS)}, got {level!r}.")
    done = []
    for path in sorted(folder.glob("*.onnx")):
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[level])
        target = path.with_suffix(".optimized.onnx")
        options.optimized_model_filepath = str(target)
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        target.replace(path)
        done.append(path)
    return done


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
    _copy_support_files(folder, output)
    return output


def _check_output_folder(output: Path, model_path: Path, overwrite: bool) -> None:
    """Refuse an output that is a file, that is (or holds) the model folder, or that already holds files unless
    `overwrite`: exporting into another model's folder would replace its config and tokenizer but not its weights,
    and an older export's graphs (merged decoder, int8/) would be left beside the new ones."""
    if output.exists() and not output.is_dir():
        raise ValueError(f"{output} is a file, not a folder: choose another output folder.")
    target, model = output.resolve(), model_path.resolve()
    if target == model or target in model.parents:
        raise ValueError(f"{output} is (or holds) the model folder {model_path}: export to another folder.")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise ValueError(f"{output} already holds files (another model or an older export?): export to a new or "
                         "empty folder, or pass --overwrite (overwrite=True) to replace its contents.")


def _move_into_place(staging: Path, target: Path, overwrite: bool) -> None:
    """Rename the finished export `staging` to `target`. An existing `target` is renamed aside first (with
    `overwrite`; otherwise it must still be empty) and deleted only once the new folder is in place."""
    if target.exists():
        if not overwrite:
            target.rmdir()  # fails if files appeared since the check
        else:
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            target.rename(old)
            try:
                staging.rename(target)
            except BaseException:
                old.rename(target)
                raise
            shutil.rmtree(old)
            return
    staging.rename(target)


MIN_OPSET, MAX_OPSET = 14, 20  # 13 fails on scaled_dot_product_attention; torch.onnx's TorchScript exporter stops at 20


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

    if task not in TASKS:
        raise ValueError(f"--task must be one of {TASKS}, got {task!r}.")
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"--opset must be between {MIN_OPSET} (scaled_dot_product_attention) and {MAX_OPSET} (torch's "
                         f"TorchScript exporter, which Optimum uses), got {opset!r}.")
    if quantize not in (None, "int8"):  # checked before the export, which is the slow part
        raise ValueError(f"--quantize supports 'int8', got {quantize!r}.")
    if optimize not in (None, *OPTIMIZATION_LEVELS):
        raise ValueError(f"--optimize must be one of {list(OPTIMIZATION_LEVELS)}, got {optimize!r}.")
    if variant not in CenterFocusOnnxConfig.VARIANTS:
        raise ValueError(f"--variant must be one of {sorted(CenterFocusOnnxConfig.VARIANTS)}, got {variant!r}.")
    model_path, output = Path(model_dir), Path(output_dir)
    if not (model_path / "config.json").is_file():
        raise ValueError(f"{model_dir} is not a saved CenterFocus model folder (no config.json).")
    decoder_type = json.loads((model_path / "config.json").read_text()).get("decoder_type", "autoregressive")
    check_exportable_decoder(decoder_type, model_dir)
    _check_output_folder(output, model_path, overwrite)
    target = output.resolve()  # through a symlinked output, to the folder it names
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")  # same file system: a rename
    staging.mkdir()
    try:
        main_export(str(model_path), str(staging), task=task, opset=opset, trust_remote_code=True, _variant=variant,
                    do_validation=validate, no_post_process=not merge, library_name="transformers")
        _copy_support_files(model_path, staging)
        if quantize:  # from the plain export: the quantizer's shape inference does not know optimised (fused) graphs
            quantize_int8(staging, staging / "int8")
        if optimize:
            optimize_onnx(staging, optimize)
            if quantize:
                optimize_onnx(staging / "int8", optimize)
        _move_into_place(staging, target, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def check_onnx_folder(onnx_dir: str) -> None:
    """A folder without an encoder graph would otherwise reach Optimum's fallback, a PyTorch export that fails with
    an unrelated error ("no pytorch_model.bin", "library name could not be inferred")."""
    folder = Path(onnx_dir)
    if folder.is_dir() and not any(folder.glob("*encoder*.onnx")):
        raise ValueError(f"{onnx_dir} has no encoder_model.onnx: not a CenterFocus ONNX export (write one with "
                         "`centerfocus export MODEL_DIR OUT_DIR`).")


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
            _check_onnx_file(path, error)
        raise


def _check_onnx_file(path: Path, error: Exception) -> None:
    """Raise `OSError` naming `path` when it does not parse as an ONNX model (a truncated or corrupted file)."""
    import onnx

    try:
        onnx.load(str(path), load_external_data=False)
    except Exception as problem:
        raise OSError(f"{path} is damaged ({type(problem).__name__}: {problem}; ONNX Runtime: {error}); an "
                      "interrupted copy leaves a file cut short: copy it again or export again (centerfocus "
                      "export).") from None


# ----------------------------------------------------------------------------------------------------------------
# TensorRT readiness (checked without a GPU)
# ----------------------------------------------------------------------------------------------------------------

TENSORRT_OPERATORS_FILE = Path(__file__).with_name("tensorrt_onnx_operators.txt")


def tensorrt_supported_operators() -> set[str]:
    """The ONNX operators the TensorRT ONNX parser supports (list and source in `tensorrt_onnx_operators.txt`)."""
    lines = TENSORRT_OPERATORS_FILE.read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def _iter_nodes(graph):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for subgraph in [attribute.g, *attribute.graphs] if attribute.type in (5, 10) else []:
                yield from _iter_nodes(subgraph)


def graph_operators(path: Path) -> set[str]:
    """Every operator type in an ONNX file, including the branches of `If` nodes (the merged decoder)."""
    import onnx

    return {node.op_type for node in _iter_nodes(onnx.load(str(path), load_external_data=False).graph)}


def tensorrt_report(folder: Path) -> dict:
    """Per ONNX file: operators, the ones TensorRT's parser does not support, TopK nodes whose K is not a constant
    below 3840, and inputs other than batch/sequence axes that are dynamic (TensorRT wants image dims static)."""
    import onnx
    from onnx import numpy_helper

    supported = tensorrt_supported_operators()
    report = {}
    for path in sorted(Path(folder).glob("*.onnx")):
        model = onnx.load(str(path), load_external_data=False)
        constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        for node in _iter_nodes(model.graph):
            if node.op_type == "Constant" and node.attribute and node.attribute[0].type == 4:
                constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        operators = {node.op_type for node in _iter_nodes(model.graph)}
        bad_topk = [node.name for node in _iter_nodes(model.graph) if node.op_type == "TopK" and not (
            node.input[1] in constants and int(constants[node.input[1]].reshape(-1)[0]) < 3840)]
        dynamic_image_dims = []
        for graph_input in model.graph.input:
            if graph_input.name == "pixel_values":
                dims = graph_input.type.tensor_type.shape.dim
                dynamic_image_dims = [i for i, d in enumerate(dims) if i > 0 and not d.HasField("dim_value")]
        report[path.name] = {"operators": sorted(operators), "unsupported": sorted(operators - supported),
                             "topk_without_constant_k": bad_topk, "dynamic_image_dims": dynamic_image_dims}
    return report


def tensorrt_profiles(config: CenterFocusConfig, max_batch: int = 8, max_prompt: int = 32,
                      max_caption: int = 64, variant: str = "image") -> dict[str, dict[str, str]]:
    """Shape profiles for the ONNX Runtime TensorRT execution provider (`trt_profile_min/opt/max_shapes`), one set
    per ONNX file. Decoder key/value inputs follow `past_key_values.{i}.{decoder,encoder}.{key,value}`."""
    heads, head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    n, size, channels = config.num_image_tokens, config.image_size, config.num_channels
    prompt = variant == "prompt"
    enc_min, enc_max = n + (1 if prompt else 0), n + (max_prompt if prompt else 0)
    enc_opt = n + (8 if prompt else 0)

    def shapes(batch: int, past: int, encoder: int, prompt_len: int, step: int, with_past: bool) -> dict[str, str]:
        values = {"pixel_values": f"{batch}x{channels}x{size}x{size}"}
        if prompt:
            values.update(input_ids=f"{batch}x{prompt_len}", attention_mask=f"{batch}x{prompt_len}",
                          encoder_attention_mask=f"{batch}x{encoder}")
        values.update(encoder_hidden_states=f"{batch}x{encoder}x{config.hidden_size}")
        if with_past:
            for i in range(config.decoder_layers):
                for kind in ("key", "value"):
                    values[f"past_key_values.{i}.decoder.{kind}"] = f"{batch}x{heads}x{past}x{head_dim}"
                    values[f"past_key_values.{i}.encoder.{kind}"] = f"{batch}x{heads}x{encoder}x{head_dim}"
        values["decoder_input_ids"] = f"{batch}x{step}"
        return values

    def profile(names: set[str], with_past: bool) -> dict[str, str]:
        low = shapes(1, 1, enc_min, 1, 1, with_past)
        mid = shapes(max(1, max_batch // 2), max_caption // 2, enc_opt, 8, 1, with_past)
        high = shapes(max_batch, max_caption, enc_max, max_prompt, 1 if with_past else max_caption, with_past)
        if not with_past:
            low["decoder_input_ids"], mid["decoder_input_ids"] = "1x1", f"{max(1, max_batch // 2)}x8"

        def render(values):
            # the decoder ONNX input is called input_ids; the encoder's prompt input_ids are distinct only by file
            renamed = {("input_ids" if k == "decoder_input_ids" else k): v for k, v in values.items()
                       if (k in names) or (k == "decoder_input_ids" and "input_ids" in names)}
            return ",".join(f"{k}:{v}" for k, v in renamed.items())

        return {"trt_profile_min_shapes": render(low), "trt_profile_opt_shapes": render(mid),
                "trt_profile_max_shapes": render(high)}

    encoder_names = {"pixel_values", *({"input_ids", "attention_mask"} if prompt else set())}
    decoder_names = {"input_ids", "encoder_hidden_states", *({"encoder_attention_mask"} if prompt else set())}
    # the with-past decoder reads cross-attention keys/values from the cache, not encoder_hidden_states
    past_names = (decoder_names - {"encoder_hidden_states"}) | {f"past_key_values.{i}.{side}.{kind}" for i in range(config.decoder_layers)
                                  for side in ("decoder", "encoder") for kind in ("key", "value")}
    return {"encoder_model.onnx": profile(encoder_names, False), "decoder_model.onnx": profile(decoder_names, False),
            "decoder_with_past_model.onnx": profile(past_names, True)}


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def export_main(argv: Optional[list[str]] = None) -> Path:
    """`centerfocus export MODEL_DIR OUT_DIR [--task ...] [--variant image|prompt] [--optimize O1|O2|O3]
    [--quantize int8] [--tensorrt] [--no-merge] [--opset 17] [--overwrite]`. OUT_DIR must be new or empty unless
    --overwrite is given; a failed export leaves it as it was."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="centerfocus export", description=export_main.__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("output_dir")
    parser.add_argument("--task", default="image-to-text-with-past", choices=TASKS)
    parser.add_argument("--variant", default="image", choices=sorted(CenterFocusOnnxConfig.VARIANTS))
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--optimize", choices=list(OPTIMIZATION_LEVELS), help="ONNX Runtime graph optimisation level.")
    parser.add_argument("--quantize", choices=["int8"], help="Also write an INT8 dynamically quantized copy to int8/.")
    parser.add_argument("--tensorrt", action="store_true",
                        help="Check TensorRT readiness (operators, static image dims) and write tensorrt_profiles.json.")
    parser.add_argument("--no-merge", action="store_true", help="Skip the merged decoder (decoder_model_merged.onnx).")
    parser.add_argument("--no-validate", action="store_true", help="Skip Optimum's output validation.")
    parser.add_argument("--overwrite", action="store_true",
                        help="Replace the contents of OUT_DIR when it already holds files (by default a non-empty "
                             "OUT_DIR is refused). The old contents are removed only once the new export succeeded.")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.tensorrt and args.optimize in ("O2", "O3"):
        parser.error(f"--optimize {args.optimize} fuses nodes into ONNX Runtime contrib operators that TensorRT cannot "
                     "parse (TensorRT fuses on its own); use --optimize O1 or none with --tensorrt.")
    output = export_onnx(args.model_dir, args.output_dir, task=args.task, variant=args.variant, opset=args.opset,
                         optimize=args.optimize, quantize=args.quantize, validate=not args.no_validate,
                         merge=not args.no_merge, overwrite=args.overwrite)
    if args.tensorrt:
        report = tensorrt_report(output)
        problems = {name: r for name, r in report.items()
                    if r["unsupported"] or r["topk_without_constant_k"] or r["dynamic_image_dims"]}
        config = CenterFocusConfig.from_pretrained(args.model_dir)
        (output / "tensorrt_profiles.json").write_text(json.dumps(tensorrt_profiles(config, variant=args.variant),
                                                                  indent=2))
        if problems:
            raise SystemExit(f"Not TensorRT-ready: {json.dumps(problems, indent=2)}")
        print(f"TensorRT check passed for {sorted(report)}; shape profiles in {output / 'tensorrt_profiles.json'}")
    print(f"Exported to {output}")
    return output


def optimum_cli_main() -> None:
    """`centerfocus-optimum-cli ...`: `optimum-cli` with CenterFocus registered (the plain CLI has no plugin hook
    for new model types), e.g. `centerfocus-optimum-cli export onnx --model DIR --task image-to-text-with-past
    --trust-remote-code OUT`."""
    from optimum.commands.optimum_cli import main

    main()
