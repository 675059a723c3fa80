"""`centerfocus export`: ONNX export on either stack line, into one folder layout.

Two exporters write the same folder (Optimum's file names, input and output names and dynamic axes):

- `torch` (this module): `torch.onnx.export` of three small wrappers around the model's encoder and decoder, with
  nothing but torch, onnx and onnxruntime. It runs on transformers 5.x, where optimum-onnx (0.1.0, its latest release,
  requires transformers<4.58) does not install, and on 4.57. docs/deployment.md says why this and not a fork.
- `optimum` (`export.py`): Optimum's `main_export`, on the 4.57 line, which adds the merged decoder.

`--backend auto` (the default) takes Optimum where it is installed and torch elsewhere. Either folder runs on
either runner: `CenterFocusOnnxForConditionalGeneration` (onnx_runner.py, no Optimum) and Optimum's ORTModel (4.57).
"""

import argparse
import json
import logging
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..configuration_centerfocus import CenterFocusConfig
from ..modeling_centerfocus import CenterFocusForConditionalGeneration
from .onnx_folder import (
    OPTIMIZATION_LEVELS,
    TASKS,
    VARIANTS,
    check_export_request,
    has_optimum_onnx,
    quantize_dynamic_int8,
    tensorrt_profiles,
    tensorrt_report,
    write_export,
)
from .onnx_runner import cache_from_tensors, load_onnx_model, past_names


logger = logging.getLogger(__name__)

BACKENDS = ("auto", "optimum", "torch")


class _Encoder(nn.Module):
    def __init__(self, model: CenterFocusForConditionalGeneration):
        super().__init__()
        self.encoder = model.get_encoder()

    def forward(self, pixel_values, input_ids=None, attention_mask=None):
        return self.encoder(pixel_values, input_ids, attention_mask, return_dict=True).last_hidden_state


class _Decoder(nn.Module):
    """Decoder step(s) and the LM head; with `with_past` it reads the cache from flat tensors (Optimum's
    `past_key_values.{i}.{decoder,encoder}.{key,value}`) and returns only the grown self-attention cache, else it
    projects the encoder states and returns both parts (`present.*`)."""

    def __init__(self, model: CenterFocusForConditionalGeneration, with_past: bool, uses_prompt: bool):
        super().__init__()
        self.decoder, self.lm_head = model.get_decoder(), model.lm_head
        self.layers, self.with_past, self.uses_prompt = model.config.decoder_layers, with_past, uses_prompt

    def forward(self, input_ids, *rest):
        rest = list(rest)
        encoder_mask = rest.pop(0) if self.uses_prompt else None
        if self.with_past:
            flat = rest
            cache = cache_from_tensors([(flat[4 * i], flat[4 * i + 1]) for i in range(self.layers)],
                                       [(flat[4 * i + 2], flat[4 * i + 3]) for i in range(self.layers)])
            encoder_states = flat[2].new_zeros(flat[2].shape[0], flat[2].shape[2], 1)  # unused: the cache holds them
        else:
            encoder_states = rest[0]
            cache = cache_from_tensors([], [])
        hidden, cache = self.decoder(input_ids, None, encoder_states, encoder_mask, cache, None, True)[:2]
        outputs = [self.lm_head(hidden)]
        for i in range(self.layers):
            outputs += [cache.self_attention_cache.layers[i].keys, cache.self_attention_cache.layers[i].values]
            if not self.with_past:
                outputs += [cache.cross_attention_cache.layers[i].keys, cache.cross_attention_cache.layers[i].values]
        return tuple(outputs)


def _graphs(model: CenterFocusForConditionalGeneration, variant: str, with_past: bool) -> dict:
    """Per file: the wrapper, example inputs, input names, output names and dynamic axes (Optimum's names)."""
    config = model.config
    uses_prompt = variant == "prompt"
    batch, prompt, steps, past = 2, 3, 4, 5
    heads, head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    pixel_values = torch.rand(batch, config.num_channels, config.image_size, config.image_size)
    encoder_length = config.num_image_tokens + (prompt if uses_prompt else 0)
    graphs = {}

    encoder_inputs = [pixel_values]
    encoder_names, encoder_axes = ["pixel_values"], {"pixel_values": {0: "batch_size"}}
    if uses_prompt:
        encoder_inputs += [torch.randint(4, config.vocab_size, (batch, prompt)), torch.ones(batch, prompt,
                                                                                            dtype=torch.long)]
        encoder_names += ["input_ids", "attention_mask"]
        encoder_axes.update(input_ids={0: "batch_size", 1: "prompt_sequence_length"},
                            attention_mask={0: "batch_size", 1: "prompt_sequence_length"})
    graphs["encoder_model.onnx"] = (_Encoder(model), tuple(encoder_inputs), encoder_names, ["last_hidden_state"],
                                    {**encoder_axes, "last_hidden_state": {0: "batch_size",
                                                                           1: "encoder_sequence_length"}})

    decoder_ids = torch.randint(4, config.vocab_size, (batch, steps))
    mask_inputs, mask_names, mask_axes = [], [], {}
    if uses_prompt:
        mask_inputs, mask_names = [torch.ones(batch, encoder_length, dtype=torch.long)], ["encoder_attention_mask"]
        mask_axes = {"encoder_attention_mask": {0: "batch_size", 1: "encoder_sequence_length"}}
    kv_axes = {0: "batch_size", 2: "past_decoder_sequence_length + decoder_sequence_length"}
    cross_axes = {0: "batch_size", 2: "encoder_sequence_length"}
    ids_axes = {"input_ids": {0: "batch_size", 1: "decoder_sequence_length"}}
    present_all = past_names(config.decoder_layers, "present")
    axes = {**ids_axes, **mask_axes, "encoder_hidden_states": {0: "batch_size", 1: "encoder_sequence_length"},
            "logits": {0: "batch_size", 1: "decoder_sequence_length"}}
    axes.update({name: (kv_axes if ".decoder." in name else cross_axes) for name in present_all})
    graphs["decoder_model.onnx"] = (
        _Decoder(model, with_past=False, uses_prompt=uses_prompt),
        (decoder_ids, *mask_inputs, torch.rand(batch, encoder_length, config.hidden_size)),
        ["input_ids", *mask_names, "encoder_hidden_states"], ["logits", *present_all], axes)
    if with_past:
        past_inputs = []
        for name in past_names(config.decoder_layers):
            length = past if ".decoder." in name else encoder_length
            past_inputs.append(torch.rand(batch, heads, length, head_dim))
        present_self = past_names(config.decoder_layers, "present", sides=("decoder",))
        axes = {**ids_axes, **mask_axes, "logits": {0: "batch_size"}}
        axes.update({name: ({0: "batch_size", 2: "past_decoder_sequence_length"} if ".decoder." in name
                            else cross_axes) for name in past_names(config.decoder_layers)})
        axes.update(dict.fromkeys(present_self, kv_axes))
        graphs["decoder_with_past_model.onnx"] = (
            _Decoder(model, with_past=True, uses_prompt=uses_prompt), (decoder_ids[:, :1], *mask_inputs, *past_inputs),
            ["input_ids", *mask_names, *past_names(config.decoder_layers)], ["logits", *present_self], axes)
    return graphs


def _validate(model: CenterFocusForConditionalGeneration, folder: Path, variant: str) -> float:
    """The exported graphs against the PyTorch model on two random images (and a prompt): the logits of a three-token
    prefix, two tokens through the decoder graph and the third through the decoder-with-past graph on their cache.
    Refuses the export when any logit differs by more than 1e-3 of the logits' scale: float32 kernels that sum in
    another order differ by about 1e-6 relative per layer, far below; a wrong graph (a traced constant, a dropped
    mask) differs by the scale itself. Returns the largest difference."""
    generator = torch.Generator().manual_seed(0)
    config = model.config
    inputs = {"pixel_values": torch.rand(2, config.num_channels, config.image_size, config.image_size,
                                         generator=generator)}
    if variant == "prompt":
        inputs.update(input_ids=torch.randint(4, config.vocab_size, (2, 3), generator=generator),
                      attention_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]))
    ids = torch.randint(4, config.vocab_size, (2, 3), generator=generator)
    ids[:, 0] = config.decoder_start_token_id
    runner = load_onnx_model(str(folder))
    with torch.inference_mode():
        expected = model(**inputs, decoder_input_ids=ids).logits
        first = runner(**inputs, decoder_input_ids=ids[:, :2])
        got = [first.logits]
        cache = first.get("cache", first.get("past_key_values"))
        if cache is not None:
            got.append(runner(**inputs, decoder_input_ids=ids, cache=cache).logits)
    got = torch.cat(got, dim=1)
    difference = float((got - expected[:, :got.shape[1]]).abs().max())
    if not difference <= 1e-3 * float(expected.abs().max().clamp(min=1)):
        raise ValueError(f"The exported graphs' logits differ from the PyTorch model's by {difference:.3g}: the export "
                         "is not used.")
    return difference


def export_onnx_torch(model_dir: str, output_dir: str, task: str = "image-to-text-with-past", variant: str = "image",
                      opset: int = 17, optimize: Optional[str] = None, quantize: Optional[str] = None,
                      validate: bool = True, overwrite: bool = False) -> Path:
    """Export a saved CenterFocus folder with `torch.onnx.export` into Optimum's layout (no merged decoder); the
    result loads with `load_onnx_model(output_dir)` and with Optimum's ORTModel on the 4.57 line. Arguments and the
    staging (a failed export leaves `output_dir` as it was) as in Optimum's `export.export_onnx`."""
    model_path, output = check_export_request(model_dir, output_dir, task, variant, opset, optimize, quantize,
                                              overwrite)
    model = CenterFocusForConditionalGeneration.from_pretrained(model_dir).eval()

    def write_graphs(folder: Path) -> None:
        with torch.no_grad():
            # eval(): a wrapper starts in training mode, and the tracer's forward would update batch-norm statistics
            for name, (module, args, input_names, output_names, axes) in _graphs(
                    model, variant, with_past=task.endswith("-with-past")).items():
                torch.onnx.export(module.eval(), args, str(folder / name), input_names=input_names,
                                  output_names=output_names, dynamic_axes=axes, opset_version=opset, dynamo=False)
        model.config.save_pretrained(folder)  # the loaded config (with the current field names)

    def check(folder: Path) -> None:
        logger.info("largest logit difference against PyTorch: %.3g", _validate(model, folder, variant))

    return write_export(model_path, output, overwrite, write_graphs, quantize_dynamic_int8, optimize, quantize,
                        check if validate else None)


def export_main(argv: Optional[list[str]] = None) -> Path:
    """`centerfocus export MODEL_DIR OUT_DIR [--backend auto|optimum|torch] [--task ...] [--variant image|prompt]
    [--optimize O1|O2|O3] [--quantize int8] [--tensorrt] [--no-merge] [--opset 17] [--overwrite]`. OUT_DIR must be
    new or empty unless --overwrite is given; a failed export leaves it as it was."""
    parser = argparse.ArgumentParser(prog="centerfocus export", description=export_main.__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("output_dir")
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="optimum: Optimum's exporter (transformers 4.57, adds the merged decoder); torch: "
                             "torch.onnx (any line); auto: optimum where installed, else torch.")
    parser.add_argument("--task", default="image-to-text-with-past", choices=TASKS)
    parser.add_argument("--variant", default="image", choices=sorted(VARIANTS))
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--optimize", choices=list(OPTIMIZATION_LEVELS), help="ONNX Runtime graph optimisation level.")
    parser.add_argument("--quantize", choices=["int8"], help="Also write an INT8 dynamically quantized copy to int8/.")
    parser.add_argument("--tensorrt", action="store_true",
                        help="Check TensorRT readiness (operators, static image dims) and write tensorrt_profiles.json.")
    parser.add_argument("--no-merge", action="store_true",
                        help="optimum: skip the merged decoder (the torch backend never writes one).")
    parser.add_argument("--no-validate", action="store_true", help="Skip the check against the PyTorch model.")
    parser.add_argument("--overwrite", action="store_true",
                        help="Replace the contents of OUT_DIR when it already holds files (by default a non-empty "
                             "OUT_DIR is refused). The old contents are removed only once the new export succeeded.")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.tensorrt and args.optimize in ("O2", "O3"):
        parser.error(f"--optimize {args.optimize} fuses nodes into ONNX Runtime contrib operators that TensorRT cannot "
                     "parse (TensorRT fuses on its own); use --optimize O1 or none with --tensorrt.")
    backend = args.backend if args.backend != "auto" else ("optimum" if has_optimum_onnx() else "torch")
    if backend == "optimum":
        if not has_optimum_onnx():
            parser.error("--backend optimum needs optimum-onnx, which requires transformers<4.58: build that "
                         "environment with `bash scripts/setup.sh export`, or use --backend torch.")
        from .export import export_onnx

        output = export_onnx(args.model_dir, args.output_dir, task=args.task, variant=args.variant, opset=args.opset,
                             optimize=args.optimize, quantize=args.quantize, validate=not args.no_validate,
                             merge=not args.no_merge, overwrite=args.overwrite)
    else:
        output = export_onnx_torch(args.model_dir, args.output_dir, task=args.task, variant=args.variant,
                                   opset=args.opset, optimize=args.optimize, quantize=args.quantize,
                                   validate=not args.no_validate, overwrite=args.overwrite)
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
    print(f"Exported to {output} ({backend} exporter)")
    return output
