"""generate(): cache vs no cache, prompt routing (the overridden private hook), padded batches."""

import pytest
import torch

from ..conftest import build_tiny_model, pipeline_captions


PROMPTS = ["describe the image", "what is in the centre", "a red", "describe"]


@pytest.fixture(scope="module")
def inputs(tiny_processor, images):
    return tiny_processor(images=images, text=PROMPTS)


def _generate(model, inputs, with_prompt, use_cache, **kwargs):
    kwargs = {"max_new_tokens": 8, "use_cache": use_cache, **kwargs}
    if with_prompt:
        return model.generate(**inputs, **kwargs)
    return model.generate(pixel_values=inputs["pixel_values"], **kwargs)


def _manual_greedy(model, pixel_values, input_ids=None, attention_mask=None, steps=8):
    """Reference decoder: recompute the full forward at every step, no cache, no generate()."""
    start = model.config.decoder_start_token_id
    decoder_input_ids = torch.full((pixel_values.shape[0], 1), start)
    finished = torch.zeros(pixel_values.shape[0], dtype=torch.bool)
    for _ in range(steps):
        logits = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                       decoder_input_ids=decoder_input_ids, use_cache=False).logits
        next_token = logits[:, -1].argmax(-1)
        next_token = torch.where(finished, torch.full_like(next_token, model.config.pad_token_id), next_token)
        finished |= next_token == model.config.eos_token_id
        decoder_input_ids = torch.cat([decoder_input_ids, next_token[:, None]], dim=1)
        if finished.all():
            break
    return decoder_input_ids


@pytest.mark.parametrize("with_prompt", [False, True])
@pytest.mark.parametrize(
    "mode",
    [
        {},
        {"num_beams": 4, "num_return_sequences": 2},
        {"do_sample": True, "top_k": 0, "temperature": 1.0},
    ],
    ids=["greedy", "beam4x2", "sample"],
)
def test_cache_and_no_cache_give_identical_tokens(tiny_model, inputs, with_prompt, mode):
    outputs = []
    for use_cache in (True, False):
        torch.manual_seed(1234)
        outputs.append(_generate(tiny_model, inputs, with_prompt, use_cache, **mode))
    assert torch.equal(outputs[0], outputs[1])
    expected_rows = inputs["pixel_values"].shape[0] * mode.get("num_return_sequences", 1)
    assert outputs[0].shape[0] == expected_rows


@pytest.mark.parametrize("with_prompt", [False, True])
def test_greedy_generate_equals_full_recompute_reference(tiny_model, inputs, with_prompt):
    generated = _generate(tiny_model, inputs, with_prompt, use_cache=True)
    prompt = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]} if with_prompt else {}
    with torch.no_grad():
        reference = _manual_greedy(tiny_model, inputs["pixel_values"], **prompt)
    assert torch.equal(generated[:, : reference.shape[1]], reference)
    # captions vary across images, so the comparison is not between constant sequences
    assert len({tuple(row.tolist()) for row in generated}) > 1


def test_prompt_reaches_the_encoder_and_is_not_echoed(tiny_model, inputs):
    with_prompt = _generate(tiny_model, inputs, True, use_cache=True)
    without = _generate(tiny_model, inputs, False, use_cache=True)
    assert not torch.equal(with_prompt, without)
    start = tiny_model.config.decoder_start_token_id
    assert (with_prompt[:, 0] == start).all()
    # generate() would otherwise treat input_ids as the decoder prefix: [start, *prompt, ...]
    for row, prompt, mask in zip(with_prompt, inputs["input_ids"], inputs["attention_mask"]):
        prompt = prompt[mask.bool()]
        assert not torch.equal(row[1:1 + len(prompt)], prompt)


def test_padded_batch_gives_the_same_captions_as_each_image_alone(tiny_model, tiny_processor, images):
    batch = tiny_processor(images=images, text=PROMPTS)
    assert (batch["attention_mask"] == 0).any()  # the batch really is padded
    batched = tiny_model.generate(**batch, max_new_tokens=8, num_beams=2)
    for i, (image, prompt) in enumerate(zip(images, PROMPTS)):
        single = tiny_model.generate(**tiny_processor(images=[image], text=[prompt]), max_new_tokens=8, num_beams=2)
        assert torch.equal(batched[i, : single.shape[1]], single[0])
        assert (batched[i, single.shape[1]:] == tiny_model.config.pad_token_id).all()
    no_prompt = tiny_model.generate(pixel_values=batch["pixel_values"], max_new_tokens=8)
    for i in range(len(images)):
        single = tiny_model.generate(pixel_values=batch["pixel_values"][i:i + 1], max_new_tokens=8)
        assert torch.equal(no_prompt[i, : single.shape[1]], single[0])


def test_cross_attention_keys_values_are_computed_once_per_generate(tokenizer, inputs):
    model = build_tiny_model(tokenizer)
    calls = {"cross": 0, "self": 0}
    layer = model.model.decoder.layers[0]
    layer.cross_attn.k_proj.register_forward_hook(lambda *_: calls.__setitem__("cross", calls["cross"] + 1))
    layer.self_attn.k_proj.register_forward_hook(lambda *_: calls.__setitem__("self", calls["self"] + 1))
    output = model.generate(pixel_values=inputs["pixel_values"], max_new_tokens=6, min_new_tokens=6)
    assert output.shape[1] == 7
    assert calls == {"cross": 1, "self": 6}


def test_encoder_runs_once_per_generate(tokenizer, inputs):
    model = build_tiny_model(tokenizer)
    calls = []
    model.model.encoder.vision_stem.register_forward_hook(lambda *_: calls.append(1))
    model.generate(pixel_values=inputs["pixel_values"], max_new_tokens=6, num_beams=3)
    assert len(calls) == 1


def test_generate_with_bf16_weights_runs(tokenizer, inputs):
    model = build_tiny_model(tokenizer).to(torch.bfloat16)
    output = model.generate(**inputs, max_new_tokens=4)
    assert output.shape[0] == inputs["pixel_values"].shape[0]


def test_a_static_cache_is_refused_not_decoded_wrongly(tiny_model, inputs):
    # a pre-allocated cache pads cached keys to its full length; decoding with it gave other tokens than the
    # dynamic cache, silently
    with torch.no_grad(), pytest.raises(ValueError, match=r"dynamic KV cache only, got a StaticCache"):
        tiny_model.generate(pixel_values=inputs["pixel_values"], max_new_tokens=4, cache_implementation="static")


def test_a_length_past_the_position_table_is_capped_at_it(tokenizer, inputs):
    model = build_tiny_model(tokenizer)
    limit = model.config.max_position_embeddings
    pixel_values = inputs["pixel_values"][:2]
    with torch.no_grad():
        capped = model.generate(pixel_values=pixel_values, max_new_tokens=3 * limit, min_new_tokens=3 * limit)
        longest = model.generate(pixel_values=pixel_values, max_length=limit, min_length=limit)
    assert capped.shape[1] == limit
    assert torch.equal(capped, longest)


def test_pipeline_default_length_on_a_plainly_saved_model(tokenizer, tiny_processor, images, tmp_path):
    from transformers import GenerationConfig, pipeline

    model = build_tiny_model(tokenizer)
    model.generation_config = GenerationConfig.from_model_config(model.config)  # what save_pretrained of a new model has
    model.save_pretrained(tmp_path)
    tiny_processor.save_pretrained(tmp_path)
    captioner = pipeline("image-text-to-text", model=str(tmp_path))  # asks generate() for 256 new tokens by default
    caption = pipeline_captions(captioner, images[0])[0]
    with torch.no_grad():
        expected = model.generate(**tiny_processor(images=images[:1]), max_length=model.config.max_position_embeddings)
    assert caption == tiny_processor.batch_decode(expected, skip_special_tokens=True)[0]


def test_generate_continues_a_given_decoder_prefix(tiny_model, inputs):
    # what a 5.x encoder-decoder user expects of generate(..., decoder_input_ids=prefix): the caption goes on from it
    pixel_values = inputs["pixel_values"]
    with torch.no_grad():
        full = tiny_model.generate(pixel_values=pixel_values)
        continued = tiny_model.generate(pixel_values=pixel_values, decoder_input_ids=full[:, :3])
    assert torch.equal(continued[:, : full.shape[1]], full)
    assert len({tuple(row.tolist()) for row in full}) > 1  # not a constant caption


@pytest.mark.parametrize("kwargs", [{}, {"decoder_input_ids": torch.ones(2, 2, dtype=torch.long)}],
                         ids=["nothing", "decoder-prefix-only"])
def test_generate_without_an_image_is_refused_naming_pixel_values(tiny_model, kwargs):
    with pytest.raises(ValueError, match=r"generate\(\) needs `pixel_values`.*no image-free \(unconditional\)"):
        tiny_model.generate(**kwargs)


def test_generate_does_not_ask_for_cache_position(tiny_model, inputs):
    from transformers.generation import utils as generation_utils
    from transformers.testing_utils import CaptureLogger

    with CaptureLogger(generation_utils.logger) as captured, torch.no_grad():
        tiny_model.generate(pixel_values=inputs["pixel_values"], max_new_tokens=2)
    assert "cache_position" not in captured.out
    # what 5.x's generate() checks (once per process, so the log above can miss it)
    import inspect

    assert "cache_position" not in inspect.signature(type(tiny_model).forward).parameters
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['positions'\\]"):
        tiny_model(pixel_values=inputs["pixel_values"], decoder_input_ids=torch.ones(4, 1, dtype=torch.long),
                   positions=None)
