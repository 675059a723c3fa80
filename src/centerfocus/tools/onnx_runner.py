"""ONNX Runtime captioning without Optimum: an exported folder run by `generate()` itself.

`CenterFocusOnnxForConditionalGeneration` is `CenterFocusForConditionalGeneration` with its encoder and decoder
replaced by ONNX Runtime sessions: transformers' `generate()` (greedy, beam search, sampling, the logits processors,
the stopping criteria) and the model's own generation hooks (prompt routing, the length cap) run unchanged; only the
network runs in ONNX Runtime. The KV cache between steps is transformers' `EncoderDecoderCache`, filled from the
graphs' `present.*` outputs, so beam search reorders it as it reorders the PyTorch model's.

It reads the folder layout Optimum writes (and `centerfocus export` writes on either stack line): `encoder_model.onnx`,
`decoder_model.onnx`, `decoder_with_past_model.onnx`, optionally `decoder_model_merged.onnx` (not needed here), with
Optimum's input and output names. It imports `onnxruntime` and nothing of Optimum, so it runs on transformers 5.x,
where optimum-onnx does not install.
"""

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from .._compat import CACHE_FIELD
from ..configuration_centerfocus import CenterFocusConfig
from ..modeling_centerfocus import (
    CenterFocusEncoderOutput,
    CenterFocusForConditionalGeneration,
    CenterFocusPreTrainedModel,
    CenterFocusSeq2SeqLMOutput,
    check_finite_pixel_values,
    encoder_attention_mask,
)
from .onnx_folder import check_exportable_decoder, check_onnx_file, check_onnx_folder


PROVIDERS = ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider")  # each falls back leftwards


def past_names(num_layers: int, prefix: str = "past_key_values", sides=("decoder", "encoder")) -> list[str]:
    """Optimum's names for the cache tensors: `{prefix}.{layer}.{decoder|encoder}.{key|value}`."""
    return [f"{prefix}.{i}.{side}.{kind}" for i in range(num_layers) for side in sides for kind in ("key", "value")]


def cache_from_tensors(self_attention: list, cross_attention: list) -> EncoderDecoderCache:
    """An `EncoderDecoderCache` holding the given `(keys, values)` per layer, each `(B, heads, length, head_dim)`; the
    cross-attention part is marked as filled, so the decoder reads it instead of projecting the encoder again."""
    self_cache, cross_cache = DynamicCache(), DynamicCache()
    for layer, (keys, values) in enumerate(self_attention):
        self_cache.update(keys, values, layer)
    for layer, (keys, values) in enumerate(cross_attention):
        cross_cache.update(keys, values, layer)
    cache = EncoderDecoderCache(self_cache, cross_cache)
    for layer in range(len(cross_attention)):
        cache.is_updated[layer] = True
    return cache


def _session(path: Path, provider: str, provider_options: Optional[dict]):
    import onnxruntime as ort

    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}.")
    providers = list(PROVIDERS[PROVIDERS.index(provider)::-1])  # TensorRT, then CUDA, then the CPU for what is left
    options = [provider_options or {}] + [{}] * (len(providers) - 1)
    session_options = ort.SessionOptions()
    # torch runs between the graphs (generate()'s logits processing, the cache): ONNX Runtime's threads spinning
    # after each run would keep torch's from the cores (measured: benchmarks/onnx_latency.py, batch 8)
    session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), session_options, providers=providers, provider_options=options)
    except Exception as error:
        check_onnx_file(path, error)
        raise


def _run(session, inputs: dict) -> dict:
    wanted = {i.name for i in session.get_inputs()}
    feed = {name: value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
            for name, value in inputs.items() if name in wanted}
    names = [o.name for o in session.get_outputs()]
    return {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in zip(names, session.run(names, feed))}


class CenterFocusOnnxEncoder(nn.Module):
    """The encoder graph: `pixel_values` (and, for a `prompt` export, the prompt) to the encoder states, with the
    full `[image ; prompt]` mask as the PyTorch encoder returns it."""

    main_input_name = "pixel_values"

    def __init__(self, session):
        super().__init__()
        self.session = session
        self.uses_prompt = "input_ids" in {i.name for i in session.get_inputs()}

    def forward(self, pixel_values: torch.Tensor, input_ids: Optional[torch.LongTensor] = None,
                attention_mask: Optional[torch.LongTensor] = None, **kwargs) -> CenterFocusEncoderOutput:
        if input_ids is not None and input_ids.shape[1] == 0:  # an empty prompt (`text=""`, as pipelines pass)
            input_ids = attention_mask = None
        if self.uses_prompt and input_ids is None:
            raise ValueError("This ONNX export was made with --variant prompt: pass a prompt (input_ids), or export "
                             "with --variant image to caption without one.")
        if not self.uses_prompt and input_ids is not None:
            raise ValueError("This ONNX export was made with --variant image and cannot read a prompt; export with "
                             "--variant prompt to caption with prompts.")
        check_finite_pixel_values(pixel_values)  # as the PyTorch model refuses them
        inputs = {"pixel_values": pixel_values.float()}
        full_mask = None
        if self.uses_prompt:
            if input_ids.shape[1] == 0:
                raise ValueError("The prompt must hold at least one token.")
            attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.long()
            inputs.update(input_ids=input_ids.long(), attention_mask=attention_mask)
        hidden = _run(self.session, inputs)["last_hidden_state"]
        if self.uses_prompt:
            image = torch.ones(hidden.shape[0], hidden.shape[1] - attention_mask.shape[1], dtype=torch.long)
            full_mask = torch.cat([image, attention_mask.cpu()], dim=1)
        return CenterFocusEncoderOutput(last_hidden_state=hidden, attention_mask=full_mask)


class CenterFocusOnnxForConditionalGeneration(CenterFocusForConditionalGeneration):
    """`CenterFocusForConditionalGeneration` whose encoder and decoder run in ONNX Runtime (see the module docstring).
    Load with `from_onnx_folder`; it has no PyTorch weights, so `save_pretrained` and training do not apply."""

    _tied_weights_keys = {}

    def __init__(self, config: CenterFocusConfig, encoder, decoder, decoder_with_past=None):
        CenterFocusPreTrainedModel.__init__(self, config)  # no PyTorch layers: the graphs hold the weights
        check_exportable_decoder(config.decoder_type, "The exported model")
        self.is_non_autoregressive, self.logit_scale = False, None  # what the head's init and generate() read
        self.encoder = CenterFocusOnnxEncoder(encoder)
        # sessions, not modules: generate() reads the signature of a `decoder` attribute's forward
        self.decoder_session, self.decoder_with_past_session = decoder, decoder_with_past
        self.decoder_inputs = {i.name for i in decoder.get_inputs()}
        self.post_init()

    @classmethod
    def from_onnx_folder(cls, folder: str, provider: str = "CPUExecutionProvider",
                         provider_options: Optional[dict] = None) -> "CenterFocusOnnxForConditionalGeneration":
        """Sessions for `folder`'s encoder, decoder and (when exported) decoder-with-past graphs on `provider`
        (TensorRT falls back to CUDA, CUDA to the CPU, for operators they lack)."""
        check_onnx_folder(folder)
        path = Path(folder)
        config = CenterFocusConfig.from_pretrained(folder)
        for name in ("encoder_model.onnx", "decoder_model.onnx"):
            if not (path / name).is_file():
                raise ValueError(f"{folder} has no {name}: export it with `centerfocus export` (the Optimum line "
                                 "writes it too unless the decoders were only merged).")
        with_past = path / "decoder_with_past_model.onnx"
        model = cls(config, _session(path / "encoder_model.onnx", provider, provider_options),
                    _session(path / "decoder_model.onnx", provider, provider_options),
                    _session(with_past, provider, provider_options) if with_past.is_file() else None)
        generation = path / "generation_config.json"
        if generation.is_file():
            from transformers import GenerationConfig

            model.generation_config = GenerationConfig.from_pretrained(folder)
        if model.decoder_with_past_session is None:  # an `--task image-to-text` export: the whole prefix every step
            model.generation_config.use_cache = model.config.use_cache = False
        return model.eval()

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")  # ONNX Runtime takes and gives host arrays

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def get_encoder(self) -> CenterFocusOnnxEncoder:
        return self.encoder

    def get_output_embeddings(self) -> None:
        return None  # nothing to tie: the graphs hold the (tied) weights

    def forward(self, pixel_values=None, input_ids=None, attention_mask=None, decoder_input_ids=None,
                encoder_outputs=None, cache=None, past_key_values=None, use_cache=None, return_dict=None, **kwargs):
        if encoder_outputs is None:
            encoder_outputs = self.encoder(pixel_values, input_ids, attention_mask)
            attention_mask = encoder_outputs.attention_mask
        else:  # the same mask rules as the PyTorch model (a prompt-only mask is widened)
            if not isinstance(encoder_outputs, CenterFocusEncoderOutput):
                encoder_outputs = CenterFocusEncoderOutput(*encoder_outputs)
            attention_mask = encoder_attention_mask(encoder_outputs, attention_mask, self.config.num_image_tokens)
        cache = cache if cache is not None else past_key_values
        if use_cache and self.decoder_with_past_session is None:
            raise ValueError("This export has no decoder_with_past_model.onnx (exported with --task image-to-text): "
                             "generate with use_cache=False, its default, or export with the cache graph.")
        layers = self.config.decoder_layers
        inputs = {"encoder_hidden_states": encoder_outputs.last_hidden_state}
        if "encoder_attention_mask" in self.decoder_inputs:
            if attention_mask is None:
                attention_mask = torch.ones(encoder_outputs.last_hidden_state.shape[:2], dtype=torch.long)
            inputs["encoder_attention_mask"] = attention_mask.long()
        cached = use_cache is not False and self.decoder_with_past_session is not None
        if cached and cache is not None and cache.get_seq_length() > 0:
            self_layers, cross_layers = cache.self_attention_cache.layers, cache.cross_attention_cache.layers
            cross = [(layer.keys, layer.values) for layer in cross_layers]
            for i in range(layers):
                inputs[f"past_key_values.{i}.decoder.key"] = self_layers[i].keys
                inputs[f"past_key_values.{i}.decoder.value"] = self_layers[i].values
                inputs[f"past_key_values.{i}.encoder.key"], inputs[f"past_key_values.{i}.encoder.value"] = cross[i]
            outputs = _run(self.decoder_with_past_session, {**inputs, "input_ids": decoder_input_ids[:, -1:]})
        else:  # the first step, or decoding without a cache (the whole prefix every step)
            outputs = _run(self.decoder_session, {**inputs, "input_ids": decoder_input_ids})
            cross = [(outputs[f"present.{i}.encoder.key"], outputs[f"present.{i}.encoder.value"])
                     for i in range(layers)]
        new_cache = None
        if cached:
            new_cache = cache_from_tensors(
                [(outputs[f"present.{i}.decoder.key"], outputs[f"present.{i}.decoder.value"]) for i in range(layers)],
                cross)
        return CenterFocusSeq2SeqLMOutput(logits=outputs["logits"], **{CACHE_FIELD: new_cache},
                                          encoder_last_hidden_state=encoder_outputs.last_hidden_state)


def load_onnx_model(folder: str, provider: str = "CPUExecutionProvider",
                    provider_options: Optional[dict] = None) -> CenterFocusOnnxForConditionalGeneration:
    """`CenterFocusOnnxForConditionalGeneration.from_onnx_folder` (the runner `centerfocus caption --onnx` uses)."""
    return CenterFocusOnnxForConditionalGeneration.from_onnx_folder(folder, provider, provider_options)
