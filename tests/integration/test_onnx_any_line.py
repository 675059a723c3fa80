"""ONNX export with torch.onnx and ONNX Runtime captioning with the package's runner, on whichever transformers line
runs the tests (the `export` extra: onnx and onnxruntime, nothing of Optimum). Against the PyTorch model: tokens for
greedy, beam and sampling, scores within 1e-4. The folder is Optimum's: an export made on one line captions on the
other (Optimum's ORTModel on 4.57), both ways."""

import json
import subprocess

import pytest


pytest.importorskip("onnxruntime", reason="needs the export extra: pip install -e '.[export]'")
onnx = pytest.importorskip("onnx", reason="needs the export extra: pip install -e '.[export]'")

import torch

from centerfocus.tools import onnx_export, onnx_folder
from centerfocus.tools.caption import caption_main, load_onnx_captioner
from centerfocus.tools.onnx_runner import load_onnx_model

from ..onnx_checks import assert_scores_agree_within_1e4, save_small_preset_periphery_model
from .test_cross_line import OTHER_PYTHON, OTHER_VERSION


PROMPTS = ["describe the image", "a red", "what is in the centre", "a"]


@pytest.fixture(scope="module")
def exports(saved_folder, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("torch_onnx")
    return {variant: onnx_export.export_onnx_torch(str(saved_folder), str(root / variant), variant=variant)
            for variant in ("image", "prompt")}


@pytest.fixture(scope="module")
def inputs(tiny_processor, images) -> dict:
    return {"image": tiny_processor(images=images), "prompt": tiny_processor(images=images, text=PROMPTS)}


def test_the_export_is_optimums_layout(exports, saved_folder):
    for folder in exports.values():
        assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []  # no staging left
        names = {p.name for p in folder.iterdir()}
        assert {"encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "config.json",
                "configuration_centerfocus.py", "modeling_centerfocus.py", "preprocessor_config.json",
                "tokenizer.json", "generation_config.json"} <= names
    layers = json.loads((saved_folder / "config.json").read_text())["decoder_layers"]
    graph = {name: onnx.load(str(exports["prompt"] / name)).graph for name in
             ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx")}
    assert [i.name for i in graph["encoder_model.onnx"].input] == ["pixel_values", "input_ids", "attention_mask"]
    assert [i.name for i in graph["decoder_model.onnx"].input] == [
        "input_ids", "encoder_attention_mask", "encoder_hidden_states"]
    past = [i.name for i in graph["decoder_with_past_model.onnx"].input][2:]
    assert past == [f"past_key_values.{i}.{side}.{kind}" for i in range(layers) for side in ("decoder", "encoder")
                    for kind in ("key", "value")]
    assert [o.name for o in graph["decoder_with_past_model.onnx"].output][1:] == [
        f"present.{i}.decoder.{kind}" for i in range(layers) for kind in ("key", "value")]
    assert onnx.load(str(exports["image"] / "encoder_model.onnx")).opset_import[0].version == 17


@pytest.mark.parametrize("variant", ["image", "prompt"])
@pytest.mark.parametrize("mode", [{}, {"num_beams": 3, "num_return_sequences": 2}, {"use_cache": False},
                                  {"do_sample": True, "top_k": 8, "temperature": 0.9}],
                         ids=["greedy", "beam3x2", "no_cache", "sampling"])
def test_onnx_runtime_generate_matches_pytorch(tiny_model, exports, inputs, variant, mode):
    runner = load_onnx_model(str(exports[variant]))
    batch = inputs[variant]
    torch.manual_seed(0)
    expected = tiny_model.generate(**batch, max_new_tokens=8, **mode)
    torch.manual_seed(0)
    assert torch.equal(runner.generate(**batch, max_new_tokens=8, **mode), expected)
    assert len({tuple(r.tolist()) for r in expected}) > 1  # varied captions: not a comparison of constants


def test_an_export_without_the_cache_graph_decodes_the_whole_prefix(saved_folder, tiny_model, inputs, tmp_path):
    """`--task image-to-text` writes no decoder-with-past graph: the runner gives the decoder the whole prefix at
    every step, with the same tokens."""
    folder = onnx_export.export_onnx_torch(str(saved_folder), str(tmp_path / "onnx"), task="image-to-text")
    assert not (folder / "decoder_with_past_model.onnx").exists()
    batch = inputs["image"]
    runner = load_onnx_model(str(folder))
    for mode in ({}, {"num_beams": 3}):
        assert torch.equal(runner.generate(**batch, max_new_tokens=6, **mode),
                           tiny_model.generate(**batch, max_new_tokens=6, **mode))
    with pytest.raises(ValueError, match="use_cache=False"):
        runner.generate(**batch, max_new_tokens=6, use_cache=True)


@pytest.mark.parametrize("variant", ["image", "prompt"])
def test_fp32_scores_agree_within_1e4(tokenizer, tiny_processor, inputs, tmp_path, variant):
    """Absolute 1e-4 on a default-initialised model (logits of order 1), at the first step and every cached step, as
    for Optimum's export; the batch-norm periphery and edge stem of the `small` preset included."""
    model = save_small_preset_periphery_model(tokenizer, tiny_processor, tmp_path / "model")
    folder = onnx_export.export_onnx_torch(str(tmp_path / "model"), str(tmp_path / "onnx"), variant=variant)
    assert_scores_agree_within_1e4(model, load_onnx_model(str(folder)), inputs[variant], steps=6)


def test_the_export_leaves_the_model_as_it_was(tokenizer, tiny_processor, tmp_path, images):
    """Tracing a wrapper that is in training mode would update batch-norm statistics: the model's outputs after the
    export equal those before it, and the export's own check passed against them."""
    from ..conftest import build_tiny_model

    model = build_tiny_model(tokenizer, stem_norm_type="batch")
    model.save_pretrained(tmp_path / "model")
    tiny_processor.save_pretrained(tmp_path / "model")
    batch = tiny_processor(images=images)
    before = model.generate(**batch, max_new_tokens=6)
    folder = onnx_export.export_onnx_torch(str(tmp_path / "model"), str(tmp_path / "onnx"))
    assert torch.equal(load_onnx_model(str(folder)).generate(**batch, max_new_tokens=6), before)


def test_prompt_and_variant_mismatches_are_refused(exports, inputs):
    with pytest.raises(ValueError, match="variant prompt"):
        load_onnx_model(str(exports["prompt"])).generate(pixel_values=inputs["image"]["pixel_values"])
    with pytest.raises(ValueError, match="variant image"):
        load_onnx_model(str(exports["image"])).generate(**inputs["prompt"])


def test_int8_and_the_tensorrt_check_from_this_line(saved_folder, tmp_path, inputs):
    out = tmp_path / "onnx"
    onnx_export.export_main([str(saved_folder), str(out), "--backend", "torch", "--quantize", "int8", "--tensorrt"])
    operators = onnx_folder.graph_operators(out / "int8" / "decoder_model.onnx")
    assert "DynamicQuantizeLinear" in operators and "MatMulInteger" in operators
    int8 = load_onnx_model(str(out / "int8")).generate(**inputs["image"], max_new_tokens=6)
    assert int8.shape[0] == inputs["image"]["pixel_values"].shape[0]
    report = onnx_folder.tensorrt_report(out)
    assert set(report) == {"encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx"}
    supported = onnx_folder.tensorrt_supported_operators()
    for name, entry in report.items():
        assert set(entry["operators"]) <= supported, (name, set(entry["operators"]) - supported)
        assert entry["dynamic_image_dims"] == [] and entry["topk_without_constant_k"] == []
    profiles = json.loads((out / "tensorrt_profiles.json").read_text())
    for file_name, profile in profiles.items():
        graph_inputs = {i.name for i in onnx.load(str(out / file_name)).graph.input}
        assert {item.split(":")[0] for item in profile["trt_profile_max_shapes"].split(",")} == graph_inputs


def test_caption_onnx_prints_the_pytorch_captions(exports, saved_folder, tiny_model, tiny_processor, images,
                                                  tmp_path, capsys):
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"image_{i}.png"))
        image.save(paths[-1])
    expected = tiny_processor.batch_decode(tiny_model.generate(**tiny_processor(images=images), num_beams=2),
                                           skip_special_tokens=True)
    assert caption_main(["--onnx", str(exports["image"]), *paths, "--num_beams", "2"]) == expected
    printed = [json.loads(line)["caption"] for line in capsys.readouterr().out.splitlines()]
    assert printed == [caption.strip() for caption in expected]


def test_the_image_text_to_text_pipeline_captions_with_the_runner(exports, tiny_model, tiny_processor, images):
    from transformers import pipeline

    from ..conftest import pipeline_captions

    expected = [c.strip() for c in tiny_processor.batch_decode(tiny_model.generate(**tiny_processor(images=images)),
                                                               skip_special_tokens=True)]
    captioner = pipeline("image-text-to-text", model=load_onnx_model(str(exports["image"])), processor=tiny_processor)
    assert [c.strip() for c in pipeline_captions(captioner, images, batch_size=2)] == expected


def test_bad_folders_and_models_are_refused_with_their_name(exports, saved_folder, tmp_path, tokenizer,
                                                            tiny_processor):
    with pytest.raises(ValueError, match=r"no encoder_model\.onnx"):
        load_onnx_model(str(saved_folder))
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for path in exports["image"].iterdir():
        if path.is_file():
            (damaged / path.name).write_bytes(path.read_bytes())
    decoder = damaged / "decoder_model.onnx"
    decoder.write_bytes(decoder.read_bytes()[: decoder.stat().st_size // 3])
    with pytest.raises(OSError, match=r"decoder_model\.onnx is damaged"):
        load_onnx_model(str(damaged))
    from ..conftest import build_tiny_model

    build_tiny_model(tokenizer, decoder_type="non_autoregressive").save_pretrained(tmp_path / "nar")
    with pytest.raises(ValueError, match="decoder_type='autoregressive' only"):
        onnx_export.export_onnx_torch(str(tmp_path / "nar"), str(tmp_path / "nar_onnx"))
    assert not (tmp_path / "nar_onnx").exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="already holds files"):
        onnx_export.export_onnx_torch(str(saved_folder), str(taken))
    assert (taken / "notes.txt").read_text() == "keep me"
    if not onnx_folder.has_optimum_onnx():
        with pytest.raises(SystemExit):
            onnx_export.export_main([str(saved_folder), str(tmp_path / "x"), "--backend", "optimum"])


OTHER_SIDE = """
import json
import torch
from PIL import Image
import transformers
from centerfocus import CenterFocusProcessor
from centerfocus.tools.caption import load_onnx_captioner
from centerfocus.tools.onnx_export import export_main
model_dir, theirs, ours, paths = {model_dir!r}, {theirs!r}, {ours!r}, {paths!r}
export_main([model_dir, theirs])  # that line's default exporter
inputs = CenterFocusProcessor.from_pretrained(model_dir)(images=[Image.open(p) for p in paths])
runner = load_onnx_captioner(ours)  # that line's runner on this line's export
with torch.no_grad():
    print(json.dumps({{"version": transformers.__version__, "runner": type(runner).__module__,
                      "greedy": runner.generate(**inputs).tolist(),
                      "beam": runner.generate(**inputs, num_beams=3, num_return_sequences=2).tolist()}}))
"""


@pytest.mark.skipif(OTHER_PYTHON is None, reason="no environment on the other transformers line: `bash "
                    "scripts/setup.sh export` builds one (transformers 4.57) beside the current stack; CI runs this")
def test_an_export_from_either_line_captions_on_the_other(exports, saved_folder, tiny_model, tiny_processor,
                                                          images, tmp_path):
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"image_{i}.png"))
        image.save(paths[-1])
    theirs = tmp_path / "theirs"
    result = subprocess.run([OTHER_PYTHON, "-c", OTHER_SIDE.format(model_dir=str(saved_folder), theirs=str(theirs),
                                                                   ours=str(exports["image"]), paths=paths)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    other = json.loads(result.stdout.strip().splitlines()[-1])
    assert other["version"] == OTHER_VERSION
    batch = tiny_processor(images=images)
    expected = {"greedy": tiny_model.generate(**batch).tolist(),
                "beam": tiny_model.generate(**batch, num_beams=3, num_return_sequences=2).tolist()}
    assert other["greedy"] == expected["greedy"] and other["beam"] == expected["beam"]  # this export, that runner
    here = load_onnx_captioner(str(theirs))  # that export, this line's runner
    assert here.generate(**batch).tolist() == expected["greedy"]
    assert here.generate(**batch, num_beams=3, num_return_sequences=2).tolist() == expected["beam"]
    # the 4.57 side exported and ran with Optimum (merged decoder, ORTModel), the 5.x side with torch.onnx and ours
    optimum_here = onnx_folder.has_optimum_onnx()
    assert (theirs / "decoder_model_merged.onnx").is_file() == (not optimum_here)
    assert other["runner"] == ("centerfocus.tools.onnx_runner" if optimum_here else "centerfocus.tools.export")
