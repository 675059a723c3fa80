"""Shared fixtures: a tiny config, an offline tokenizer, synthetic images and a saved model folder."""

import importlib.util
import os

import numpy as np
import pytest
import torch
from PIL import Image


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from centerfocus import (
    CenterFocusConfig,
    CenterFocusForConditionalGeneration,
    CenterFocusImageProcessor,
    CenterFocusProcessor,
)
from centerfocus._compat import TRANSFORMERS_5
from centerfocus.tools.onnx_folder import has_optimum_onnx
from centerfocus.tools.tokenizer import train_caption_tokenizer


CAPTIONS = [
    "a red circle in the centre",
    "a blue square in the centre with a green triangle at the left",
    "a yellow star in the centre",
    "a green triangle in the centre near a red square",
    "describe the image",
    "what is in the centre",
    "a small white cross at the top right",
    "a big purple circle in the middle of the picture",
]


# transformers 5 removed the image-to-text task: its name opens the image-text-to-text pipeline, which needs text for
# every model. image-text-to-text with text="" captions on both lines (pipeline_captions).
only_transformers_4 = pytest.mark.skipif(
    TRANSFORMERS_5, reason="transformers 5 removed the image-to-text task (its name opens image-text-to-text, which "
    "needs text); the image-text-to-text tests cover 5.x")


def pipeline_captions(captioner, images, prompt: str = "", **kwargs) -> list:
    """Captions from an image-text-to-text pipeline, the call both lines take: `text=""` asks for a plain caption,
    `return_full_text=False` keeps an encoder prompt out of the output."""
    many = isinstance(images, (list, tuple))
    outputs = captioner(images=images, text=[prompt] * len(images) if many else prompt, return_full_text=False,
                        **kwargs)
    return [item[0]["generated_text"] if isinstance(item, list) else item["generated_text"] for item in outputs]


HAS_OPTIMUM_ONNX = has_optimum_onnx()


def pytest_collection_modifyitems(config, items):
    skip_export = pytest.mark.skip(reason="needs Optimum's ONNX stack (optimum-onnx 0.1.0 requires transformers<4.58): "
                                          "`bash scripts/setup.sh export`, then `.venv-export/bin/python -m pytest -m "
                                          "export`, which CI runs")
    skip_slow = pytest.mark.skip(reason="slow test: set RUN_SLOW=1 to run")
    ray_selected = "ray" in (config.getoption("markexpr") or "") and "not ray" not in config.getoption("markexpr")
    has_ray = importlib.util.find_spec("ray") is not None
    skip_ray = pytest.mark.skip(reason=("starts a local Ray instance (a minute or two): run with `-m ray`, as CI's ray "
                                        "step does") if has_ray else "needs the ray extra: `pip install -e '.[ray]'`, "
                                        "then `python -m pytest -m ray`, which CI runs")
    for item in items:  # by marker: `item.keywords` also holds parameter ids (the "export" command's test)
        if item.get_closest_marker("ray") and not (ray_selected and has_ray):
            item.add_marker(skip_ray)
        if item.get_closest_marker("export") and not HAS_OPTIMUM_ONNX:
            item.add_marker(skip_export)
        if item.get_closest_marker("slow") and os.environ.get("RUN_SLOW") != "1":
            item.add_marker(skip_slow)


FLOAT32_EPS = torch.finfo(torch.float32).eps  # 2**-23: one ulp at 1.0


def assert_close_at_scale(actual: torch.Tensor, expected: torch.Tensor, ulps: int, msg=None) -> None:
    """`actual` and `expected` are two float32 computations of the same quantity that differ only in rounding (another
    kernel, accumulation order or batch shape). Rounding errors grow with the values they round, so each element may
    differ by `ulps` float32 ulps of the largest |expected| (the caller argues `ulps` from the computation), not by
    a fixed tolerance tuned on one machine."""
    scale = max(expected.detach().abs().max().item(), torch.finfo(torch.float32).tiny)
    torch.testing.assert_close(actual, expected, rtol=0, atol=ulps * FLOAT32_EPS * scale, msg=msg)


def tiny_config_kwargs(**overrides) -> dict:
    kwargs = dict(
        vocab_size=64, hidden_size=32, num_attention_heads=4, encoder_layers=2, decoder_layers=2,
        intermediate_size=64, max_position_embeddings=64, image_size=32, stem_channels=(8, 16),
        stem_kernel_sizes=(3, 3), stem_strides=(2, 2), image_tokenizer_grid_size=8, foveated_center_size=4,
        foveated_periphery_pool=2, contrastive_dim=16,
    )
    kwargs.update(overrides)
    return kwargs


@pytest.fixture
def tiny_config() -> CenterFocusConfig:
    return CenterFocusConfig(**tiny_config_kwargs())


@pytest.fixture(scope="session")
def tokenizer():
    return train_caption_tokenizer(CAPTIONS, vocab_size=200)


def make_image(seed: int, size: int = 48) -> Image.Image:
    """A deterministic RGB test image: a coloured square on a noisy background."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 80, size=(size, size, 3), dtype=np.uint8)
    color = rng.integers(120, 256, size=3, dtype=np.uint8)
    lo, hi = size // 3, 2 * size // 3
    array[lo:hi, lo:hi] = color
    return Image.fromarray(array)


def write_image_folder(folder, count: int, first_seed: int):
    """An image folder of `count` test images (`img000.png`, ...) with a metadata.jsonl, as `datasets` reads it."""
    import json

    folder.mkdir(parents=True)
    rows = []
    for index in range(count):
        make_image(first_seed + index, size=40).save(folder / f"img{index:03d}.png")
        rows.append({"file_name": f"img{index:03d}.png", "text": "unused"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture(scope="session")
def images() -> list:
    return [make_image(seed) for seed in range(4)]


def build_tiny_model(tokenizer, seed: int = 0, **overrides) -> CenterFocusForConditionalGeneration:
    """A tiny model whose random weights give varied (non-constant) greedy captions."""
    torch.manual_seed(seed)
    config = CenterFocusConfig(**tiny_config_kwargs(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.bos_token_id,
        **{"initializer_range": 1.0, **overrides}))
    model = CenterFocusForConditionalGeneration(config).eval()
    # a saved max_length (not max_new_tokens) is what the 4.57 image-to-text pipeline honours over its 256 default
    model.generation_config.max_length = 9
    return model


@pytest.fixture(scope="session")
def tiny_processor(tokenizer) -> CenterFocusProcessor:
    return CenterFocusProcessor(CenterFocusImageProcessor(size={"height": 32, "width": 32}), tokenizer)


@pytest.fixture(scope="session")
def tiny_model(tokenizer) -> CenterFocusForConditionalGeneration:
    return build_tiny_model(tokenizer)


@pytest.fixture(scope="session")
def saved_folder(tmp_path_factory, tiny_model, tiny_processor):
    folder = tmp_path_factory.mktemp("cf") / "tiny_centerfocus"
    tiny_model.save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    return folder
