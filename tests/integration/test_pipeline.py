"""The captioning pipelines with the package installed and in a fresh process without it: image-text-to-text (with
`text=""` for a plain caption) on both lines, image-to-text on 4.57 (transformers 5 removed that task)."""

import warnings

import pytest
from transformers import pipeline

from ..conftest import only_transformers_4, pipeline_captions
from ..fresh_process import run_without_package


@pytest.fixture(scope="module")
def image_paths(saved_folder, images):
    paths = []
    for i, image in enumerate(images[:2]):
        path = saved_folder.parent / f"pipeline_image_{i}.png"
        image.save(path)
        paths.append(str(path))
    return paths


def _expected(model, processor, images, prompt=None):
    texts = None if prompt is None else [prompt] * len(images)
    output = model.generate(**processor(images=images, text=texts))
    return processor.batch_decode(output, skip_special_tokens=True)


def _captions(outputs):
    return [item[0]["generated_text"] if isinstance(item, list) else item["generated_text"] for item in outputs]


@only_transformers_4
def test_pipeline_in_process(saved_folder, tiny_model, tiny_processor, images, image_paths):
    captioner = pipeline("image-to-text", model=str(saved_folder))
    assert type(captioner.model).__name__ == "CenterFocusForConditionalGeneration"
    expected = _expected(tiny_model, tiny_processor, images[:2])
    assert captioner(images[0])[0]["generated_text"] == expected[0]
    assert captioner(image_paths[1])[0]["generated_text"] == expected[1]
    assert _captions(captioner(images[:2], batch_size=2)) == expected
    assert len(set(expected)) == 2  # different images, different captions

    prompted = _expected(tiny_model, tiny_processor, images[:1], prompt="describe the image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        output = captioner(images[0], prompt="describe the image")[0]["generated_text"]
    assert output == prompted[0]
    assert output != expected[0]


def test_image_text_to_text_pipeline_in_process(saved_folder, tiny_model, tiny_processor, images, image_paths):
    captioner = pipeline("image-text-to-text", model=str(saved_folder))
    assert type(captioner.model).__name__ == "CenterFocusForConditionalGeneration"
    expected = _expected(tiny_model, tiny_processor, images[:2])
    assert pipeline_captions(captioner, images[0]) == expected[:1]
    assert pipeline_captions(captioner, image_paths[1]) == expected[1:]
    assert pipeline_captions(captioner, images[:2], batch_size=2) == expected
    assert len(set(expected)) == 2  # different images, different captions
    prompted = _expected(tiny_model, tiny_processor, images[:1], prompt="describe the image")
    assert pipeline_captions(captioner, images[0], prompt="describe the image") == prompted
    assert prompted != expected[:1]


def test_an_empty_prompt_is_no_prompt(tiny_model, tiny_processor, images):
    # the processor gives an empty prompt no tokens; in a batch with a real prompt, a row of padding
    plain = _expected(tiny_model, tiny_processor, images[:2])
    assert tiny_processor(images=images[:2], text=["", ""])["input_ids"].shape == (2, 0)
    assert _expected(tiny_model, tiny_processor, images[:2], prompt="") == plain
    prompted = _expected(tiny_model, tiny_processor, images[1:2], prompt="describe the image")
    mixed = tiny_model.generate(**tiny_processor(images=images[:2], text=["", "describe the image"]))
    assert tiny_processor.batch_decode(mixed, skip_special_tokens=True) == [plain[0], prompted[0]]


@only_transformers_4
def test_pipeline_image_text_to_text_class_resolves(saved_folder):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(saved_folder)
    captioner = pipeline("image-to-text", model=model, tokenizer=str(saved_folder), image_processor=str(saved_folder))
    assert captioner.model is model


@only_transformers_4
def test_pipeline_in_a_fresh_process_without_the_package(saved_folder, tiny_model, tiny_processor, images,
                                                         image_paths):
    expected = _expected(tiny_model, tiny_processor, images[:2])
    prompted = _expected(tiny_model, tiny_processor, images[:1], prompt="describe the image")
    result = run_without_package(f"""
        import json, warnings
        from PIL import Image
        from transformers import pipeline
        warnings.simplefilter("ignore", FutureWarning)
        captioner = pipeline("image-to-text", model={str(saved_folder)!r}, trust_remote_code=True)
        paths = {image_paths!r}
        single = captioner(Image.open(paths[0]))[0]["generated_text"]
        path = captioner(paths[1])[0]["generated_text"]
        batch = [o[0]["generated_text"] for o in captioner(paths, batch_size=2)]
        prompt = captioner(Image.open(paths[0]), prompt="describe the image")[0]["generated_text"]
        print(json.dumps({{"single": single, "path": path, "batch": batch, "prompt": prompt,
                          "model_module": type(captioner.model).__module__}}))
    """)
    assert result["model_module"].startswith("transformers_modules.")
    assert result["single"] == expected[0]
    assert result["path"] == expected[1]
    assert result["batch"] == expected
    assert result["prompt"] == prompted[0]


def test_image_text_to_text_pipeline_in_a_fresh_process_without_the_package(saved_folder, tiny_model, tiny_processor,
                                                                            images, image_paths):
    expected = _expected(tiny_model, tiny_processor, images[:2])
    prompted = _expected(tiny_model, tiny_processor, images[:1], prompt="describe the image")
    result = run_without_package(f"""
        import json
        from PIL import Image
        from transformers import pipeline
        captioner = pipeline("image-text-to-text", model={str(saved_folder)!r}, trust_remote_code=True)
        paths = {image_paths!r}
        single = captioner(images=Image.open(paths[0]), text="", return_full_text=False)[0]["generated_text"]
        batch = [o["generated_text"] for o in captioner(images=paths, text=["", ""], batch_size=2)]
        prompt = captioner(images=paths[0], text="describe the image", return_full_text=False)[0]["generated_text"]
        print(json.dumps({{"single": single, "batch": batch, "prompt": prompt,
                          "model_module": type(captioner.model).__module__}}))
    """)
    assert result["model_module"].startswith("transformers_modules.")
    assert result["single"] == expected[0]
    assert result["batch"] == expected
    assert result["prompt"] == prompted[0]
