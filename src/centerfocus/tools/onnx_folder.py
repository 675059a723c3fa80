"""The ONNX export folder, whichever exporter wrote it: its files, its checks, its optimisation and the TensorRT
readiness report. Imports neither Optimum nor transformers' model code, so both exporters (`export.py`, Optimum on
transformers 4.57; `onnx_export.py`, torch.onnx on either line) and the ONNX Runtime runner (`onnx_runner.py`) share
it.

The layout is Optimum's: `encoder_model.onnx`, `decoder_model.onnx`, `decoder_with_past_model.onnx` and, from Optimum,
`decoder_model_merged.onnx`, beside the model's config, processor, tokenizer, generation config and remote code.
"""

import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from ..configuration_centerfocus import CenterFocusConfig


TASKS = ("image-to-text", "image-to-text-with-past")
def has_optimum_onnx() -> bool:
    """Whether Optimum's ONNX stack (optimum-onnx, transformers<4.58) is installed."""
    import importlib.util

    try:
        return importlib.util.find_spec("optimum.onnxruntime") is not None
    except ModuleNotFoundError:  # no `optimum` at all
        return False


VARIANTS = {
    "image": "The encoder takes pixel_values only (captioning without a prompt).",
    "prompt": "The encoder also takes a prompt (input_ids, attention_mask); decoders take encoder_attention_mask.",
}
ONNX_FILES = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "decoder_model_merged.onnx")

def check_exportable_decoder(decoder_type: str, source: str) -> None:
    """ONNX Runtime decodes token by token, so only the autoregressive decoder exports: a `non_autoregressive` model
    decodes with mask-predict, and its ONNX captions would have nothing to do with the PyTorch ones."""
    if decoder_type != "autoregressive":
        raise ValueError(f"{source} has decoder_type={decoder_type!r}: ONNX export supports decoder_type="
                         "'autoregressive' only (ONNX Runtime decodes token by token, this model decodes with "
                         "mask-predict); caption it with PyTorch (centerfocus caption --model).")

def copy_support_files(model_dir: Path, output: Path) -> None:
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


def quantize_dynamic_int8(folder: Path, output: Path) -> Path:
    """INT8 dynamic quantization (int8 weights, activations quantized at run time) of every ONNX file in `folder` with
    ONNX Runtime's quantizer, the one Optimum's ORTQuantizer drives; writes a loadable folder (same file names,
    support files copied) to `output`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    output.mkdir(parents=True, exist_ok=True)
    for name in ONNX_FILES:
        if (folder / name).exists():
            quantize_dynamic(folder / name, output / name, weight_type=QuantType.QInt8, per_channel=False)
    copy_support_files(folder, output)
    return output


def check_output_folder(output: Path, model_path: Path, overwrite: bool) -> None:
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


def move_into_place(staging: Path, target: Path, overwrite: bool) -> None:
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

def check_onnx_folder(onnx_dir: str) -> None:
    """A folder without an encoder graph would otherwise reach Optimum's fallback, a PyTorch export that fails with
    an unrelated error ("no pytorch_model.bin", "library name could not be inferred")."""
    folder = Path(onnx_dir)
    if folder.is_dir() and not any(folder.glob("*encoder*.onnx")):
        raise ValueError(f"{onnx_dir} has no encoder_model.onnx: not a CenterFocus ONNX export (write one with "
                         "`centerfocus export MODEL_DIR OUT_DIR`).")


def check_onnx_file(path: Path, error: Exception) -> None:
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



MIN_OPSET, MAX_OPSET = 14, 20  # 13 fails on scaled_dot_product_attention; torch.onnx's TorchScript exporter stops at 20


def check_export_request(model_dir: str, output_dir: str, task: str, variant: str, opset: int,
                         optimize: Optional[str], quantize: Optional[str], overwrite: bool) -> tuple[Path, Path]:
    """Every argument of an export checked before the slow part: `(model folder, output folder)` as paths."""
    if task not in TASKS:
        raise ValueError(f"--task must be one of {TASKS}, got {task!r}.")
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"--opset must be between {MIN_OPSET} (scaled_dot_product_attention) and {MAX_OPSET} (torch's "
                         f"TorchScript exporter, which both exporters use), got {opset!r}.")
    if quantize not in (None, "int8"):
        raise ValueError(f"--quantize supports 'int8', got {quantize!r}.")
    if optimize not in (None, *OPTIMIZATION_LEVELS):
        raise ValueError(f"--optimize must be one of {list(OPTIMIZATION_LEVELS)}, got {optimize!r}.")
    if variant not in VARIANTS:
        raise ValueError(f"--variant must be one of {sorted(VARIANTS)}, got {variant!r}.")
    model_path, output = Path(model_dir), Path(output_dir)
    if not (model_path / "config.json").is_file():
        raise ValueError(f"{model_dir} is not a saved CenterFocus model folder (no config.json).")
    decoder_type = json.loads((model_path / "config.json").read_text()).get("decoder_type", "autoregressive")
    check_exportable_decoder(decoder_type, model_dir)
    check_output_folder(output, model_path, overwrite)
    return model_path, output


def write_export(model_path: Path, output: Path, overwrite: bool, write_graphs: Callable[[Path], None],
                 quantizer: Callable[[Path, Path], Path], optimize: Optional[str] = None, quantize: Optional[str] = None,
                 check: Optional[Callable[[Path], None]] = None) -> Path:
    """Write an export into a hidden folder beside `output` and rename it into place only once everything succeeded:
    `write_graphs(folder)`, the support files, `check(folder)`, `quantizer(folder, folder / "int8")` (from the plain
    graphs: the quantizer's shape inference does not know optimised, fused ones), then the optimisation. On failure the
    hidden folder is removed and `output` is left as it was."""
    target = output.resolve()  # through a symlinked output, to the folder it names
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")  # same file system: a rename
    staging.mkdir()
    try:
        write_graphs(staging)
        copy_support_files(model_path, staging)
        if check is not None:
            check(staging)
        if quantize:
            quantizer(staging, staging / "int8")
        if optimize:
            optimize_onnx(staging, optimize)
            if quantize:
                optimize_onnx(staging / "int8", optimize)
        move_into_place(staging, target, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output

