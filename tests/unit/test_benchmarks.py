"""The benchmark scripts' own measuring code: the FLOP formula they add for CPU flash attention, and a small run of the
captioner comparison (no timings are asserted)."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from centerfocus import CenterFocusConfig, CenterFocusForConditionalGeneration

from ..conftest import tiny_config_kwargs


BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_common():
    spec = importlib.util.spec_from_file_location("benchmarks_common", BENCHMARKS / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def training_flops(implementation: str) -> int:
    torch.manual_seed(0)
    config = CenterFocusConfig(**tiny_config_kwargs(attn_implementation=implementation))
    model = CenterFocusForConditionalGeneration(config).train()
    pixel_values = torch.randn(2, 3, config.image_size, config.image_size)
    labels = torch.randint(4, config.vocab_size, (2, 6))
    with FlopCounterMode(display=False) as counter:
        model(pixel_values=pixel_values, labels=labels).loss.backward()
    return counter.get_total_flops()


def test_sdpa_on_cpu_counts_the_same_flops_as_eager_attention():
    load_common().count_cpu_flash_attention()
    load_common().count_cpu_flash_attention()  # idempotent
    eager = training_flops("eager")
    assert training_flops("sdpa") == eager
    assert eager > 0


def test_comparison_script_runs_and_reports_every_field(tmp_path):
    out = tmp_path / "compare.json"
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "compare_captioners.py"), "--width", "32", "--heads", "4", "--layers", "1",
         "--steps", "1", "--train_only", "--models", "centerfocus", "centerfocus_foveated", "vision_encoder_decoder",
         "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=BENCHMARKS.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    models = json.loads(out.read_text())["models"]
    assert set(models) == {"centerfocus", "centerfocus_foveated", "vision_encoder_decoder"}
    for name, measured in models.items():
        assert "error" not in measured, (name, measured)
        assert measured["train_samples_per_second"] > 0
        assert 0 < measured["fraction_of_interleaved_peak"] < 1.5
        assert measured["allocator"] == "keep_freed_memory"
    # fewer image tokens, fewer FLOPs; the same parameters
    assert models["centerfocus_foveated"]["train_gflops_per_example"] < models["centerfocus"]["train_gflops_per_example"]
    assert models["centerfocus_foveated"]["parameters_m"] == models["centerfocus"]["parameters_m"]
    assert models["vision_encoder_decoder"]["train_speed_vs_ved"] == 1.0


def load_micro_ops():
    sys.path.insert(0, str(BENCHMARKS))  # micro_ops imports common and compare_captioners as scripts do
    try:
        spec = importlib.util.spec_from_file_location("benchmarks_micro_ops", BENCHMARKS / "micro_ops.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_op_families():
    family = load_micro_ops().op_family
    assert family("aten.mm.default") == family("aten.addmm.default") == family("aten.bmm.default") == "matmul"
    assert family("aten._scaled_dot_product_flash_attention_for_cpu_backward.default") == "attention"
    assert family("aten._fused_adamw_.default") == "optimizer"
    assert family("aten.convolution_backward.default") == "convolution"
    assert family("aten.gelu.default") == "other_ops"


def test_step_breakdown_counts_the_matmul_flops_torch_counts(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    micro_ops = load_micro_ops()
    import compare_captioners

    result = micro_ops.step_breakdown(1, models=("centerfocus",), width=32, layers=1, heads=4, batch=2)["centerfocus"]
    # the reference: torch's FLOP counter over the same model's forward + backward, matrix products only
    model, loss_fn = compare_captioners.build("centerfocus", 32, 1, 4)
    model.train()
    labels = torch.randint(1000, compare_captioners.VOCAB, (2, compare_captioners.CAPTION_TOKENS))
    with FlopCounterMode(display=False) as counter:
        loss_fn(torch.randn(2, 3, 224, 224), labels).backward()
    counts = counter.get_flop_counts()["Global"]
    aten = torch.ops.aten
    assert result["matmul_flops_per_step"] == sum(counts.get(op, 0) for op in (aten.mm, aten.addmm, aten.bmm)) > 0
    shares = result["share_of_timed_step"]
    assert {"matmul", "optimizer", "convolution", "other_ops", "framework"} <= set(shares)
    assert all(0 <= share <= 1 for name, share in shares.items() if name != "framework")
    # the flop-counted operators take part of the same timed steps (the untimed steps' median, which fraction_of_peak
    # uses, is another measurement: on a loaded machine the two can cross)
    assert result["fraction_of_peak"] > 0
    assert 0 < sum(shares.get(k, 0) for k in ("matmul", "attention", "convolution")) < 1


def test_compiled_comparison_run_reports_the_compile(tmp_path):
    out = tmp_path / "compiled.json"
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "compare_captioners.py"), "--width", "32", "--heads", "4", "--layers", "1",
         "--steps", "1", "--train_only", "--compile", "--models", "centerfocus", "--out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=BENCHMARKS.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    measured = report["models"]["centerfocus"]
    assert report["setup"]["torch_compile"] is True
    assert "error" not in measured, measured
    assert measured["torch_compile_first_step_s"] > 0 and measured["train_samples_per_second"] > 0


@pytest.mark.export
def test_onnx_latency_pairs_each_held_out_image_with_its_own_reference(tmp_path, monkeypatch):
    from centerfocus.tools.data import generate_caption_dataset

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("benchmarks_onnx_latency", BENCHMARKS / "onnx_latency.py")
    onnx_latency = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(onnx_latency)
    data = generate_caption_dataset(tmp_path / "data", num_train=4, num_test=5)
    images, references = onnx_latency.load_images(Path(data), 3, 64)
    rows = [json.loads(line) for line in (Path(data) / "test" / "metadata.jsonl").read_text().splitlines()]
    by_name = {row["file_name"]: row["text"] for row in rows}
    names = sorted(by_name)[:3]
    assert references == [by_name[name] for name in names]
    assert len(images) == 3 and images[0].mode == "RGB"
    assert onnx_latency.load_images(None, 2, 64)[1] is None  # random scenes carry no references


def load_benchmark(name: str):
    """`benchmarks/NAME.py` as a module, importing its sibling scripts as they do when run."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def load_learning_quality():
    return load_benchmark("learning_quality")


def test_learning_quality_scores_captions_against_the_character_metadata(tmp_path):
    from centerfocus.tools.characters import generate_character_dataset

    quality = load_learning_quality()
    rows = quality.read_split(generate_character_dataset(tmp_path / "chars", num_train=2, num_test=12, image_size=64))
    truth = [r["text"] for r in rows]
    perfect = quality.score(rows, truth)
    assert perfect["center_identity_exact_match"] == perfect["center_phrase_exact_match"] == 1.0
    assert perfect["full_caption_exact_match"] == perfect["layout_exact_match"] == 1.0
    with_edges = [r for r in rows if "small" in r["text"]]
    assert perfect["edge_digit_identity"] == (1.0 if with_edges else None)
    assert np.trace(np.array(perfect["confusion"])) == len(rows)
    # every centre digit moved by one: identity and phrase are all wrong, and the confusion says where they went
    shifted = [re.sub(r"^(an? \w+) (\d)", lambda m: f"{m.group(1)} {(int(m.group(2)) + 1) % 10}", t) for t in truth]
    wrong = quality.score(rows, shifted)
    assert wrong["center_identity_exact_match"] == wrong["center_phrase_exact_match"] == 0.0
    assert wrong["layout_exact_match"] == 1.0  # only digits changed
    assert wrong["edge_digit_identity"] == perfect["edge_digit_identity"]  # the edge digits were left alone
    # every edge digit moved by one: the edge identity is 0, the centre untouched
    edges_shifted = [re.sub(r"(small \w+) (\d)", lambda m: f"{m.group(1)} {(int(m.group(2)) + 1) % 10}", t)
                     for t in truth]
    edge_wrong = quality.score(rows, edges_shifted)
    assert edge_wrong["center_identity_exact_match"] == 1.0
    assert edge_wrong["edge_digit_identity"] == (0.0 if with_edges else None)
    confusion = np.array(wrong["confusion"])
    for r in rows:
        assert confusion[int(r["center_digit"]), (int(r["center_digit"]) + 1) % 10] >= 1
    # a caption that names no centre digit is counted in the "none" column
    silent = quality.score(rows, ["a red square"] * len(rows))
    assert np.array(silent["confusion"])[:, 10].sum() == len(rows)


def test_learning_quality_refuses_a_folder_that_is_not_the_character_benchmark(tmp_path):
    quality = load_learning_quality()
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "x"}) + "\n")
    with pytest.raises(ValueError, match="center_digit"):
        quality.read_split(tmp_path)


def test_ved_baseline_has_the_captioners_sizes_and_a_plain_cross_entropy():
    """train_ved.py's VisionEncoderDecoder: CenterFocus's width, depth, image size, vocabulary and special tokens, and
    a loss equal to plain token cross-entropy of its own logits (4.57's built-in loss shifts the labels twice)."""
    import torch.nn.functional as F

    build_ved = load_learning_quality().build_ved  # learning_quality.py imports it from train_ved.py
    config = CenterFocusConfig(**tiny_config_kwargs())
    torch.manual_seed(0)
    ved = build_ved(config).train()
    assert ved.config.encoder.hidden_size == ved.config.decoder.hidden_size == config.hidden_size
    assert ved.config.encoder.num_hidden_layers == config.encoder_layers
    assert ved.config.decoder.num_hidden_layers == config.decoder_layers
    assert ved.config.decoder.vocab_size == config.vocab_size
    assert ved.config.encoder.image_size == config.image_size
    assert ved.generation_config.decoder_start_token_id == config.decoder_start_token_id
    assert ved.generation_config.eos_token_id == config.eos_token_id
    pixel_values = torch.randn(2, 3, config.image_size, config.image_size)
    labels = torch.randint(4, config.vocab_size, (2, 6))
    labels[0, -2:] = -100
    output = ved(pixel_values=pixel_values, labels=labels)
    expected = F.cross_entropy(output.logits.reshape(-1, config.vocab_size), labels.reshape(-1), ignore_index=-100)
    # the same mean over the same 10 token losses; only the summation order may differ: a few float32 ulps
    assert torch.allclose(output.loss, expected, rtol=4 * torch.finfo(torch.float32).eps, atol=0)
    # 4.57's built-in loss shifts the labels once more: it would give another value (fixed after 4.57)
    assert not torch.allclose(F.cross_entropy(output.logits[:, :-1].reshape(-1, config.vocab_size),
                                              labels[:, 1:].reshape(-1), ignore_index=-100), expected)


def test_train_ved_trains_through_centerfocus_train_with_the_tokenizer_it_trains(tmp_path):
    """train_ved.py end to end on a few scenes: the folder holds a VisionEncoderDecoder whose vocabulary is the
    tokenizer centerfocus train built from the captions, and learning_quality.py loads and captions it."""
    from transformers import AutoTokenizer

    from centerfocus.tools.characters import generate_character_dataset

    quality = load_learning_quality()
    train_ved = sys.modules["train_ved"]  # imported by learning_quality.py
    data = generate_character_dataset(tmp_path / "chars", num_train=16, num_test=4, image_size=64, seed=3)
    output = tmp_path / "ved"
    train_ved.main(["--dataset", str(data), "--output_dir", str(output), "--model_size", "tiny", "--max_steps", "2",
                    "--per_device_train_batch_size", "4", "--use_cpu", "true", "--report_to", "none",
                    "--disable_tqdm", "true", "--eval_strategy", "no", "--do_eval", "false", "--save_strategy", "no",
                    "--tokenizer_vocab_size", "60"])
    model = quality.load_run(output)
    assert model.config.model_type == "vision-encoder-decoder"
    assert model.config.decoder.vocab_size == len(AutoTokenizer.from_pretrained(output))
    assert model.config.encoder.image_size == 64 and model.config.encoder.hidden_size == 64  # the tiny preset
    rows = quality.read_split(data)
    result = quality.evaluate_run("ved", output, data, rows)
    assert len(result["examples"]) == len(rows) and result["training_gflops_per_example"] > 0


def test_learning_quality_redraws_the_plots_of_the_named_runs_from_a_report(tmp_path, capsys):
    """--from_json draws from a saved report without evaluating: the curves of the --curves runs, one confusion per
    --confusion run, and a clear error (not a traceback) for a run the report does not hold."""
    quality = load_learning_quality()
    confusion = np.eye(10, 11, dtype=int).tolist()
    report = [{"run": name, "center_identity_exact_match": 1.0, "confusion": confusion,
               "loss_curve": [[10, 2.0], [20, 1.0 + i]]} for i, name in enumerate(["a", "b", "c"])]
    (tmp_path / "report.json").write_text(json.dumps(report))
    plots = tmp_path / "plots"
    results = quality.main(["--from_json", str(tmp_path / "report.json"), "--plots", str(plots),
                            "--curves", "a", "--curves", "c", "--confusion", "b"])
    assert [r["run"] for r in results] == ["a", "b", "c"]
    assert sorted(p.name for p in plots.iterdir()) == ["learning_quality_confusion_b.png",
                                                        "learning_quality_curves.png"]
    with pytest.raises(SystemExit):
        quality.main(["--from_json", str(tmp_path / "report.json"), "--plots", str(plots), "--confusion", "nope"])
    assert "['nope'] are not in the report" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a report is redrawn, not mixed with new evaluations
        quality.main(["--from_json", str(tmp_path / "report.json"), "--plots", str(plots), "--run", "x=y"])


def test_edge_diagnostics_crops_hold_the_edge_digits_the_captions_name(tmp_path):
    """edge_diagnostics.py's crops: one per edge digit of the captions, each holding pixels of the colour the caption
    gives that digit (the crop box covers where the generator draws it), labelled with its digit."""
    from centerfocus import CenterFocusImageProcessor
    from centerfocus.tools.characters import generate_character_dataset
    from centerfocus.tools.data import COLORS

    diagnostics = load_benchmark("edge_diagnostics")
    data = generate_character_dataset(tmp_path / "chars", num_train=2, num_test=16, image_size=224, seed=4)
    processor = CenterFocusImageProcessor(size={"height": 224, "width": 224})
    crops, labels = diagnostics.edge_crops(data, "test", processor)
    rows = [json.loads(line) for line in (data / "test" / "metadata.jsonl").read_text().splitlines()]
    named = [found for r in rows for found in diagnostics.EDGE.findall(r["text"])]
    assert len(named) > 0 and crops.shape == (len(named), 3, 80, 80)
    assert labels.tolist() == [int(digit) for _, digit, _ in named]
    for crop, (colour, _, _) in zip(crops, named):
        rgb = (crop * 0.5 + 0.5) * 255  # the processor's default normalisation, undone
        distance = (rgb - torch.tensor(COLORS[colour], dtype=torch.float32)[:, None, None]).norm(dim=0)
        assert distance.min() < 40, colour  # noise is at most ~30 per channel at 3 sigma


def test_centre_diagnostics_splits_the_caption_loss_into_centre_edge_and_other_tokens(tmp_path):
    """centre_diagnostics.py's teacher-forced losses: one centre token per caption, one edge token per edge digit the
    caption names, and the three token-weighted means recombine to the model's own caption loss."""
    from centerfocus import CenterFocusImageProcessor, CenterFocusProcessor
    from centerfocus.tools.handwriting import generate_handwriting_dataset
    from centerfocus.tools.tokenizer import train_caption_tokenizer

    from ..conftest import build_tiny_model

    diagnostics = load_benchmark("centre_diagnostics")
    data = generate_handwriting_dataset(tmp_path / "hw", num_train=2, num_test=12, image_size=64, seed=2)
    images, digits, captions = diagnostics.load_split(data, "test")
    assert len(images) == len(captions) == 12 and digits.tolist() == [int(c.split()[2]) for c in captions]
    tokenizer = train_caption_tokenizer(captions, vocab_size=120)
    processor = CenterFocusProcessor(CenterFocusImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    model = build_tiny_model(tokenizer, initializer_range=0.02)
    losses = diagnostics.token_losses(model, processor, images, captions, batch_size=5)
    assert losses["centre"]["tokens"] == len(captions)
    assert losses["edge"]["tokens"] == sum(len(diagnostics_edges) for diagnostics_edges in
                                           (re.findall(r"small \w+ (\d) at", c) for c in captions))
    with torch.no_grad():
        batch = processor(images=images, text_target=captions, return_tensors="pt")
        reference = model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss.item()
    total = sum(v["tokens"] for v in losses.values())
    recombined = sum(v["loss"] * v["tokens"] for v in losses.values()) / total
    assert recombined == pytest.approx(reference, rel=1e-5)  # float32 sums of ~100 O(1) terms


def test_learning_quality_table_groups_seeds_into_mean_and_range():
    lq = load_benchmark("learning_quality")
    runs = [{"run": f"cfg_s{seed}", "center_identity_exact_match": value, "full_caption_exact_match": 0.5,
             "layout_exact_match": 1.0, "edge_digit_identity": None, "training_tflops": 50.0,
             "ved_training_tflops": 100.0} for seed, value in ((1, 0.8), (2, 0.9), (3, 1.0))]
    runs.append({"run": "other", "center_identity_exact_match": 0.25, "full_caption_exact_match": 0.125,
                 "layout_exact_match": 0.5, "edge_digit_identity": 0.75})
    rows = lq.table(runs).splitlines()
    assert len(rows) == 4
    assert rows[2].startswith("| `cfg` | 3 | 0.900 (0.800-1.000) | 0.500 (0.500-0.500) |")
    assert rows[2].endswith("| 50.0 (0.50x) |")
    assert rows[3] == "| `other` | 1 | 0.250 | 0.125 | 0.500 | 0.750 |  |"


def test_centre_diagnostics_readouts_probe_the_pooled_and_concatenated_tokens(tmp_path):
    """--readouts: each read-out is the linear probe of the centre digit on those tokens, recomputed here from the
    model's image tokens (pooled by hand) for the position-blind mean and the fovea's concatenation."""
    from centerfocus import CenterFocusImageProcessor, CenterFocusProcessor
    from centerfocus.tools.handwriting import generate_handwriting_dataset
    from centerfocus.tools.tokenizer import train_caption_tokenizer

    from ..conftest import build_tiny_model

    diagnostics = load_benchmark("centre_diagnostics")
    data = generate_handwriting_dataset(tmp_path / "hw", num_train=40, num_test=12, image_size=64, seed=3)
    _, train_y, captions = diagnostics.load_split(data, "train")
    tokenizer = train_caption_tokenizer(captions, vocab_size=120)
    processor = CenterFocusProcessor(CenterFocusImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    model = build_tiny_model(tokenizer, image_tokenizer_type="foveated").eval()
    results = diagnostics.readout_probes(model, processor, data, probe_train=40)
    assert set(results) == {f"{k}_{r}" for k in ("tokens", "encoder")
                            for r in ("concat", "fovea_concat", "mean", "fovea_mean")}
    train_images, _, _ = diagnostics.load_split(data, "train")
    test_images, test_y, _ = diagnostics.load_split(data, "test")
    with torch.no_grad():
        def tokens(images):
            return model.get_image_features(**processor(images=images, return_tensors="pt")).last_hidden_state.numpy()

        a, b = tokens(train_images), tokens(test_images)
    fovea = model.config.foveated_center_size ** 2
    expected_mean = diagnostics.probe(a.mean(1), train_y, b.mean(1), test_y)["test"]
    expected_fovea = diagnostics.probe(a[:, :fovea].reshape(len(a), -1), train_y, b[:, :fovea].reshape(len(b), -1),
                                       test_y)["test"]
    assert results["tokens_mean"] == pytest.approx(expected_mean)
    assert results["tokens_fovea_concat"] == pytest.approx(expected_fovea)
