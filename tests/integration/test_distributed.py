"""Training on two processes over gloo (CPU): `centerfocus train` under torchrun (DDP through the Trainer) matches one
process with the same global batch, and the model shards with FSDP2 (`fully_shard`), trains to the same weights and
saves a checkpoint that loads in a single process. Accelerate applies FSDP only on accelerators, so on CPU the
FSDP2 run drives `fully_shard` directly; `benchmarks/gpu_check.sh`-style GPU runs use the Trainer's `--fsdp`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from centerfocus import CenterFocusForConditionalGeneration
from centerfocus.tools import train
from centerfocus.tools.data import generate_caption_dataset

from ..conftest import FLOAT32_EPS


# captions of the built-in shapes data all have six words (one token each with a 200-word vocabulary), so each
# process's mean loss over its half of the batch averages to the one process's mean over the whole batch
COMMON = ["--model_size", "tiny", "--image_size", "32", "--use_cpu", "true", "--learning_rate", "0.05", "--optim",
          "sgd", "--lr_scheduler_type", "constant", "--max_steps", "4", "--logging_steps", "1", "--save_strategy",
          "steps", "--save_steps", "4", "--eval_strategy", "no", "--do_eval", "false", "--report_to", "none",
          "--seed", "0", "--tokenizer_vocab_size", "200", "--disable_tqdm", "true"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return generate_caption_dataset(tmp_path_factory.mktemp("ddp") / "scenes", num_train=48, num_test=8,
                                    image_size=32, seed=4)


def _assert_same_training(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """A few SGD steps of lr 0.05 move a weight by ~1e-3 per example's gradient; the two runs sum the same gradients
    in another order, which moves it by ~1e-7 of the tensor's size. Tolerance: 256 ulps of the tensor's largest entry,
    and at least 1e-6 for tensors whose gradient is zero in exact arithmetic (attention key biases), which hold
    rounding noise only."""
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=0, atol=max(256 * FLOAT32_EPS * scale, 1e-6), msg=name)


def _losses(output: Path) -> list[float]:
    state = json.loads((output / "checkpoint-4" / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def _torchrun(args: list[str], port: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                           "127.0.0.1", "--master_port", str(port), *args], capture_output=True, text=True,
                          timeout=600, env=env)


def test_two_ddp_processes_train_as_one_process_with_the_same_global_batch(data, tmp_path):
    one = tmp_path / "one"
    train.main(["--dataset", str(data), "--output_dir", str(one), *COMMON, "--per_device_train_batch_size", "8"])
    two = tmp_path / "two"
    result = _torchrun(["-m", "centerfocus.tools.train", "--dataset", str(data), "--output_dir", str(two), *COMMON,
                        "--per_device_train_batch_size", "4"], port=29621)
    assert result.returncode == 0, result.stderr[-3000:]
    # the same examples in every step (accelerate's seeded sampler; rank r takes the r-th half of the global batch),
    # so the curves agree to float32 rounding of the gradient all-reduce (~1e-7 relative), not to a skipped example
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-5)
    expected, actual = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        _assert_same_training(actual[name], expected[name], name)
    assert _losses(one)[-1] < _losses(one)[0]  # the four steps trained


def test_fsdp_on_cpu_is_refused_instead_of_silently_running_ddp(data, tmp_path):
    with pytest.raises(ValueError, match="--fsdp needs GPUs"):
        train.main(["--dataset", str(data), "--output_dir", str(tmp_path / "x"), *COMMON, "--fsdp", "full_shard"])


FSDP2_SCRIPT = """
import json, os, sys, torch, torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from centerfocus import CenterFocusConfig, CenterFocusForConditionalGeneration

output = sys.argv[1]
torch.manual_seed(0)
config = CenterFocusConfig(vocab_size=64, hidden_size=32, num_attention_heads=4, encoder_layers=2, decoder_layers=2,
                           intermediate_size=64, max_position_embeddings=64, image_size=32, stem_channels=(8, 16),
                           stem_kernel_sizes=(3, 3), stem_strides=(2, 2), image_tokenizer_grid_size=8,
                           edge_compensation_type="stem", image_summary_type="flatten")
model = CenterFocusForConditionalGeneration(config)
generator = torch.Generator().manual_seed(1)
pixel_values = torch.randn(8, 3, 32, 32, generator=generator)
labels = torch.randint(4, 64, (8, 6), generator=generator)
distributed = "RANK" in os.environ
if distributed:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    for layer in [*model.model.encoder.layers, *model.model.decoder.layers]:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    pixel_values, labels = pixel_values.chunk(world)[rank], labels.chunk(world)[rank]
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
losses = []
for step in range(3):
    loss = model(pixel_values=pixel_values, labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    value = loss.detach().clone()
    if distributed:
        dist.all_reduce(value)
        value /= world
    losses.append(value.item())
sharded = distributed and all(type(p.data).__name__ == "DTensor" for p in model.parameters())
if distributed:  # the contrastive loss's temperature is a parameter too (its loss depends on the batch: not compared)
    contrastive = CenterFocusForConditionalGeneration(CenterFocusConfig(**{**config.to_dict(),
                                                                            "contrastive_loss_weight": 0.1}))
    fully_shard(contrastive, mesh=mesh)
    contrastive(pixel_values=pixel_values, labels=labels).loss.backward()
    sharded = sharded and type(contrastive.logit_scale.data).__name__ == "DTensor"
state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)) \\
    if distributed else model.state_dict()
if not distributed or dist.get_rank() == 0:
    model.save_pretrained(output, state_dict=state)
    (__import__("pathlib").Path(output) / "losses.json").write_text(json.dumps({"losses": losses, "sharded": sharded}))
if distributed:
    dist.destroy_process_group()
"""


def test_fsdp2_shards_the_model_trains_as_one_process_and_saves_a_loadable_checkpoint(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    script = tmp_path / "fsdp2.py"
    script.write_text(FSDP2_SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(one)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    result = _torchrun([str(script), str(two)], port=29622)
    assert result.returncode == 0, result.stderr[-3000:]
    reference, sharded = (json.loads((folder / "losses.json").read_text()) for folder in (one, two))
    assert sharded["sharded"]  # every parameter, the stem's 1-element sigmas included, became a DTensor shard
    assert sharded["losses"] == pytest.approx(reference["losses"], rel=1e-5)
    expected = CenterFocusForConditionalGeneration.from_pretrained(one).eval()
    loaded = CenterFocusForConditionalGeneration.from_pretrained(two).eval()  # a single process, no process group
    for name, tensor in expected.state_dict().items():
        _assert_same_training(loaded.state_dict()[name], tensor, name)
    pixel_values = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert torch.equal(loaded.generate(pixel_values=pixel_values, max_new_tokens=6),
                           expected.generate(pixel_values=pixel_values, max_new_tokens=6))
