"""Optimum ONNX export and ONNX Runtime generation against the PyTorch model, TensorRT readiness, INT8, 2:4."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


pytest.importorskip("optimum.onnxruntime", reason="needs Optimum's ONNX stack (optimum-onnx 0.1.0 requires "
                    "transformers<4.58): `bash scripts/setup.sh export`, then `.venv-export/bin/python -m pytest -m "
                    "export`, which CI runs")
pytestmark = pytest.mark.export

import onnx
import torch
from onnx import numpy_helper

from centerfocus import CenterFocusForConditionalGeneration, CenterFocusImageProcessor, CenterFocusProcessor
from centerfocus.tools import caption, export, onnx_folder, sparsity
from centerfocus.tools.data import generate_caption_dataset

from ..fresh_process import run_without_package
from ..onnx_checks import assert_scores_agree_within_1e4, save_small_preset_periphery_model


PROMPTS = ["describe the image", "a red", "what is in the centre", "a"]


@pytest.fixture(scope="module")
def exports(saved_folder, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx")
    return {variant: export.export_onnx(str(saved_folder), str(root / variant), variant=variant)
            for variant in ("image", "prompt")}


@pytest.fixture(scope="module")
def inputs(tiny_processor, images):
    return {"image": tiny_processor(images=images), "prompt": tiny_processor(images=images, text=PROMPTS)}


def test_export_writes_every_graph_and_the_support_files(exports):
    for folder in exports.values():
        assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []  # no staging left
        names = {p.name for p in folder.iterdir()}
        assert set(export.ONNX_FILES) <= names
        assert {"config.json", "configuration_centerfocus.py", "preprocessor_config.json", "tokenizer.json",
                "generation_config.json"} <= names
    encoder = onnx.load(str(exports["prompt"] / "encoder_model.onnx"))
    assert [i.name for i in encoder.graph.input] == ["pixel_values", "input_ids", "attention_mask"]
    decoder = onnx.load(str(exports["prompt"] / "decoder_model_merged.onnx"))
    assert "encoder_attention_mask" in [i.name for i in decoder.graph.input]
    assert encoder.opset_import[0].version == 17


@pytest.mark.parametrize("variant", ["image", "prompt"])
@pytest.mark.parametrize("use_merged", [True, False], ids=["merged", "unmerged"])
@pytest.mark.parametrize("mode", [{}, {"num_beams": 3, "num_return_sequences": 2}], ids=["greedy", "beam3x2"])
def test_onnx_runtime_generate_matches_pytorch(tiny_model, exports, inputs, variant, use_merged, mode):
    ort_model = export.load_ort_model(str(exports[variant]), use_merged=use_merged)
    assert ort_model.decoder.is_merged == use_merged
    batch = inputs[variant]
    expected = tiny_model.generate(**batch, max_new_tokens=8, **mode)
    assert torch.equal(ort_model.generate(**batch, max_new_tokens=8, **mode), expected)
    assert len({tuple(r.tolist()) for r in expected}) > 1


@pytest.mark.parametrize("variant", ["image", "prompt"])
def test_fp32_logits_agree_within_1e4(tokenizer, tiny_processor, inputs, tmp_path, variant):
    """Absolute 1e-4 on a model with the default initialisation (logits of order 1), at the first step (no past)
    and at every cached step."""
    from ..conftest import build_tiny_model

    model = build_tiny_model(tokenizer, initializer_range=0.02)
    model.save_pretrained(tmp_path / "model")
    tiny_processor.save_pretrained(tmp_path / "model")
    ort_model = export.load_ort_model(str(export.export_onnx(str(tmp_path / "model"), str(tmp_path / "onnx"),
                                                             variant=variant)))
    assert_scores_agree_within_1e4(model, ort_model, inputs[variant], steps=6)


def test_edge_stem_exports_with_logits_within_1e4(tokenizer, tiny_processor, inputs, tmp_path):
    """The `small` preset's periphery (batch-norm stages, the edge stem with a residual block and its per-cell
    brightest-colour projection) exports: absolute 1e-4 on default-initialised logits of order 1, as above."""
    model = save_small_preset_periphery_model(tokenizer, tiny_processor, tmp_path / "model")
    ort_model = export.load_ort_model(str(export.export_onnx(str(tmp_path / "model"), str(tmp_path / "onnx"))))
    assert_scores_agree_within_1e4(model, ort_model, inputs["image"], steps=4)


def test_prompt_and_variant_mismatches_are_refused(exports, inputs):
    with pytest.raises(ValueError, match="variant prompt"):
        export.load_ort_model(str(exports["prompt"])).generate(pixel_values=inputs["image"]["pixel_values"])
    with pytest.raises(ValueError, match="variant image"):
        export.load_ort_model(str(exports["image"])).generate(**inputs["prompt"])


def test_exported_folder_captions_in_a_fresh_process(exports, tiny_model, tiny_processor, images, saved_folder):
    paths = []
    for i, image in enumerate(images[:2]):
        path = saved_folder.parent / f"onnx_image_{i}.png"
        image.save(path)
        paths.append(str(path))
    expected = tiny_processor.batch_decode(tiny_model.generate(**tiny_processor(images=images[:2])),
                                           skip_special_tokens=True)
    result = run_without_package(f"""
        import json
        from optimum.onnxruntime import ORTModelForVision2Seq
        from transformers import AutoImageProcessor, AutoTokenizer, pipeline
        folder = {str(exports["image"])!r}
        model = ORTModelForVision2Seq.from_pretrained(folder, trust_remote_code=True)
        captioner = pipeline("image-to-text", model=model, tokenizer=AutoTokenizer.from_pretrained(folder),
                             image_processor=AutoImageProcessor.from_pretrained(folder, trust_remote_code=True))
        print(json.dumps({{"captions": [captioner(p)[0]["generated_text"] for p in {paths!r}],
                          "config": type(model.config).__module__}}))
    """)
    assert result["config"].startswith("transformers_modules.")
    assert result["captions"] == expected


def test_every_operator_is_supported_by_the_tensorrt_parser(exports):
    supported = export.tensorrt_supported_operators()
    assert "onnx-tensorrt" in onnx_folder.TENSORRT_OPERATORS_FILE.read_text()  # the list names its source
    assert {"MatMul", "Softmax", "TopK", "If"} <= supported and "Unique" not in supported
    for folder in exports.values():
        report = export.tensorrt_report(folder)
        assert set(report) == set(export.ONNX_FILES)
        for name, entry in report.items():
            operators = export.graph_operators(folder / name)
            assert operators == set(entry["operators"])
            assert operators <= supported, (name, operators - supported)
            assert entry["topk_without_constant_k"] == []
            assert entry["dynamic_image_dims"] == []
    assert "If" in report["decoder_model_merged.onnx"]["operators"]  # the If branches were walked too


def test_tensorrt_report_flags_unsupported_operators(tmp_path):
    node = onnx.helper.make_node("Unique", ["x"], ["y"])
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None])])
    onnx.save(onnx.helper.make_model(graph), str(tmp_path / "bad.onnx"))
    assert export.tensorrt_report(tmp_path)["bad.onnx"]["unsupported"] == ["Unique"]


def test_tensorrt_profiles_name_real_inputs(exports, tiny_model):
    profiles = export.tensorrt_profiles(tiny_model.config, variant="prompt")
    for file_name, profile in profiles.items():
        graph_inputs = {i.name for i in onnx.load(str(exports["prompt"] / file_name)).graph.input}
        for key in ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes"):
            named = {item.split(":")[0] for item in profile[key].split(",")}
            assert named == graph_inputs, (file_name, key)


def test_int8_quantization_writes_a_loadable_quantized_model(exports, tmp_path, inputs):
    int8 = export.quantize_int8(exports["image"], tmp_path / "int8")
    operators = export.graph_operators(int8 / "decoder_model.onnx")
    assert "DynamicQuantizeLinear" in operators and ("MatMulInteger" in operators or "ConvInteger" in operators)
    model = export.load_ort_model(str(int8))
    output = model.generate(**inputs["image"], max_new_tokens=6)
    assert output.shape[0] == inputs["image"]["pixel_values"].shape[0]


def test_optimum_cli_wrapper_exports_with_a_merged_decoder(saved_folder, tmp_path):
    output = tmp_path / "cli"
    result = subprocess.run([sys.executable, "-c", "from centerfocus.tools.export import optimum_cli_main; "
                             "optimum_cli_main()", "export", "onnx", "--model", str(saved_folder), "--task",
                             "image-to-text-with-past", "--trust-remote-code", str(output)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (output / "decoder_model_merged.onnx").is_file()


def _initializer_arrays(path: Path) -> list[np.ndarray]:
    return [numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer]


def test_2_4_pattern_survives_fine_tuning_save_and_export(tmp_path, tokenizer):
    from ..conftest import build_tiny_model

    model = build_tiny_model(tokenizer)
    masks = sparsity.prune_image_branch_2_4(model)
    names = set(masks)
    assert any("vision_stem.stages.1.conv" in n for n in names) and any("image_tokenizer.proj" in n for n in names)
    parameters = dict(model.named_parameters())
    for name in names:
        weight = parameters[name]
        assert sparsity.is_2_4_sparse(weight)
        assert (weight != 0).sum() == weight.numel() // 2  # exactly 2 of 4 kept (dense weights have no zeros)
    assert not sparsity.is_2_4_sparse(torch.ones(4, 8))

    # a fine-tune through the Trainer keeps the pattern (the callback re-applies the masks)
    data = generate_caption_dataset(tmp_path / "data", num_train=16, num_test=4, image_size=32, seed=2)
    folder = tmp_path / "sparse"
    model.save_pretrained(folder)
    CenterFocusProcessor(CenterFocusImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(folder)
    result = subprocess.run([sys.executable, "-m", "centerfocus.tools.cli", "sparsify", str(folder),
                             str(tmp_path / "tuned"), "--dataset", str(data), "--finetune_steps", "3",
                             "--learning_rate", "1e-2"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "tuned" / "sparsity_report.json").read_text())
    assert report["all_2_4"] and {"dense", "pruned", "pruned_finetuned"} <= set(report)
    tuned = CenterFocusForConditionalGeneration.from_pretrained(tmp_path / "tuned")
    tuned_parameters = dict(tuned.named_parameters())
    changed = False
    for name in names:
        assert sparsity.is_2_4_sparse(tuned_parameters[name]), name
        changed |= not torch.equal(tuned_parameters[name], parameters[name])
    assert changed  # the fine-tune did update the pruned layers

    # the exported encoder holds the same 2:4 weights (Linear weights may be stored transposed for MatMul)
    onnx_dir = export.export_onnx(str(tmp_path / "tuned"), str(tmp_path / "tuned_onnx"), merge=False)
    arrays = _initializer_arrays(onnx_dir / "encoder_model.onnx")
    for name in names:
        weight = tuned_parameters[name].detach().numpy()
        matches = [a for a in arrays if (a.shape == weight.shape and np.array_equal(a, weight))
                   or (weight.ndim == 2 and a.shape == weight.T.shape and np.array_equal(a, weight.T))]
        assert matches, name
        for array in matches:
            restored = torch.from_numpy(array.T.copy() if array.shape != weight.shape else array.copy())
            assert sparsity.is_2_4_sparse(restored), name


def test_pipeline_uses_the_onnx_runtime_model_with_and_without_a_prompt(exports, tiny_model, tiny_processor,
                                                                         images):
    from transformers import pipeline

    for variant, prompt in (("image", None), ("prompt", "describe the image")):
        model = export.load_ort_model(str(exports[variant]))
        captioner = pipeline("image-to-text", model=model, tokenizer=tiny_processor.tokenizer,
                             image_processor=tiny_processor.image_processor)
        texts = None if prompt is None else [prompt]
        expected = tiny_processor.batch_decode(tiny_model.generate(**tiny_processor(images=images[:1], text=texts)),
                                               skip_special_tokens=True)[0]
        kwargs = {} if prompt is None else {"prompt": prompt}
        assert captioner(images[0], **kwargs)[0]["generated_text"] == expected


# ----------------------------------------------------------------------------------------------------------------
# Output folder safety, refused models, folders that are not exports
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture
def no_export(monkeypatch):
    """Fails the test if Optimum's exporter is reached: refusals must come before the slow export."""
    import optimum.exporters.onnx

    def fail(*args, **kwargs):
        raise AssertionError("main_export was called")

    monkeypatch.setattr(optimum.exporters.onnx, "main_export", fail)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _hidden(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_export_refuses_a_folder_that_already_holds_files(saved_folder, tmp_path, no_export):
    other_model = tmp_path / "other_model"
    shutil.copytree(saved_folder, other_model)
    old_export = tmp_path / "old_export"
    (old_export / "int8").mkdir(parents=True)
    (old_export / "decoder_model_merged.onnx").write_bytes(b"stale")
    (old_export / "int8" / "encoder_model.onnx").write_bytes(b"stale")
    for out in (other_model, old_export):
        before = _snapshot(out)
        with pytest.raises(ValueError, match=f"{out} already holds files.*--overwrite"):
            export.export_main([str(saved_folder), str(out)])
        assert _snapshot(out) == before
    with pytest.raises(ValueError, match="is a file"):
        export.export_onnx(str(saved_folder), str(old_export / "decoder_model_merged.onnx"), overwrite=True)
    # --overwrite never replaces the model being exported (nor a folder holding it)
    before = _snapshot(saved_folder)
    for out in (saved_folder, saved_folder.parent):
        with pytest.raises(ValueError, match="is \\(or holds\\) the model folder"):
            export.export_main([str(saved_folder), str(out), "--overwrite"])
    assert _snapshot(saved_folder) == before
    assert _hidden(tmp_path) == []


def test_overwrite_replaces_an_older_export(saved_folder, tiny_model, inputs, tmp_path, capsys):
    with pytest.raises(SystemExit):
        export.export_main(["--help"])
    assert "--overwrite" in capsys.readouterr().out
    out = tmp_path / "onnx"
    (out / "int8").mkdir(parents=True)
    for name in ("decoder_model_merged.onnx", "int8/encoder_model.onnx", "model.safetensors"):
        (out / name).write_bytes(b"stale")
    export.export_main([str(saved_folder), str(out), "--no-merge", "--no-validate", "--overwrite"])
    names = {p.name for p in out.iterdir()}
    assert {"encoder_model.onnx", "decoder_model.onnx", "config.json"} <= names
    assert not {"decoder_model_merged.onnx", "int8", "model.safetensors"} & names
    assert _hidden(tmp_path) == []
    ort_model = export.load_ort_model(str(out))
    assert not ort_model.decoder.is_merged
    batch = inputs["image"]
    assert torch.equal(ort_model.generate(**batch, max_new_tokens=8), tiny_model.generate(**batch, max_new_tokens=8))
    # an empty folder needs no --overwrite
    empty = tmp_path / "empty"
    empty.mkdir()
    export.export_onnx(str(saved_folder), str(empty), merge=False, validate=False)
    assert (empty / "encoder_model.onnx").is_file()


def test_a_failed_export_leaves_the_output_as_it_was(saved_folder, tmp_path, monkeypatch):
    import optimum.exporters.onnx

    real_export = optimum.exporters.onnx.main_export

    def export_failing_half_way(model, output, **kwargs):  # Optimum fails after it wrote the config and a graph
        real_export(model, output, **{**kwargs, "do_validation": False})
        raise RuntimeError("exporter failed half-way")

    monkeypatch.setattr(optimum.exporters.onnx, "main_export", export_failing_half_way)
    out = tmp_path / "onnx"
    with pytest.raises(RuntimeError, match="exporter failed half-way"):
        export.export_onnx(str(saved_folder), str(out), merge=False, validate=False)
    assert not out.exists() and _hidden(tmp_path) == []
    (out / "int8").mkdir(parents=True)
    (out / "encoder_model.onnx").write_bytes(b"old")
    (out / "int8" / "encoder_model.onnx").write_bytes(b"old int8")
    before = _snapshot(out)
    with pytest.raises(RuntimeError, match="exporter failed half-way"):
        export.export_onnx(str(saved_folder), str(out), merge=False, validate=False, overwrite=True)
    assert _snapshot(out) == before and _hidden(tmp_path) == []
    monkeypatch.setattr(optimum.exporters.onnx, "main_export", real_export)

    def broken_quantizer(*args):  # a failure after Optimum's export: the step order is export, quantize, optimise
        raise RuntimeError("quantizer failed")

    monkeypatch.setattr(export, "quantize_int8", broken_quantizer)
    with pytest.raises(RuntimeError, match="quantizer failed"):
        export.export_onnx(str(saved_folder), str(out), quantize="int8", merge=False, validate=False, overwrite=True)
    assert _snapshot(out) == before and _hidden(tmp_path) == []


def test_a_non_autoregressive_model_is_refused(saved_folder, tmp_path, no_export):
    from centerfocus import CenterFocusConfig

    config = CenterFocusConfig.from_pretrained(saved_folder)
    config.decoder_type = "non_autoregressive"
    model_dir = tmp_path / "nar"
    config.save_pretrained(model_dir)
    with pytest.raises(ValueError, match="decoder_type='non_autoregressive'"):
        export.export_main([str(model_dir), str(tmp_path / "onnx")])
    assert not (tmp_path / "onnx").exists() and _hidden(tmp_path) == []
    # exports that bypass export_onnx (centerfocus-optimum-cli, export=True) build the ONNX config
    with pytest.raises(ValueError, match="decoder_type='non_autoregressive'"):
        export.CenterFocusOnnxConfig(config, task="image-to-text")


def test_a_folder_without_an_encoder_graph_is_named(saved_folder, tmp_path, images):
    half_written = tmp_path / "half"  # what a failed export used to leave: support files, no graphs
    half_written.mkdir()
    export.copy_support_files(saved_folder, half_written)
    image = tmp_path / "image.png"
    images[0].save(image)
    for folder in (half_written, saved_folder):  # saved_folder: a PyTorch model, not an export
        with pytest.raises(ValueError, match=f"{folder} has no encoder_model.onnx: not a CenterFocus ONNX export"):
            caption.caption_main(["--onnx", str(folder), str(image)])
        with pytest.raises(ValueError, match=r"has no encoder_model\.onnx"):
            export.load_ort_model(str(folder))


def test_onnx_runtime_stops_at_the_position_table_like_pytorch(tiny_model, exports, inputs):
    limit = tiny_model.config.max_position_embeddings
    ort_model = export.load_ort_model(str(exports["image"]))
    forced = {"max_new_tokens": 2 * limit, "min_new_tokens": 2 * limit}
    with torch.no_grad():
        expected = tiny_model.generate(**inputs["image"], **forced)
    assert expected.shape[1] == limit
    assert torch.equal(ort_model.generate(**inputs["image"], **forced), expected)


def test_an_export_without_a_kv_cache_loads_and_captions(saved_folder, tiny_model, inputs, tmp_path):
    folder = export.export_onnx(str(saved_folder), str(tmp_path / "no_past"), task="image-to-text")
    assert not list(folder.glob("*with_past*.onnx")) and not list(folder.glob("*merged*.onnx"))
    ort_model = export.load_ort_model(str(folder))
    with torch.no_grad():
        expected = tiny_model.generate(**inputs["image"], use_cache=False)
    assert torch.equal(ort_model.generate(**inputs["image"]), expected)


def test_prompt_encoder_takes_numpy_and_forward_takes_a_prompt_only_mask(tiny_model, exports, inputs):
    ort_model = export.load_ort_model(str(exports["prompt"]))
    batch = inputs["prompt"]  # padded prompts of different lengths
    encoded = ort_model.encoder(**batch)
    as_numpy = ort_model.encoder(**{k: v.numpy() for k, v in batch.items()})
    np.testing.assert_allclose(as_numpy.last_hidden_state, encoded.last_hidden_state.numpy(), rtol=0, atol=0)
    np.testing.assert_array_equal(as_numpy.attention_mask, encoded.attention_mask.numpy())
    decoder_input_ids = torch.ones(batch["input_ids"].shape[0], 2, dtype=torch.long)
    from transformers.modeling_outputs import BaseModelOutput

    plain = BaseModelOutput(last_hidden_state=encoded.last_hidden_state)  # states only, as a user would pass them
    with torch.no_grad():
        expected = tiny_model(**batch, decoder_input_ids=decoder_input_ids).logits  # the PyTorch reference
        got = ort_model(encoder_outputs=plain, attention_mask=batch["attention_mask"],
                        decoder_input_ids=decoder_input_ids).logits
    # Two runtimes, two sets of float32 kernels (GEMM blocking, fused attention, the stem's convolutions): each op may
    # round differently by a few ulp (2**-23 ~ 1.2e-7 relative), and the tiny model's unit-std weights amplify that
    # through the stem and 4 layers, so the bound is relative to the largest logit. Measured: 9e-6 and 8e-5 of it for
    # two random tiny models (a fixed 1e-4, tuned on one machine, failed on others). What this test guards, the
    # prompt-only mask, moves logits by O(1) when wrong (a mask of ones: 8.8 of 15.1): 1e-3 of the largest logit
    # keeps the two apart.
    bound = 1e-3 * expected.abs().max().item()
    torch.testing.assert_close(got, expected, rtol=0, atol=bound)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))  # what a user sees: the same next tokens


@pytest.mark.parametrize("opset", [13, 21])
def test_an_opset_the_exporter_cannot_write_is_refused_before_exporting(saved_folder, tmp_path, no_export, opset):
    with pytest.raises(ValueError, match=rf"--opset must be between 14 .* and 20 .*got {opset}"):
        export.export_onnx(str(saved_folder), str(tmp_path / "onnx"), opset=opset)
    assert not (tmp_path / "onnx").exists()


def test_truncated_onnx_file_is_named(exports, tmp_path):
    folder = tmp_path / "onnx"
    shutil.copytree(exports["image"], folder)
    data = (folder / "decoder_model.onnx").read_bytes()
    (folder / "decoder_model.onnx").write_bytes(data[: len(data) // 2])  # an interrupted copy
    with pytest.raises(OSError, match=r"decoder_model\.onnx is damaged .*copy it again or export again"):
        export.load_ort_model(str(folder), use_merged=False)
