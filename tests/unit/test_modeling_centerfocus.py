
import inspect

import pytest
import torch
import torch.nn.functional as F

from centerfocus import CenterFocusConfig, CenterFocusForConditionalGeneration
from centerfocus import modeling_centerfocus as modeling

from ..conftest import assert_close_at_scale, tiny_config_kwargs


SWITCHES = [
    {},
    {"center_weighting_type": "none"},
    {"center_sigma_learnable": False},
    {"channel_pruning_type": "none"},
    # (with 4 hidden units, this draw of the SE block's first layer starts with all of them inactive on this batch:
    # 16 keep its gradient independent of the draw)
    {"edge_compensation_type": "stem", "channel_attention_reduction": 1},
    {"edge_compensation_type": "stem", "stem_norm_type": "batch"},
    {"edge_compensation_type": "stem", "edge_stem_width_ratio": 1.0, "channel_attention_reduction": 1},
    {"channel_attention_type": "none"},
    {"image_tokenizer_type": "foveated"},
    {"image_summary_type": "flatten"},
    {"image_summary_type": "flatten", "image_tokenizer_type": "foveated"},
    {"position_embedding_type": "sincos_2d"},
    {"position_embedding_type": "none"},
    {"modality_embedding_type": "none"},
    {"modality_gate_type": "none"},
    {"contrastive_loss_weight": 0.5},
    {"center_loss_weight": 0.5},
    {"word_loss_weight": 0.5},
    {"encoder_layers": 0},
    {"stem_norm_type": "batch"},
    {"decoder_type": "non_autoregressive"},
    # everything on
    {"edge_compensation_type": "stem", "image_tokenizer_type": "foveated", "image_summary_type": "flatten",
     "stem_norm_type": "batch", "contrastive_loss_weight": 0.5, "center_loss_weight": 0.5, "word_loss_weight": 0.5},
    # everything off
    {"center_weighting_type": "none", "channel_pruning_type": "none", "channel_attention_type": "none",
     "position_embedding_type": "none", "modality_embedding_type": "none", "modality_gate_type": "none"},
]


def _batch(config, batch_size=2, prompt_length=3, target_length=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch_size, 3, config.image_size, config.image_size, generator=generator)
    input_ids = torch.randint(4, config.vocab_size, (batch_size, prompt_length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, -1] = 0  # one padded prompt position
    labels = torch.randint(4, config.vocab_size, (batch_size, target_length), generator=generator)
    labels[0, -2:] = -100
    return {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _model(seed=0, **overrides):
    torch.manual_seed(seed)
    return CenterFocusForConditionalGeneration(CenterFocusConfig(**tiny_config_kwargs(**overrides)))


def test_default_config_shapes():
    config = CenterFocusConfig()
    model = CenterFocusForConditionalGeneration(config).eval()
    pixel_values = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        stem = model.model.encoder.vision_stem(pixel_values)
        features = model.get_image_features(pixel_values)
    tokens = features.last_hidden_state
    assert torch.equal(features.pooler_output, tokens)
    assert stem.shape == (2, 128, 14, 14)
    assert tokens.shape == (2, 196, 768)
    # the seed's stage geometry: 64 channels at 112x112, 128 channels at 56x56
    stages = model.model.encoder.vision_stem.stages
    with torch.no_grad():
        first = stages[0](pixel_values)
        second = stages[1](first)
    assert first.shape == (2, 64, 112, 112)
    assert second.shape == (2, 128, 56, 56)


@pytest.mark.parametrize("overrides", SWITCHES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_switch_forward_backward_every_parameter_gets_gradient(overrides):
    model = _model(**overrides).train()
    config = model.config
    batch = _batch(config)
    outputs = model(**batch)
    assert outputs.logits.shape == (2, 5, config.vocab_size)
    assert outputs.encoder_last_hidden_state.shape == (2, config.num_image_tokens + 3, config.hidden_size)
    assert torch.isfinite(outputs.logits).all()
    assert torch.isfinite(outputs.loss)
    outputs.loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize(
    ("overrides", "absent"),
    [
        ({"center_weighting_type": "none"}, "log_sigma"),
        ({"channel_pruning_type": "none"}, "channel_pruning."),
        ({"edge_compensation_type": "none"}, "edge_compensation."),
        ({"channel_attention_type": "none"}, "channel_attention."),
        ({"position_embedding_type": "none"}, "position_embedding."),
        ({"modality_embedding_type": "none"}, "modality_embedding."),
        ({"modality_gate_type": "none"}, "modality_gate."),
        ({"contrastive_loss_weight": 0.0}, "projection"),
        ({"center_loss_weight": 0.0}, "center_head"),
        ({"word_loss_weight": 0.0}, "word_head"),
        ({"image_summary_type": "none"}, "summary."),
        ({"decoder_type": "autoregressive"}, "length_head"),
    ],
)
def test_switched_off_components_build_no_parameters(overrides, absent):
    names = [name for name, _ in _model(**overrides).named_parameters()]
    assert not any(absent in name for name in names)


RESIDUAL_STEMS = [{"stem_norm_type": norm, "stem_residual_blocks": (1, 2)} for norm in ("batch", "none")]


@pytest.mark.parametrize("overrides", RESIDUAL_STEMS, ids=lambda o: o["stem_norm_type"])
def test_residual_stem_blocks_start_as_the_identity(overrides):
    # the reference is the same stem without blocks, sharing every other weight: a new block must not change it
    deep = _model(**overrides).eval()
    shallow = _model(stem_norm_type=overrides["stem_norm_type"]).eval()
    missing, unexpected = shallow.load_state_dict(deep.state_dict(), strict=False)
    assert missing == [] and unexpected and all(".blocks." in key for key in unexpected)
    pixel_values = _batch(deep.config)["pixel_values"]
    with torch.no_grad():
        expected = shallow.model.encoder.vision_stem(pixel_values)
        # relu(x + 0) = x for x = relu(.) >= 0, and both stems run the same kernels: exactly equal
        torch.testing.assert_close(deep.model.encoder.vision_stem(pixel_values), expected, rtol=0, atol=0)


@pytest.mark.parametrize("overrides", RESIDUAL_STEMS, ids=lambda o: o["stem_norm_type"])
def test_residual_stem_trains_every_parameter_after_one_step(overrides):
    # a zero-initialised last scale blocks the gradient of its block's first conv until it has moved once (ResNet)
    model = _model(**overrides).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = _batch(model.config)
    model(**batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    model(**batch).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_batch_norm_stem_keeps_its_running_statistics_through_save_and_load(tmp_path):
    model = _model(stem_norm_type="batch", stem_residual_blocks=(1, 1)).train()
    batch = _batch(model.config)
    with torch.no_grad():
        model(**batch)  # one training forward moves the running statistics away from their (0, 1) start
    norm = model.model.encoder.vision_stem.stages[0].norm
    assert norm.running_mean.abs().sum() > 0 and int(norm.num_batches_tracked) == 1
    model.eval().save_pretrained(tmp_path)
    loaded = CenterFocusForConditionalGeneration.from_pretrained(tmp_path).eval()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0, msg=key)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)


def test_gaussian_mask_peaks_at_centre_and_matches_float64_formula():
    weighting = modeling.CenterFocusCenterWeighting(sigma=0.2, floor=0.1, learnable=True)
    mask = weighting.mask(16, 16)
    v = (torch.arange(16, dtype=torch.float64) + 0.5) / 16 * 2 - 1
    vv, uu = torch.meshgrid(v, v, indexing="ij")
    reference = 0.1 + 0.9 * torch.exp(-(uu**2 + vv**2) / (2 * 0.2**2))
    reference = reference / reference.mean()
    torch.testing.assert_close(mask.double(), reference, rtol=1e-5, atol=1e-6)
    # peak in the four central cells, minimum at the corners, the floor keeps the corners re-weighted not erased
    assert torch.allclose(mask[7:9, 7:9], mask.max().expand(2, 2))
    assert mask[0, 0] == mask.min()
    assert mask.min() > 0.1 / reference.mean().item() * 0.99
    # moving away from the centre never increases the weight
    assert (mask[8, 8:].diff() <= 0).all()


def test_sigma_gets_a_gradient_through_the_loss():
    model = _model().train()
    model(**_batch(model.config)).loss.backward()
    for stage in model.model.encoder.vision_stem.stages:
        assert stage.center_weighting.log_sigma.grad is not None
        assert stage.center_weighting.log_sigma.grad.abs() > 0


def test_edge_stem_reads_the_periphery_that_compounded_centre_weighting_erases():
    """Four normalised stages with a 0.01 floor scale the periphery down at every stage and renormalise, so the
    peripheral cells of the stem's output hardly depend on the peripheral pixels; the edge stem's cells do, and it
    leaves the centre cells exactly as they were."""
    kwargs = tiny_config_kwargs(stem_channels=(8, 8, 8, 8), stem_kernel_sizes=(3, 3, 3, 3), stem_strides=(2, 2, 2, 2),
                                center_sigmas=(0.2, 0.3, 0.4, 0.5), stem_norm_type="batch",
                                center_weighting_floor=0.01, channel_pruning_type="none", image_size=128,
                                image_tokenizer_grid_size=8)
    torch.manual_seed(0)
    plain = CenterFocusForConditionalGeneration(CenterFocusConfig(**kwargs)).model.encoder.vision_stem.eval()
    torch.manual_seed(0)
    edged = CenterFocusForConditionalGeneration(CenterFocusConfig(**kwargs, edge_compensation_type="stem"))
    edged = edged.model.encoder.vision_stem.eval()
    edged.load_state_dict(plain.state_dict(), strict=False)  # the same main stem; the branch is extra
    # batch statistics of the images themselves, as in training, so that the normalisation re-centres every stage
    for module in (*plain.modules(), *edged.modules()):
        if isinstance(module, torch.nn.BatchNorm2d):
            module.train()
    generator = torch.Generator().manual_seed(1)
    pixels = torch.rand(4, 3, 128, 128, generator=generator)
    changed = pixels.clone()
    center = modeling.center_region_mask(8, 8, 0.5)
    changed[:, :, :16, :] = torch.rand(4, 3, 16, 128, generator=generator)  # the top band of pixels only
    with torch.no_grad():
        before_plain, after_plain = plain(pixels), plain(changed)
        before_edged, after_edged = edged(pixels), edged(changed)
    assert before_edged.shape == before_plain.shape == (4, 8, 8, 8)
    # the same main-stem operations on the same input in one process, plus exactly 0 * branch in the centre
    assert torch.equal(before_edged[:, :, center], before_plain[:, :, center])  # the branch adds outside only
    top = torch.zeros(8, 8, dtype=torch.bool)
    top[0] = True
    # how much the top cells move when the top pixels change, relative to their own scale
    plain_change = (after_plain - before_plain)[:, :, top].abs().mean() / before_plain[:, :, top].abs().mean()
    edged_change = (after_edged - before_edged)[:, :, top].abs().mean() / before_edged[:, :, top].abs().mean()
    # measured 120-980x over five initialisation seeds (plain: 0.1-0.9% of the cells' scale, far above float32
    # rounding; edged: 90-110%), so 10x fails only if the branch stops reading the pixels or the weighting stops
    # compounding
    assert edged_change > 10 * plain_change


@pytest.mark.parametrize("blocks", [0, 1, 2])
def test_edge_stem_residual_blocks_widen_what_one_cell_sees(blocks):
    """A cell of the edge branch depends on exactly the pixels of its receptive field: the plain stages give
    `1 + sum((k - 1) * stride so far)`, and every residual block adds two 3x3 convolutions at the total stride."""
    config = CenterFocusConfig(**tiny_config_kwargs(stem_channels=(8, 8, 8), stem_kernel_sizes=(3, 3, 3),
                                                    stem_strides=(2, 2, 2), center_sigmas=(0.2, 0.3, 0.4),
                                                    image_size=128, image_tokenizer_grid_size=8,
                                                    edge_compensation_type="stem", edge_stem_residual_blocks=blocks))
    torch.manual_seed(0)
    branch = modeling.CenterFocusEdgeStem(config).double()
    for module in branch.modules():  # residual blocks start as the identity; give their last layer weight
        if isinstance(module, modeling.CenterFocusResidualBlock):
            torch.nn.init.normal_(module.conv2.weight)
    pixels = torch.rand(1, 3, 128, 128, dtype=torch.float64, requires_grad=True)
    features = torch.zeros(1, 8, 16, 16, dtype=torch.float64)
    out = branch(features, features, pixels)
    out[0, :, 0, 8].sum().backward()  # a top cell, away from the left and right borders
    columns = (pixels.grad[0].abs().sum(dim=(0, 1)) > 0).nonzero().flatten()
    expected = 1 + (2 * 1 + 2 * 2 + 2 * 4) + blocks * 2 * (2 * 8)
    assert columns.max() - columns.min() + 1 == expected


def test_periphery_keeps_exactly_the_configured_fraction_of_channels():
    torch.manual_seed(0)
    pruning = modeling.CenterFocusChannelPruning(channels=16, keep_ratio=0.25, reduction=4, center_region_size=0.5)
    pruning.eval()
    features = torch.rand(3, 16, 8, 8) + 0.1
    multiplier = pruning.channel_mask(features)
    output = pruning(features)
    center = modeling.center_region_mask(8, 8, 0.5)
    nonzero = (output != 0).sum(dim=1)  # (B, h, w) channels kept per position
    assert (nonzero[:, ~center] == 4).all()
    assert (nonzero[:, center] == 16).all()
    # the kept channels are the top-k of the gate, computed independently
    gate = torch.sigmoid(pruning.fc2(F.relu(pruning.fc1(features.mean(dim=(2, 3))))))
    expected = torch.zeros_like(gate).scatter(1, gate.topk(4, dim=1).indices, 1.0).bool()
    assert (gate.sort(dim=1, descending=True).values[:, 3:5].diff(dim=1).abs() > 1e-5).all()  # no near-ties here
    corner = multiplier[:, :, 0, 0] != 0
    assert torch.equal(corner, expected)
    # deterministic at inference
    assert torch.equal(pruning(features), output)


def test_channel_pruning_breaks_ties_by_channel_index():
    pruning = modeling.CenterFocusChannelPruning(channels=8, keep_ratio=0.5, reduction=2, center_region_size=0.5)
    with torch.no_grad():
        for layer in (pruning.fc1, pruning.fc2):
            layer.weight.zero_()
            layer.bias.zero_()  # every gate value is exactly sigmoid(0) = 0.5
    corner = pruning.channel_mask(torch.rand(2, 8, 6, 6))[:, :, 0, 0] != 0
    assert corner.tolist() == [[True] * 4 + [False] * 4] * 2


def test_channel_pruning_is_straight_through_in_training():
    torch.manual_seed(0)
    pruning = modeling.CenterFocusChannelPruning(channels=8, keep_ratio=0.5, reduction=2, center_region_size=0.5)
    features = torch.rand(2, 8, 6, 6)
    output = pruning.train()(features)
    assert ((output[:, :, 0, 0] != 0).sum(1) == 4).all()
    output.sum().backward()
    assert pruning.fc1.weight.grad.abs().sum() > 0


def test_loss_ignores_minus_100_and_matches_float64_cross_entropy():
    model = _model().eval()
    batch = _batch(model.config)
    outputs = model(**batch)
    logits = outputs.logits.double()
    labels = batch["labels"]
    valid = labels != -100
    reference = F.cross_entropy(logits[valid], labels[valid])
    torch.testing.assert_close(outputs.loss.double(), reference, rtol=1e-5, atol=1e-6)
    # decoder inputs are labels shifted right once (no second shift inside the loss)
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels)
    assert (decoder_input_ids[:, 0] == model.config.decoder_start_token_id).all()
    assert torch.equal(decoder_input_ids[1, 1:], labels[1, :-1])
    assert (decoder_input_ids[0, -1] == model.config.pad_token_id)


def test_auxiliary_losses_add_to_the_caption_loss():
    model = _model(contrastive_loss_weight=0.5, center_loss_weight=0.25).eval()
    outputs = model(**_batch(model.config))
    expected = outputs.lm_loss + 0.5 * outputs.contrastive_loss + 0.25 * outputs.center_loss
    torch.testing.assert_close(outputs.loss, expected)
    assert outputs.contrastive_loss > 0 and outputs.center_loss > 0


def test_word_loss_is_multiple_instance_word_detection_in_float64():
    # reference with explicit loops over images, words and tokens, in float64
    model = _model(word_loss_weight=0.5).double().eval()
    batch = _batch(model.config, batch_size=3, target_length=6)
    batch["labels"][0, 2] = batch["labels"][0, 1]  # a repeated word counts once
    batch["labels"][1, 4:] = -100  # ignored positions name no word
    outputs = model(**batch)
    image_states = outputs.encoder_last_hidden_state[:, :model.config.num_image_tokens]
    embedding = model.get_input_embeddings().weight
    losses = []
    for b in range(image_states.shape[0]):
        token_logits = model.word_head(image_states[b]) @ embedding.t()  # (N, V)
        n = token_logits.shape[0]
        scores = torch.stack([torch.log(sum(torch.exp(token_logits[i, w]) for i in range(n)) / n)
                              for w in range(token_logits.shape[1])])
        log_probs = scores - torch.log(torch.exp(scores).sum())
        words = sorted({int(t) for t in batch["labels"][b] if t != -100})
        losses.append(-sum(log_probs[w] for w in words) / len(words))
    torch.testing.assert_close(outputs.word_loss, torch.stack(losses).mean(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(outputs.loss, outputs.lm_loss + 0.5 * outputs.word_loss, rtol=1e-12, atol=1e-12)
    outputs.loss.backward()
    assert model.model.encoder.vision_stem.stages[0].conv.weight.grad.abs().sum() > 0


def test_image_summary_reads_where_the_tokens_are_in_float64():
    # the read-out is one linear map of the flattened tokens, added to the centre tokens only: a permutation of the
    # tokens, which attention pooling cannot tell apart, changes it
    from centerfocus.modeling_centerfocus import CenterFocusImageSummary

    config = CenterFocusConfig(**tiny_config_kwargs(image_summary_type="flatten", image_summary_dim=3))
    torch.manual_seed(0)
    summary = CenterFocusImageSummary(config).double()
    tokens = torch.randn(2, config.num_image_tokens, config.hidden_size, dtype=torch.float64)
    is_center = torch.arange(config.num_image_tokens) % 3 == 0
    narrow, proj = summary.narrow, summary.proj
    expected = torch.stack([
        proj.bias + sum(proj.weight[:, n * 3:(n + 1) * 3] @ (narrow.weight @ tokens[b, n] + narrow.bias)
                        for n in range(config.num_image_tokens))
        for b in range(2)])  # (B, D)
    out = summary(tokens, is_center)
    torch.testing.assert_close(out[:, is_center], tokens[:, is_center] + expected[:, None], rtol=1e-12, atol=1e-12)
    assert torch.equal(out[:, ~is_center], tokens[:, ~is_center])
    swapped = tokens[:, torch.randperm(config.num_image_tokens, generator=torch.Generator().manual_seed(1))]
    assert ((summary(swapped, is_center) - swapped)[:, 0] - (out - tokens)[:, 0]).abs().max() > 1e-3


def test_eager_and_sdpa_agree():
    batch = _batch(CenterFocusConfig(**tiny_config_kwargs()))
    outputs = {}
    for implementation in ("eager", "sdpa"):
        model = _model().eval()  # the batch pads a prompt position: a masked path in every encoder layer
        model.set_attn_implementation(implementation)
        outputs[implementation] = model(**batch).logits
    # explicit softmax against a fused kernel: the same sums in another order in every attention of 4 layers; 512 ulps
    # of the largest logit (6e-5 of it) bounds that, a wrong mask moves logits by O(1)
    assert_close_at_scale(outputs["eager"], outputs["sdpa"], ulps=512)


def test_output_attentions_and_hidden_states():
    model = _model().eval()
    config = model.config
    outputs = model(**_batch(config), output_attentions=True, output_hidden_states=True)
    s = config.num_image_tokens + 3
    assert len(outputs.encoder_attentions) == config.encoder_layers
    assert outputs.encoder_attentions[0].shape == (2, 4, s, s)
    assert len(outputs.decoder_attentions) == config.decoder_layers
    assert outputs.decoder_attentions[0].shape == (2, 4, 5, 5)
    assert outputs.cross_attentions[0].shape == (2, 4, 5, s)
    assert len(outputs.encoder_hidden_states) == config.encoder_layers + 1
    assert len(outputs.decoder_hidden_states) == config.decoder_layers + 1
    # causal: no weight on future decoder positions; padding: no weight on the padded prompt position
    assert outputs.decoder_attentions[0][:, :, 0, 1:].abs().max() == 0
    assert outputs.cross_attentions[0][0, :, :, s - 1].abs().max() == 0
    torch.testing.assert_close(outputs.encoder_attentions[0].sum(-1), torch.ones(2, 4, s))


def test_gradient_checkpointing_leaves_loss_and_gradients_unchanged():
    batch = _batch(CenterFocusConfig(**tiny_config_kwargs()))
    results = []
    for checkpointing in (False, True):
        model = _model().train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            assert model.model.encoder.layers[0].gradient_checkpointing
        loss = model(**batch).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0])
    for name, grad in results[0][1].items():
        # the same ops recomputed (checkpointing) or decomposed (aot_eager): rounding of gradients accumulated over
        # the batch and tokens; 512 ulps of each gradient's largest entry
        assert_close_at_scale(grad, results[1][1][name], ulps=512, msg=name)


def test_padded_batch_matches_single_examples():
    model = _model().eval()
    config = model.config
    generator = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(2, 3, 32, 32, generator=generator)
    prompts = [torch.tensor([[5, 6, 7, 8]]), torch.tensor([[9, 10]])]
    input_ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    decoder_input_ids = torch.tensor([[1, 11, 12], [1, 13, 14]])
    batched = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                    decoder_input_ids=decoder_input_ids).logits
    for i in range(2):
        single = model(pixel_values=pixel_values[i:i + 1], input_ids=prompts[i],
                       decoder_input_ids=decoder_input_ids[i:i + 1]).logits
        # another batch shape, another GEMM blocking: rounding only (512 ulps of the largest logit); a padding leak
        # moves logits by O(1)
        assert_close_at_scale(batched[i:i + 1], single, ulps=512)
    assert config.pad_token_id == 0


def test_weights_are_tied():
    model = _model()
    shared = model.get_input_embeddings().weight
    assert model.lm_head.weight.data_ptr() == shared.data_ptr()
    assert model.model.encoder.embed_tokens.weight.data_ptr() == shared.data_ptr()
    assert model.model.decoder.embed_tokens.weight.data_ptr() == shared.data_ptr()
    model.resize_token_embeddings(80)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert model.lm_head.weight.shape[0] == 80


def test_base_model_takes_the_heads_arguments_by_name_and_gives_the_heads_states():
    """The base model groups its arguments by what they feed and takes all but the image by name; the head passes
    them on by name, so each of the base model's arguments must exist in the head under the same name and default."""
    head = inspect.signature(CenterFocusForConditionalGeneration.forward).parameters
    base = inspect.signature(modeling.CenterFocusModel.forward).parameters
    for name, parameter in base.items():
        assert name in head, name
        assert parameter.default is head[name].default, name
    assert [name for name, p in base.items() if p.kind is p.POSITIONAL_OR_KEYWORD] == ["self", "pixel_values"]

    model = _model()
    batch = _batch(model.config)
    with torch.no_grad():
        expected = model(**batch, output_hidden_states=True).decoder_hidden_states[-1]
        base_states = model.model(batch["pixel_values"], input_ids=batch["input_ids"],
                                  attention_mask=batch["attention_mask"],
                                  decoder_input_ids=model.prepare_decoder_input_ids_from_labels(batch["labels"]))
    torch.testing.assert_close(base_states.last_hidden_state, expected, rtol=0, atol=0)
    with pytest.raises(TypeError, match="positional"):
        model.model(batch["pixel_values"], batch["input_ids"])


def test_learned_position_embedding_is_resized_on_load():
    small = _model(image_tokenizer_grid_size=4)
    large = _model(image_tokenizer_grid_size=8)
    state = {k: v for k, v in small.state_dict().items() if "position_embedding" in k}
    table = large.model.encoder.image_tokenizer.position_embedding
    stored = state["model.encoder.image_tokenizer.position_embedding.weight"]  # (4 * 4, 32)
    table.load_state_dict({"weight": stored})
    expected = F.interpolate(stored.t().reshape(1, 32, 4, 4), size=(8, 8), mode="bicubic", align_corners=False)
    torch.testing.assert_close(table.weight.detach(), expected.reshape(32, 64).t())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pixel_values": torch.randn(3, 32, 32)}, "shape"),
        ({"pixel_values": torch.randn(1, 3, 48, 48)}, "num_channels, height, width"),
        ({"pixel_values": torch.randn(1, 1, 32, 32)}, "num_channels, height, width"),
        ({"pixel_values": torch.zeros(1, 3, 32, 32, dtype=torch.long)}, "floating point"),
        ({"pixel_values": torch.randn(2, 3, 32, 32), "input_ids": torch.ones(3, 4, dtype=torch.long)}, "Batch size"),
        ({"pixel_values": torch.randn(1, 3, 32, 32), "input_ids": torch.ones(1, 4, dtype=torch.long),
          "attention_mask": torch.ones(1, 5, dtype=torch.long)}, "attention_mask"),
        ({"pixel_values": None}, "pixel_values"),
    ],
)
def test_bad_model_inputs_raise_value_error(kwargs, message):
    model = _model().eval()
    with pytest.raises(ValueError, match=message):
        model(decoder_input_ids=torch.ones(kwargs["pixel_values"].shape[0] if kwargs["pixel_values"] is not None
                                           and kwargs["pixel_values"].ndim == 4 else 1, 2, dtype=torch.long), **kwargs)


def test_non_autoregressive_output_length_follows_the_length_prediction():
    model = _model(decoder_type="non_autoregressive").eval()
    model.config.eos_token_id = model.config.vocab_size - 1
    with torch.no_grad():
        model.lm_head.weight[-1] = -100.0  # the (stand-in) eos token is never predicted: no early cut
        model.length_head.weight.zero_()
        model.length_head.bias.fill_(-10.0)
        model.length_head.bias[5] = 10.0  # every caption: 5 tokens
    pixel_values = torch.randn(3, 3, 32, 32)
    encoder_outputs = model.get_encoder()(pixel_values)
    assert model.predict_lengths(encoder_outputs).tolist() == [5, 5, 5]
    output = model.generate(pixel_values)
    assert output.shape == (3, 6) and (output[:, 1:] != model.config.pad_token_id).all()
    with torch.no_grad():
        model.length_head.bias[5] = -10.0
        model.length_head.bias[3] = 10.0
        model.length_head.bias[7] = 9.0
    lengths = model.predict_lengths(model.get_encoder()(pixel_values))
    output = model.generate(pixel_values, nar_iterations=2)
    assert output.shape[1] == 1 + int(lengths.max())
    assert ((output[:, 1:] != model.config.pad_token_id).sum(1) == lengths).all()


def test_non_autoregressive_refinement_changes_only_low_confidence_tokens():
    """Later passes may only rewrite positions that were re-masked; a single pass equals plain argmax decoding."""
    model = _model(decoder_type="non_autoregressive").eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    one_pass = model.generate(pixel_values, nar_iterations=1)
    encoder = model.get_encoder()(pixel_values)
    lengths = model.predict_lengths(encoder)
    length = int(lengths.max())
    valid = (torch.arange(length)[None, :] < lengths[:, None]).long()
    hidden = model.model.decoder(inputs_embeds=model.mask_embedding.expand(2, length, -1), attention_mask=valid,
                                 encoder_hidden_states=encoder.last_hidden_state, use_cache=False)[0]
    expected = model.lm_head(hidden).argmax(-1)
    for row in range(2):
        n = int(lengths[row])
        got = one_pass[row, 1:1 + n]
        eos = (expected[row, :n] == model.config.eos_token_id).nonzero()
        cut = int(eos[0]) if len(eos) else n
        assert torch.equal(got[:cut], expected[row, :cut])
    # a second pass rewrites only positions re-masked as the least confident half of each caption
    two_passes = model.generate(pixel_values, nar_iterations=2)
    confidence = model.lm_head(hidden).softmax(-1).max(-1).values
    changed_any = False
    for row in range(2):
        n = int(lengths[row])
        low = confidence[row, :n].argsort().argsort() < n // 2
        changed = two_passes[row, 1:1 + n] != one_pass[row, 1:1 + n]
        assert not (changed & ~low).any(), row
        changed_any |= bool(changed.any())
    assert changed_any


def test_non_autoregressive_projects_the_encoder_once_per_generate():
    """Mask-predict passes reuse the cross-attention keys/values of the first pass."""
    model = _model(decoder_type="non_autoregressive").eval()
    calls = []
    model.model.decoder.layers[0].cross_attn.k_proj.register_forward_hook(lambda *_: calls.append(1))
    model.generate(torch.randn(2, 3, 32, 32), nar_iterations=4)
    assert len(calls) == 1


def test_training_forward_compiles_to_one_graph_with_unchanged_results():
    """torch.compile-friendliness: the whole training forward (vision stem, encoder, decoder, losses) traces as one
    graph (`fullgraph=True` raises on any graph break), and loss and gradients equal eager mode."""
    import torch._dynamo

    batch = _batch(CenterFocusConfig(**tiny_config_kwargs()))
    results = []
    for compiled in (False, True):
        model = _model().train()
        forward = torch.compile(model, backend="aot_eager", fullgraph=True) if compiled else model
        loss = forward(**batch).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    torch._dynamo.reset()
    torch.testing.assert_close(results[0][0], results[1][0])
    for name, grad in results[0][1].items():
        # the same ops recomputed (checkpointing) or decomposed (aot_eager): rounding of gradients accumulated over
        # the batch and tokens; 512 ulps of each gradient's largest entry
        assert_close_at_scale(grad, results[1][1][name], ulps=512, msg=name)


def test_cached_generation_with_a_compiled_forward_matches_eager():
    """Every decoding step (encoder once, then the cached decoder with `EncoderDecoderCache`) traces without a graph
    break, and greedy captions are unchanged."""
    import torch._dynamo

    model = _model().eval()
    pixel_values = torch.randn(2, 3, model.config.image_size, model.config.image_size)
    with torch.no_grad():
        eager = model.generate(pixel_values=pixel_values, max_new_tokens=6, min_new_tokens=6)
        model.forward = torch.compile(model.forward, backend="aot_eager", fullgraph=True)
        compiled = model.generate(pixel_values=pixel_values, max_new_tokens=6, min_new_tokens=6)
    torch._dynamo.reset()
    assert torch.equal(eager, compiled)


@pytest.mark.parametrize("option", [{"num_return_sequences": 2, "num_beams": 2}, {"return_dict_in_generate": True}])
def test_non_autoregressive_generate_refuses_options_that_change_the_output(option):
    model = _model(decoder_type="non_autoregressive").eval()
    with torch.no_grad(), pytest.raises(ValueError, match=r"one caption per image: `num_return_sequences` > 1 and"):
        model.generate(torch.randn(2, 3, 32, 32), **option)


def test_non_autoregressive_generate_ignores_beam_options():
    model = _model(decoder_type="non_autoregressive").eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model.generate(pixel_values)
        with_beams = model.generate(pixel_values, num_beams=3)
    assert torch.equal(plain, with_beams)


def test_set_attn_implementation_switches_every_layer_at_run_time():
    model = _model().eval()
    pixel_values, decoder_input_ids = torch.randn(2, 3, 32, 32), torch.tensor([[1, 5, 6], [1, 7, 8]])
    with torch.no_grad():
        sdpa = model(pixel_values=pixel_values, decoder_input_ids=decoder_input_ids).logits
        model.set_attn_implementation("eager")
        assert {m.config._attn_implementation for m in model.modules() if hasattr(m, "config")} == {"eager"}
        calls = []
        hook = torch.nn.functional.scaled_dot_product_attention
        torch.nn.functional.scaled_dot_product_attention = lambda *a, **k: calls.append(1) or hook(*a, **k)
        try:
            eager = model(pixel_values=pixel_values, decoder_input_ids=decoder_input_ids).logits
        finally:
            torch.nn.functional.scaled_dot_product_attention = hook
        assert not calls  # the explicit softmax path ran
        assert_close_at_scale(eager, sdpa, ulps=512)  # as in test_eager_and_sdpa_agree
        model.set_attn_implementation("sdpa")
        assert model.config._attn_implementation == "sdpa"


def test_a_float64_model_keeps_its_loss_in_float64():
    model = _model(contrastive_loss_weight=0.0, center_loss_weight=0.0).double().eval()
    pixel_values, labels = torch.randn(2, 3, 32, 32, dtype=torch.float64), torch.tensor([[5, 6, 2], [7, 2, -100]])
    with torch.no_grad():
        output = model(pixel_values=pixel_values, labels=labels)
    expected = torch.nn.functional.cross_entropy(output.logits.reshape(-1, output.logits.shape[-1]), labels.reshape(-1),
                                                 ignore_index=-100)
    assert output.logits.dtype == torch.float64 and output.loss.dtype == torch.float64
    torch.testing.assert_close(output.loss, expected, rtol=1e-12, atol=1e-12)


def _edge_classifier(**overrides):
    config = CenterFocusConfig(**tiny_config_kwargs(stem_norm_type="batch", edge_compensation_type="stem",
                                                    num_labels=5, **overrides))
    torch.manual_seed(0)
    return modeling.CenterFocusForImageClassification(config).eval()


def test_edge_pixel_values_add_the_edge_stems_own_classification_loss():
    """Stage 1 of the edge stem: the loss gains exactly the cross-entropy of the edge head on the pooled edge-stem
    features of `edge_pixel_values`, computed here from the modules by hand; the centre path is unchanged."""
    model = _edge_classifier()
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(3, 3, model.config.image_size, model.config.image_size, generator=generator)
    small = torch.rand(3, 3, 16, 16, generator=generator)
    labels = torch.tensor([0, 3, 4])
    with torch.no_grad():
        plain = model(pixel_values=pixels, labels=labels)
        both = model(pixel_values=pixels, labels=labels, edge_pixel_values=small)
        features = model.vision_stem.edge_compensation.layers(small).double().mean(dim=(2, 3))
        head = model.edge_classifier
        reference = F.cross_entropy(features @ head.weight.double().t() + head.bias.double(), labels)
    assert torch.equal(both.logits, plain.logits)
    # float32 layers against their float64 head: the difference is rounding of O(1) logits, ~1e-6
    assert (both.loss - plain.loss).double().item() == pytest.approx(reference.item(), abs=1e-4)
    both_train = model.train()(pixel_values=pixels, labels=labels, edge_pixel_values=small)
    both_train.loss.backward()
    assert model.edge_classifier.weight.grad.abs().sum() > 0
    assert model.vision_stem.edge_compensation.layers[0].weight.grad.abs().sum() > 0


def test_edge_pixel_values_without_an_edge_stem_or_with_bad_shapes_raise():
    config = CenterFocusConfig(**tiny_config_kwargs(num_labels=5))
    model = modeling.CenterFocusForImageClassification(config)
    pixels = torch.rand(2, 3, config.image_size, config.image_size)
    with pytest.raises(ValueError, match="edge_compensation_type"):
        model(pixel_values=pixels, labels=torch.tensor([0, 1]), edge_pixel_values=torch.rand(2, 3, 16, 16))
    model = _edge_classifier()
    with pytest.raises(ValueError, match="edge_pixel_values"):
        model(pixel_values=pixels, labels=torch.tensor([0, 1]), edge_pixel_values=torch.rand(3, 3, 16, 16))
    with pytest.raises(ValueError, match="labels"):
        model(pixel_values=pixels, edge_pixel_values=torch.rand(2, 3, 16, 16))


def test_generate_checks_the_decoder_ids_once_not_at_every_step(monkeypatch):
    # the check reads ids on the host: at every step it would synchronise a GPU once per generated token
    import centerfocus.modeling_centerfocus as modeling

    calls = []
    check = modeling.check_token_ids
    monkeypatch.setattr(modeling, "check_token_ids", lambda name, *args, **kwargs: (calls.append(name),
                                                                                      check(name, *args, **kwargs)))
    model = _model().eval()
    pixel_values = _batch(model.config)["pixel_values"]
    generated = model.generate(pixel_values=pixel_values, max_new_tokens=6, min_new_tokens=6)
    assert generated.shape[1] >= 6
    assert calls.count("decoder_input_ids") == 1
