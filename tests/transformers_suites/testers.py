"""Model testers for transformers' `ModelTesterMixin`: a tiny CenterFocus config and matching inputs.

The encoder reads `[image tokens ; prompt tokens]`: `num_image_tokens` (an 8x8 grid, 64) image tokens from a 32x32
image, then an optional `prompt_length`-token prompt (`input_ids`/`attention_mask`). The decoder reads
`decoder_input_ids` of `decoder_seq_length` tokens and cross-attends to all encoder positions.
"""

import torch

from centerfocus import CenterFocusConfig

from ..conftest import tiny_config_kwargs as _tiny_config_kwargs


def tiny_config_kwargs(as_lists: bool = False, **overrides) -> dict:
    """The tiny config of tests/conftest.py (`as_lists`: the tuple fields as lists, as they read back from JSON)."""
    kwargs = _tiny_config_kwargs(**overrides)
    if as_lists:
        kwargs = {key: list(value) if isinstance(value, tuple) else value for key, value in kwargs.items()}
    return kwargs


_SIZES = ("vocab_size", "hidden_size", "num_attention_heads", "image_size", "num_channels", "num_image_tokens")


def _copy_sizes(tester, config: CenterFocusConfig, *extra: str) -> None:
    """The config fields the mixins read from a tester."""
    for name in (*_SIZES, *extra):
        setattr(tester, name, getattr(config, name))


def _ids(shape, vocab_size: int, low: int = 3) -> torch.LongTensor:
    """Random token ids in [low, vocab_size): no pad (0), bos/decoder-start (1) or eos (2) inside a sequence."""
    return torch.randint(low, vocab_size, shape, dtype=torch.long)


class CenterFocusModelTester:
    """Tiny encoder-decoder config and inputs: images, an encoder prompt and decoder inputs."""

    # prompt and caption have the same length: `test_eager_matches_sdpa_inference` reuses the tester's (encoder)
    # `attention_mask` as the `decoder_attention_mask`, as for text encoder-decoders whose two lengths are equal
    def __init__(self, parent, batch_size: int = 3, prompt_length: int = 7, decoder_seq_length: int = 7,
                 is_training: bool = True, use_prompt: bool = True, **config_overrides):
        self.parent = parent
        self.batch_size = batch_size
        self.is_training = is_training
        self.use_prompt = use_prompt
        self.config_kwargs = tiny_config_kwargs(**config_overrides)
        config = CenterFocusConfig(**self.config_kwargs)
        _copy_sizes(self, config, "intermediate_size", "pad_token_id", "decoder_start_token_id")
        self.num_hidden_layers = config.encoder_layers  # == decoder_layers: the mixins check both against this
        # get_image_features: the image tower is the CNN stem and tokenizer, no attention layers (one hidden state)
        self.vision_config = {"num_hidden_layers": 0}
        self.prompt_length = prompt_length if use_prompt else 0
        # encoder positions: image tokens then prompt tokens; every encoder query sees every encoder key
        self.encoder_seq_length = self.num_image_tokens + self.prompt_length
        self.key_length = self.encoder_seq_length
        self.decoder_seq_length = decoder_seq_length
        self.decoder_key_length = decoder_seq_length
        # the "sequence" a seq2seq LM's labels and logits run over is the caption (decoder) length
        self.seq_length = decoder_seq_length

    def get_config(self, **overrides) -> CenterFocusConfig:
        return CenterFocusConfig(**{**self.config_kwargs, **overrides})

    def prepare_config_and_inputs(self):
        pixel_values = torch.randn(self.batch_size, self.num_channels, self.image_size, self.image_size)
        decoder_input_ids = _ids((self.batch_size, self.decoder_seq_length), self.vocab_size)
        decoder_input_ids[:, 0] = self.decoder_start_token_id
        decoder_attention_mask = torch.ones_like(decoder_input_ids)
        inputs = {"pixel_values": pixel_values, "decoder_input_ids": decoder_input_ids,
                  "decoder_attention_mask": decoder_attention_mask}
        if self.use_prompt:
            input_ids = _ids((self.batch_size, self.prompt_length), self.vocab_size)
            inputs["input_ids"] = input_ids
            inputs["attention_mask"] = torch.ones_like(input_ids)
        return self.get_config(), inputs

    def prepare_config_and_inputs_for_common(self):
        return self.prepare_config_and_inputs()

    def create_and_check_model(self, config, inputs):
        from centerfocus import CenterFocusModel

        model = CenterFocusModel(config).eval()
        with torch.no_grad():
            outputs = model(**inputs)
        self.parent.assertEqual(tuple(outputs.last_hidden_state.shape),
                                (self.batch_size, self.decoder_seq_length, self.hidden_size))
        self.parent.assertEqual(tuple(outputs.encoder_last_hidden_state.shape),
                                (self.batch_size, self.encoder_seq_length, self.hidden_size))

    def create_and_check_lm_head(self, config, inputs):
        from centerfocus import CenterFocusForConditionalGeneration

        model = CenterFocusForConditionalGeneration(config).eval()
        labels = _ids((self.batch_size, self.decoder_seq_length), self.vocab_size)
        inputs = {key: value for key, value in inputs.items() if not key.startswith("decoder_")}
        with torch.no_grad():
            outputs = model(**inputs, labels=labels)
        self.parent.assertEqual(tuple(outputs.logits.shape),
                                (self.batch_size, self.decoder_seq_length, self.vocab_size))
        self.parent.assertTrue(torch.isfinite(outputs.loss))


class CenterFocusForImageClassificationTester:
    """Tiny config and inputs for the stage-1 vision classifier (stem + image tokenizer, pooled, linear head)."""

    def __init__(self, parent, batch_size: int = 3, num_labels: int = 3, is_training: bool = True,
                 **config_overrides):
        self.parent = parent
        self.batch_size = batch_size
        self.num_labels = num_labels
        self.is_training = is_training
        # `is_encoder_decoder=False`: the mixins pick output fields by `config.is_encoder_decoder`
        # (`encoder_hidden_states` vs `hidden_states`); CenterFocusConfig defaults it to True (the captioner), but the
        # classifier is a vision-only model whose outputs are `ImageClassifierOutput`; the model never reads it
        self.config_kwargs = tiny_config_kwargs(num_labels=num_labels, is_encoder_decoder=False, **config_overrides)
        config = CenterFocusConfig(**self.config_kwargs)
        _copy_sizes(self, config)
        # the classifier has no transformer layers: `hidden_states` is the one tuple entry of image tokens
        self.num_hidden_layers = 0
        self.expected_num_hidden_layers = 1
        self.seq_length = self.num_image_tokens
        self.encoder_seq_length = self.num_image_tokens

    def get_config(self, **overrides) -> CenterFocusConfig:
        return CenterFocusConfig(**{**self.config_kwargs, **overrides})

    def prepare_config_and_inputs(self):
        pixel_values = torch.randn(self.batch_size, self.num_channels, self.image_size, self.image_size)
        return self.get_config(), {"pixel_values": pixel_values}

    def prepare_config_and_inputs_for_common(self):
        return self.prepare_config_and_inputs()

    def create_and_check_model(self, config, inputs):
        from centerfocus import CenterFocusForImageClassification

        model = CenterFocusForImageClassification(config).eval()
        labels = torch.randint(0, self.num_labels, (self.batch_size,))
        with torch.no_grad():
            outputs = model(**inputs, labels=labels)
        self.parent.assertEqual(tuple(outputs.logits.shape), (self.batch_size, self.num_labels))
        self.parent.assertTrue(torch.isfinite(outputs.loss))
