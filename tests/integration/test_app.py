"""`centerfocus app` (centerfocus.tools.app over space_app.CaptionApp), in process: the page's caption functions give
what the model's own `generate()` gives for the same options, and bad input is answered with a clear `gr.Error` /
`gr.Warning`, never a traceback."""

import shutil
import struct
import zlib

import numpy as np
import pytest
import torch

from centerfocus import CenterFocusForConditionalGeneration, CenterFocusProcessor
from centerfocus.tools import cli

from ..conftest import make_image


gr = pytest.importorskip("gradio", reason="the app extra: pip install -e '.[app]'")

from centerfocus.tools import app as app_module  # noqa: E402
from centerfocus.tools import space_app  # noqa: E402


MAX_NEW_TOKENS = 8


@pytest.fixture(scope="module")
def model_folder(saved_folder, tmp_path_factory):
    """The tiny saved model (model, processor, tokenizer) with two example images in `examples/`."""
    folder = tmp_path_factory.mktemp("app") / "model"
    shutil.copytree(saved_folder, folder)
    (folder / "examples").mkdir()
    for seed in (5, 6):
        make_image(seed).save(folder / "examples" / f"example{seed}.png")
    return folder


@pytest.fixture(scope="module")
def blocks(model_folder):
    return app_module.build_app(model_folder)


@pytest.fixture(scope="module")
def caption_app(blocks):
    return blocks.caption_app


@pytest.fixture(scope="module")
def reference(model_folder):
    """The model and processor loaded independently of the app: the captions to compare with."""
    return (CenterFocusForConditionalGeneration.from_pretrained(model_folder).eval(),
            CenterFocusProcessor.from_pretrained(model_folder))


def generate(reference, images, prompt=None, seed=None, **kwargs) -> list[str]:
    model, processor = reference
    inputs = processor(images=images, text=None if prompt is None else [prompt] * len(images))
    if seed is not None:
        torch.manual_seed(seed)
    with torch.inference_mode():
        output = model.generate(**inputs, **kwargs)
    return [c.strip() for c in processor.batch_decode(output, skip_special_tokens=True)]


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for seed in range(4):
        path = folder / f"scene{seed}.png"
        make_image(100 + seed).save(path)
        paths.append(path)
    return paths


def _png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width x height` pixels (PIL refuses to open it as a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4)) + chunk(b"IEND", b"")


def test_build_app_gives_blocks_with_examples(blocks, caption_app, model_folder):
    assert isinstance(blocks, gr.Blocks)
    assert [p.rsplit("/", 1)[-1] for p in caption_app.examples] == ["example5.png", "example6.png"]
    assert "app" in cli._usage()


def test_greedy_caption_equals_generate_and_focus_map_is_drawn(caption_app, reference, image_files):
    from PIL import Image

    caption, focus = caption_app.caption(str(image_files[0]), "", "greedy", max_new_tokens=MAX_NEW_TOKENS)
    expected = generate(reference, [Image.open(image_files[0])], max_new_tokens=MAX_NEW_TOKENS)[0]
    assert caption == expected
    assert expected  # the tiny model's random weights give a non-empty caption: the comparison means something
    picture = np.asarray(focus.convert("RGB"), dtype=float)
    plain = np.asarray(Image.open(image_files[0]).convert("RGB").resize(focus.size), dtype=float)
    assert focus.size == (256, 256)
    assert np.abs(picture - plain).mean() > 1.0  # the weighting is drawn over the image


def test_default_options_equal_generate_defaults(caption_app, reference, image_files):
    """The page's default max_new_tokens is the generation config's own length: the caption is plain generate()'s."""
    from PIL import Image

    caption, _ = caption_app.caption(str(image_files[1]))
    assert caption == generate(reference, [Image.open(image_files[1])])[0]


def test_prompt_goes_to_the_processor(caption_app, reference, image_files):
    from PIL import Image

    caption, _ = caption_app.caption(str(image_files[2]), "  what is in the centre ", "greedy",
                                     max_new_tokens=MAX_NEW_TOKENS)
    assert caption == generate(reference, [Image.open(image_files[2])], prompt="what is in the centre",
                               max_new_tokens=MAX_NEW_TOKENS)[0]


def test_beam_caption_equals_generate(caption_app, reference, image_files):
    from PIL import Image

    for path in image_files[:2]:
        caption, _ = caption_app.caption({"path": str(path), "orig_name": path.name}, "", "beam", num_beams=3,
                                         max_new_tokens=MAX_NEW_TOKENS)
        assert caption == generate(reference, [Image.open(path)], num_beams=3, do_sample=False,
                                   max_new_tokens=MAX_NEW_TOKENS)[0]


def test_seeded_sampling_equals_generate(caption_app, reference, image_files):
    from PIL import Image

    image = Image.open(image_files[3])
    greedy = generate(reference, [image], max_new_tokens=MAX_NEW_TOKENS)[0]
    sampled = []
    for seed in range(4):
        caption, _ = caption_app.caption(str(image_files[3]), "", "sampling", temperature=1.5, top_p=1.0, top_k=0,
                                         max_new_tokens=MAX_NEW_TOKENS, seed=seed)
        assert caption == generate(reference, [image], seed=seed, do_sample=True, temperature=1.5, top_p=1.0,
                                   top_k=0, max_new_tokens=MAX_NEW_TOKENS)[0]
        sampled.append(caption)
    assert any(c != greedy for c in sampled)  # it really sampled
    again, _ = caption_app.caption(str(image_files[3]), "", "sampling", temperature=1.5, top_p=1.0, top_k=0,
                                   max_new_tokens=MAX_NEW_TOKENS, seed=2)
    assert again == sampled[2]


def test_batch_captions_equal_generate_and_name_the_bad_file(caption_app, reference, image_files, tmp_path):
    from PIL import Image

    bad = tmp_path / "notes.png"
    bad.write_text("this is text, not an image")
    with pytest.warns(UserWarning, match="notes.png is not a readable image"):
        rows = caption_app.caption_files([str(image_files[0]), str(bad), str(image_files[1])], "", "beam",
                                         num_beams=2, max_new_tokens=MAX_NEW_TOKENS)
    expected = generate(reference, [Image.open(p) for p in image_files[:2]], num_beams=2,
                        max_new_tokens=MAX_NEW_TOKENS)
    assert [row[0] for row in rows] == ["scene0.png", "notes.png", "scene1.png"]
    assert [rows[0][1], rows[2][1]] == expected
    assert rows[0][2] == rows[2][2] == "" and rows[1][1] == ""
    assert "not a readable image" in rows[1][2]


@pytest.mark.parametrize("make, message", [
    (lambda folder: None, "No image: upload or paste an image first"),
    (lambda folder: "", "No image: upload or paste an image first"),
    (lambda folder: _write(folder / "empty.png", b""), "empty.png is empty (0 bytes)"),
    (lambda folder: _write(folder / "text.png", b"hello, not a picture"), "text.png is not a readable image"),
    (lambda folder: _write(folder / "cut.png", _image_bytes()[:60]), "cut.png is not a readable image"),
    (lambda folder: _write(folder / "bomb.png", _png_header_claiming(20_000, 20_000)), "bomb.png is too large"),
    (lambda folder: str(folder / "missing.png"), "missing.png: the upload did not arrive"),
])
def test_bad_images_give_a_clear_error(caption_app, tmp_path, make, message):
    with pytest.raises(gr.Error) as error:
        caption_app.caption(make(tmp_path))
    assert message in error.value.message


def test_image_over_the_pixel_limit_is_refused_before_decoding(caption_app, image_files, monkeypatch):
    monkeypatch.setattr(caption_app, "max_pixels", 48 * 48 - 1)
    with pytest.raises(gr.Error) as error:
        caption_app.caption(str(image_files[0]))
    assert error.value.message == (f"scene0.png is 48x48 = 2,304 pixels, over the limit of {48 * 48 - 1:,} "
                                   f"({(48 * 48 - 1) / 1e6:g} megapixels): make it smaller.")


@pytest.mark.parametrize("options, message", [
    ({"strategy": "nope"}, "Decoding must be one of greedy, beam, sampling"),
    ({"strategy": "beam", "num_beams": 1}, "num_beams must be between 2 and 32"),
    ({"strategy": "beam", "num_beams": 2.5}, "num_beams must be a whole number"),
    ({"strategy": "sampling", "temperature": 0}, "temperature must be between"),
    ({"strategy": "sampling", "top_p": 1.5}, "top_p must be between"),
    ({"strategy": "sampling", "top_k": -1}, "top_k (0: off) must be between"),
    ({"strategy": "sampling", "seed": -3}, "seed must be between"),
    ({"max_new_tokens": 0}, "max_new_tokens must be between 1 and"),
    ({"max_new_tokens": "many"}, "max_new_tokens must be a number"),
])
def test_bad_options_give_a_clear_error(caption_app, image_files, options, message):
    with pytest.raises(gr.Error) as error:
        caption_app.caption(str(image_files[0]), **options)
    assert message in error.value.message
    with pytest.raises(gr.Error) as error:
        caption_app.caption_files([str(image_files[0])], **options)
    assert message in error.value.message


def test_empty_batch_gives_a_clear_error(caption_app):
    for files in (None, []):
        with pytest.raises(gr.Error) as error:
            caption_app.caption_files(files)
        assert "No files: upload one or more images first" in error.value.message


def test_cli_without_gradio_says_how_to_install(model_folder, monkeypatch, capsys):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else find_spec(name, *a))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["app", "--model", str(model_folder)])
    assert exit_info.value.code == 1
    assert 'pip install "centerfocus[app]"' in capsys.readouterr().err


def test_cli_rejects_a_missing_model_folder(tmp_path, capsys):
    assert cli.main(["app", "--model", str(tmp_path / "nothing")]) == 1
    assert "is not a folder" in capsys.readouterr().err


def test_space_app_module_does_not_import_centerfocus():
    """The Space runs this module's source as app.py, where the package is not installed."""
    source = space_app.__loader__.get_source(space_app.__name__)
    assert "import centerfocus" not in source and "from centerfocus" not in source and "from ." not in source


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _image_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    make_image(7, size=64).save(buffer, format="PNG")
    return buffer.getvalue()
