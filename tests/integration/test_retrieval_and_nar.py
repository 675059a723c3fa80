"""Retrieval-augmented captioning and the non-autoregressive decoder through the CLI and the pipeline."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from centerfocus import CenterFocusForConditionalGeneration, CenterFocusProcessor
from centerfocus.tools import train
from centerfocus.tools.data import generate_caption_dataset
from centerfocus.tools.retrieval import SEPARATOR, CaptionIndex, retrieval_prompts

from ..conftest import pipeline_captions


ARGS = ["--model_size", "tiny", "--use_cpu", "true", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3",
        "--disable_tqdm", "true", "--report_to", "none", "--max_target_length", "40", "--tokenizer_vocab_size", "120",
        "--eval_strategy", "no", "--do_eval", "false", "--save_strategy", "no", "--max_steps", "4"]


@pytest.fixture(scope="module")
def long_caption_data(tmp_path_factory) -> Path:
    return generate_caption_dataset(tmp_path_factory.mktemp("rag") / "scenes", num_train=24, num_test=6, seed=5,
                                    describe_periphery=True)


def _test_images(data: Path, count: int = 3) -> list[str]:
    return [str(p) for p in sorted((data / "test").glob("*.png"))[:count]]


def test_search_returns_the_exact_nearest_neighbours():
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.nn.functional.normalize(torch.randn(60, 16, generator=generator), dim=-1)
    queries = torch.nn.functional.normalize(torch.randn(9, 16, generator=generator), dim=-1)
    index = CaptionIndex(embeddings, [f"caption {i}" for i in range(60)])
    scores, indices = index.search(queries, k=5)
    for q in range(9):  # brute force in float64, one pair at a time
        similarity = [float(np.dot(queries[q].double().numpy(), embeddings[i].double().numpy())) for i in range(60)]
        expected = sorted(range(60), key=lambda i: -similarity[i])[:5]
        assert indices[q].tolist() == expected
        assert np.allclose(scores[q].numpy(), [similarity[i] for i in expected], atol=1e-6)
    # a query equal to an indexed embedding finds itself first, unless identical entries are excluded
    _, own = index.search(embeddings[:4], k=1)
    assert own[:, 0].tolist() == [0, 1, 2, 3]
    _, others = index.search(embeddings[:4], k=1, exclude_identical=True)
    assert all(o != i for i, o in enumerate(others[:, 0].tolist()))
    assert index.prompts(queries[:1], k=2)[0] == SEPARATOR.join(f"caption {i}" for i in indices[0, :2].tolist())


def test_rag_trains_indexes_and_captions_through_cli_and_pipeline(long_caption_data, tmp_path):
    base = tmp_path / "base"
    train.main(["--dataset", str(long_caption_data), "--output_dir", str(base), *ARGS])
    index_dir = tmp_path / "index"
    result = subprocess.run([sys.executable, "-m", "centerfocus.tools.cli", "index", "--model", str(base),
                             "--dataset", str(long_caption_data), "--output", str(index_dir)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    index = CaptionIndex.load(str(index_dir))
    assert len(index.captions) == 24 and index.embeddings.shape[0] == 24
    saved = json.loads((index_dir / "captions.json").read_text())
    assert saved["embedding_model"] == str(base.resolve())

    rag = tmp_path / "rag"
    train.main(["--dataset", str(long_caption_data), "--output_dir", str(rag), *ARGS,
                "--model_name_or_path", str(base), "--retrieval_index", str(index_dir), "--retrieval_k", "2"])
    images = _test_images(long_caption_data)
    prompts = retrieval_prompts(index, [Image.open(p) for p in images], k=2)
    assert all(len(p.split(SEPARATOR)) == 2 for p in prompts)
    model = CenterFocusForConditionalGeneration.from_pretrained(rag)
    processor = CenterFocusProcessor.from_pretrained(rag)
    expected = processor.batch_decode(model.generate(**processor(images=[Image.open(p) for p in images],
                                                                  text=prompts)), skip_special_tokens=True)
    result = subprocess.run([sys.executable, "-m", "centerfocus.tools.cli", "caption", "--model", str(rag),
                             "--index", str(index_dir), "--k", "2", *images], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    captions = [json.loads(line)["caption"] for line in result.stdout.strip().splitlines()]
    assert captions == [c.strip() for c in expected]
    captioner = pipeline("image-text-to-text", model=str(rag))
    assert pipeline_captions(captioner, images[0], prompt=prompts[0])[0].strip() == expected[0].strip()


def test_non_autoregressive_trains_and_captions_through_cli_and_pipeline(long_caption_data, tmp_path):
    output = tmp_path / "nar"
    train.main(["--dataset", str(long_caption_data), "--output_dir", str(output), *ARGS, "--decoder_type",
                "non_autoregressive", "--nar_iterations", "3"])
    model = CenterFocusForConditionalGeneration.from_pretrained(output)
    assert model.config.decoder_type == "non_autoregressive" and model.config.nar_iterations == 3
    assert model.config.nar_max_length == 40
    processor = CenterFocusProcessor.from_pretrained(output)
    images = _test_images(long_caption_data, 2)
    expected = processor.batch_decode(model.generate(**processor(images=[Image.open(p) for p in images])),
                                      skip_special_tokens=True)
    captioner = pipeline("image-text-to-text", model=str(output))
    assert pipeline_captions(captioner, images) == expected
    result = subprocess.run([sys.executable, "-m", "centerfocus.tools.cli", "caption", "--model", str(output),
                             *images], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [json.loads(line)["caption"] for line in result.stdout.strip().splitlines()] == [e.strip() for e in
                                                                                           expected]
