import json

import pytest
from transformers import AutoConfig
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from centerfocus import CenterFocusConfig
from centerfocus import configuration_centerfocus as cfg_module
from centerfocus import modeling_centerfocus as modeling

from ..conftest import tiny_config_kwargs


def test_defaults_reproduce_the_seed():
    config = CenterFocusConfig()
    assert config.stem_channels == (64, 128)
    assert config.stem_kernel_sizes == (7, 3)
    assert config.stem_strides == (2, 2)
    assert config.center_sigmas == (0.2, 0.3)
    assert config.stem_norm_type == "none" and config.stem_residual_blocks == (0, 0)  # conv -> ReLU, as the seed
    assert config.channel_pruning_keep_ratio == 0.5
    assert config.channel_pruning_reduction == 4
    assert (config.hidden_size, config.num_attention_heads, config.encoder_layers, config.decoder_layers) == (
        768, 12, 6, 6)
    assert config.image_size == 224
    assert config.num_image_tokens == 14 * 14
    assert config.is_encoder_decoder


def test_foveated_token_count_matches_the_pooling_matrix():
    config = CenterFocusConfig(image_tokenizer_type="foveated")
    matrix = modeling.foveation_matrix(14, 6, 2)
    assert matrix.shape == (config.num_image_tokens, 196)
    # every grid cell is covered exactly once (rows average disjoint blocks)
    assert ((matrix > 0).sum(0) == 1).all()


def test_round_trip(tmp_path):
    config = CenterFocusConfig(**tiny_config_kwargs(image_tokenizer_type="foveated", edge_compensation_type="stem",
                                                    contrastive_loss_weight=0.3))
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, CenterFocusConfig)
    expected, actual = config.to_dict(), loaded.to_dict()
    expected.pop("_name_or_path"), actual.pop("_name_or_path")
    assert actual == expected


def test_decoder_text_config_names_layers_for_the_cache():
    config = CenterFocusConfig(**tiny_config_kwargs(decoder_layers=3))
    assert config.get_text_config(decoder=True).num_hidden_layers == 3


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("center_weighting_type", "gausian"),
        ("channel_pruning_type", "random"),
        ("edge_compensation_type", "mlp"),
        ("channel_attention_type", "cbam"),
        ("image_tokenizer_type", "patch"),
        ("position_embedding_type", "rope"),
        ("modality_embedding_type", "fixed"),
        ("modality_gate_type", "static"),
        ("decoder_type", "diffusion"),
        ("nar_iterations", 0),
        ("hidden_size", 30),
        ("num_attention_heads", 0),
        ("vocab_size", -1),
        ("decoder_layers", 0),
        ("encoder_layers", -1),
        ("dropout", 1.5),
        ("image_size", 30),
        ("stem_kernel_sizes", (3,)),
        ("stem_kernel_sizes", (4, 4)),
        ("center_sigmas", (0.2, -0.1)),
        ("stem_norm_type", "layer"),
        ("stem_residual_blocks", (1,)),
        ("stem_residual_blocks", (0, -1)),
        ("edge_stem_width_ratio", 0.0),
        ("edge_stem_residual_blocks", -1),
        ("edge_stem_residual_blocks", 1.5),
        ("center_weighting_floor", 1.0),
        ("center_region_size", 0.0),
        ("channel_pruning_keep_ratio", 0.0),
        ("image_tokenizer_grid_size", 9),
        ("foveated_center_size", 3),
        ("contrastive_loss_weight", -1.0),
        ("center_loss_weight", -0.5),
        ("contrastive_temperature", 0.0),
        ("decoder_start_token_id", None),
        ("pad_token_id", 1000),
    ],
)
def test_invalid_values_raise_naming_the_field(field, value):
    kwargs = tiny_config_kwargs(**{field: value})
    if field == "foveated_center_size":
        kwargs["image_tokenizer_type"] = "foveated"
    with pytest.raises(ValueError, match=field):
        CenterFocusConfig(**kwargs)


@pytest.mark.parametrize(("field", "value"), [
    ("encoder_attention_type", "center_local"),
    ("cross_modal_attention_type", "cls_only"),
    ("edge_compensation_type", "conv"),
    ("stem_norm_type", "group"),
])
def test_a_saved_config_with_a_removed_option_fails_naming_it(tmp_path, field, value):
    # a config.json written by centerfocus 0.1 with an option 0.2 removed: loading it must not build another model
    CenterFocusConfig(**tiny_config_kwargs()).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, field: value}))
    with pytest.raises(ValueError, match=f"{field}={value!r}.*removed"):
        AutoConfig.from_pretrained(tmp_path)


def test_a_saved_config_with_removed_fields_at_their_kept_values_loads(tmp_path):
    # what every centerfocus 0.1 config.json holds: the removed fields at the values that behave as the model now does
    CenterFocusConfig(**tiny_config_kwargs()).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    old = {"encoder_attention_type": "full", "cross_modal_attention_type": "full", "local_attention_window": 2,
           "edge_precision": "float32"}
    expected = AutoConfig.from_pretrained(tmp_path).to_dict()
    (tmp_path / "config.json").write_text(json.dumps({**saved, **old}))
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == expected
    assert not any(hasattr(loaded, name) for name in old)


def test_model_revalidates_an_edited_config():
    config = CenterFocusConfig(**tiny_config_kwargs())
    config.image_tokenizer_type = "patches"
    with pytest.raises(ValueError, match="image_tokenizer_type"):
        modeling.CenterFocusForConditionalGeneration(config)


def test_unknown_keys_warn():
    logger = logging.get_logger(cfg_module.__name__)
    with CaptureLogger(logger) as captured:
        config = CenterFocusConfig(**tiny_config_kwargs(hiden_size=3))
    assert "hiden_size" in captured.out
    assert config.hidden_size == 32
    with CaptureLogger(logger) as captured:
        CenterFocusConfig(**tiny_config_kwargs())
    assert captured.out == ""


@pytest.mark.parametrize(
    ("registry", "allowed"),
    [
        (modeling.CENTER_WEIGHTING_CLASSES, cfg_module.CENTER_WEIGHTING_TYPES),
        (modeling.CHANNEL_PRUNING_CLASSES, cfg_module.CHANNEL_PRUNING_TYPES),
        (modeling.STEM_NORM_CLASSES, cfg_module.STEM_NORM_TYPES),
        (modeling.EDGE_COMPENSATION_CLASSES, cfg_module.EDGE_COMPENSATION_TYPES),
        (modeling.CHANNEL_ATTENTION_CLASSES, cfg_module.CHANNEL_ATTENTION_TYPES),
        (modeling.IMAGE_TOKEN_POOLING, cfg_module.IMAGE_TOKENIZER_TYPES),
        (modeling.IMAGE_SUMMARY_CLASSES, cfg_module.IMAGE_SUMMARY_TYPES),
        (modeling.POSITION_EMBEDDING_CLASSES, cfg_module.POSITION_EMBEDDING_TYPES),
        (modeling.MODALITY_EMBEDDING_CLASSES, cfg_module.MODALITY_EMBEDDING_TYPES),
        (modeling.MODALITY_GATE_CLASSES, cfg_module.MODALITY_GATE_TYPES),
        (modeling.DECODER_IS_CAUSAL, cfg_module.DECODER_TYPES),
    ],
)
def test_registries_match_allowed_values(registry, allowed):
    assert set(registry) == set(allowed)
