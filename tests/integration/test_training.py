"""`centerfocus train` end to end on small generated data: metrics, outputs, resume, LoRA, mixed precision,
multi-process, staged training, bad data."""

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import pipeline

from centerfocus import (
    CenterFocusConfig,
    CenterFocusForConditionalGeneration,
    CenterFocusForImageClassification,
    CenterFocusProcessor,
)
from centerfocus.tools import train
from centerfocus.tools.data import generate_caption_dataset, generate_classification_dataset

from ..conftest import assert_close_at_scale, pipeline_captions
from ..fresh_process import run_without_package


BASE_ARGS = ["--model_size", "tiny", "--use_cpu", "true", "--per_device_train_batch_size", "8",
             "--per_device_eval_batch_size", "8", "--learning_rate", "1e-3", "--disable_tqdm", "true",
             "--seed", "0", "--max_target_length", "16", "--tokenizer_vocab_size", "80"]


@pytest.fixture(scope="session")
def caption_data(tmp_path_factory) -> Path:
    return generate_caption_dataset(tmp_path_factory.mktemp("data") / "scenes", num_train=48, num_test=8, seed=3)


def _train(data, output, *extra) -> dict:
    return train.main(["--dataset", str(data), "--output_dir", str(output), *BASE_ARGS, *extra])


def _losses(output: Path) -> list[float]:
    checkpoints = sorted(output.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


@pytest.fixture(scope="session")
def trained_folder(caption_data, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("run") / "captioner"
    metrics = _train(caption_data, output, "--max_steps", "12", "--eval_strategy", "steps", "--eval_steps", "12",
                     "--save_strategy", "steps", "--save_steps", "12", "--logging_steps", "2")
    for key in ("eval_bleu4", "eval_rougeL", "eval_cider", "eval_center_phrase_exact_match"):
        assert key in metrics, key
    return output


def test_train_saves_a_folder_that_pipelines_caption(trained_folder, caption_data):
    names = {p.name for p in trained_folder.iterdir()}
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "tokenizer.json",
            "modeling_centerfocus.py", "all_results.json"} <= names
    assert not any(n.endswith(".bin") for n in names)
    assert any(p.name.startswith("events.") for p in (trained_folder / "runs").rglob("*"))  # TensorBoard logs
    results = json.loads((trained_folder / "all_results.json").read_text())
    assert 0.0 <= results["eval_bleu4"] <= 1.0
    assert _losses(trained_folder)[-1] < _losses(trained_folder)[0]

    image_path = str(sorted((caption_data / "test").glob("*.png"))[0])
    model = CenterFocusForConditionalGeneration.from_pretrained(trained_folder)
    processor = CenterFocusProcessor.from_pretrained(trained_folder)
    from PIL import Image

    expected = processor.batch_decode(model.generate(**processor(images=[Image.open(image_path)])),
                                      skip_special_tokens=True)[0]
    assert pipeline_captions(pipeline("image-text-to-text", model=str(trained_folder)), image_path) == [expected]
    result = run_without_package(f"""
        import json
        from transformers import pipeline
        captioner = pipeline("image-text-to-text", model={str(trained_folder)!r}, trust_remote_code=True)
        caption = captioner(images={image_path!r}, text="", return_full_text=False)[0]["generated_text"]
        print(json.dumps({{"caption": caption}}))
    """)
    assert result["caption"] == expected


def test_a_grayscale_model_trains_on_grayscale_pngs_and_captions_through_the_pipeline(caption_data, tmp_path):
    from PIL import Image

    grey = tmp_path / "grey"
    shutil.copytree(caption_data, grey)
    for path in grey.rglob("*.png"):
        Image.open(path).convert("L").save(path)
    output = tmp_path / "grey_model"
    _train(grey, output, "--config_overrides", "num_channels=1", "--max_steps", "4", "--eval_strategy", "no",
           "--save_strategy", "no", "--predict_with_generate", "false")
    model = CenterFocusForConditionalGeneration.from_pretrained(output)
    processor = CenterFocusProcessor.from_pretrained(output)
    assert model.config.num_channels == 1 and processor.image_processor.num_channels == 1
    paths = [str(p) for p in sorted((grey / "test").glob("*.png"))[:3]]
    inputs = processor(images=[Image.open(p) for p in paths])
    assert inputs["pixel_values"].shape[1] == 1
    # a grey PNG read as RGB (the pipeline's load_image) gives the same single channel back (PIL's luma of R=G=B)
    rgb = processor(images=[Image.open(p).convert("RGB") for p in paths])["pixel_values"]
    assert torch.equal(rgb, inputs["pixel_values"])
    expected = processor.batch_decode(model.generate(**inputs), skip_special_tokens=True)
    assert pipeline_captions(pipeline("image-text-to-text", model=str(output)), paths) == expected


KILL_SCRIPT = """
import os, signal, sys
from transformers import TrainerCallback
from centerfocus.tools import train

class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == {kill_step}:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no final save: like a crash or an OOM kill

train.run_training(*train.parse_args(sys.argv[1:]), callbacks=[KillAfterSave()])
"""


def test_killed_run_resumes_to_the_same_weights(caption_data, tmp_path):
    common = ["--dataset", str(caption_data), *BASE_ARGS, "--max_steps", "8", "--save_strategy", "steps",
              "--save_steps", "4", "--eval_strategy", "no", "--do_eval", "false", "--save_total_limit", "5",
              "--lr_scheduler_type", "linear", "--warmup_steps", "2"]
    reference = tmp_path / "uninterrupted"
    train.main([*common, "--output_dir", str(reference)])

    interrupted = tmp_path / "interrupted"
    script = KILL_SCRIPT.format(kill_step=4)
    result = subprocess.run([sys.executable, "-c", script, *common, "--output_dir", str(interrupted)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == -9, result.stderr[-2000:]
    assert (interrupted / "checkpoint-4").is_dir() and not (interrupted / "model.safetensors").exists()
    train.main([*common, "--output_dir", str(interrupted), "--resume_from_checkpoint",
                str(interrupted / "checkpoint-4")])

    expected = load_file(reference / "model.safetensors")
    resumed = load_file(interrupted / "model.safetensors")
    assert expected.keys() == resumed.keys()
    initial = load_file(reference / "checkpoint-4" / "model.safetensors")
    assert any(not torch.equal(initial[k], expected[k]) for k in expected)  # steps 5-8 changed the weights
    for name in expected:
        # the same steps on the same data from the same state; only thread timing in reductions may round
        # differently: 256 ulps of each weight tensor's largest entry (a lost step moves weights by ~lr, 1e-3)
        assert_close_at_scale(resumed[name], expected[name], ulps=256, msg=name)


def test_lora_trains_only_adapters_and_merges_exactly(caption_data, trained_folder, tmp_path):
    output = tmp_path / "lora"
    _train(caption_data, output, "--model_name_or_path", str(trained_folder), "--lora_r", "4", "--max_steps", "4",
           "--learning_rate", "1e-2", "--gradient_checkpointing", "true", "--merge_lora", "true",
           "--eval_strategy", "no", "--do_eval", "false", "--save_strategy", "no")
    adapter = output / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "adapter_config.json").is_file()
    adapter_weights = load_file(adapter / "adapter_model.safetensors")
    assert all("lora_" in name for name in adapter_weights)
    assert any(".encoder." in n for n in adapter_weights) and any(".decoder." in n for n in adapter_weights)
    # encoder and decoder adapters both trained (lora_B starts at zero)
    for side in (".encoder.", ".decoder."):
        assert any(side in n and "lora_B" in n and t.abs().sum() > 0 for n, t in adapter_weights.items()), side

    from peft import PeftModel

    base = CenterFocusForConditionalGeneration.from_pretrained(trained_folder).eval()
    original = {k: v.clone() for k, v in base.state_dict().items()}
    with_adapter = PeftModel.from_pretrained(base, adapter).eval()
    merged = CenterFocusForConditionalGeneration.from_pretrained(output).eval()
    processor = CenterFocusProcessor.from_pretrained(output)
    images = [Image_open(p) for p in sorted((caption_data / "test").glob("*.png"))[:4]]
    inputs = processor(images=images)
    adapter_tokens = with_adapter.generate(**inputs, max_new_tokens=12)
    assert torch.equal(adapter_tokens, merged.generate(**inputs, max_new_tokens=12))
    # only adapted weights differ between the merged model and the base
    changed = {k for k, v in merged.state_dict().items() if not torch.equal(v, original[k])}
    assert changed and all(k.rsplit(".", 2)[-2] in {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}
                           for k in changed)


def Image_open(path):
    from PIL import Image

    return Image.open(path)


def test_lora_with_reentrant_checkpointing_reaches_encoder_adapters(trained_folder, caption_data):
    """The stock enable_input_require_grads hooks only the text embedding; the encoder adapters would get none."""
    from peft import LoraConfig, get_peft_model

    model = CenterFocusForConditionalGeneration.from_pretrained(trained_folder).train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.enable_input_require_grads()
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type=None))
    processor = CenterFocusProcessor.from_pretrained(trained_folder)
    images = [Image_open(p) for p in sorted((caption_data / "train").glob("*.png"))[:2]]
    batch = processor(images=images, text_target=["a red circle in the centre", "a blue star in the centre"])
    peft_model(**batch).loss.backward()
    grads = {n: p.grad for n, p in peft_model.named_parameters() if "lora_B" in n}
    for side in (".encoder.", ".decoder."):
        assert any(side in n and g is not None and g.abs().sum() > 0 for n, g in grads.items()), side


def test_bf16_cpu_training_runs_with_falling_loss(caption_data, tmp_path):
    output = tmp_path / "bf16"
    _train(caption_data, output, "--bf16", "true", "--max_steps", "12", "--logging_steps", "2",
           "--save_strategy", "steps", "--save_steps", "12", "--eval_strategy", "no", "--do_eval", "false")
    losses = _losses(output)
    assert len(losses) >= 4 and losses[-1] < losses[0]
    assert np.isfinite(losses).all()


@pytest.mark.parametrize("launcher", ["cpu-mpi", "torchrun"])
def test_two_process_accelerate_launch_trains(caption_data, tmp_path, launcher):
    """`accelerate launch --cpu --num_processes 2` starts two processes only through MPI (accelerate 1.15 runs a
    single process without --mpirun_hostfile); `--multi_gpu` uses torchrun and, with the Trainer's --use_cpu, CPU DDP
    over gloo. .ci/run installs openmpi-bin so both run in CI."""
    output = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if launcher == "cpu-mpi":
        if shutil.which("mpirun") is None:
            pytest.skip("mpirun not installed (apt-get install openmpi-bin)")
        hostfile = tmp_path / "hostfile"
        hostfile.write_text("localhost slots=2\n")
        flags = ["--cpu", "--mpirun_hostfile", str(hostfile)]
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    else:
        flags = ["--multi_gpu"]
    command = [sys.executable, "-m", "accelerate.commands.launch", *flags, "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m",
               "centerfocus.tools.train", "--dataset", str(caption_data), "--output_dir", str(output), *BASE_ARGS,
               "--max_steps", "8", "--logging_steps", "2", "--save_strategy", "steps", "--save_steps", "8",
               "--eval_strategy", "no", "--do_eval", "false", "--per_device_train_batch_size", "4"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((output / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    # 48 examples, 4 per device: 6 steps per epoch only when 2 processes share the data
    assert state["epoch"] == pytest.approx(8 / 6)
    losses = _losses(output)
    assert losses[-1] < losses[0]


def test_stage_one_weights_arrive_and_frozen_layers_stay(tmp_path, caption_data):
    classes = generate_classification_dataset(tmp_path / "classes", num_per_class=6, seed=1)
    vision = tmp_path / "vision"
    from centerfocus.tools import pretrain

    # a normalised stem with a residual block: every stem field, not only the seed's, must reach the captioner
    pretrain.main(["--dataset", str(classes), "--output_dir", str(vision), "--model_size", "tiny", "--max_steps", "3",
                   "--config_overrides", "stem_norm_type=batch,stem_residual_blocks=0|1",
                   "--per_device_train_batch_size", "8", "--use_cpu", "true", "--report_to", "none",
                   "--disable_tqdm", "true", "--save_strategy", "no", "--eval_strategy", "no"])
    stage1 = CenterFocusForImageClassification.from_pretrained(vision).state_dict()
    vision_keys = [k for k in stage1 if k.startswith(("vision_stem.", "image_tokenizer."))]

    # weights arrive bit-identical
    model_args, data_args, _ = train.parse_args(["--dataset", str(caption_data), "--vision_init", str(vision),
                                                 "--model_size", "tiny"])
    tokenizer = train.prepare_tokenizer(model_args, ["a red circle in the centre"])
    model = train.build_model(model_args, data_args, tokenizer)
    encoder_state = model.model.encoder.state_dict()
    for key in vision_keys:
        assert torch.equal(encoder_state[key], stage1[key]), key

    # stage 2: the first 3 vision layers stay bit-identical, the rest of the model trains
    output = tmp_path / "stage2"
    _train(caption_data, output, "--vision_init", str(vision), "--max_steps", "4", "--eval_strategy", "no",
           "--do_eval", "false", "--save_strategy", "no")
    trained = load_file(output / "model.safetensors")
    frozen_prefixes = ("vision_stem.stages.0.", "vision_stem.stages.1.", "vision_stem.channel_pruning.")
    for key in vision_keys:
        if key.startswith(frozen_prefixes):
            assert torch.equal(trained["model.encoder." + key], stage1[key]), key
    assert not torch.equal(trained["model.encoder.image_tokenizer.proj.weight"], stage1["image_tokenizer.proj.weight"])


def test_stage_one_reads_labels_from_a_metadata_column(tmp_path):
    """A captioning folder whose metadata carries a label (the character benchmark's `center_digit`) is a labelled
    folder for stage 1: the values become the classes, in sorted order, and the evaluation split uses the same ids."""
    from centerfocus.tools import pretrain
    from centerfocus.tools.characters import generate_character_dataset

    data = generate_character_dataset(tmp_path / "chars", num_train=40, num_test=8, image_size=64, seed=2)
    rows = {split: [json.loads(line) for line in (data / split / "metadata.jsonl").read_text().splitlines()]
            for split in ("train", "test")}
    vision = tmp_path / "vision"
    metrics = pretrain.main(["--dataset", str(data), "--label_column", "center_digit", "--output_dir", str(vision),
                             "--model_size", "tiny", "--max_steps", "2", "--per_device_train_batch_size", "8",
                             "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true",
                             "--save_strategy", "no"])
    config = CenterFocusForImageClassification.from_pretrained(vision).config
    expected = sorted({r["center_digit"] for r in rows["train"]})
    assert [config.id2label[i] for i in range(config.num_labels)] == expected
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0  # the test split was encoded with the training ids

    # a label that training never has cannot get an id: refused, naming it
    test_rows = rows["test"]
    test_rows[0]["center_digit"] = "x"
    (data / "test" / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test_rows))
    with pytest.raises(ValueError, match=r"center_digit.*'x'"):
        pretrain.main(["--dataset", str(data), "--label_column", "center_digit", "--output_dir", str(tmp_path / "v2"),
                       "--model_size", "tiny", "--max_steps", "1", "--use_cpu", "true", "--report_to", "none",
                       "--disable_tqdm", "true", "--save_strategy", "no"])


def test_stage_one_trains_the_edge_stem_on_shrunk_images(tmp_path, caplog):
    """`--edge_object_scale` adds the edge stem's own loss on shrunk images: its weights end elsewhere than the same
    seed's run without the flag, and the folder holds the edge head; a half-width edge stem is warned about; a config
    without an edge stem is refused, naming the flag."""
    from safetensors.torch import load_file

    from centerfocus.tools import pretrain
    from centerfocus.tools.characters import generate_character_dataset

    data = generate_character_dataset(tmp_path / "chars", num_train=32, num_test=8, image_size=64, seed=3)
    common = ["--dataset", str(data), "--label_column", "center_digit", "--model_size", "tiny", "--max_steps", "3",
              "--per_device_train_batch_size", "8", "--use_cpu", "true", "--report_to", "none",
              "--disable_tqdm", "true", "--save_strategy", "no", "--eval_strategy", "no", "--seed", "5",
              "--learning_rate", "1e-2"]
    overrides = ["--config_overrides", "edge_compensation_type=stem,stem_norm_type=batch"]
    pretrain.main([*common, *overrides, "--output_dir", str(tmp_path / "plain")])
    with caplog.at_level(logging.WARNING, logger="centerfocus.tools.pretrain"):
        pretrain.main([*common, *overrides, "--edge_object_scale", "0.3", "--output_dir", str(tmp_path / "edge")])
    assert "edge_stem_width_ratio=0.5" in caplog.text  # the tiny preset's edge stem is half width
    plain = load_file(tmp_path / "plain" / "model.safetensors")
    edge = load_file(tmp_path / "edge" / "model.safetensors")
    key = "vision_stem.edge_compensation.layers.0.weight"
    assert key in edge and "edge_classifier.weight" in edge
    assert not torch.equal(edge[key], plain[key])
    with pytest.raises(ValueError, match="--edge_object_scale"):
        pretrain.main([*common, "--edge_object_scale", "0.3", "--output_dir", str(tmp_path / "none")])


def test_text_init_copies_bert_weights(tmp_path, tokenizer):
    from transformers import BertConfig, BertModel

    bert_dir = tmp_path / "bert"
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=64))
    bert.save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    model_args, data_args, _ = train.parse_args(["--dataset", "unused", "--text_init", str(bert_dir),
                                                 "--model_size", "tiny", "--max_target_length", "16"])
    tok = train.prepare_tokenizer(model_args, [])
    model = train.build_model(model_args, data_args, tok)
    state = model.state_dict()
    bert_state = bert.state_dict()
    assert torch.equal(state["model.shared.weight"], bert_state["embeddings.word_embeddings.weight"])
    for side in ("encoder", "decoder"):
        assert torch.equal(state[f"model.{side}.layers.1.self_attn.q_proj.weight"],
                           bert_state["encoder.layer.1.attention.self.query.weight"])
        assert torch.equal(state[f"model.{side}.layers.0.mlp.fc2.bias"], bert_state["encoder.layer.0.output.dense.bias"])
    assert model.config.hidden_size == 32 and model.config.decoder_layers == 2


def _bad_folder(tmp_path, caption_data, mutate) -> Path:
    import shutil

    folder = tmp_path / "bad"
    shutil.copytree(caption_data, folder)
    mutate(folder)
    return folder


def _rewrite_metadata(folder: Path, split: str, edit) -> None:
    path = folder / split / "metadata.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.write_text("\n".join(json.dumps(r) for r in edit(rows)) + "\n")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: sorted((f / "train").glob("*.png"))[2].unlink(),
         r"00002\.png listed in .*metadata\.jsonl does not exist"),
        (lambda f: sorted((f / "train").glob("*.png"))[1].write_bytes(b"\x89PNG\r\n\x1a\nbroken"),
         r"Unreadable image in split 'train', row 1: .*00001\.png"),
        (lambda f: _rewrite_metadata(f, "train", lambda rows: [{"file_name": r["file_name"]} for r in rows]),
         r"metadata\.jsonl has no column 'text'"),
        (lambda f: _rewrite_metadata(f, "train", lambda rows: [{**rows[0], "text": ""}, *rows[1:]]),
         r"Split 'train', row 0: caption column 'text'"),
    ],
    ids=["missing-image", "corrupt-image", "missing-caption-column", "empty-caption"],
)
def test_bad_data_stops_before_training(tmp_path, caption_data, mutate, message):
    folder = _bad_folder(tmp_path, caption_data, mutate)
    output = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        _train(folder, output, "--max_steps", "2")
    assert not any(output.glob("checkpoint-*"))


def test_empty_split_and_missing_split_are_named(tmp_path, caption_data):
    import datasets

    from centerfocus.tools.caption_data import check_caption_dataset

    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    empty = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"image": [], "text": []}, features=features)})
    with pytest.raises(ValueError, match="Split 'train' is empty"):
        check_caption_dataset(empty, "image", "text")
    with pytest.raises(ValueError, match="no split 'validation'"):
        _train(caption_data, tmp_path / "out", "--max_steps", "2", "--eval_split", "validation")
    empty_folder = tmp_path / "empty_folder" / "train"
    empty_folder.mkdir(parents=True)
    (empty_folder / "metadata.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"metadata\.jsonl has no rows"):
        _train(empty_folder.parent, tmp_path / "out", "--max_steps", "2")


def test_config_overrides_are_validated():
    with pytest.raises(ValueError, match="not a CenterFocusConfig field"):
        train._parse_overrides("hiden_size=3")
    assert train._parse_overrides("stem_channels=8|16,image_tokenizer_type=foveated") == {
        "stem_channels": (8, 16), "image_tokenizer_type": "foveated"}


def test_overrides_with_another_number_of_stem_stages_drop_the_presets_per_stage_fields():
    four = {"stem_channels": (8, 16, 32, 64), "stem_strides": (2, 2, 2, 2), "stem_kernel_sizes": (3, 3, 3, 3),
            "center_sigmas": (0.2, 0.3, 0.4, 0.5), "stem_norm_type": "batch"}
    # two stages given: the preset's four strides, kernels and sigmas go, the rest of the preset stays
    fields = train.apply_overrides(dict(four), "stem_channels=16|32,stem_kernel_sizes=5|3")
    assert fields == {"stem_channels": (16, 32), "stem_kernel_sizes": (5, 3), "stem_norm_type": "batch"}
    config = CenterFocusConfig(**fields, image_size=64, image_tokenizer_grid_size=8)
    assert config.stem_strides == CenterFocusConfig().stem_strides
    assert config.center_sigmas == CenterFocusConfig().center_sigmas
    # the same number of stages: only what the overrides name changes
    same = train.apply_overrides(dict(four), "stem_channels=4|8|16|32")
    assert same == {**four, "stem_channels": (4, 8, 16, 32)}


def test_lora_without_merging_saves_the_plain_base_model(caption_data, trained_folder, tmp_path):
    output = tmp_path / "lora_unmerged"
    _train(caption_data, output, "--model_name_or_path", str(trained_folder), "--lora_r", "4", "--max_steps", "2",
           "--learning_rate", "1e-2", "--eval_strategy", "no", "--do_eval", "false", "--save_strategy", "no")
    saved, info = CenterFocusForConditionalGeneration.from_pretrained(output, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    base = CenterFocusForConditionalGeneration.from_pretrained(trained_folder).state_dict()
    for name, tensor in saved.state_dict().items():  # LoRA trains adapters only: the base weights are the start's
        assert torch.equal(tensor, base[name]), name
    assert any("lora_B" in name for name in load_file(output / "adapter" / "adapter_model.safetensors"))


def test_a_folder_holding_files_is_not_trained_into_unless_asked(caption_data, tmp_path):
    output = tmp_path / "taken"
    output.mkdir()
    (output / "model.safetensors").write_bytes(b"somebody's model")
    with pytest.raises(ValueError, match=r"already exists and is not empty\. Pass --overwrite_output_dir"):
        _train(caption_data, output, "--max_steps", "1")
    assert (output / "model.safetensors").read_bytes() == b"somebody's model"
    _train(caption_data, output, "--max_steps", "1", "--overwrite_output_dir", "true", "--eval_strategy", "no",
           "--do_eval", "false", "--save_strategy", "no")
    assert CenterFocusForConditionalGeneration.from_pretrained(output).config.model_type == "centerfocus"


@pytest.mark.parametrize("exists", [False, True])
def test_resume_true_without_a_checkpoint_is_refused(caption_data, tmp_path, exists):
    output = tmp_path / "fresh"
    if exists:
        output.mkdir()
    with pytest.raises(ValueError, match=r"no checkpoint-\* folder in .*fresh to resume"):
        _train(caption_data, output, "--max_steps", "1", "--resume_from_checkpoint", "true")


def test_hyphenated_flags_are_not_overridden_by_the_defaults(caption_data, tmp_path):
    _, _, training_args = train.parse_args(["--dataset", str(caption_data), "--output-dir", str(tmp_path / "x"),
                                            "--save-strategy", "no", "--eval-strategy=no", "--report-to", "none"])
    assert training_args.output_dir == str(tmp_path / "x")
    assert training_args.save_strategy == "no" and training_args.eval_strategy == "no"
    assert training_args.report_to == []


def test_vision_init_refuses_a_folder_without_stage_one_weights(caption_data, trained_folder):
    model_args, data_args, _ = train.parse_args(["--dataset", str(caption_data), "--vision_init", str(trained_folder),
                                                 "--model_size", "tiny"])
    tokenizer = train.prepare_tokenizer(model_args, ["a red circle in the centre"])
    with pytest.raises(ValueError, match=r"is not a stage-1 CenterFocusForImageClassification folder"):
        train.build_model(model_args, data_args, tokenizer)


def test_pretrain_vision_without_an_evaluation_split_trains_with_its_defaults(tmp_path):
    from centerfocus.tools import pretrain

    classes = generate_classification_dataset(tmp_path / "classes", num_per_class=4, seed=2)
    shutil.rmtree(classes / "test")  # the README's layout: class sub-folders only
    vision = tmp_path / "vision"
    pretrain.main(["--dataset", str(classes), "--output_dir", str(vision), "--model_size", "tiny", "--max_steps", "2",
                   "--per_device_train_batch_size", "8", "--use_cpu", "true", "--report_to", "none",
                   "--disable_tqdm", "true"])
    assert CenterFocusForImageClassification.from_pretrained(vision).config.num_labels > 1
    with pytest.raises(ValueError, match="already exists and is not empty"):  # the same guard as train
        pretrain.main(["--dataset", str(classes), "--output_dir", str(vision), "--model_size", "tiny"])


def test_image_size_flag_wins_over_config_overrides(caption_data):
    model_args, data_args, _ = train.parse_args(["--dataset", str(caption_data), "--model_size", "tiny",
                                                 "--config_overrides", "image_size=64", "--image_size", "32"])
    tokenizer = train.prepare_tokenizer(model_args, ["a red circle in the centre"])
    assert train.build_model(model_args, data_args, tokenizer).config.image_size == 32


def test_label_smoothing_trains_and_smooths_the_cross_entropy(caption_data, tmp_path):
    import torch.nn.functional as F
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

    from centerfocus.tools.caption_data import CaptionCollator

    metrics = _train(caption_data, tmp_path / "smoothed", "--max_steps", "2", "--label_smoothing_factor", "0.1",
                     "--eval_strategy", "no", "--do_eval", "false", "--save_strategy", "no")
    assert np.isfinite(metrics["train_loss"])
    # the Trainer's smoothed loss on one batch equals torch's label-smoothed cross-entropy over the model's logits
    model = CenterFocusForConditionalGeneration.from_pretrained(tmp_path / "smoothed").eval()
    processor = CenterFocusProcessor.from_pretrained(tmp_path / "smoothed")
    rows = [{"image": Image_open(p), "text": "a red circle in the centre"}
            for p in sorted((caption_data / "train").glob("*.png"))[:3]]
    batch = CaptionCollator(processor, model=model)(rows)
    assert torch.equal(batch["decoder_input_ids"], model.prepare_decoder_input_ids_from_labels(batch["labels"]))
    args = Seq2SeqTrainingArguments(str(tmp_path / "args"), label_smoothing_factor=0.1, use_cpu=True,
                                    report_to="none", remove_unused_columns=False)
    trainer = Seq2SeqTrainer(model=model, args=args, data_collator=CaptionCollator(processor, model=model))
    with torch.no_grad():
        smoothed = trainer.compute_loss(model, dict(batch))
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    expected = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100,
                               label_smoothing=0.1)
    torch.testing.assert_close(smoothed, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("flags, message", [
    (["--max_train_samples", "0"], "--max_train_samples must be at least 1"),
    (["--max_eval_samples", "-2"], "--max_eval_samples must be at least 1"),
    (["--max_target_length", "0"], "--max_target_length must be at least 2"),
])
def test_sample_and_length_limits_are_checked_before_any_work(caption_data, tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        train.main(["--dataset", str(caption_data), "--output_dir", str(tmp_path / "out"), "--model_size", "tiny",
                    *flags])
    assert not (tmp_path / "out").exists()
