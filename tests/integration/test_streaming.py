"""`centerfocus train --streaming`: parquet and webdataset shards read as a `datasets` stream, decoded in DataLoader
workers, and a run killed with SIGKILL that resumes on exactly the examples it had left in the epoch."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from centerfocus.tools import train
from centerfocus.tools.caption_data import load_image_dataset
from centerfocus.tools.data import generate_caption_dataset
from centerfocus.tools.streaming import write_shards

from ..conftest import assert_close_at_scale


# 48 training scenes in 4 shards, batch 8: one epoch is 6 steps
ARGS = ["--streaming", "--model_size", "tiny", "--image_size", "32", "--per_device_train_batch_size", "8",
        "--learning_rate", "1e-3", "--report_to", "none", "--seed", "0", "--logging_steps", "1",
        "--shuffle_buffer_size", "16", "--dataloader_num_workers", "2", "--eval_strategy", "no", "--do_eval", "false"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return generate_caption_dataset(tmp_path_factory.mktemp("data") / "scenes", num_train=48, num_test=8,
                                    image_size=32, seed=5)


@pytest.fixture(scope="module", params=["parquet", "webdataset"])
def shards(request, folder, tmp_path_factory) -> tuple[Path, list[str]]:
    splits = load_image_dataset(str(folder))
    output = tmp_path_factory.mktemp(request.param)
    write_shards(splits["train"], output, "train", num_shards=4, format=request.param)
    write_shards(splits["test"], output, "test", num_shards=1, format=request.param)
    columns = ["--image_column", "png", "--caption_column", "txt"] if request.param == "webdataset" else []
    return output, columns


def test_a_streamed_run_trains_and_saves_a_folder_that_captions(shards, tmp_path, folder):
    data, columns = shards
    output = tmp_path / "run"
    metrics = train.main(["--dataset", str(data), *columns, "--output_dir", str(output), *ARGS, "--max_steps", "6",
                          "--save_strategy", "no", "--do_eval", "true"])
    assert metrics["train_loss"] > 0 and "eval_loss" in metrics
    model = AutoModelForImageTextToText.from_pretrained(output).eval()
    processor = AutoProcessor.from_pretrained(output)
    image = Image.open(sorted((folder / "test").glob("*.png"))[0])
    with torch.no_grad():
        tokens = model.generate(**processor(images=[image]))
    assert tokens.shape[0] == 1 and tokens.shape[1] > 1


def test_streaming_asks_for_max_steps_and_names_a_missing_column(shards, tmp_path):
    data, _ = shards
    with pytest.raises(ValueError, match="--streaming needs --max_steps"):
        train.main(["--dataset", str(data), "--output_dir", str(tmp_path / "a"), *ARGS])
    with pytest.raises(ValueError, match="no column 'caption'"):
        train.main(["--dataset", str(data), "--output_dir", str(tmp_path / "b"), *ARGS, "--max_steps", "2",
                    "--caption_column", "caption", "--image_column", "png" if "webdataset" in str(data) else "image"])


def test_an_unreadable_image_in_the_stream_is_named(folder, tmp_path):
    splits = load_image_dataset(str(folder))
    write_shards(splits["train"], tmp_path / "shards", "train", num_shards=1, format="webdataset")
    broken = tmp_path / "broken"
    broken.mkdir()
    import tarfile

    with tarfile.open(tmp_path / "shards" / "train-00000-of-00001.tar") as source, \
            tarfile.open(broken / "train-00000-of-00001.tar", "w") as target:
        for index, member in enumerate(source.getmembers()):
            data = source.extractfile(member).read()
            if index == 2:  # the second example's image: the first bytes of a PNG, cut off
                data = data[:40]
            member.size = len(data)
            target.addfile(member, __import__("io").BytesIO(data))
    with pytest.raises(ValueError, match="Unreadable image at image column 'png', key"):
        train.main(["--dataset", str(broken), "--image_column", "png", "--caption_column", "txt", "--output_dir",
                    str(tmp_path / "run"), *ARGS, "--max_steps", "6", "--save_strategy", "no",
                    "--dataloader_num_workers", "0"])


# Runs `centerfocus train` and writes, for every training step, a fingerprint of each image the model trained on (the
# training step's inputs, after any skipping the Trainer does on resume); kills itself after the save at --kill_step.
RECORDING_SCRIPT = """
import hashlib, json, os, signal, sys
from transformers import Seq2SeqTrainer, TrainerCallback
from centerfocus.tools import train

log, kill_step, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
original = Seq2SeqTrainer.training_step

def recording_step(self, model, inputs, *args, **kwargs):
    rows = [hashlib.sha1(row.numpy().tobytes()).hexdigest()[:16] for row in inputs["pixel_values"]]
    with open(log, "a") as handle:
        handle.write(json.dumps(rows) + "\\n")
    return original(self, model, inputs, *args, **kwargs)

Seq2SeqTrainer.training_step = recording_step

class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no final save: like a crash or an OOM kill

train.run_training(*train.parse_args(argv), callbacks=[KillAfterSave()])
"""


def _record(log: Path, kill_step: int, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RECORDING_SCRIPT, str(log), str(kill_step), *argv],
                          capture_output=True, text=True, timeout=600)


def test_a_killed_streaming_run_resumes_on_the_examples_it_had_left(shards, tmp_path):
    data, columns = shards
    common = ["--dataset", str(data), *columns, *ARGS, "--max_steps", "6", "--save_strategy", "steps",
              "--save_steps", "2", "--save_total_limit", "5"]
    reference_log = tmp_path / "reference.jsonl"
    result = _record(reference_log, 0, [*common, "--output_dir", str(tmp_path / "uninterrupted")])
    assert result.returncode == 0, result.stderr[-3000:]
    reference = [json.loads(line) for line in reference_log.read_text().splitlines()]
    assert len(reference) == 6
    seen = [row for step in reference for row in step]
    assert len(seen) == len(set(seen)) == 48  # the uninterrupted run: every example once in the epoch

    interrupted, log = tmp_path / "interrupted", tmp_path / "interrupted.jsonl"
    result = _record(log, 4, [*common, "--output_dir", str(interrupted)])
    assert result.returncode == -9, result.stderr[-3000:]
    assert (interrupted / "checkpoint-4").is_dir() and not (interrupted / "model.safetensors").exists()
    before_kill = [json.loads(line) for line in log.read_text().splitlines()]
    assert before_kill == reference[:4]
    log.unlink()
    result = _record(log, 0, [*common, "--output_dir", str(interrupted), "--resume_from_checkpoint", "true"])
    assert result.returncode == 0, result.stderr[-3000:]
    after_resume = [json.loads(line) for line in log.read_text().splitlines()]
    # the resumed run trains steps 5 and 6 on the examples the uninterrupted run saw there: nothing twice, nothing lost
    assert after_resume == reference[4:]

    expected = load_file(tmp_path / "uninterrupted" / "model.safetensors")
    resumed = load_file(interrupted / "model.safetensors")
    for name in expected:
        # the same steps on the same batches from the same state; only thread timing in reductions may round
        # differently: 256 ulps of each tensor's largest entry (one step more or less moves weights by ~lr, 1e-3)
        assert_close_at_scale(resumed[name], expected[name], ulps=256, msg=name)
