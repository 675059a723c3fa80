"""CenterFocus: a centre-weighted CNN image tokenizer feeding a multimodal encoder-decoder captioner.

Design: docs/design.md (where each item of the design card lives in this file, and why). Borrowed ideas:
squeeze-excitation channel attention (Hu et al., 2018), foveated token pooling, BART's encoder-decoder cache layout
(transformers `modeling_bart.py`), MAE's 2-D sin-cos position embedding (He et al., 2021), CLIP's contrastive loss.

Shape legend used in comments and docstrings:
    B batch, C image channels, H, W input height and width, h, w feature-grid height and width, G token-grid side,
    N image tokens, L prompt length, S encoder sequence length (N + L), T caption (target) length, D hidden size,
    nh attention heads, hd head size, V vocabulary.
"""

import math
import warnings
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    Cache,
    DynamicCache,
    EncoderDecoderCache,
    GenerationMixin,
    GradientCheckpointingLayer,
    PreTrainedModel,
)
from transformers.activations import ACT2FN
from transformers.cache_utils import StaticLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPooling,
    ImageClassifierOutput,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
)
from transformers.utils import logging

from ._compat import CACHE_FIELD, init
from .configuration_centerfocus import CenterFocusConfig
from .loading_centerfocus import AUTO_MAP, load_upgraded, load_with_clear_errors, upgraded_state_dict


logger = logging.get_logger(__name__)

def _one_cache(cache: Optional[Cache], past_key_values: Optional[Cache]) -> Optional[Cache]:
    if cache is not None and past_key_values is not None:
        raise ValueError("Pass the KV cache as `cache` or as `past_key_values`, not both.")
    if past_key_values is not None and CACHE_FIELD == "cache":  # as transformers 5's own models say it
        warnings.warn("`past_key_values` is deprecated: pass the KV cache as `cache`.", FutureWarning, stacklevel=3)
    return cache if cache is not None else past_key_values


# ----------------------------------------------------------------------------------------------------------------
# Output types
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class CenterFocusEncoderOutput(BaseModelOutput):
    """
    Encoder output plus the mask over `[image tokens ; prompt tokens]`.

    Args:
        attention_mask (`torch.LongTensor` of shape `(batch_size, num_image_tokens + prompt_length)`, *optional*):
            1 for encoder positions the decoder may attend to; None when every position may be attended to (no
            prompt padding). `generate()` expands it with the encoder outputs.
    """

    attention_mask: Optional[torch.LongTensor] = None


@dataclass
class CenterFocusSeq2SeqLMOutput(Seq2SeqLMOutput):
    """
    [`~transformers.modeling_outputs.Seq2SeqLMOutput`] plus the parts of the loss.

    Args:
        lm_loss (`torch.FloatTensor` of shape `()`): Caption cross-entropy (positions labelled -100 ignored).
        contrastive_loss (`torch.FloatTensor` of shape `()`): Image-caption alignment loss, when enabled.
        center_loss (`torch.FloatTensor` of shape `()`): Centre-quality loss, when enabled.
        word_loss (`torch.FloatTensor` of shape `()`): Word-detection loss, when enabled.
        length_loss (`torch.FloatTensor` of shape `()`): Caption-length loss of the non-autoregressive decoder.
    """

    lm_loss: Optional[torch.FloatTensor] = None
    contrastive_loss: Optional[torch.FloatTensor] = None
    center_loss: Optional[torch.FloatTensor] = None
    word_loss: Optional[torch.FloatTensor] = None
    length_loss: Optional[torch.FloatTensor] = None


# ----------------------------------------------------------------------------------------------------------------
# Helpers: coordinates and masks
# ----------------------------------------------------------------------------------------------------------------


def grid_coordinates(height: int, width: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell-centre coordinates of an `(h, w)` grid in normalised units, the image spanning [-1, 1].

    Returns:
        `(v, u)`, each of shape `(h, w)`: vertical and horizontal coordinate of every cell centre.
    """
    v = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2 - 1
    u = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2 - 1
    return torch.meshgrid(v, u, indexing="ij")


def center_region_mask(height: int, width: int, region_size: float, device=None) -> torch.Tensor:
    """Boolean `(h, w)` mask of the centre square whose side is `region_size` of the image side."""
    v, u = grid_coordinates(height, width, device)
    return (v.abs() <= region_size) & (u.abs() <= region_size)


def check_token_ids(name: str, ids: Optional[torch.Tensor], vocab_size: int, ignore_index: Optional[int] = None):
    """Raise `ValueError` naming the tensor, the first id outside `[0, vocab_size)` and the vocabulary size, where the
    embedding would end in "IndexError: index out of range in self". Skipped while tracing or compiling (a data-
    dependent check would break the graph)."""
    if ids is None or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    outside = (ids < 0) | (ids >= vocab_size)
    if ignore_index is not None:
        outside &= ids != ignore_index
    if outside.any():
        bad = ids[outside][0].item()
        where = " (other than -100, which the loss ignores)" if ignore_index is not None else ""
        raise ValueError(f"`{name}` holds token id {bad}{where}, outside the vocabulary of {vocab_size} ids "
                         f"(0-{vocab_size - 1}): were they made with another tokenizer, or is `vocab_size` wrong?")


def drop_empty_prompt(input_ids, attention_mask, inputs_embeds):
    """A zero-length prompt (`(B, 0)`, what the processor returns for `text=""`) is no prompt: `(None, None, None)`,
    so that it gives exactly the captions of the image alone."""
    prompt = input_ids if input_ids is not None else inputs_embeds
    if prompt is not None and prompt.shape[1] == 0:
        return None, None, None
    return input_ids, attention_mask, inputs_embeds


def combine_masks(structure: Optional[torch.Tensor], key_padding: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Combine a `(Sq, Sk)` structure mask and a `(B, Sk)` key-padding mask into a `(B or 1, 1, Sq, Sk)` bool mask."""
    mask = None if structure is None else structure[None, None]
    if key_padding is not None:
        padding = key_padding.bool()[:, None, None, :]
        mask = padding if mask is None else mask & padding
    return mask


def causal_mask(query_length: int, past_length: int, device=None) -> torch.Tensor:
    """`(T, past + T)` bool mask: query i (at absolute position past + i) sees keys 0 .. past + i."""
    keys = torch.arange(past_length + query_length, device=device)
    queries = torch.arange(query_length, device=device) + past_length
    return keys[None, :] <= queries[:, None]


def decoder_self_attention_mask(query_length: int, past_length: int, padding: Optional[torch.Tensor],
                                device=None) -> tuple[Optional[torch.Tensor], bool]:
    """`(mask, is_causal)` for decoder self-attention. Without decoder padding the mask is left to the kernel: a
    single new token sees every cached key (no mask), a fresh sequence is plainly causal (`is_causal`, SDPA's fast
    path); otherwise an explicit `(B, 1, T, past + T)` causal-and-padding mask."""
    if padding is None and query_length == 1:
        return None, False
    if padding is None and past_length == 0:
        return None, True
    return combine_masks(causal_mask(query_length, past_length, device), padding), False


def _upcast(tensor: torch.Tensor) -> torch.Tensor:
    """Half-precision values to float32 for losses and softmaxes; float32 and float64 stay as they are."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def cap_generated_length(generation_config, limit: int):
    """transformers caps only its default length at `max_position_embeddings`; an explicit or pipeline default
    `max_new_tokens` (the image-to-text pipeline asks for 256) would otherwise decode until the position table runs
    out and fail there. Cap it with a warning instead (the PyTorch and ONNX Runtime models both call this)."""
    if generation_config.max_length is not None and generation_config.max_length > limit:
        logger.warning_once(f"Captions stop at {limit} tokens (`max_position_embeddings`); the requested length "
                            f"({generation_config.max_length} with the start token) was capped.")
        generation_config.max_length = limit
    if generation_config.min_length is not None and generation_config.min_length > limit:
        generation_config.min_length = limit
    return generation_config


def check_dynamic_cache(cache: Cache) -> None:
    """CenterFocus reads cached lengths and cross-attention keys/values as stored, which a pre-allocated (static) cache
    pads to its full length: refuse one rather than decode wrongly."""
    parts = (cache.self_attention_cache, cache.cross_attention_cache) if isinstance(cache, EncoderDecoderCache) else (
        cache,)
    for part in parts:
        if any(isinstance(layer, StaticLayer) for layer in getattr(part, "layers", ())):
            raise ValueError(f"CenterFocus decodes with a dynamic KV cache only, got a {type(part).__name__}: drop "
                             "`cache_implementation='static'` (or pass an `EncoderDecoderCache(DynamicCache(), "
                             "DynamicCache())`).")


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Decoder inputs from labels: prepend the start token, drop the last label, replace -100 by pad."""
    shifted = labels.new_zeros(labels.shape)
    shifted[:, 1:] = labels[:, :-1].clone()
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


def sincos_2d_table(grid_size: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position table of shape `(G * G, D)` (MAE). `D` must be divisible by 4."""
    if dim % 4 != 0:
        raise ValueError(f"`position_embedding_type='sincos_2d'` needs `hidden_size` divisible by 4, got {dim}.")
    v, u = torch.meshgrid(torch.arange(grid_size, dtype=torch.float64), torch.arange(grid_size, dtype=torch.float64),
                          indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    parts = []
    for coordinate in (v, u):
        angles = coordinate.reshape(-1, 1) * omega[None, :]  # (G*G, D/4)
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1).float()  # (G*G, D)


# ----------------------------------------------------------------------------------------------------------------
# Small blocks
# ----------------------------------------------------------------------------------------------------------------


class CenterFocusMLP(nn.Module):
    """Feed-forward block `fc2(act(fc1(x)))`."""

    def __init__(self, config: CenterFocusConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(hidden_states)))


class CenterFocusAttention(nn.Module):
    """Multi-head attention for encoder self-attention, decoder self-attention (cached) and cross-attention (cached
    once per generate). Uses `scaled_dot_product_attention`, or an explicit softmax when weights are requested or the
    config asks for `"eager"`."""

    def __init__(self, config: CenterFocusConfig, is_cross_attention: bool = False, layer_idx: Optional[int] = None):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.is_cross_attention = is_cross_attention
        self.layer_idx = layer_idx
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def _split_heads(self, states: torch.Tensor) -> torch.Tensor:
        batch, length, _ = states.shape
        return states.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, len, hd)

    def _key_values(self, states: torch.Tensor, past_key_values: Optional[Cache]) -> tuple[torch.Tensor, torch.Tensor]:
        """Project keys and values, reading or filling the cache. Cross-attention projects the encoder once."""
        if past_key_values is None:
            return self._split_heads(self.k_proj(states)), self._split_heads(self.v_proj(states))
        if not self.is_cross_attention:
            cache = past_key_values.self_attention_cache
            return cache.update(self._split_heads(self.k_proj(states)), self._split_heads(self.v_proj(states)),
                                self.layer_idx)
        if past_key_values.is_updated.get(self.layer_idx):
            layer = past_key_values.cross_attention_cache.layers[self.layer_idx]
            return layer.keys, layer.values
        keys, values = past_key_values.cross_attention_cache.update(
            self._split_heads(self.k_proj(states)), self._split_heads(self.v_proj(states)), self.layer_idx)
        past_key_values.is_updated[self.layer_idx] = True
        return keys, values

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        past_key_values: Optional[EncoderDecoderCache] = None,
        output_attentions: bool = False,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """
        Args:
            hidden_states: `(B, Tq, D)` queries.
            key_value_states: `(B, S, D)` encoder states for cross-attention, else None.
            attention_mask: bool, broadcastable to `(B, nh, Tq, Tk)`, True = attend.
            past_key_values: decoder cache, or None.
            is_causal: plain causal attention over `Tq == Tk` positions (no `attention_mask`).

        Returns:
            `(B, Tq, D)` output and, when requested, `(B, nh, Tq, Tk)` attention weights.
        """
        batch, query_length, _ = hidden_states.shape
        query = self._split_heads(self.q_proj(hidden_states))  # (B, nh, Tq, hd)
        source = key_value_states if self.is_cross_attention else hidden_states
        key, value = self._key_values(source, past_key_values)  # (B, nh, Tk, hd)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if output_attentions or self.config._attn_implementation == "eager":
            scores = torch.matmul(query, key.transpose(-1, -2)) * self.scaling  # (B, nh, Tq, Tk)
            if is_causal:
                attention_mask = causal_mask(query_length, key.shape[-2] - query_length, scores.device)
            if attention_mask is not None:
                scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
            weights = F.dropout(scores.softmax(dim=-1), p=dropout, training=self.training)
            output = torch.matmul(weights, value)
        else:
            output = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                                    is_causal=is_causal, scale=self.scaling)
        output = output.transpose(1, 2).reshape(batch, query_length, -1)  # (B, Tq, D)
        return self.out_proj(output), (weights if output_attentions else None)


def _residual_dropout(config: CenterFocusConfig) -> nn.Module:
    """Dropout on residual branches; an `Identity` when off, so no random masks are drawn."""
    return nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()


# ----------------------------------------------------------------------------------------------------------------
# Vision front end
# ----------------------------------------------------------------------------------------------------------------


class CenterFocusCenterWeighting(nn.Module):
    """Gaussian spatial attention (design item 1): multiplies a feature map by
    `m = floor + (1 - floor) * exp(-(u^2 + v^2) / (2 sigma^2))`, where `(u, v)` are cell centres in [-1, 1], divided
    by its mean over the map. The floor re-weights the periphery instead of erasing it (a plain Gaussian at sigma 0.2
    multiplies the corners by ~1e-11); the mean normalisation keeps the map's overall scale, so stacking stages does
    not shrink the image signal. The standard deviation is stored as a log so it stays positive while it is learned."""

    def __init__(self, sigma: float, floor: float, learnable: bool):
        super().__init__()
        self.floor = floor
        self.initial_sigma = sigma
        log_sigma = torch.tensor([math.log(sigma)])  # (1,): FSDP2 shards every parameter and refuses 0-d ones
        if learnable:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def mask(self, height: int, width: int, device=None) -> torch.Tensor:
        """The `(h, w)` weighting in float32."""
        v, u = grid_coordinates(height, width, device)
        gaussian = torch.exp(-(u**2 + v**2) / (2 * self.sigma.float() ** 2))
        weights = self.floor + (1 - self.floor) * gaussian
        return weights / weights.mean()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """`(B, c, h, w)` -> `(B, c, h, w)`."""
        return features * self.mask(features.shape[-2], features.shape[-1], features.device).to(features.dtype)


class CenterFocusSqueezeExcitation(nn.Module):
    """The squeeze-excitation gate (Hu et al., 2018) that channel pruning and channel attention share: each channel's
    mean over the map, through two linear layers, to a sigmoid score per channel. Unlike the seed's sketch, the map is
    pooled and flattened before the linear layers."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, max(1, channels // reduction))
        self.fc2 = nn.Linear(max(1, channels // reduction), channels)

    def gate(self, features: torch.Tensor) -> torch.Tensor:
        """`(B, c, h, w)` -> `(B, c)` scores in (0, 1)."""
        return torch.sigmoid(self.fc2(F.relu(self.fc1(features.mean(dim=(2, 3))))))


class CenterFocusChannelAttention(CenterFocusSqueezeExcitation):
    """Squeeze-excitation over the channels of the pooled map (design item 6)."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """`(B, c, G, G)` -> `(B, c, G, G)`."""
        return features * self.gate(features)[:, :, None, None]


class CenterFocusChannelPruning(CenterFocusSqueezeExcitation):
    """Dynamic channel pruning of the periphery (design item 3). An SE-style gate scores the channels of each image;
    every position is scaled by the gate, and positions outside the centre region keep only the top
    `keep_ratio` fraction of channels. The top-k choice is hard in training and inference (deterministic);
    gradients reach the gate through a straight-through estimator."""

    def __init__(self, channels: int, keep_ratio: float, reduction: int, center_region_size: float):
        super().__init__(channels, reduction)
        self.num_kept = max(1, round(keep_ratio * channels))
        self.center_region_size = center_region_size

    def channel_mask(self, features: torch.Tensor) -> torch.Tensor:
        """Per-position channel multiplier of shape `(B, c, h, w)`: gate in the centre, gate times a top-k 0/1
        choice in the periphery."""
        gate = self.gate(features)  # (B, c)
        # equal gate values (e.g. a gate whose hidden units are all inactive gives 0.5 everywhere) would leave the
        # choice to the backend's top-k; a tiny index-based offset makes lower channel indices win ties everywhere
        tie_break = torch.arange(gate.shape[1], device=gate.device, dtype=gate.dtype) * 1e-6
        chosen = (gate - tie_break).topk(self.num_kept, dim=1).indices
        # tensor updates, not a scalar: a scalar is traced into a constant of the export batch size
        hard = torch.zeros_like(gate).scatter(1, chosen, torch.ones_like(chosen, dtype=gate.dtype))
        kept = hard + gate - gate.detach()  # value: hard 0/1; gradient: through the gate
        center = center_region_mask(features.shape[-2], features.shape[-1], self.center_region_size, features.device)
        center = center.to(features.dtype)[None, None]  # (1, 1, h, w)
        return gate[:, :, None, None] * (center + (1 - center) * kept[:, :, None, None])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features * self.channel_mask(features)


class CenterFocusEdgeStem(nn.Module):
    """Edge compensation from the image itself (`edge_compensation_type="stem"`): a light CNN of its own, with the
    main stem's kernels and strides at half its widths (at least 8 channels), conv -> norm -> ReLU per stage and no
    centre weighting, projected to the last stage's channels by a 1x1 convolution and added outside the centre
    region. The centre-weighted stages normalise after every weighting, so with a low floor they compound into
    erasing the periphery; this branch gives the peripheral cells features that no weighting has touched."""

    def __init__(self, config: CenterFocusConfig):
        super().__init__()
        layers, in_channels = [], config.num_channels
        for kernel, stride, channels in zip(config.stem_kernel_sizes, config.stem_strides, config.stem_channels):
            width = max(8, round(channels * config.edge_stem_width_ratio))
            layers += [nn.Conv2d(in_channels, width, kernel_size=kernel, stride=stride, padding=kernel // 2,
                                 bias=config.stem_norm_type == "none"), stem_norm(config, width), nn.ReLU()]
            in_channels = width
        layers += [CenterFocusResidualBlock(config, in_channels) for _ in range(config.edge_stem_residual_blocks)]
        self.layers = nn.Sequential(*layers)
        self.width = in_channels
        self.proj = nn.Conv2d(in_channels, config.stem_channels[-1], kernel_size=1)
        # each cell's brightest value per channel (the colour of what is drawn there), projected: colour is read at a
        # glance, and a stage 1 on shape labels (`pretrain-vision --edge_object_scale`) teaches the layers to ignore
        # it; a cell's mean mostly gives its background
        self.stride = math.prod(config.stem_strides)
        self.color = nn.Conv2d(config.num_channels, config.stem_channels[-1], kernel_size=1)
        self.center_region_size = config.center_region_size

    def forward(self, features: torch.Tensor, source: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        """Add `proj(layers(pixel_values)) + color(cell maxima of pixel_values)` to `features` `(B, c, h, w)` outside
        the centre; `source` (the last stage's output) is not read."""
        brightest = F.max_pool2d(pixel_values, kernel_size=self.stride, stride=self.stride)
        branch = self.proj(self.layers(pixel_values)) + self.color(brightest)  # (B, c, h, w)
        center = center_region_mask(branch.shape[-2], branch.shape[-1], self.center_region_size, branch.device)
        return features + branch * (~center).to(branch.dtype)[None, None]


def stem_norm(config: CenterFocusConfig, channels: int) -> nn.Module:
    """The stem's normalisation after a convolution (`config.stem_norm_type`)."""
    return STEM_NORM_CLASSES[config.stem_norm_type](channels)


class CenterFocusResidualBlock(nn.Module):
    """ResNet's basic block: `relu(x + norm(conv(relu(norm(conv(x))))))` with 3x3 convolutions. The last norm's scale
    starts at zero (Goyal et al., 2017), so a new block is the identity and a deeper stem trains as a shallow one."""

    def __init__(self, config: CenterFocusConfig, channels: int):
        super().__init__()
        bias = config.stem_norm_type == "none"
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=bias)
        self.norm1 = stem_norm(config, channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=bias)
        self.norm2 = stem_norm(config, channels)
        if hasattr(self.norm2, "weight"):
            self.norm2.zero_init = True  # _init_weights zeroes its scale
        else:
            self.conv2.zero_init = True  # without a norm, the last convolution starts at zero instead

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        branch = self.norm2(self.conv2(F.relu(self.norm1(self.conv1(features)))))
        return F.relu(features + branch)


class CenterFocusStemStage(nn.Module):
    """One stem stage: conv -> norm -> ReLU -> residual blocks -> centre weighting (design item 2). With the
    defaults (no norm, no blocks) this is the seed's conv -> ReLU -> centre weighting."""

    def __init__(self, config: CenterFocusConfig, stage: int, in_channels: int):
        super().__init__()
        kernel, channels = config.stem_kernel_sizes[stage], config.stem_channels[stage]
        self.conv = nn.Conv2d(in_channels, channels, kernel_size=kernel, stride=config.stem_strides[stage],
                              padding=kernel // 2, bias=config.stem_norm_type == "none")
        self.norm = stem_norm(config, channels)
        self.blocks = nn.Sequential(*(CenterFocusResidualBlock(config, channels)
                                      for _ in range(config.stem_residual_blocks[stage])))
        self.center_weighting = CENTER_WEIGHTING_CLASSES[config.center_weighting_type](config, stage)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.center_weighting(self.blocks(F.relu(self.norm(self.conv(features)))))


class CenterFocusConvStem(nn.Module):
    """Hierarchical centre-weighted CNN (design items 1-3, 5, 10): the stages, channel pruning of the periphery
    on the last stage, optional edge compensation, then average pooling to the `G x G` token grid (fixed, equal windows, so it exports to ONNX)."""

    def __init__(self, config: CenterFocusConfig):
        super().__init__()
        channels = (config.num_channels, *config.stem_channels)
        self.stages = nn.ModuleList(CenterFocusStemStage(config, i, channels[i]) for i in range(len(channels) - 1))
        self.channel_pruning = CHANNEL_PRUNING_CLASSES[config.channel_pruning_type](config)
        self.edge_compensation = EDGE_COMPENSATION_CLASSES[config.edge_compensation_type](config)
        self.grid_size = config.image_tokenizer_grid_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` -> `(B, stem_channels[-1], G, G)`."""
        # channels-last spares oneDNN a layout copy of the 112x112 feature map in the convolutions' backward
        # (measured: ~6% of a design-size training step on CPU); values are unchanged
        features = pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        for stage in self.stages:
            features = stage(features)
        pruned = self.channel_pruning(features)
        if not isinstance(self.edge_compensation, nn.Identity):
            pruned = self.edge_compensation(pruned, features, pixel_values)
        window = pruned.shape[-1] // self.grid_size  # the config guarantees an exact division
        return F.avg_pool2d(pruned, kernel_size=window, stride=window)


class CenterFocusPositionEmbedding2D(nn.Module):
    """Learned or fixed 2-D position embedding added to the `G x G` token grid. A learned table saved for another grid
    size is resized bicubically on load."""

    def __init__(self, grid_size: int, dim: int, learned: bool):
        super().__init__()
        self.grid_size = grid_size
        if learned:
            self.weight = nn.Parameter(torch.zeros(grid_size * grid_size, dim))
        else:
            self.register_buffer("weight", self.derived_buffers(dim)["weight"], persistent=False)

    def derived_buffers(self, dim: Optional[int] = None) -> dict[str, torch.Tensor]:
        """The fixed sin-cos table (none for a learned table); `_init_weights` recomputes it after loading."""
        if isinstance(getattr(self, "weight", None), nn.Parameter):
            return {}
        with torch.device("cpu"):
            return {"weight": sincos_2d_table(self.grid_size, dim or self.weight.shape[1])}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "weight"
        stored = state_dict.get(key)
        if isinstance(self.weight, nn.Parameter) and stored is not None and stored.shape != self.weight.shape:
            side = math.isqrt(stored.shape[0])
            if side * side == stored.shape[0] and stored.shape[1] == self.weight.shape[1]:
                logger.warning(f"Resizing the position embedding from a {side}x{side} to a "
                               f"{self.grid_size}x{self.grid_size} grid.")
                grid = stored.t().reshape(1, -1, side, side)  # (1, D, G', G')
                grid = F.interpolate(grid.float(), size=(self.grid_size, self.grid_size), mode="bicubic",
                                     align_corners=False)
                state_dict[key] = grid.reshape(stored.shape[1], -1).t().to(stored.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """`(B, G*G, D)` -> `(B, G*G, D)`."""
        return tokens + self.weight.to(tokens.dtype)


def foveation_matrix(grid_size: int, center_size: int, pool: int) -> torch.Tensor:
    """`(N, G*G)` averaging matrix: one row per foveated token. Fovea cells map one to one; every peripheral
    `pool x pool` block outside the fovea is averaged into one token."""
    margin = (grid_size - center_size) // 2
    rows = []
    for y in range(margin, margin + center_size):
        for x in range(margin, margin + center_size):
            row = torch.zeros(grid_size, grid_size, dtype=torch.float32)
            row[y, x] = 1.0
            rows.append(row)
    coarse_lo, coarse_hi = margin // pool, (margin + center_size) // pool
    for cy in range(grid_size // pool):
        for cx in range(grid_size // pool):
            if coarse_lo <= cy < coarse_hi and coarse_lo <= cx < coarse_hi:
                continue
            row = torch.zeros(grid_size, grid_size, dtype=torch.float32)
            row[cy * pool:(cy + 1) * pool, cx * pool:(cx + 1) * pool] = 1.0 / pool**2
            rows.append(row)
    return torch.stack(rows).reshape(len(rows), -1)


class CenterFocusImageTokenizer(nn.Module):
    """Turns the `(B, c, G, G)` stem output into `(B, N, D)` image tokens (design items 2 and 6): SE channel attention,
    a per-token layer norm, projection to `D`, 2-D position embedding, then either one token per cell (`grid_pool`) or foveated tokens.

    Token geometry is fixed by the config and kept as buffers: `token_coordinates` `(N, 2)` (v, u in [-1, 1]) and
    `token_is_center` `(N,)`."""

    def __init__(self, config: CenterFocusConfig):
        super().__init__()
        channels = config.stem_channels[-1]
        self.channel_attention = CHANNEL_ATTENTION_CLASSES[config.channel_attention_type](config)
        # normalising the stem features keeps image content from vanishing next to the position embeddings
        self.norm = nn.LayerNorm(channels, eps=config.layer_norm_eps)
        self.proj = nn.Linear(channels, config.hidden_size)
        self.position_embedding = POSITION_EMBEDDING_CLASSES[config.position_embedding_type](config)
        self.foveated = config.image_tokenizer_type == "foveated"
        self.summary = IMAGE_SUMMARY_CLASSES[config.image_summary_type](config)
        self.config = config
        for name, buffer in self.derived_buffers().items():
            self.register_buffer(name, buffer, persistent=False)

    def derived_buffers(self) -> dict[str, torch.Tensor]:
        """The token geometry, computed from the config: `pooling` `(N, G*G)`, `token_coordinates` `(N, 2)`,
        `token_is_center` `(N,)`. Not saved with the weights; `_init_weights` recomputes it after loading."""
        config, grid = self.config, self.config.image_tokenizer_grid_size
        with torch.device("cpu"):
            pooling = IMAGE_TOKEN_POOLING[config.image_tokenizer_type](config)
            v, u = grid_coordinates(grid, grid)
        coordinates = pooling @ torch.stack([v.reshape(-1), u.reshape(-1)], dim=1)  # (N, 2)
        is_center = (coordinates.abs() <= config.center_region_size + 1e-6).all(dim=1)
        return {"pooling": pooling, "token_coordinates": coordinates, "token_is_center": is_center}

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """`(B, c, G, G)` -> `(B, N, D)`."""
        features = self.channel_attention(features)
        tokens = self.proj(self.norm(features.flatten(2).transpose(1, 2)))  # (B, G*G, D)
        tokens = self.position_embedding(tokens)
        if self.foveated:
            tokens = torch.matmul(self.pooling.to(tokens.dtype), tokens)  # (B, N, D)
        if self.summary is not None:
            tokens = self.summary(tokens, self.token_is_center)
        return tokens


class CenterFocusImageSummary(nn.Module):
    """A position-specific read-out of the whole token map, added to the centre region's tokens
    (`image_summary_type="flatten"`): each token is narrowed to `image_summary_dim` features, the `N` narrowed tokens
    are flattened in their fixed order and one linear layer maps them to `D`, as the fully connected head of a classic
    CNN classifier reads a flattened feature map. Attention pools tokens by content, so an identity that lies in where
    the parts of a shape are (a handwritten digit over ~7x7 cells) reaches the decoder only once the encoder has
    learned to assemble it; a linear read-out of the flattened map carries it from the first step. It is added to the
    centre tokens only: added to every token it crowded out what the peripheral tokens say (layout exact match 0.85
    against 0.997 on the handwriting benchmark, one seed)."""

    def __init__(self, config: CenterFocusConfig):
        super().__init__()
        self.narrow = nn.Linear(config.hidden_size, config.image_summary_dim)
        self.proj = nn.Linear(config.num_image_tokens * config.image_summary_dim, config.hidden_size)

    def forward(self, tokens: torch.Tensor, is_center: torch.Tensor) -> torch.Tensor:
        """`(B, N, D)` tokens and the `(N,)` centre-token mask -> `(B, N, D)`."""
        summary = self.proj(self.narrow(tokens).flatten(1))  # (B, D)
        return tokens + summary[:, None] * is_center.to(tokens.dtype)[None, :, None]


class CenterFocusModalityGate(nn.Module):
    """Dynamic image/text balance (design item 8): scales each encoder output token by `2 * sigmoid(w.x + b)`, which
    is exactly 1 at initialisation and learns how much each token (image or prompt) contributes."""

    def __init__(self, config: CenterFocusConfig):
        super().__init__()
        self.gate = nn.Linear(config.hidden_size, 1)
        self.gate.zero_init = True  # _init_weights zeroes it (transformers 5 initialises each module's own tensors)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states * (2 * torch.sigmoid(self.gate(hidden_states)))


# ----------------------------------------------------------------------------------------------------------------
# Transformer layers
# ----------------------------------------------------------------------------------------------------------------


class CenterFocusEncoderLayer(GradientCheckpointingLayer):
    """Pre-norm transformer encoder layer."""

    def __init__(self, config: CenterFocusConfig):
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = CenterFocusAttention(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = CenterFocusMLP(config)
        self.dropout = _residual_dropout(config)

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        attended, weights = self.self_attn(self.self_attn_layer_norm(hidden_states), attention_mask=attention_mask,
                                           output_attentions=output_attentions)
        hidden_states = hidden_states + self.dropout(attended)
        hidden_states = hidden_states + self.dropout(self.mlp(self.final_layer_norm(hidden_states)))
        return hidden_states, weights


class CenterFocusDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm transformer decoder layer: causal self-attention, cross-attention to the encoder, MLP."""

    def __init__(self, config: CenterFocusConfig, layer_idx: int):
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = CenterFocusAttention(config, layer_idx=layer_idx)
        self.cross_attn_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.cross_attn = CenterFocusAttention(config, is_cross_attention=True, layer_idx=layer_idx)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = CenterFocusMLP(config)
        self.dropout = _residual_dropout(config)

    def forward(self, hidden_states, encoder_hidden_states, attention_mask=None, encoder_attention_mask=None,
                past_key_values=None, output_attentions=False, use_cache=True, is_causal=False):
        attended, self_weights = self.self_attn(self.self_attn_layer_norm(hidden_states), attention_mask=attention_mask,
                                                past_key_values=past_key_values, output_attentions=output_attentions,
                                                is_causal=is_causal)
        hidden_states = hidden_states + self.dropout(attended)
        attended, cross_weights = self.cross_attn(
            self.cross_attn_layer_norm(hidden_states), key_value_states=encoder_hidden_states,
            attention_mask=encoder_attention_mask, past_key_values=past_key_values,
            output_attentions=output_attentions)
        hidden_states = hidden_states + self.dropout(attended)
        hidden_states = hidden_states + self.dropout(self.mlp(self.final_layer_norm(hidden_states)))
        return hidden_states, self_weights, cross_weights


# ----------------------------------------------------------------------------------------------------------------
# Registries: one dict per config switch (a test checks they equal the allowed values in the config file)
# ----------------------------------------------------------------------------------------------------------------


def _identity(*_args) -> nn.Module:
    return nn.Identity()


CENTER_WEIGHTING_CLASSES = {
    "gaussian": lambda config, stage: CenterFocusCenterWeighting(
        config.center_sigmas[stage], config.center_weighting_floor, config.center_sigma_learnable),
    "none": _identity,
}
CHANNEL_PRUNING_CLASSES = {
    "topk": lambda config: CenterFocusChannelPruning(config.stem_channels[-1], config.channel_pruning_keep_ratio,
                                                     config.channel_pruning_reduction, config.center_region_size),
    "none": _identity,
}
EDGE_COMPENSATION_CLASSES = {
    "stem": CenterFocusEdgeStem,
    "none": _identity,
}
CHANNEL_ATTENTION_CLASSES = {
    "se": lambda config: CenterFocusChannelAttention(config.stem_channels[-1], config.channel_attention_reduction),
    "none": _identity,
}
POSITION_EMBEDDING_CLASSES = {
    "learned_2d": lambda config: CenterFocusPositionEmbedding2D(config.image_tokenizer_grid_size, config.hidden_size,
                                                                learned=True),
    "sincos_2d": lambda config: CenterFocusPositionEmbedding2D(config.image_tokenizer_grid_size, config.hidden_size,
                                                               learned=False),
    "none": _identity,
}
MODALITY_EMBEDDING_CLASSES = {
    "learned": lambda config: nn.Embedding(2, config.hidden_size),
    "none": lambda config: None,
}
MODALITY_GATE_CLASSES = {"dynamic": CenterFocusModalityGate, "none": _identity}
IMAGE_SUMMARY_CLASSES = {"flatten": CenterFocusImageSummary, "none": lambda config: None}
STEM_NORM_CLASSES = {
    "batch": nn.BatchNorm2d,
    "none": _identity,
}
IMAGE_TOKEN_POOLING = {
    "grid_pool": lambda config: torch.eye(config.image_tokenizer_grid_size**2, dtype=torch.float32),
    "foveated": lambda config: foveation_matrix(config.image_tokenizer_grid_size, config.foveated_center_size,
                                                config.foveated_periphery_pool),
}
DECODER_IS_CAUSAL = {"autoregressive": True, "non_autoregressive": False}


# ----------------------------------------------------------------------------------------------------------------
# Encoder and decoder stacks
# ----------------------------------------------------------------------------------------------------------------


def validate_pixel_values(config: CenterFocusConfig, pixel_values: Optional[torch.Tensor]) -> None:
    """Raise `ValueError` unless `pixel_values` is a float `(B, num_channels, image_size, image_size)` tensor."""
    if pixel_values is None:
        raise ValueError("`pixel_values` is required: CenterFocus captions images.")
    if pixel_values.ndim != 4:
        raise ValueError("`pixel_values` must have shape (batch_size, num_channels, height, width), got shape "
                         f"{tuple(pixel_values.shape)}.")
    if not pixel_values.is_floating_point():
        raise ValueError(f"`pixel_values` must be a floating point tensor, got dtype {pixel_values.dtype}.")
    expected = (config.num_channels, config.image_size, config.image_size)
    if tuple(pixel_values.shape[1:]) != expected:
        raise ValueError(f"`pixel_values` must have (num_channels, height, width) = {expected} for this model, got "
                         f"{tuple(pixel_values.shape[1:])}; preprocess images with CenterFocusImageProcessor.")
    check_finite_pixel_values(pixel_values)


def check_finite_pixel_values(pixel_values) -> None:
    """Refuse NaN or infinite `pixel_values` (torch or numpy) with a `ValueError` saying how many and where they come
    from: through the model they become captions that say nothing. Skipped while tracing or compiling."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    values = torch.as_tensor(pixel_values)
    finite = torch.isfinite(values)
    if not finite.all():
        bad = int((~finite).sum())
        images = sorted({int(i) for i in (~finite).flatten(1).any(dim=1).nonzero().flatten()})
        raise ValueError(f"`pixel_values` holds {bad} NaN or infinite values (images {images[:8]}): a preprocessing "
                         "step outside CenterFocusImageProcessor made them (the processor refuses such images); fix "
                         "that step.")


class CenterFocusPreTrainedModel(PreTrainedModel):
    config_class = CenterFocusConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["CenterFocusEncoderLayer", "CenterFocusDecoderLayer"]
    _supports_sdpa = True
    _can_compile_fullgraph = False

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        # transformers decides this by searching the model file for its AttentionInterface code; CenterFocusAttention
        # reads `config._attn_implementation` at every call, so `set_attn_implementation("eager"|"sdpa")` works
        return True

    def __init__(self, config: CenterFocusConfig, *inputs, **kwargs):
        super().__init__(config, *inputs, **kwargs)
        self.config.auto_map = {**AUTO_MAP, **(getattr(self.config, "auto_map", None) or {})}

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, with errors that name the damaged file or the mismatched weights
        (`loading_centerfocus.load_with_clear_errors`), reading checkpoints of older versions in today's weight names
        and shapes (`loading_centerfocus.upgraded_state_dict`)."""
        pretrained = args[0] if args else kwargs.get("pretrained_model_name_or_path")
        upgraded = None
        if kwargs.get("state_dict") is None and pretrained is not None and len(args) <= 1:
            upgraded = upgraded_state_dict(pretrained, kwargs)
        if upgraded is None:
            return load_with_clear_errors(super().from_pretrained, *args, **kwargs)
        kwargs.pop("pretrained_model_name_or_path", None)
        return load_with_clear_errors(load_upgraded, super().from_pretrained, cls, pretrained, upgraded, **kwargs)

    def enable_input_require_grads(self) -> None:
        """Make the inputs of the transformer layers require grad, so that adapters (LoRA) inside checkpointed layers
        get gradients with reentrant gradient checkpointing. Unlike the base implementation, which hooks only the
        text embedding, this also hooks the image-token output: without it the encoder's adapters silently get no
        gradient when there is no prompt."""

        def make_output_require_grad(module, inputs, output):
            output.requires_grad_(True)

        self._require_grads_hooks = [m.register_forward_hook(make_output_require_grad)
                                     for m in self._input_modules()]

    def _input_modules(self) -> list[nn.Module]:
        """The modules whose outputs the transformer layers read: the text embedding and the image tokenizer."""
        return [self.get_input_embeddings(), *(m for m in self.modules() if isinstance(m, CenterFocusImageTokenizer))]

    def disable_input_require_grads(self) -> None:
        for hook in getattr(self, "_require_grads_hooks", []):
            hook.remove()
        self._require_grads_hooks = []

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (CenterFocusImageTokenizer, CenterFocusPositionEmbedding2D)):
            # non-persistent buffers derived from the config (transformers 5 leaves them uninitialised after loading)
            for name, value in module.derived_buffers().items():
                getattr(module, name).copy_(value)
        if isinstance(module, nn.Linear) and getattr(module, "zero_init", False):  # the modality gate
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            # fan-in scaling keeps the stem's activations O(1) (ResNet/timm); a fixed small std would make the image
            # signal vanish under the position embeddings before training starts
            if getattr(module, "zero_init", False):  # last conv of a residual block without a norm
                init.zeros_(module.weight)
            else:
                init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            (init.zeros_ if getattr(module, "zero_init", False) else init.ones_)(module.weight)
            init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm2d):
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, CenterFocusCenterWeighting):
            init.constant_(module.log_sigma, math.log(module.initial_sigma))
        elif isinstance(module, CenterFocusPositionEmbedding2D) and isinstance(module.weight, nn.Parameter):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, CenterFocusForConditionalGeneration):
            if module.logit_scale is not None:
                init.constant_(module.logit_scale, math.log(1 / self.config.contrastive_temperature))
            if getattr(module, "mask_embedding", None) is not None:
                init.normal_(module.mask_embedding, mean=0.0, std=std)


class CenterFocusStack(CenterFocusPreTrainedModel):
    """What the encoder and the decoder stacks share: the word embedding (one table for prompt and caption, tied to the
    language-model head) and the 1-D position table of their text, built where each stack puts them."""

    def _build_text_embeddings(self, config: CenterFocusConfig, embed_tokens: Optional[nn.Embedding]) -> None:
        self.embed_tokens = embed_tokens or nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value


class CenterFocusEncoder(CenterFocusStack):
    """Vision front end plus the multimodal transformer encoder over `[image tokens ; prompt tokens]`.
    Callable on its own (it is what `get_encoder()` returns, and the ONNX encoder graph)."""

    def __init__(self, config: CenterFocusConfig, embed_tokens: Optional[nn.Embedding] = None):
        super().__init__(config)
        self.vision_stem = CenterFocusConvStem(config)
        self.image_tokenizer = CenterFocusImageTokenizer(config)
        self._build_text_embeddings(config, embed_tokens)
        self.modality_embedding = MODALITY_EMBEDDING_CLASSES[config.modality_embedding_type](config)
        self.layers = nn.ModuleList(CenterFocusEncoderLayer(config) for _ in range(config.encoder_layers))
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.modality_gate = MODALITY_GATE_CLASSES[config.modality_gate_type](config)
        self.gradient_checkpointing = False
        self.post_init()

    def vision_layers(self) -> list[nn.Module]:
        """The image-encoder layers with parameters, input to output: each stem stage, channel pruning, edge
        compensation (when on) and the image tokenizer. `--freeze_vision_layers N` freezes the first N."""
        return _vision_layers(self.vision_stem, self.image_tokenizer)

    def get_image_features(self, pixel_values: torch.Tensor, output_hidden_states: Optional[bool] = None,
                           output_attentions: Optional[bool] = None, return_dict: Optional[bool] = None, **kwargs):
        """`(B, C, H, W)` -> the image tokens before the transformer layers, as transformers 5's vision-language
        models give them: `BaseModelOutputWithPooling` whose `last_hidden_state` and `pooler_output` are both the
        `(B, N, D)` tokens the encoder layers read (5.x's layout for the features a language model consumes); a tuple
        with `return_dict=False`. The image tower is convolutional: `hidden_states` (when asked) is `(tokens,)`,
        `attentions` is `()`."""
        config = self.config
        output_hidden_states = output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        output_attentions = output_attentions if output_attentions is not None else config.output_attentions
        return_dict = return_dict if return_dict is not None else config.return_dict
        tokens = self._image_tokens(pixel_values)
        output = BaseModelOutputWithPooling(last_hidden_state=tokens, pooler_output=tokens,
                                            hidden_states=(tokens,) if output_hidden_states else None,
                                            attentions=() if output_attentions else None)
        return output if return_dict else output.to_tuple()

    def _image_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` -> image tokens `(B, N, D)` before the transformer layers."""
        dtype = self.image_tokenizer.proj.weight.dtype
        return self.image_tokenizer(self.vision_stem(pixel_values.to(dtype)))

    def _validate_inputs(self, pixel_values, input_ids, inputs_embeds, attention_mask) -> None:
        config = self.config
        validate_pixel_values(config, pixel_values)
        prompt = input_ids if input_ids is not None else inputs_embeds
        if prompt is not None and prompt.shape[0] != pixel_values.shape[0]:
            raise ValueError(f"Batch size mismatch: `pixel_values` has {pixel_values.shape[0]} images but the prompt "
                             f"(`input_ids`) has {prompt.shape[0]} rows.")
        if prompt is not None and prompt.shape[1] > config.max_position_embeddings:
            raise ValueError(f"The prompt has {prompt.shape[1]} tokens, more than `max_position_embeddings` "
                             f"({config.max_position_embeddings}).")
        if attention_mask is not None and prompt is not None and attention_mask.shape != prompt.shape[:2]:
            raise ValueError(f"`attention_mask` shape {tuple(attention_mask.shape)} does not match the prompt "
                             f"(`input_ids`) shape {tuple(prompt.shape[:2])}.")

    def _embed(self, pixel_values, input_ids, inputs_embeds) -> torch.Tensor:
        """Image tokens, then prompt tokens, each with its modality type embedding: `(B, S, D)`."""
        image_tokens = self._image_tokens(pixel_values)  # (B, N, D)
        if self.modality_embedding is not None:
            image_tokens = image_tokens + self.modality_embedding.weight[0]
        if input_ids is None and inputs_embeds is None:
            return image_tokens
        check_token_ids("input_ids", input_ids, self.embed_tokens.num_embeddings)
        text = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, L, D)
        positions = torch.arange(text.shape[1], device=text.device)
        text = text + self.embed_positions(positions)
        if self.modality_embedding is not None:
            text = text + self.modality_embedding.weight[1]
        return torch.cat([image_tokens, text.to(image_tokens.dtype)], dim=1)

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        # the prompt, as ids or embeddings
        input_ids: Optional[torch.LongTensor] = None, attention_mask: Optional[torch.LongTensor] = None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        # what is returned
        output_attentions: Optional[bool] = None, output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
    ) -> Union[tuple, CenterFocusEncoderOutput]:
        """
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`): Images.
            input_ids (`torch.LongTensor` of shape `(batch_size, prompt_length)`, *optional*): Text prompt.
            attention_mask (`torch.LongTensor` of shape `(batch_size, prompt_length)`, *optional*): Prompt padding
                mask (1 = token). Ignored without a prompt.
            inputs_embeds (`torch.FloatTensor` of shape `(batch_size, prompt_length, hidden_size)`, *optional*):
                Prompt embeddings instead of `input_ids`.
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        input_ids, attention_mask, inputs_embeds = drop_empty_prompt(input_ids, attention_mask, inputs_embeds)
        self._validate_inputs(pixel_values, input_ids, inputs_embeds, attention_mask)

        # 1. image (+ prompt) -> tokens and the full padding mask over [image ; prompt]
        hidden_states = self._embed(pixel_values, input_ids, inputs_embeds)  # (B, S, D)
        batch, length = hidden_states.shape[:2]
        num_image_tokens = self.config.num_image_tokens
        text_length = length - num_image_tokens
        padding = None  # (B, S) over [image ; prompt], only when the caller gave a mask
        if attention_mask is not None:
            image_mask = torch.ones(batch, num_image_tokens, dtype=torch.long, device=hidden_states.device)
            prompt_mask = attention_mask.to(torch.long) if text_length > 0 else image_mask[:, :0]
            padding = torch.cat([image_mask, prompt_mask], dim=1)
        # dense attention: SDPA takes its unmasked path unless there is padding
        mask = combine_masks(None, padding)  # (B, 1, S, S), or None without padding

        # 2. transformer layers
        all_hidden, all_attentions = (), ()
        for layer in self.layers:
            if output_hidden_states:
                all_hidden += (hidden_states,)
            hidden_states, weights = layer(hidden_states, mask, output_attentions)
            if output_attentions:
                all_attentions += (weights,)
        hidden_states = self.modality_gate(self.layer_norm(hidden_states))
        if output_hidden_states:
            all_hidden += (hidden_states,)

        output = CenterFocusEncoderOutput(
            last_hidden_state=hidden_states,
            hidden_states=all_hidden if output_hidden_states else None,
            attentions=all_attentions if output_attentions else None,
            attention_mask=padding,
        )
        return output if return_dict else output.to_tuple()


class CenterFocusDecoder(CenterFocusStack):
    """Autoregressive caption decoder with causal self-attention (KV cache) and cross-attention (cached once)."""

    main_input_name = "input_ids"

    def __init__(self, config: CenterFocusConfig, embed_tokens: Optional[nn.Embedding] = None):
        super().__init__(config)
        self._build_text_embeddings(config, embed_tokens)
        self.layers = nn.ModuleList(CenterFocusDecoderLayer(config, i) for i in range(config.decoder_layers))
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.causal = DECODER_IS_CAUSAL[config.decoder_type]  # the non-autoregressive decoder sees every position
        self.gradient_checkpointing = False
        self.post_init()

    def forward(
        self,
        # the caption so far, as ids or embeddings
        input_ids: Optional[torch.LongTensor] = None, attention_mask: Optional[torch.LongTensor] = None,
        # what it attends to (the encoder's states, the cache of earlier steps); the caption as embeddings instead
        encoder_hidden_states: Optional[torch.FloatTensor] = None,
        encoder_attention_mask: Optional[torch.LongTensor] = None,
        past_key_values: Optional[EncoderDecoderCache] = None, inputs_embeds: Optional[torch.FloatTensor] = None,
        # what is returned
        use_cache: Optional[bool] = None, output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None, return_dict: Optional[bool] = None,
    ):
        """
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, target_length)`): Decoder input tokens.
            attention_mask (`torch.LongTensor` of shape `(batch_size, past_length + target_length)`, *optional*):
                Decoder padding mask.
            encoder_hidden_states (`torch.FloatTensor` of shape `(batch_size, encoder_length, hidden_size)`).
            encoder_attention_mask (`torch.LongTensor` of shape `(batch_size, encoder_length)`, *optional*).
            past_key_values ([`~transformers.EncoderDecoderCache`], *optional*): Cache from previous steps.
        """
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        if self.gradient_checkpointing and self.training and use_cache:
            use_cache = False  # recomputation cannot fill a cache
        if use_cache and past_key_values is None:
            past_key_values = EncoderDecoderCache(DynamicCache(), DynamicCache())
        if not use_cache:
            past_key_values = None
        if past_key_values is not None:
            check_dynamic_cache(past_key_values)

        # 1. embed with absolute positions that continue after the cached prefix
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        if past_length == 0:
            # the ids a caller gives (the prefix, or training inputs), checked once: the check reads the tensor on the
            # host, and the tokens generate() appends after the first step come from the vocabulary anyway
            check_token_ids("decoder_input_ids", input_ids, self.embed_tokens.num_embeddings)
        hidden_states = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, D)
        query_length = hidden_states.shape[1]
        if past_length + query_length > self.config.max_position_embeddings:
            raise ValueError(f"The caption would reach {past_length + query_length} tokens, more than "
                             f"`max_position_embeddings` ({self.config.max_position_embeddings}).")
        positions = torch.arange(past_length, past_length + query_length, device=hidden_states.device)
        hidden_states = hidden_states + self.embed_positions(positions)

        # 2. masks: causal (+ decoder padding) for self-attention, encoder padding for cross-attention
        if self.causal:
            self_mask, is_causal = decoder_self_attention_mask(query_length, past_length, attention_mask,
                                                               hidden_states.device)
        else:
            self_mask, is_causal = combine_masks(None, attention_mask), False
        cross_mask = combine_masks(None, encoder_attention_mask)

        # 3. layers
        all_hidden, all_self, all_cross = (), (), ()
        for layer in self.layers:
            if output_hidden_states:
                all_hidden += (hidden_states,)
            hidden_states, self_weights, cross_weights = layer(
                hidden_states, encoder_hidden_states, self_mask, cross_mask, past_key_values=past_key_values,
                output_attentions=output_attentions, use_cache=use_cache, is_causal=is_causal)
            if output_attentions:
                all_self += (self_weights,)
                all_cross += (cross_weights,)
        hidden_states = self.layer_norm(hidden_states)
        if output_hidden_states:
            all_hidden += (hidden_states,)
        return (hidden_states, past_key_values, all_hidden or None, all_self or None, all_cross or None)


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------


def encoder_attention_mask(encoder_outputs, attention_mask, num_image_tokens: int) -> Optional[torch.Tensor]:
    """The `(B, S)` mask the decoder cross-attends with. Prefers the mask the encoder returned; otherwise (plain
    `BaseModelOutput` or tuple, as in ONNX export) accepts a full `(B, S)` mask or a prompt mask `(B, L)`."""
    mask = getattr(encoder_outputs, "attention_mask", None)
    if mask is not None:
        return mask
    if attention_mask is None or attention_mask.shape[1] == 0:  # no prompt, or an empty one (drop_empty_prompt)
        return None
    length = encoder_outputs[0].shape[1]
    if attention_mask.shape[1] == length:
        return attention_mask
    if attention_mask.shape[1] == length - num_image_tokens:
        image = attention_mask.new_ones(attention_mask.shape[0], num_image_tokens)
        return torch.cat([image, attention_mask], dim=1)
    raise ValueError(f"`attention_mask` has length {attention_mask.shape[1]}, but the encoder output has {length} "
                     f"positions ({num_image_tokens} image tokens + prompt).")


class CenterFocusModel(CenterFocusPreTrainedModel):
    """The bare CenterFocus encoder-decoder returning decoder hidden states (no language-model head)."""

    # {tied parameter: its source}, transformers 5's form; 4.57 reads the keys (the parameters not to save twice)
    _tied_weights_keys = {"encoder.embed_tokens.weight": "shared.weight", "decoder.embed_tokens.weight": "shared.weight"}

    def __init__(self, config: CenterFocusConfig):
        config._validate()  # configs are often edited after creation
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        # each side has its own embedding module, tied to `shared` by parameter (as BART in transformers 5):
        # `_tied_weights_keys` on 5.x, `_tie_weights` on 4.57. One module shared three ways hid `shared.weight` from
        # 5.x's missing-key check (a checkpoint without it left it on the meta device)
        self.encoder = CenterFocusEncoder(config)
        self.decoder = CenterFocusDecoder(config)
        self.post_init()

    def _tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self._tie_or_clone_weights(self.encoder.embed_tokens, self.shared)
            self._tie_or_clone_weights(self.decoder.embed_tokens, self.shared)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.shared = value
        self.encoder.embed_tokens = value
        self.decoder.embed_tokens = value

    def get_encoder(self) -> CenterFocusEncoder:
        return self.encoder

    def get_decoder(self) -> CenterFocusDecoder:
        return self.decoder

    def forward(
        self,
        pixel_values: Optional[torch.FloatTensor] = None,
        *,
        # the encoder's inputs besides the image: the prompt (or its embeddings), or the encoder's outputs themselves
        input_ids: Optional[torch.LongTensor] = None, inputs_embeds: Optional[torch.FloatTensor] = None,
        attention_mask: Optional[torch.LongTensor] = None, encoder_outputs: Optional[Union[tuple, BaseModelOutput]] = None,
        # the decoder's inputs and its cache (`cache` is `past_key_values` under its older name: give one)
        decoder_input_ids: Optional[torch.LongTensor] = None, decoder_inputs_embeds: Optional[torch.FloatTensor] = None,
        decoder_attention_mask: Optional[torch.LongTensor] = None, past_key_values: Optional[EncoderDecoderCache] = None,
        cache: Optional[EncoderDecoderCache] = None, use_cache: Optional[bool] = None,
        # what is returned
        output_attentions: Optional[bool] = None, output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
    ) -> Union[tuple, Seq2SeqModelOutput]:
        """Encode `pixel_values` (+ prompt) unless `encoder_outputs` is given, then decode `decoder_input_ids`.

        Everything but the image is passed by name: a positional prompt could otherwise be taken for decoder inputs.
        The arguments mean what they mean in [`CenterFocusForConditionalGeneration.forward`], which lists them in
        the order that ONNX export and `generate()` read; here they are grouped by the part of the model they feed.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        cache = _one_cache(cache, past_key_values)
        if encoder_outputs is None:
            encoder_outputs = self.encoder(pixel_values, input_ids, attention_mask, inputs_embeds,
                                           output_attentions, output_hidden_states, return_dict=True)
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        encoder_mask = encoder_attention_mask(encoder_outputs, attention_mask, self.config.num_image_tokens)
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            raise ValueError("Pass `decoder_input_ids` or `labels` (the decoder inputs are derived from labels).")
        decoder_rows = (decoder_input_ids if decoder_input_ids is not None else decoder_inputs_embeds).shape[0]
        images = encoder_outputs.last_hidden_state.shape[0]
        if decoder_rows != images:
            raise ValueError(f"Batch size mismatch: {images} images but {decoder_rows} rows of `decoder_input_ids` "
                             "(or `labels`).")
        hidden, new_cache, dec_hidden, dec_self, dec_cross = self.decoder(
            decoder_input_ids, decoder_attention_mask, encoder_outputs.last_hidden_state, encoder_mask,
            cache, decoder_inputs_embeds, use_cache, output_attentions, output_hidden_states)
        output = Seq2SeqModelOutput(
            last_hidden_state=hidden,
            **{CACHE_FIELD: new_cache},
            decoder_hidden_states=dec_hidden,
            decoder_attentions=dec_self,
            cross_attentions=dec_cross,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


class CenterFocusForConditionalGeneration(CenterFocusPreTrainedModel, GenerationMixin):
    """CenterFocus captioner: [`CenterFocusModel`] plus a language-model head tied to the shared embedding.

    Example:

    ```python
    >>> import torch
    >>> from centerfocus import CenterFocusConfig, CenterFocusForConditionalGeneration
    >>> config = CenterFocusConfig(hidden_size=32, num_attention_heads=4, encoder_layers=1, decoder_layers=1,
    ...                            intermediate_size=64, vocab_size=50, image_size=32, stem_channels=(8, 16),
    ...                            image_tokenizer_grid_size=4)
    >>> model = CenterFocusForConditionalGeneration(config).eval()
    >>> model.generate(pixel_values=torch.rand(1, 3, 32, 32), max_new_tokens=5).shape[0]
    1
    ```
    """

    _tied_weights_keys = {"lm_head.weight": "model.shared.weight"}  # the embeddings are tied in CenterFocusModel
    accepts_loss_kwargs = False

    def __init__(self, config: CenterFocusConfig):
        super().__init__(config)
        self.model = CenterFocusModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.logit_scale = None
        if config.contrastive_loss_weight > 0:
            self.image_projection = nn.Linear(config.hidden_size, config.contrastive_dim, bias=False)
            self.text_projection = nn.Linear(config.hidden_size, config.contrastive_dim, bias=False)
            self.logit_scale = nn.Parameter(torch.tensor([math.log(1 / config.contrastive_temperature)]))  # (1,)
        if config.center_loss_weight > 0:
            self.center_head = nn.Linear(config.hidden_size, config.hidden_size)
        if config.word_loss_weight > 0:
            self.word_head = nn.Linear(config.hidden_size, config.hidden_size)
        self.is_non_autoregressive = config.decoder_type == "non_autoregressive"
        if self.is_non_autoregressive:
            self.length_head = nn.Linear(config.hidden_size, config.nar_max_length + 1)
            self.mask_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def get_encoder(self) -> CenterFocusEncoder:
        return self.model.encoder

    def get_decoder(self) -> CenterFocusDecoder:
        return self.model.decoder

    def get_image_features(self, pixel_values: torch.FloatTensor, **kwargs):
        """The image tokens before the encoder layers (see `CenterFocusEncoder.get_image_features`)."""
        return self.model.encoder.get_image_features(pixel_values, **kwargs)

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    def forward(
        self,
        pixel_values: Optional[torch.FloatTensor] = None,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.LongTensor] = None,
        decoder_input_ids: Optional[torch.LongTensor] = None,
        decoder_attention_mask: Optional[torch.LongTensor] = None,
        encoder_outputs: Optional[Union[tuple, BaseModelOutput]] = None,
        cache: Optional[EncoderDecoderCache] = None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        decoder_inputs_embeds: Optional[torch.FloatTensor] = None,
        labels: Optional[torch.LongTensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        token_type_ids: Optional[torch.LongTensor] = None,
        past_key_values: Optional[EncoderDecoderCache] = None,
        **kwargs,
    ) -> Union[tuple, CenterFocusSeq2SeqLMOutput]:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                Images, as produced by [`CenterFocusImageProcessor`].
            input_ids (`torch.LongTensor` of shape `(batch_size, prompt_length)`, *optional*):
                Optional text prompt for the encoder (never copied into the caption).
            attention_mask (`torch.LongTensor`, *optional*): Prompt padding mask `(batch_size, prompt_length)`, or
                the full encoder mask `(batch_size, num_image_tokens + prompt_length)`.
            decoder_input_ids (`torch.LongTensor` of shape `(batch_size, target_length)`, *optional*):
                Decoder inputs; derived from `labels` by shifting right when not given.
            labels (`torch.LongTensor` of shape `(batch_size, target_length)`, *optional*):
                Caption token ids. Positions set to `-100` are ignored by the loss.
            encoder_outputs, cache, use_cache, output_attentions, output_hidden_states, return_dict:
                As in transformers' encoder-decoder models.
            past_key_values: the cache under its transformers 4.x name (as `cache`; give one of the two).
            kwargs: only `cache_position`, which transformers 4.57's `generate()` passes (positions are derived from the
                cache; 5.x no longer creates it, and warns about remote code whose forward names it).
            token_type_ids: accepted so BERT-style tokenizer outputs can be passed as is; ignored.
        """
        kwargs.pop("cache_position", None)
        if kwargs:
            raise TypeError(f"forward() got unexpected keyword arguments {sorted(kwargs)}.")
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        nar_targets = None
        if labels is not None:
            check_token_ids("labels", labels, self.config.vocab_size, ignore_index=-100)
            use_cache = False
            if self.is_non_autoregressive and decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_inputs_embeds, decoder_attention_mask, nar_targets = self._mask_for_training(labels)
            elif decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)

        outputs = self.model(
            pixel_values, input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
            encoder_outputs=encoder_outputs, decoder_input_ids=decoder_input_ids,
            decoder_inputs_embeds=decoder_inputs_embeds, decoder_attention_mask=decoder_attention_mask,
            past_key_values=past_key_values, cache=cache, use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.lm_head(outputs.last_hidden_state)  # (B, T, V)

        losses = {}
        if labels is not None:
            losses = self._compute_losses(logits, labels if nar_targets is None else nar_targets, outputs)
        if nar_targets is not None:
            losses["length_loss"] = self._length_loss(outputs, labels, attention_mask)
            losses["loss"] = losses["loss"] + self.config.nar_length_loss_weight * losses["length_loss"]
        # the base model's outputs (cache, hidden states, attentions) as they are, with the logits and the losses
        carried = {name: value for name, value in outputs.items() if name != "last_hidden_state"}
        output = CenterFocusSeq2SeqLMOutput(logits=logits, **carried, **losses)
        return output if return_dict else output.to_tuple()

    def _compute_losses(self, logits: torch.Tensor, labels: torch.Tensor, outputs: Seq2SeqModelOutput) -> dict:
        """Caption cross-entropy (labels are already aligned with the logits: the decoder inputs were shifted, so
        the labels are not shifted again) plus the enabled auxiliary losses."""
        labels = labels.to(logits.device)
        lm_loss = F.cross_entropy(_upcast(logits).reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        losses = {"lm_loss": lm_loss, "loss": lm_loss}
        num_image_tokens = self.config.num_image_tokens
        image_states = outputs.encoder_last_hidden_state[:, :num_image_tokens]  # (B, N, D)
        valid = (labels != -100).to(outputs.last_hidden_state.dtype)  # (B, T)
        if self.config.contrastive_loss_weight > 0:
            text_states = (outputs.last_hidden_state * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)
            losses["contrastive_loss"] = self._contrastive_loss(image_states.mean(1), text_states)
            losses["loss"] = losses["loss"] + self.config.contrastive_loss_weight * losses["contrastive_loss"]
        if self.config.center_loss_weight > 0:
            losses["center_loss"] = self._center_loss(image_states, labels)
            losses["loss"] = losses["loss"] + self.config.center_loss_weight * losses["center_loss"]
        if self.config.word_loss_weight > 0:
            losses["word_loss"] = self._word_loss(image_states, labels)
            losses["loss"] = losses["loss"] + self.config.word_loss_weight * losses["word_loss"]
        return losses

    def _contrastive_loss(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE between `(B, D)` image and caption embeddings (CLIP)."""
        image = F.normalize(_upcast(self.image_projection(image_embeds)), dim=-1)
        text = F.normalize(_upcast(self.text_projection(text_embeds)), dim=-1)
        logits = self.logit_scale.exp() * image @ text.t()  # (B, B)
        targets = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2

    def _center_loss(self, image_states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Centre-quality supervision (design item 4): the mean of the centre image tokens, through a head and the
        tied embedding, must predict every word of the caption (bag-of-words negative log-likelihood)."""
        is_center = self.model.encoder.image_tokenizer.token_is_center
        center = image_states[:, is_center].mean(1)  # (B, D)
        log_probs = F.log_softmax(_upcast(F.linear(self.center_head(center), self.get_input_embeddings().weight)), -1)
        valid = labels != -100
        picked = log_probs.gather(1, labels.clamp(min=0))  # (B, T)
        return -(picked * valid).sum() / valid.sum().clamp(min=1)

    def _word_loss(self, image_states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Word detection from the captions (multiple-instance learning, Fang et al., 2015): every image token scores
        every vocabulary word (a head, then the tied embedding); an image's score for a word is the log-sum-exp over
        its tokens minus log N, between their mean and their maximum (Pinheiro and Collobert, 2015), so one token can
        carry a word without the others; the softmax of the scores must spread its mass evenly over the caption's
        distinct words (multi-label softmax, Mahajan et al., 2018). The caption loss reaches the image tokens only
        through the decoder; this loss reaches them in one step."""
        logits = F.linear(self.word_head(image_states), self.get_input_embeddings().weight)  # (B, N, V)
        scores = torch.logsumexp(_upcast(logits), dim=1) - math.log(logits.shape[1])  # (B, V)
        valid = (labels != -100).to(scores.dtype)  # (B, T)
        targets = torch.zeros_like(scores).scatter_add(1, labels.clamp(min=0), valid).clamp(max=1)  # (B, V)
        log_probs = F.log_softmax(scores, dim=-1)
        return (-(targets * log_probs).sum(1) / targets.sum(1).clamp(min=1)).mean()

    # ---- non-autoregressive decoding (decoder_type="non_autoregressive") ----

    def _mask_for_training(self, labels: torch.Tensor):
        """Mask-predict training inputs: per caption, a uniformly drawn number of its tokens is replaced by the mask
        embedding; the loss is computed on those positions only. Returns `(inputs_embeds, attention_mask, targets)`."""
        valid = labels != -100  # (B, T)
        lengths = valid.sum(1, keepdim=True).clamp(min=1)
        count = (torch.rand(lengths.shape, device=labels.device) * lengths).long() + 1  # 1 .. length
        scores = torch.rand(labels.shape, device=labels.device).masked_fill(~valid, 2.0)
        ranks = scores.argsort(dim=1).argsort(dim=1)  # rank of each position among the valid ones
        masked = (ranks < count) & valid
        embeddings = self.get_input_embeddings()(labels.clamp(min=0))
        inputs_embeds = torch.where(masked[..., None], self.mask_embedding.to(embeddings.dtype), embeddings)
        return inputs_embeds, valid.long(), labels.masked_fill(~masked, -100)

    def _length_logits(self, encoder_hidden_states: torch.Tensor, encoder_mask: Optional[torch.Tensor]):
        """`(B, nar_max_length + 1)` caption-length logits from the mean encoder state."""
        if encoder_mask is None:
            pooled = encoder_hidden_states.mean(1)
        else:
            weights = encoder_mask.to(encoder_hidden_states.dtype)[..., None]
            pooled = (encoder_hidden_states * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.length_head(pooled)

    def predict_lengths(self, encoder_outputs: CenterFocusEncoderOutput) -> torch.LongTensor:
        """`(B,)` caption lengths (tokens incl. eos, at least 1) the length head predicts from the encoder."""
        logits = self._length_logits(encoder_outputs.last_hidden_state, encoder_outputs.attention_mask)
        return logits.argmax(-1).clamp(min=1)

    def _length_loss(self, outputs, labels: torch.Tensor, attention_mask) -> torch.Tensor:
        encoder_mask = encoder_attention_mask((outputs.encoder_last_hidden_state,), attention_mask,
                                               self.config.num_image_tokens)
        logits = self._length_logits(outputs.encoder_last_hidden_state, encoder_mask)
        lengths = (labels != -100).sum(1).clamp(max=self.config.nar_max_length)
        return F.cross_entropy(_upcast(logits), lengths)

    @torch.no_grad()
    def generate_non_autoregressive(self, pixel_values: torch.Tensor, input_ids=None, attention_mask=None,
                                    nar_iterations: Optional[int] = None) -> torch.LongTensor:
        """Mask-predict decoding: predict the length from the encoder, fill every position at once, then for
        `nar_iterations - 1` more passes re-mask and re-predict the least confident tokens (linearly fewer each pass).

        Returns:
            `(batch_size, 1 + max_length)` token ids: the decoder start token, then the caption, padded.
        """
        iterations = nar_iterations or self.config.nar_iterations
        encoder_outputs = self.get_encoder()(pixel_values, input_ids, attention_mask, return_dict=True)
        encoder_mask = encoder_outputs.attention_mask
        lengths = self.predict_lengths(encoder_outputs)
        batch, longest = lengths.shape[0], int(lengths.max())
        positions = torch.arange(longest, device=lengths.device)
        valid = positions[None, :] < lengths[:, None]  # (B, L)
        tokens = torch.full((batch, longest), self.config.pad_token_id, device=lengths.device)
        scores = torch.zeros(batch, longest, device=lengths.device)
        masked = valid.clone()
        embed = self.get_input_embeddings()
        decoder_mask = valid.long()
        # the encoder's cross-attention keys/values are projected in the first pass and reused by the others; each
        # pass gets a fresh (empty) self-attention cache, so it attends over its own tokens only
        cross_attention_cache = DynamicCache()
        for step in range(iterations):
            inputs_embeds = torch.where(masked[..., None], self.mask_embedding, embed(tokens))
            hidden = self.model.decoder(inputs_embeds=inputs_embeds, attention_mask=decoder_mask,
                                        encoder_hidden_states=encoder_outputs.last_hidden_state,
                                        encoder_attention_mask=encoder_mask,
                                        past_key_values=EncoderDecoderCache(DynamicCache(), cross_attention_cache),
                                        use_cache=True)[0]
            probabilities, predicted = self.lm_head(hidden).float().softmax(-1).max(-1)
            tokens = torch.where(masked, predicted, tokens)
            scores = torch.where(masked, probabilities, scores)
            if step == iterations - 1:
                break
            remask = (lengths.float() * (iterations - 1 - step) / iterations).long()  # (B,)
            ranks = scores.masked_fill(~valid, 2.0).argsort(1).argsort(1)
            masked = (ranks < remask[:, None]) & valid
        # everything after the first end-of-sequence token is padding, as in autoregressive output
        is_eos = (tokens == self.config.eos_token_id).long()
        after_eos = is_eos.cumsum(1) - is_eos
        tokens = tokens.masked_fill(~valid | (after_eos > 0), self.config.pad_token_id)
        start = torch.full((batch, 1), self.config.decoder_start_token_id, device=tokens.device)
        return torch.cat([start, tokens], dim=1)

    def generate(self, *args, **kwargs):
        """`GenerationMixin.generate`, or mask-predict decoding for `decoder_type="non_autoregressive"` models
        (there `generate(pixel_values, input_ids=..., attention_mask=..., nar_iterations=...)`; beam search and
        sampling options do not apply and are ignored with a warning, and options that would change the output,
        `num_return_sequences` > 1 and `return_dict_in_generate`, are refused), so `pipeline("image-to-text")` works
        for both."""
        if not self.is_non_autoregressive:
            return super().generate(*args, **kwargs)
        config = kwargs.get("generation_config")

        def option(name):
            return kwargs.get(name, getattr(config, name, None))

        if (option("num_return_sequences") or 1) > 1 or option("return_dict_in_generate"):
            raise ValueError("Mask-predict decoding (decoder_type='non_autoregressive') returns one tensor of token ids, "
                             "one caption per image: `num_return_sequences` > 1 and `return_dict_in_generate` do not "
                             "apply.")
        if (option("num_beams") or 1) > 1 or option("do_sample"):
            logger.warning_once("Mask-predict decoding ignores beam search and sampling options.")
        pixel_values = args[0] if args else kwargs.pop("pixel_values", None)
        return self.generate_non_autoregressive(pixel_values, kwargs.get("input_ids"), kwargs.get("attention_mask"),
                                                kwargs.get("nar_iterations"))

    # Private generation hooks: tests/integration/test_generation.py covers both.
    def _prepare_generated_length(self, generation_config, *args, **kwargs):
        generation_config = super()._prepare_generated_length(generation_config, *args, **kwargs)
        return cap_generated_length(generation_config, self.config.max_position_embeddings)

    # The hook that runs the encoder before decoding (Florence-2 overrides it too): transformers 4.57 calls it
    # `_prepare_encoder_decoder_kwargs_for_generation`, 5.x `_prepare_text_encoder_decoder_kwargs_for_generation`.
    # Each line calls only its own name; both route an optional prompt to the encoder only.
    def _prepare_encoder_decoder_kwargs_for_generation(self, inputs_tensor, model_kwargs, model_input_name,
                                                       generation_config):
        return self._encode_prompt_for_generation(super()._prepare_encoder_decoder_kwargs_for_generation,
                                                  inputs_tensor, model_kwargs, model_input_name, generation_config)

    def _prepare_text_encoder_decoder_kwargs_for_generation(self, inputs_tensor, model_kwargs, model_input_name,
                                                            generation_config):
        return self._encode_prompt_for_generation(super()._prepare_text_encoder_decoder_kwargs_for_generation,
                                                  inputs_tensor, model_kwargs, model_input_name, generation_config)

    @staticmethod
    def _encode_prompt_for_generation(encode, inputs_tensor, model_kwargs, model_input_name, generation_config):
        if model_kwargs.get("encoder_outputs") is None and (inputs_tensor is None or (
                inputs_tensor.ndim == 2 and not inputs_tensor.is_floating_point())):
            # generate() invents `(batch, 1)` integer start tokens as the main input when pixel_values is missing
            raise ValueError("generate() needs `pixel_values`: CenterFocus captions images, there is no image-free "
                             "(unconditional) generation. To continue a caption, pass its start as "
                             "`decoder_input_ids` together with the image.")
        if model_kwargs.get("input_ids") is None and model_kwargs.get("inputs_embeds") is None:
            # generate() invents a (B, C) mask from pixel_values when no prompt is given: drop it
            model_kwargs.pop("attention_mask", None)
        model_kwargs.pop("token_type_ids", None)
        model_kwargs = encode(inputs_tensor, model_kwargs, model_input_name, generation_config)
        # the prompt belongs to the encoder; generate() would otherwise use `input_ids` as the decoder prefix
        model_kwargs.pop("input_ids", None)
        model_kwargs.pop("inputs_embeds", None)
        model_kwargs["attention_mask"] = model_kwargs["encoder_outputs"].attention_mask  # (B, N + L)
        return model_kwargs


class CenterFocusForImageClassification(CenterFocusPreTrainedModel):
    """Stage-1 vision pre-training model (design, training stage 1): the CenterFocus stem and image tokenizer, mean
    pooled, then a linear classifier. Its `vision_stem.*` and `image_tokenizer.*` weights load one to one into a
    captioner's encoder (`centerfocus train --vision_init`).

    Example:

    ```python
    >>> import torch
    >>> from centerfocus import CenterFocusConfig, CenterFocusForImageClassification
    >>> config = CenterFocusConfig(hidden_size=32, num_attention_heads=4, image_size=32, stem_channels=(8, 16),
    ...                            image_tokenizer_grid_size=4, num_labels=5)
    >>> CenterFocusForImageClassification(config)(pixel_values=torch.rand(2, 3, 32, 32)).logits.shape
    torch.Size([2, 5])
    ```
    """

    supports_gradient_checkpointing = False  # a CNN stem, no transformer layers to checkpoint
    _no_split_modules = []

    def __init__(self, config: CenterFocusConfig):
        config._validate()
        super().__init__(config)
        self.vision_stem = CenterFocusConvStem(config)
        self.image_tokenizer = CenterFocusImageTokenizer(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        if config.edge_compensation_type == "stem":
            # stage 1 of the edge stem: the same labels, read from images shrunk to the periphery's object size
            self.edge_classifier = nn.Linear(self.vision_stem.edge_compensation.width, config.num_labels)
        self.post_init()

    def vision_layers(self) -> list[nn.Module]:
        """The image-encoder layers in input-to-output order (see `CenterFocusEncoder.vision_layers`)."""
        return _vision_layers(self.vision_stem, self.image_tokenizer)

    def _input_modules(self) -> list[nn.Module]:
        """The image tokenizer: there is no text embedding to hook (`enable_input_require_grads`)."""
        return [self.image_tokenizer]

    def forward(
        self,
        pixel_values: Optional[torch.FloatTensor] = None,
        labels: Optional[torch.LongTensor] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        edge_pixel_values: Optional[torch.FloatTensor] = None,
    ) -> Union[tuple, ImageClassifierOutput]:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`): Images.
            labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*): Class indices for the loss (or, with
                `config.problem_type` "regression" / "multi_label_classification", as transformers' classifiers
                read them: float targets `(batch_size,)` or `(batch_size, num_labels)`, multi-hot floats).
            edge_pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, h, w)`, *optional*): The same
                images shrunk to the size objects have in the periphery (`centerfocus pretrain-vision
                --edge_object_scale`). With an `edge_compensation_type="stem"` config and `labels`, the edge stem reads
                them through its own global-average-pooled linear head, and that head's loss (cross-entropy, or binary
                cross-entropy for multi-hot labels) is added to the loss:
                this trains the edge stem, which captions alone teach slowly, to tell small objects apart.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        validate_pixel_values(self.config, pixel_values)
        tokens = self.image_tokenizer(self.vision_stem(pixel_values.to(self.classifier.weight.dtype)))  # (B, N, D)
        logits = self.classifier(self.layer_norm(tokens.mean(dim=1)))  # (B, num_labels)
        loss = None if labels is None else self.loss_function(labels.to(logits.device), logits.float(), self.config)
        if edge_pixel_values is not None:
            if not hasattr(self, "edge_classifier"):
                raise ValueError("`edge_pixel_values` train the edge stem, and this config has none "
                                 f"(edge_compensation_type={self.config.edge_compensation_type!r}; it needs 'stem').")
            multi_label = self.config.problem_type == "multi_label_classification"
            if labels is None or (labels.dtype != torch.long and not multi_label):
                raise ValueError("`edge_pixel_values` need `labels`: class indices, or multi-hot floats with "
                                 "config.problem_type='multi_label_classification'.")
            if (edge_pixel_values.ndim != 4 or not edge_pixel_values.is_floating_point()
                    or edge_pixel_values.shape[:2] != (labels.shape[0], self.config.num_channels)):
                raise ValueError("`edge_pixel_values` must be a float (batch_size, num_channels, h, w) tensor with "
                                 f"one image per label, got {edge_pixel_values.dtype} of shape "
                                 f"{tuple(edge_pixel_values.shape)} for {labels.shape[0]} labels.")
            check_finite_pixel_values(edge_pixel_values)
            features = self.vision_stem.edge_compensation.layers(edge_pixel_values.to(self.classifier.weight.dtype))
            edge_logits = self.edge_classifier(features.mean(dim=(2, 3)))  # (B, num_labels)
            if multi_label:
                loss = loss + F.binary_cross_entropy_with_logits(edge_logits.float(),
                                                                 labels.to(edge_logits.device).float())
            else:
                loss = loss + F.cross_entropy(edge_logits.float(), labels.to(edge_logits.device))
        output = ImageClassifierOutput(loss=loss, logits=logits,
                                       hidden_states=(tokens,) if output_hidden_states else None)
        return output if return_dict else output.to_tuple()


def _vision_layers(stem: CenterFocusConvStem, tokenizer: CenterFocusImageTokenizer) -> list[nn.Module]:
    layers = [*stem.stages, stem.channel_pruning, stem.edge_compensation, tokenizer]
    return [layer for layer in layers if any(True for _ in layer.parameters())]


__all__ = [
    "CenterFocusDecoder",
    "CenterFocusEncoder",
    "CenterFocusForConditionalGeneration",
    "CenterFocusForImageClassification",
    "CenterFocusModel",
    "CenterFocusPreTrainedModel",
]
