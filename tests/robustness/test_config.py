"""Config robustness beyond tests/unit/test_configuration_centerfocus.py: the validated fields that file does not
cover, wrong types, and fields whose checks were added for this suite (formerly known gaps)."""

import pytest
from transformers import AutoConfig

from centerfocus import CenterFocusConfig, CenterFocusForConditionalGeneration

from ..conftest import tiny_config_kwargs


pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    ("field", "value", "extra"),
    [
        ("vocab_size", 0, {}),
        ("hidden_size", 0, {}),
        ("intermediate_size", 0, {}),
        ("max_position_embeddings", 0, {}),
        ("num_channels", 0, {}),
        ("channel_pruning_reduction", 0, {}),
        ("channel_attention_reduction", 0, {}),
        ("contrastive_dim", -4, {}),
        ("attention_dropout", -0.1, {}),
        ("dropout", "0.1", {}),
        ("image_size", 32.0, {}),
        ("image_size", True, {}),
        ("image_size", "32", {}),
        ("num_attention_heads", 5, {}),  # 32 is not divisible by 5: message names hidden_size and this field
        ("stem_channels", (8, 0), {}),
        ("stem_channels", (8.0, 16), {}),
        ("stem_channels", (), {}),
        ("stem_strides", (2, 0), {}),
        ("center_sigmas", (0.2,), {}),
        ("image_tokenizer_grid_size", 16, {}),
        ("foveated_periphery_pool", 3, {"image_tokenizer_type": "foveated"}),
        ("foveated_center_size", 8, {"image_tokenizer_type": "foveated"}),
        ("eos_token_id", 64, {}),
        ("eos_token_id", None, {}),
        ("decoder_start_token_id", -1, {}),
    ],
)
def test_more_invalid_values_raise_naming_the_field(field, value, extra):
    with pytest.raises(ValueError, match=f"`{field}`"):
        CenterFocusConfig(**tiny_config_kwargs(**{field: value, **extra}))


def test_a_saved_model_config_round_trips(saved_folder, tiny_model):
    loaded = AutoConfig.from_pretrained(saved_folder)
    assert isinstance(loaded, CenterFocusConfig)
    expected, actual = tiny_model.config.to_dict(), loaded.to_dict()
    for key in ("_name_or_path", "transformers_version"):
        expected.pop(key, None), actual.pop(key, None)
    assert actual == expected


GAPS = [
    pytest.param("hidden_act", "gelux", id="hidden_act-unknown"),
    pytest.param("layer_norm_eps", -1.0, id="layer_norm_eps-negative"),
    pytest.param("initializer_range", -1.0, id="initializer_range-negative"),
    pytest.param("center_sigma_learnable", "no", id="center_sigma_learnable-not-bool"),
    pytest.param("bos_token_id", 999, id="bos_token_id-out-of-vocab"),
    pytest.param("center_sigmas", ("a", "b"), id="center_sigmas-strings"),
    pytest.param("contrastive_temperature", "x", id="contrastive_temperature-str"),
    pytest.param("center_weighting_floor", "x", id="center_weighting_floor-str"),
]


@pytest.mark.parametrize(("field", "value"), GAPS)
def test_unvalidated_fields_should_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        CenterFocusForConditionalGeneration(CenterFocusConfig(**tiny_config_kwargs(**{field: value})))
