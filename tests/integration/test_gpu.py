"""What only a GPU shows (`-m gpu`; `benchmarks/gpu_check.sh` runs them where there is one, and they skip without
CUDA): greedy tokens on CUDA equal the CPU's, the whole model in half precision captions, and mixed-precision
training steps stay finite and lower the loss."""

import pytest
import torch

from centerfocus import CenterFocusConfig, CenterFocusForConditionalGeneration

from ..conftest import tiny_config_kwargs


pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu_check.sh)")]


def _model(**overrides) -> CenterFocusForConditionalGeneration:
    torch.manual_seed(0)
    return CenterFocusForConditionalGeneration(CenterFocusConfig(**tiny_config_kwargs(
        initializer_range=1.0, **overrides))).eval()


def _pixels(batch=4, size=32):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("overrides", [{}, {"image_tokenizer_type": "foveated", "edge_compensation_type": "stem",
                                            "stem_norm_type": "batch", "image_summary_type": "flatten"}])
def test_cuda_greedy_tokens_equal_the_cpus(overrides):
    model = _model(**overrides)
    with torch.no_grad():
        expected = model.generate(pixel_values=_pixels(), max_new_tokens=8)
        actual = model.cuda().generate(pixel_values=_pixels().cuda(), max_new_tokens=8).cpu()
    # well-separated logits (initializer_range 1.0): TF32 or kernel differences move them far less than the margins
    assert torch.equal(actual, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_model_in_half_precision_captions_like_float32(dtype):
    model = _model()
    with torch.no_grad():
        expected = model.cuda().generate(pixel_values=_pixels().cuda(), max_new_tokens=8)
        half = model.to(dtype).generate(pixel_values=_pixels().cuda().to(dtype), max_new_tokens=8)
    assert half.shape == expected.shape
    assert (half == expected).float().mean() > 0.9  # half precision may flip a near-tie, not the captions


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mixed_precision_training_steps_lower_the_loss(dtype):
    model = _model().cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    pixels, labels = _pixels(8).cuda(), torch.randint(4, 64, (8, 6), generator=torch.Generator().manual_seed(2)).cuda()
    losses = []
    for _ in range(10):
        with torch.autocast("cuda", dtype=dtype):
            loss = model(pixel_values=pixels, labels=labels).loss
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
