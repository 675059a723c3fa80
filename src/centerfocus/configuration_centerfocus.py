"""CenterFocus model configuration."""

from typing import Literal, Optional

from transformers import PretrainedConfig
from transformers.utils import logging


logger = logging.get_logger(__name__)

# Allowed values of every component switch, defined once. The modeling file maps the same strings to classes.
CENTER_WEIGHTING_TYPES = ("gaussian", "none")
CHANNEL_PRUNING_TYPES = ("topk", "none")
STEM_NORM_TYPES = ("none", "batch")
EDGE_COMPENSATION_TYPES = ("stem", "none")
CHANNEL_ATTENTION_TYPES = ("se", "none")
IMAGE_TOKENIZER_TYPES = ("grid_pool", "foveated")
IMAGE_SUMMARY_TYPES = ("none", "flatten")
POSITION_EMBEDDING_TYPES = ("learned_2d", "sincos_2d", "none")
MODALITY_EMBEDDING_TYPES = ("learned", "none")
MODALITY_GATE_TYPES = ("dynamic", "none")
DECODER_TYPES = ("autoregressive", "non_autoregressive")

#: Every component switch, defined once: config field -> (allowed values, or None for a loss weight >= 0; what it
#: chooses). The validation below, the model's registries (a test checks that they match), the model card and the
#: README's table all read this table.
SWITCHES = {
    "center_weighting_type": (CENTER_WEIGHTING_TYPES, "Gaussian spatial attention per stem stage"),
    "stem_norm_type": (STEM_NORM_TYPES, "normalisation after each stem convolution"),
    "channel_pruning_type": (CHANNEL_PRUNING_TYPES, "dynamic channel pruning of the periphery"),
    "edge_compensation_type": (EDGE_COMPENSATION_TYPES, "edge-compensation branch on the periphery"),
    "channel_attention_type": (CHANNEL_ATTENTION_TYPES, "squeeze-excitation on the pooled map"),
    "image_tokenizer_type": (IMAGE_TOKENIZER_TYPES, "image tokens: one per grid cell, or foveated"),
    "image_summary_type": (IMAGE_SUMMARY_TYPES, "a linear read-out of the flattened token map, added to every token"),
    "position_embedding_type": (POSITION_EMBEDDING_TYPES, "2-D position embedding of image tokens"),
    "modality_embedding_type": (MODALITY_EMBEDDING_TYPES, "[IMG]/[TXT] type embeddings"),
    "modality_gate_type": (MODALITY_GATE_TYPES, "gate balancing image and text tokens"),
    "decoder_type": (DECODER_TYPES, "autoregressive (KV cache) or non-autoregressive (mask-predict) decoding"),
    "contrastive_loss_weight": (None, "weight of the contrastive alignment loss (training)"),
    "center_loss_weight": (None, "weight of the centre-quality loss (training)"),
    "word_loss_weight": (None, "weight of the word-detection loss (training)"),
}
_SWITCHES = {name: values for name, (values, _) in SWITCHES.items() if values is not None}

#: Options removed because no benchmark showed an effect worth their code (docs/benchmarks.md, "Switches kept and
#: removed"): field -> (the value that behaves as the model does now, or None if the field is simply ignored now).
#: A saved config that asks for a removed behaviour fails to load with an error naming it; one that asks for the
#: behaviour kept loads unchanged.
REMOVED_OPTIONS = {
    "encoder_attention_type": "full",  # "center_local": peripheral tokens attending locally
    "cross_modal_attention_type": "full",  # "cls_only": image tokens seeing the prompt through its first token only
    "local_attention_window": None,  # the window of "center_local"
    "edge_precision": None,  # the dtype of the "conv" edge branch
}
#: Values removed from switches that remain: field -> removed values.
REMOVED_VALUES = {"edge_compensation_type": ("conv",), "stem_norm_type": ("group",)}

_BASE_CONFIG_KEYS: Optional[frozenset] = None


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _drop_removed_options(kwargs: dict) -> None:
    """Remove from `kwargs` the options that no longer exist, raising `ValueError` where a saved config relies on one."""
    for name, kept in REMOVED_OPTIONS.items():
        value = kwargs.pop(name, kept)
        if kept is not None and value != kept:
            raise ValueError(f"`{name}={value!r}` was removed from CenterFocus 0.2 (no benchmark showed it helps; "
                             f"docs/benchmarks.md, 'Switches kept and removed'). Only {kept!r} remains: set "
                             f"`{name}` to {kept!r} or drop it from the config to load this model as a dense one, "
                             "which changes its outputs, or load it with centerfocus 0.1.")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _base_config_keys() -> frozenset:
    """Keys that `PretrainedConfig` itself understands (used to warn about typos in our own kwargs)."""
    global _BASE_CONFIG_KEYS
    if _BASE_CONFIG_KEYS is None:
        keys = set(PretrainedConfig().to_dict())
        keys |= {"auto_map", "architectures", "transformers_version", "model_type", "_name_or_path", "dtype",
                 "torch_dtype", "attn_implementation", "_attn_implementation", "_commit_hash", "name_or_path",
                 "label2id", "id2label", "num_labels", "use_cache", "_attn_implementation_autoset"}
        _BASE_CONFIG_KEYS = frozenset(keys)
    return _BASE_CONFIG_KEYS


class CenterFocusConfig(PretrainedConfig):
    r"""
    Configuration of a CenterFocus image-to-text model ([`CenterFocusForConditionalGeneration`]). The defaults build
    the design's model: a two-stage centre-weighted CNN stem (64 channels at 112x112 with sigma 0.2, 128 channels at
    56x56 with sigma 0.3), pooled to 14x14 = 196 image tokens of width 768, a 6-layer encoder over
    `[image tokens ; prompt tokens]` and a 6-layer autoregressive decoder with cross-attention.

    Every component is a validated switch; `"none"` turns it off. Invalid values raise `ValueError` naming the field.

    Args:
        vocab_size (`int`, *optional*, defaults to 30522): Size of the text vocabulary (shared by prompt and caption).
        hidden_size (`int`, *optional*, defaults to 768): Width `D` of image tokens, encoder and decoder.
        num_attention_heads (`int`, *optional*, defaults to 12): Heads in every attention layer.
        encoder_layers (`int`, *optional*, defaults to 6): Transformer layers of the multimodal encoder.
        decoder_layers (`int`, *optional*, defaults to 6): Transformer layers of the caption decoder.
        intermediate_size (`int`, *optional*, defaults to 3072): Hidden width of the feed-forward blocks.
        hidden_act (`str`, *optional*, defaults to `"gelu"`): Activation of the feed-forward blocks.
        max_position_embeddings (`int`, *optional*, defaults to 512): Longest prompt and longest caption.
        dropout (`float`, *optional*, defaults to 0.0): Dropout on residual branches. Off by default: on CPU the
            random masks cost ~30% of a training step.
        attention_dropout (`float`, *optional*, defaults to 0.0): Dropout on attention probabilities.
        layer_norm_eps (`float`, *optional*, defaults to 1e-5): Epsilon of every layer norm.
        initializer_range (`float`, *optional*, defaults to 0.02): Std of the normal weight initialisation.
        image_size (`int`, *optional*, defaults to 224): Height and width of `pixel_values`.
        num_channels (`int`, *optional*, defaults to 3): Channels of `pixel_values`.
        stem_channels (`tuple[int]`, *optional*, defaults to `(64, 128)`): Output channels of each CNN stem stage.
        stem_kernel_sizes (`tuple[int]`, *optional*, defaults to `(7, 3)`): Kernel size of each stem stage.
        stem_strides (`tuple[int]`, *optional*, defaults to `(2, 2)`): Stride of each stem stage.
        stem_norm_type (`str`, *optional*, defaults to `"none"`): Normalisation after every stem convolution:
            `"batch"` (BatchNorm, as ResNet) or `"none"` (the seed's conv -> ReLU).
        stem_residual_blocks (`tuple[int]`, *optional*): Residual basic blocks (two 3x3 convolutions and a skip, as
            ResNet) after each stage's strided convolution. Defaults to none in every stage (the seed's stem).
        center_weighting_type (`str`, *optional*, defaults to `"gaussian"`): `"gaussian"` re-weights every stem
            stage with a centre-high mask `floor + (1 - floor) * exp(-r^2 / (2 sigma^2))`; `"none"` disables it.
        center_sigmas (`tuple[float]`, *optional*, defaults to `(0.2, 0.3)`): Initial sigma of each stage, in
            normalised coordinates where the image spans [-1, 1]. Shallow stages focus hard, deep ones widen.
        center_sigma_learnable (`bool`, *optional*, defaults to `True`): Train the sigmas through the loss.
        center_weighting_floor (`float`, *optional*, defaults to 0.1): Smallest weight of the mask, in [0, 1).
            Keeps the periphery re-weighted rather than erased.
        center_region_size (`float`, *optional*, defaults to 0.5): Side of the square centre region as a fraction
            of the image side. Used by channel pruning, edge compensation, local attention and the centre loss.
        channel_pruning_type (`str`, *optional*, defaults to `"topk"`): `"topk"` gates the last stem stage's
            channels SE-style and, outside the centre region, keeps only the top `channel_pruning_keep_ratio`
            fraction (straight-through gradients, deterministic); `"none"` disables it.
        channel_pruning_keep_ratio (`float`, *optional*, defaults to 0.5): Fraction of channels kept in the periphery.
        channel_pruning_reduction (`int`, *optional*, defaults to 4): Bottleneck reduction of the channel gate.
        edge_compensation_type (`str`, *optional*, defaults to `"none"`): `"stem"` adds, outside the centre region, the output of a light CNN of its own on the image (the stem's kernels and strides at half its
            widths, no centre weighting) plus each cell's projected brightest colour, which keeps the periphery readable
            under strong centre weighting; `"none"` disables it.
        edge_stem_width_ratio (`float`, *optional*, defaults to 0.5): Width of the `"stem"` edge branch's stages as a
            fraction of `stem_channels` (at least 8 channels each).
        edge_stem_residual_blocks (`int`, *optional*, defaults to 0): Residual blocks after the `"stem"` edge branch's
            last stage. Each adds two 3x3 convolutions at the last stage's stride, widening what one peripheral cell
            sees by `4 x prod(stem_strides)` pixels, so a cell can see a whole small object.
        channel_attention_type (`str`, *optional*, defaults to `"se"`): `"se"` applies squeeze-excitation channel
            attention to the pooled feature map before projection; `"none"` disables it.
        channel_attention_reduction (`int`, *optional*, defaults to 4): Bottleneck reduction of the SE block.
        image_tokenizer_type (`str`, *optional*, defaults to `"grid_pool"`): `"grid_pool"` pools the last stage to a
            `image_tokenizer_grid_size` square grid, one token per cell (196 tokens by default); `"foveated"` keeps
            the central `foveated_center_size` square at full resolution and average-pools the periphery by
            `foveated_periphery_pool` (76 tokens with the defaults).
        image_tokenizer_grid_size (`int`, *optional*, defaults to 14): Side of the pooled token grid.
        foveated_center_size (`int`, *optional*, defaults to 6): Side of the full-resolution fovea, in grid cells.
        foveated_periphery_pool (`int`, *optional*, defaults to 2): Pooling factor of the peripheral tokens.
        image_summary_type (`str`, *optional*, defaults to `"none"`): `"flatten"` adds to every image token a linear
            read-out of the whole token map, flattened in its fixed order (each token narrowed to `image_summary_dim`
            features first): an identity spread over where the parts of a shape are reaches the decoder from the first
            step, instead of once attention has learned to assemble it. `"none"` adds nothing.
        image_summary_dim (`int`, *optional*, defaults to 32): Features per token in the flattened read-out.
        position_embedding_type (`str`, *optional*, defaults to `"learned_2d"`): 2-D position embedding of image
            tokens: `"learned_2d"`, fixed `"sincos_2d"`, or `"none"`.
        modality_embedding_type (`str`, *optional*, defaults to `"learned"`): `[IMG]`/`[TXT]` type embeddings added
            to the encoder input; `"none"` disables them.
        modality_gate_type (`str`, *optional*, defaults to `"dynamic"`): `"dynamic"` scales every encoder output
            token by a learned gate in (0, 2) that balances image and text contributions; `"none"` disables it.
        contrastive_loss_weight (`float`, *optional*, defaults to 0.0): Weight of a CLIP-style image-caption
            alignment loss added to the caption loss. 0 disables it (and builds no projection heads).
        contrastive_dim (`int`, *optional*, defaults to 256): Width of the contrastive projections.
        contrastive_temperature (`float`, *optional*, defaults to 0.07): Initial softmax temperature (learned).
        center_loss_weight (`float`, *optional*, defaults to 0.0): Weight of the centre-quality loss: the pooled
            centre image tokens must predict the caption's words. 0 disables it.
        word_loss_weight (`float`, *optional*, defaults to 0.0): Weight of the word-detection loss: the encoder's image
            tokens, pooled by log-sum-exp, must name the words of the caption (multiple-instance learning from the
            captions, Fang et al., 2015). It teaches the image side what the caption says without the decoder in the
            way. 0 disables it.
        decoder_type (`str`, *optional*, defaults to `"autoregressive"`): `"non_autoregressive"` decodes every
            caption position at once (design item 10): a length head on the encoder output predicts the caption
            length, then `nar_iterations` passes of mask-predict refinement (Ghazvininejad et al., 2019).
        nar_iterations (`int`, *optional*, defaults to 4): Mask-predict passes at inference.
        nar_max_length (`int`, *optional*, defaults to 32): Longest caption (incl. eos) the length head predicts.
        nar_length_loss_weight (`float`, *optional*, defaults to 0.1): Weight of the length-prediction loss.
        pad_token_id (`int`, *optional*, defaults to 0), bos_token_id (`int`, *optional*, defaults to 1),
        eos_token_id (`int`, *optional*, defaults to 2), decoder_start_token_id (`int`, *optional*, defaults to 1):
            Special token ids of the tokenizer the model is trained with.

    Example:

    ```python
    >>> from centerfocus import CenterFocusConfig
    >>> config = CenterFocusConfig()
    >>> config.num_image_tokens
    196
    >>> CenterFocusConfig(image_tokenizer_type="foveated").num_image_tokens
    76
    ```
    """

    model_type = "centerfocus"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]
    # generic tooling reads `num_hidden_layers` from any config; for an encoder-decoder it is the encoder's (as BART)
    attribute_map = {"num_hidden_layers": "encoder_layers"}

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 768,
        num_attention_heads: int = 12,
        encoder_layers: int = 6,
        decoder_layers: int = 6,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        max_position_embeddings: int = 512,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        image_size: int = 224,
        num_channels: int = 3,
        stem_channels: tuple = (64, 128),
        stem_kernel_sizes: tuple = (7, 3),
        stem_strides: tuple = (2, 2),
        stem_norm_type: Literal["none", "batch"] = "none",
        stem_residual_blocks: Optional[tuple] = None,
        center_weighting_type: Literal["gaussian", "none"] = "gaussian",
        center_sigmas: tuple = (0.2, 0.3),
        center_sigma_learnable: bool = True,
        center_weighting_floor: float = 0.1,
        center_region_size: float = 0.5,
        channel_pruning_type: Literal["topk", "none"] = "topk",
        channel_pruning_keep_ratio: float = 0.5,
        channel_pruning_reduction: int = 4,
        edge_compensation_type: Literal["stem", "none"] = "none",
        edge_stem_width_ratio: float = 0.5,
        edge_stem_residual_blocks: int = 0,
        channel_attention_type: Literal["se", "none"] = "se",
        channel_attention_reduction: int = 4,
        image_tokenizer_type: Literal["grid_pool", "foveated"] = "grid_pool",
        image_tokenizer_grid_size: int = 14,
        foveated_center_size: int = 6,
        foveated_periphery_pool: int = 2,
        image_summary_type: Literal["none", "flatten"] = "none",
        image_summary_dim: int = 32,
        position_embedding_type: Literal["learned_2d", "sincos_2d", "none"] = "learned_2d",
        modality_embedding_type: Literal["learned", "none"] = "learned",
        modality_gate_type: Literal["dynamic", "none"] = "dynamic",
        contrastive_loss_weight: float = 0.0,
        contrastive_dim: int = 256,
        contrastive_temperature: float = 0.07,
        center_loss_weight: float = 0.0,
        word_loss_weight: float = 0.0,
        decoder_type: Literal["autoregressive", "non_autoregressive"] = "autoregressive",
        nar_iterations: int = 4,
        nar_max_length: int = 32,
        nar_length_loss_weight: float = 0.1,
        use_cache: bool = True,
        pad_token_id: Optional[int] = 0,
        bos_token_id: Optional[int] = 1,
        eos_token_id: Optional[int] = 2,
        decoder_start_token_id: Optional[int] = 1,
        is_encoder_decoder: bool = True,
        tie_word_embeddings: bool = True,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.encoder_layers = encoder_layers
        self.decoder_layers = decoder_layers
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.image_size = image_size
        self.num_channels = num_channels
        self.stem_channels = tuple(stem_channels)
        self.stem_kernel_sizes = tuple(stem_kernel_sizes)
        self.stem_strides = tuple(stem_strides)
        self.stem_norm_type = stem_norm_type
        self.stem_residual_blocks = (tuple(stem_residual_blocks) if stem_residual_blocks is not None
                                     else (0,) * len(self.stem_channels))
        self.center_weighting_type = center_weighting_type
        self.center_sigmas = tuple(center_sigmas)
        self.center_sigma_learnable = center_sigma_learnable
        self.center_weighting_floor = center_weighting_floor
        self.center_region_size = center_region_size
        self.channel_pruning_type = channel_pruning_type
        self.channel_pruning_keep_ratio = channel_pruning_keep_ratio
        self.channel_pruning_reduction = channel_pruning_reduction
        self.edge_compensation_type = edge_compensation_type
        self.edge_stem_width_ratio = edge_stem_width_ratio
        self.edge_stem_residual_blocks = edge_stem_residual_blocks
        self.channel_attention_type = channel_attention_type
        self.channel_attention_reduction = channel_attention_reduction
        self.image_tokenizer_type = image_tokenizer_type
        self.image_tokenizer_grid_size = image_tokenizer_grid_size
        self.foveated_center_size = foveated_center_size
        self.foveated_periphery_pool = foveated_periphery_pool
        self.image_summary_type = image_summary_type
        self.image_summary_dim = image_summary_dim
        self.position_embedding_type = position_embedding_type
        self.modality_embedding_type = modality_embedding_type
        self.modality_gate_type = modality_gate_type
        self.contrastive_loss_weight = contrastive_loss_weight
        self.contrastive_dim = contrastive_dim
        self.contrastive_temperature = contrastive_temperature
        self.center_loss_weight = center_loss_weight
        self.word_loss_weight = word_loss_weight
        self.decoder_type = decoder_type
        self.nar_iterations = nar_iterations
        self.nar_max_length = nar_max_length
        self.nar_length_loss_weight = nar_length_loss_weight
        self.use_cache = use_cache
        _drop_removed_options(kwargs)

        unknown = sorted(set(kwargs) - _base_config_keys() - set(self.attribute_map))
        if unknown:
            logger.warning(f"CenterFocusConfig got unknown arguments {unknown}; they are stored but not used.")

        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            decoder_start_token_id=decoder_start_token_id,
            is_encoder_decoder=is_encoder_decoder,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
        self._validate()

    @property
    def num_image_tokens(self) -> int:
        """Number of image tokens `N` the image tokenizer produces."""
        grid = self.image_tokenizer_grid_size
        if self.image_tokenizer_type == "grid_pool":
            return grid * grid
        coarse = grid // self.foveated_periphery_pool
        coarse_center = self.foveated_center_size // self.foveated_periphery_pool
        return self.foveated_center_size**2 + coarse**2 - coarse_center**2

    def _validate(self) -> None:
        """Raise `ValueError` naming the field for any invalid value. Called again by the model."""
        for name, removed in REMOVED_VALUES.items():
            _check(getattr(self, name) not in removed,
                   f"`{name}={getattr(self, name)!r}` was removed from CenterFocus 0.2 (no benchmark showed it helps; "
                   f"docs/benchmarks.md, 'Switches kept and removed'); choose one of {_SWITCHES[name]}, or load this "
                   "model with centerfocus 0.1.")
        for name, choices in _SWITCHES.items():
            _check_choice(name, getattr(self, name), choices)
        for name in ("vocab_size", "hidden_size", "num_attention_heads", "decoder_layers", "intermediate_size",
                     "max_position_embeddings", "image_size", "num_channels", "channel_pruning_reduction",
                     "channel_attention_reduction", "image_tokenizer_grid_size", "foveated_center_size",
                     "foveated_periphery_pool", "image_summary_dim", "contrastive_dim", "nar_iterations",
                     "nar_max_length"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                   f"`{name}` must be a positive integer, got {value!r}.")
        _check(isinstance(self.encoder_layers, int) and self.encoder_layers >= 0,
               f"`encoder_layers` must be a non-negative integer, got {self.encoder_layers!r}.")
        _check(self.hidden_size % self.num_attention_heads == 0,
               f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
               f"({self.num_attention_heads}).")
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and 0.0 <= value < 1.0, f"`{name}` must be in [0, 1), got {value!r}.")
        from transformers.activations import ACT2FN

        _check(isinstance(self.hidden_act, str) and self.hidden_act in ACT2FN,
               f"`hidden_act` must be one of transformers' activations {sorted(ACT2FN)}, got {self.hidden_act!r}.")
        _check(_is_number(self.layer_norm_eps) and self.layer_norm_eps > 0,
               f"`layer_norm_eps` must be > 0, got {self.layer_norm_eps!r}.")
        _check(_is_number(self.initializer_range) and self.initializer_range >= 0,
               f"`initializer_range` must be >= 0, got {self.initializer_range!r}.")
        for name in ("center_sigma_learnable", "use_cache", "tie_word_embeddings"):
            _check(isinstance(getattr(self, name), bool), f"`{name}` must be True or False, got "
                                                          f"{getattr(self, name)!r}.")
        self._validate_stem()
        self._validate_image_tokenizer()
        _check(self.decoder_type != "non_autoregressive" or self.nar_max_length < self.max_position_embeddings,
               f"`nar_max_length` ({self.nar_max_length}) must be below `max_position_embeddings` "
               f"({self.max_position_embeddings}).")
        for name in (*(n for n, (values, _) in SWITCHES.items() if values is None), "nar_length_loss_weight"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and value >= 0, f"`{name}` must be >= 0, got {value!r}.")
        _check(_is_number(self.contrastive_temperature) and self.contrastive_temperature > 0,
               f"`contrastive_temperature` must be > 0, got {self.contrastive_temperature!r}.")
        for name in ("pad_token_id", "decoder_start_token_id", "eos_token_id", "bos_token_id"):
            value = getattr(self, name)
            if name == "bos_token_id" and value is None:
                continue  # optional: CenterFocus starts captions with decoder_start_token_id
            _check(isinstance(value, int) and 0 <= value < self.vocab_size,
                   f"`{name}` must be a token id in [0, vocab_size={self.vocab_size}), got {value!r}.")

    def _validate_stem(self) -> None:
        n_stages = len(self.stem_channels)
        _check(n_stages >= 1, "`stem_channels` must name at least one stage.")
        for name in ("stem_kernel_sizes", "stem_strides", "center_sigmas", "stem_residual_blocks"):
            _check(len(getattr(self, name)) == n_stages,
                   f"`{name}` must have one entry per stem stage ({n_stages}), got {getattr(self, name)!r}.")
        for name in ("stem_channels", "stem_kernel_sizes", "stem_strides"):
            _check(all(isinstance(v, int) and v > 0 for v in getattr(self, name)),
                   f"`{name}` must hold positive integers, got {getattr(self, name)!r}.")
        _check(all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in self.stem_residual_blocks),
               f"`stem_residual_blocks` must hold non-negative integers, got {self.stem_residual_blocks!r}.")
        # "same" padding (kernel // 2) keeps the size at stride 1 only for odd kernels; an even kernel adds a row and
        # a column, which the fixed token-grid pooling would silently drop
        _check(all(k % 2 == 1 for k in self.stem_kernel_sizes),
               f"`stem_kernel_sizes` must be odd, got {self.stem_kernel_sizes!r}.")
        _check(all(_is_number(s) and s > 0 for s in self.center_sigmas),
               f"`center_sigmas` must be numbers > 0, got {self.center_sigmas!r}.")
        _check(_is_number(self.center_weighting_floor) and 0.0 <= self.center_weighting_floor < 1.0,
               f"`center_weighting_floor` must be in [0, 1), got {self.center_weighting_floor!r}.")
        _check(_is_number(self.center_region_size) and 0.0 < self.center_region_size <= 1.0,
               f"`center_region_size` must be in (0, 1], got {self.center_region_size!r}.")
        _check(_is_number(self.channel_pruning_keep_ratio) and 0.0 < self.channel_pruning_keep_ratio <= 1.0,
               f"`channel_pruning_keep_ratio` must be in (0, 1], got {self.channel_pruning_keep_ratio!r}.")
        stride = 1
        for s in self.stem_strides:
            stride *= s
        _check(self.image_size % stride == 0,
               f"`image_size` ({self.image_size}) must be divisible by the stem's total stride ({stride}).")
        side = self.image_size // stride
        _check(self.image_tokenizer_grid_size <= side and side % self.image_tokenizer_grid_size == 0,
               f"`image_tokenizer_grid_size` ({self.image_tokenizer_grid_size}) must divide the stem's output grid "
               f"({side} = image_size / total stride): the pooling windows are fixed (exportable) and equal.")
        _check(_is_number(self.edge_stem_width_ratio) and self.edge_stem_width_ratio > 0,
               f"`edge_stem_width_ratio` must be a number > 0, got {self.edge_stem_width_ratio!r}.")
        _check(isinstance(self.edge_stem_residual_blocks, int) and not isinstance(self.edge_stem_residual_blocks, bool)
               and self.edge_stem_residual_blocks >= 0,
               f"`edge_stem_residual_blocks` must be a non-negative integer, got {self.edge_stem_residual_blocks!r}.")

    def _validate_image_tokenizer(self) -> None:
        if self.image_tokenizer_type != "foveated":
            return
        grid, center, pool = self.image_tokenizer_grid_size, self.foveated_center_size, self.foveated_periphery_pool
        _check(center < grid, f"`foveated_center_size` ({center}) must be smaller than the grid ({grid}).")
        _check(grid % pool == 0,
               f"`image_tokenizer_grid_size` ({grid}) must be divisible by `foveated_periphery_pool` ({pool}).")
        _check((grid - center) % (2 * pool) == 0,
               f"the fovea must align with the pooled grid: (image_tokenizer_grid_size - foveated_center_size) = "
               f"{grid - center} must be divisible by 2 * foveated_periphery_pool = {2 * pool}.")


__all__ = ["CenterFocusConfig"]
