"""Wrong model inputs (rank, dtype, image size, batch mismatches) are refused with ValueError at the entry point:
`model(...)`, `model.generate(...)` and the image-to-text pipeline. Each case is a row of docs/robustness.md."""

import json
import shutil

import numpy as np
import pytest
import torch
from transformers import pipeline

from ..conftest import make_image, pipeline_captions


pytestmark = pytest.mark.timeout(120)


def _inputs(case: str) -> dict:
    good = torch.zeros(2, 3, 32, 32)
    prompt = torch.tensor([[1, 5, 2], [1, 6, 2]])
    return {
        "missing-pixel-values": {"pixel_values": None},
        "rank-3": {"pixel_values": torch.zeros(3, 32, 32)},
        "rank-5": {"pixel_values": torch.zeros(1, 2, 3, 32, 32)},
        "integer-dtype": {"pixel_values": torch.zeros(2, 3, 32, 32, dtype=torch.uint8)},
        "wrong-image-size": {"pixel_values": torch.zeros(2, 3, 48, 48)},
        "wrong-channels": {"pixel_values": torch.zeros(2, 1, 32, 32)},
        "channels-last": {"pixel_values": torch.zeros(2, 32, 32, 3)},
        "batch-mismatch": {"pixel_values": good, "input_ids": prompt[:1]},
        "attention-mask-mismatch": {"pixel_values": good, "input_ids": prompt,
                                    "attention_mask": torch.ones(2, 5, dtype=torch.long)},
        "prompt-too-long": {"pixel_values": good, "input_ids": torch.ones(2, 65, dtype=torch.long)},
    }[case]


CASES = {
    "missing-pixel-values": r"`pixel_values` is required",
    "rank-3": r"`pixel_values` must have shape \(batch_size, num_channels, height, width\), got shape \(3, 32, 32\)",
    "rank-5": r"`pixel_values` must have shape \(batch_size, num_channels, height, width\)",
    "integer-dtype": r"`pixel_values` must be a floating point tensor, got dtype torch.uint8",
    "wrong-image-size": r"\(num_channels, height, width\) = \(3, 32, 32\) for this model, got \(3, 48, 48\)",
    "wrong-channels": r"= \(3, 32, 32\) for this model, got \(1, 32, 32\)",
    "channels-last": r"= \(3, 32, 32\) for this model, got \(32, 32, 3\)",
    "batch-mismatch": r"Batch size mismatch: `pixel_values` has 2 images but the prompt \(`input_ids`\) has 1 rows",
    "attention-mask-mismatch": r"`attention_mask` shape \(2, 5\) does not match the prompt \(`input_ids`\) shape",
    "prompt-too-long": r"The prompt has 65 tokens, more than `max_position_embeddings` \(64\)",
}


@pytest.mark.parametrize("case", list(CASES))
def test_forward_refuses_bad_inputs(tiny_model, case):
    labels = torch.tensor([[5, 6, 2], [5, 6, 2]])
    with torch.no_grad(), pytest.raises(ValueError, match=CASES[case]):
        tiny_model(**_inputs(case), labels=labels)


@pytest.mark.parametrize("case", [c for c in CASES if c != "missing-pixel-values"])
def test_generate_refuses_bad_inputs(tiny_model, case):
    with torch.no_grad(), pytest.raises(ValueError, match=CASES[case]):
        tiny_model.generate(**_inputs(case))


def test_generate_without_pixel_values_is_refused(tiny_model):
    # generate() stands a (batch, 1) start-token tensor in for the missing main input: refused naming pixel_values
    with torch.no_grad(), pytest.raises(ValueError, match=r"generate\(\) needs `pixel_values`"):
        tiny_model.generate(input_ids=torch.tensor([[1, 5, 2]]))


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_refuses_batch_mismatch_with_beams(tiny_model, num_beams):
    inputs = _inputs("batch-mismatch")
    with torch.no_grad(), pytest.raises(ValueError, match="Batch size mismatch"):
        tiny_model.generate(**inputs, num_beams=num_beams)


def test_labels_longer_than_the_decoder_are_refused(tiny_model):
    with pytest.raises(ValueError, match=r"The caption would reach 70 tokens, more than"):
        tiny_model(pixel_values=torch.zeros(1, 3, 32, 32), labels=torch.ones(1, 70, dtype=torch.long))


@pytest.fixture(scope="module")
def mismatched_folder(saved_folder, tmp_path_factory):
    """A saved model whose preprocessor_config.json was edited to a size the model does not take."""
    folder = tmp_path_factory.mktemp("mismatch") / "model"
    shutil.copytree(saved_folder, folder)
    path = folder / "preprocessor_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "size": {"height": 48, "width": 48}}))
    return folder


def test_pipeline_refuses_an_image_size_the_model_does_not_take(mismatched_folder):
    captioner = pipeline("image-text-to-text", model=str(mismatched_folder))
    with pytest.raises(ValueError, match=CASES["wrong-image-size"]):
        pipeline_captions(captioner, make_image(0))


def test_pipeline_refuses_a_bad_image_path_with_transformers_error(saved_folder, tmp_path):
    """The pipeline loads paths with transformers' `load_image` before our processor sees them: its errors are
    PIL's (UnidentifiedImageError is an OSError naming the path) and a missing path is transformers' ValueError."""
    from PIL import UnidentifiedImageError

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    captioner = pipeline("image-text-to-text", model=str(saved_folder))
    with pytest.raises(UnidentifiedImageError, match=r"cannot identify image file .*broken\.png"):
        pipeline_captions(captioner, str(broken))
    with pytest.raises(ValueError, match="Incorrect image source"):
        pipeline_captions(captioner, str(tmp_path / "missing.png"))


def test_pipeline_loads_files_with_transformers_load_image(tmp_path):
    """The pipeline converts files with `load_image` (PIL `convert("RGB")`) before our processor sees them: a
    transparent pixel becomes black there, while `CenterFocusImageProcessor` composites it onto white."""
    import numpy as np
    from PIL import Image
    from transformers.image_utils import load_image

    from centerfocus import CenterFocusImageProcessor

    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "transparent.png")
    assert (np.asarray(load_image(str(tmp_path / "transparent.png"))) == 0).all()
    ours = CenterFocusImageProcessor(size={"height": 4, "width": 4}, do_normalize=False)(
        tmp_path / "transparent.png", return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(ours, 1.0)


@pytest.mark.parametrize("argument", ["labels", "decoder_input_ids"])
def test_decoder_rows_not_matching_the_images_are_refused(tiny_model, argument):
    rows = torch.tensor([[5, 6, 2], [5, 7, 2]])
    with torch.no_grad(), pytest.raises(ValueError, match=r"Batch size mismatch: 3 images but .*2 rows"):
        tiny_model(pixel_values=torch.zeros(3, 3, 32, 32), **{argument: rows})


@pytest.mark.parametrize(("name", "make"), [
    ("labels", lambda v: {"labels": torch.tensor([[3, v, -100, 2]] * 2)}),
    ("decoder_input_ids", lambda v: {"decoder_input_ids": torch.tensor([[1, v + 5]] * 2)}),
    ("input_ids", lambda v: {"input_ids": torch.tensor([[1, -3]] * 2), "decoder_input_ids": torch.ones(2, 1, dtype=torch.long)}),
], ids=["labels", "decoder_input_ids", "input_ids"])
def test_token_ids_outside_the_vocabulary_are_named(tiny_model, tiny_processor, name, make):
    vocab_size = tiny_model.config.vocab_size
    kwargs = make(vocab_size)
    bad = {"labels": vocab_size, "decoder_input_ids": vocab_size + 5, "input_ids": -3}[name]
    with pytest.raises(ValueError, match=rf"`{name}` holds token id {bad}\b.*vocabulary of {vocab_size} ids"):
        tiny_model(**tiny_processor(images=[make_image(0), make_image(1)]), **kwargs)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_non_finite_pixel_values_are_refused_by_forward_and_generate(tiny_model, tiny_processor, value):
    pixel_values = tiny_processor(images=[make_image(0), make_image(1)])["pixel_values"]
    pixel_values[1, 0, 3, 4] = value
    with pytest.raises(ValueError, match=r"`pixel_values` holds 1 NaN or infinite values \(images \[1\]\)"):
        tiny_model(pixel_values=pixel_values, decoder_input_ids=torch.ones(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN or infinite"):
        tiny_model.generate(pixel_values=pixel_values)
    with pytest.raises(ValueError, match="NaN or infinite"):  # the processor, before: a float array with NaN
        tiny_processor(images=[np.full((8, 8, 3), value, dtype=np.float32)])
