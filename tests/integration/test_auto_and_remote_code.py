"""save_pretrained / from_pretrained, Auto classes, and loading with trust_remote_code where the package is absent."""

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
)

from centerfocus import (
    CenterFocusForConditionalGeneration,
    CenterFocusImageProcessor,
    CenterFocusModel,
    CenterFocusProcessor,
)
from centerfocus._compat import auto_model_for_vision2seq

from ..conftest import TRANSFORMERS_5, build_tiny_model
from ..fresh_process import run_without_package


VISION2SEQ_NAME = "AutoModelForImageTextToText" if auto_model_for_vision2seq() is None else "AutoModelForVision2Seq"


def _vision2seq():
    if TRANSFORMERS_5:
        pytest.skip("transformers 5 removed AutoModelForVision2Seq (AutoModelForImageTextToText replaces it)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from transformers import AutoModelForVision2Seq
    return AutoModelForVision2Seq


def test_saved_folder_layout(saved_folder):
    names = {p.name for p in saved_folder.iterdir()}
    for required in ("config.json", "generation_config.json", "model.safetensors", "configuration_centerfocus.py",
                     "modeling_centerfocus.py", "image_processing_centerfocus.py", "processing_centerfocus.py",
                     "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert required in names, required
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in names)
    auto_map = json.loads((saved_folder / "config.json").read_text())["auto_map"]
    assert auto_map["AutoConfig"] == "configuration_centerfocus.CenterFocusConfig"
    assert auto_map["AutoModel"] == "modeling_centerfocus.CenterFocusModel"
    for key in ("AutoModelForVision2Seq", "AutoModelForImageTextToText"):
        assert auto_map[key] == "modeling_centerfocus.CenterFocusForConditionalGeneration"
    preprocessor = json.loads((saved_folder / "preprocessor_config.json").read_text())
    assert preprocessor["auto_map"]["AutoImageProcessor"] == "image_processing_centerfocus.CenterFocusImageProcessor"
    # tied embeddings are stored once
    stored = load_file(saved_folder / "model.safetensors")
    assert "lm_head.weight" not in stored and "model.shared.weight" in stored


def test_round_trip_is_bit_exact(saved_folder, tiny_model):
    loaded = CenterFocusForConditionalGeneration.from_pretrained(saved_folder)
    original, reloaded = tiny_model.state_dict(), loaded.state_dict()
    assert original.keys() == reloaded.keys()
    for name, tensor in original.items():
        assert torch.equal(tensor, reloaded[name]), name


@pytest.mark.parametrize("overrides", [
    {"image_tokenizer_type": "grid_pool", "position_embedding_type": "sincos_2d"},
    {"image_tokenizer_type": "foveated", "image_summary_type": "flatten"},
], ids=["grid_pool-sincos", "foveated-summary"])
def test_loading_recomputes_what_the_checkpoint_does_not_hold(tokenizer, tmp_path, overrides):
    # non-persistent buffers (token geometry, attention structure, a fixed position table) are not saved; transformers
    # 5 builds the model on the meta device and leaves them to _init_weights
    model = build_tiny_model(tokenizer, **overrides)
    assert torch.count_nonzero(model.model.encoder.modality_gate.gate.weight) == 0  # the gate starts at exactly 1
    model.save_pretrained(tmp_path)
    for dtype in (None, torch.bfloat16):
        loaded = dict(CenterFocusForConditionalGeneration.from_pretrained(tmp_path, dtype=dtype).named_buffers())
        for name, buffer in model.named_buffers():
            assert torch.equal(loaded[name].to(buffer.dtype), buffer), (name, dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("image_tokenizer_type", ["grid_pool", "foveated"])
def test_loading_in_half_precision_equals_casting_after_loading(tokenizer, tiny_processor, images, tmp_path, dtype,
                                                                image_tokenizer_type):
    # from_pretrained(dtype=...) builds the model under that default dtype: the token geometry must not follow it
    build_tiny_model(tokenizer, image_tokenizer_type=image_tokenizer_type).save_pretrained(tmp_path / "fp32")
    loaded = CenterFocusForConditionalGeneration.from_pretrained(tmp_path / "fp32", dtype=dtype).eval()
    reference = CenterFocusForConditionalGeneration.from_pretrained(tmp_path / "fp32").to(dtype).eval()
    assert loaded.dtype == dtype
    inputs = tiny_processor(images=images)
    decoder_input_ids = torch.ones(len(images), 3, dtype=torch.long)
    with torch.no_grad():
        assert torch.equal(loaded(**inputs, decoder_input_ids=decoder_input_ids).logits,
                           reference(**inputs, decoder_input_ids=decoder_input_ids).logits)
        assert torch.equal(loaded.generate(**inputs, max_new_tokens=4), reference.generate(**inputs, max_new_tokens=4))
    reference.save_pretrained(tmp_path / "half")  # its config.json records the dtype, which "auto" reads back
    assert CenterFocusForConditionalGeneration.from_pretrained(tmp_path / "half", dtype="auto").dtype == dtype


@pytest.mark.parametrize("auto_class", ["vision2seq", "image_text_to_text"])
def test_auto_model_classes_load_the_folder(saved_folder, tiny_model, tiny_processor, images, auto_class):
    cls = _vision2seq() if auto_class == "vision2seq" else AutoModelForImageTextToText
    model = cls.from_pretrained(saved_folder).eval()
    assert type(model) is CenterFocusForConditionalGeneration
    inputs = tiny_processor(images=images)
    assert torch.equal(model.generate(**inputs), tiny_model.generate(**inputs))


def test_auto_model_config_processor(saved_folder, tiny_model):
    assert type(AutoConfig.from_pretrained(saved_folder)).__name__ == "CenterFocusConfig"
    base = AutoModel.from_pretrained(saved_folder)
    assert type(base) is CenterFocusModel
    for name, tensor in base.state_dict().items():
        assert torch.equal(tensor, tiny_model.model.state_dict()[name]), name
    processor = AutoProcessor.from_pretrained(saved_folder)
    assert type(processor) is CenterFocusProcessor
    assert type(AutoImageProcessor.from_pretrained(saved_folder)) is CenterFocusImageProcessor
    assert AutoTokenizer.from_pretrained(saved_folder)("a red circle")["input_ids"][0] == 1


def test_fresh_process_without_the_package_loads_with_trust_remote_code(saved_folder, tiny_model, tiny_processor,
                                                                        images):
    paths = []
    for i, image in enumerate(images[:2]):
        path = saved_folder.parent / f"image_{i}.png"
        image.save(path)
        paths.append(str(path))
    inputs = tiny_processor(images=images[:2], text=["describe the image", "a red"])
    expected_prompt = tiny_model.generate(**inputs, num_beams=2).tolist()
    expected_plain = tiny_model.generate(pixel_values=inputs["pixel_values"]).tolist()
    result = run_without_package(f"""
        import json, warnings
        import torch
        from PIL import Image
        from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor
        warnings.simplefilter("ignore", FutureWarning)
        import transformers
        vision2seq = getattr(transformers, {VISION2SEQ_NAME!r})  # AutoModelForVision2Seq on 4.57 only
        folder = {str(saved_folder)!r}
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        model = vision2seq.from_pretrained(folder, trust_remote_code=True).eval()
        itt = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
        base = AutoModel.from_pretrained(folder, trust_remote_code=True)
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        images = [Image.open(p) for p in {paths!r}]
        inputs = processor(images=images, text=["describe the image", "a red"])
        print(json.dumps({{
            "modules": [type(x).__module__ for x in (config, model, base, processor, processor.image_processor)],
            "classes": [type(x).__name__ for x in (model, itt, base, processor)],
            "prompt": model.generate(**inputs, num_beams=2).tolist(),
            "plain": itt.generate(pixel_values=inputs["pixel_values"]).tolist(),
        }}))
    """)
    assert all(m.startswith("transformers_modules.") for m in result["modules"])
    assert result["classes"] == ["CenterFocusForConditionalGeneration", "CenterFocusForConditionalGeneration",
                                 "CenterFocusModel", "CenterFocusProcessor"]
    assert result["prompt"] == expected_prompt
    assert result["plain"] == expected_plain


def test_loading_without_trust_remote_code_in_a_fresh_process_is_refused(saved_folder):
    result = run_without_package(f"""
        import json
        from transformers import AutoConfig
        try:
            AutoConfig.from_pretrained({str(saved_folder)!r}, trust_remote_code=False)
            print(json.dumps({{"error": None}}))
        except ValueError as error:
            print(json.dumps({{"error": str(error)}}))
    """)
    assert result["error"] and "trust_remote_code" in result["error"]
