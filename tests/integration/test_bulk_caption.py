"""`centerfocus caption --dataset DATA --output F`: batched captions of a whole data set into .jsonl / .parquet, equal to
`generate()`'s, resumable after a SIGKILL without a row written twice or lost, with undecodable images recorded."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from centerfocus import CenterFocusForConditionalGeneration, CenterFocusProcessor
from centerfocus.tools import caption as caption_command
from centerfocus.tools.bulk_caption import load_rows
from centerfocus.tools.streaming import write_shards

from ..conftest import write_image_folder


NUM_IMAGES = 22  # batches of 8: two full, one of 6


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("bulk") / "images", NUM_IMAGES, first_seed=100)


@pytest.fixture(scope="module")
def expected(saved_folder, image_folder) -> list[str]:
    """generate() on the same batches of 8, made independently of the bulk path."""
    from PIL import Image

    model = CenterFocusForConditionalGeneration.from_pretrained(saved_folder).eval()
    processor = CenterFocusProcessor.from_pretrained(saved_folder)
    paths = sorted(image_folder.glob("*.png"))
    captions = []
    for start in range(0, len(paths), 8):
        with torch.no_grad():
            tokens = model.generate(**processor(images=[Image.open(p) for p in paths[start:start + 8]]))
        captions += [c.strip() for c in processor.batch_decode(tokens, skip_special_tokens=True)]
    assert len(set(captions)) > 1  # varied captions: the comparison is not of constants
    return captions


def _read(output: Path) -> list[dict]:
    if output.suffix == ".jsonl":
        return [json.loads(line) for line in output.read_text().splitlines()]
    return pq.read_table(output).to_pylist()


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_data_set_is_captioned_as_generate_captions_it(saved_folder, image_folder, expected, tmp_path, suffix):
    output = tmp_path / f"results{suffix}"
    summary = caption_command.caption_main(["--model", str(saved_folder), "--dataset", str(image_folder),
                                            "--output", str(output), "--batch_size", "8"])
    assert summary == {"rows": NUM_IMAGES, "errors": 0, "skipped": 0}
    rows = _read(output)
    assert [r["row"] for r in rows] == list(range(NUM_IMAGES))
    assert [r["source"] for r in rows] == [f"img{i:03d}.png" for i in range(NUM_IMAGES)]
    assert [r["caption"] for r in rows] == expected
    assert all(r["error"] is None for r in rows)
    assert not (tmp_path / f"results{suffix}.parts").exists()


def test_webdataset_shards_are_captioned_by_key(saved_folder, image_folder, expected, tmp_path):
    from centerfocus.tools.caption_data import load_image_dataset

    write_shards(load_image_dataset(str(image_folder))["train"], tmp_path / "shards", "train", num_shards=2,
                 format="webdataset")
    output = tmp_path / "results.jsonl"
    caption_command.caption_main(["--model", str(saved_folder), "--dataset", str(tmp_path / "shards"),
                                  "--image_column", "png", "--output", str(output), "--batch_size", "8"])
    rows = _read(output)
    assert len({r["source"] for r in rows}) == NUM_IMAGES  # every webdataset key once
    assert [r["caption"] for r in rows] == expected


# Captions with the bulk path and kills itself (SIGKILL, no cleanup) right after the results of batch `kill_after`
# are written: a crash between batches, or (`tear`) in the middle of writing the next jsonl line.
KILLING_SCRIPT = """
import os, signal, sys
from centerfocus.tools import bulk_caption, caption

kill_after, tear = int(sys.argv[1]), sys.argv[2] == "tear"
calls = []
for writer in (bulk_caption._JsonlWriter, bulk_caption._ParquetWriter):
    original = writer.write
    def write(self, rows, original=original):
        original(self, rows)
        calls.append(1)
        if len(calls) == kill_after:
            if tear:
                self.handle.write('{"row": 99, "source": "torn'); self.handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    writer.write = write
caption.caption_main(sys.argv[3:])
"""


@pytest.mark.parametrize(("suffix", "tear"), [(".jsonl", "tear"), (".jsonl", "clean"), (".parquet", "clean")])
def test_a_killed_run_resumes_after_the_last_written_row(saved_folder, image_folder, expected, tmp_path, suffix, tear):
    output = tmp_path / f"results{suffix}"
    argv = ["--model", str(saved_folder), "--dataset", str(image_folder), "--output", str(output), "--batch_size", "8"]
    result = subprocess.run([sys.executable, "-c", KILLING_SCRIPT, "2", tear, *argv], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == -9, result.stderr[-3000:]
    if suffix == ".parquet":
        assert not output.exists() and len(list((tmp_path / "results.parquet.parts").glob("part-*"))) == 2
    summary = caption_command.caption_main(argv)
    assert summary == {"rows": NUM_IMAGES - 16, "errors": 0, "skipped": 16}
    rows = _read(output)
    assert [r["row"] for r in rows] == list(range(NUM_IMAGES))  # nothing twice, nothing lost
    assert [r["caption"] for r in rows] == expected


def test_a_finished_parquet_file_is_not_overwritten(saved_folder, image_folder, tmp_path):
    output = tmp_path / "results.parquet"
    argv = ["--model", str(saved_folder), "--dataset", str(image_folder), "--output", str(output)]
    caption_command.caption_main(argv)
    before = output.read_bytes()
    with pytest.raises(ValueError, match="finished results file"):
        caption_command.caption_main(argv)
    assert output.read_bytes() == before


def test_an_undecodable_image_is_recorded_and_the_rest_are_captioned(saved_folder, image_folder, expected, tmp_path):
    broken = tmp_path / "images"
    broken.mkdir()
    for path in image_folder.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / "img005.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    output = tmp_path / "results.jsonl"
    summary = caption_command.caption_main(["--model", str(saved_folder), "--dataset", str(broken), "--output",
                                            str(output), "--batch_size", "8"])
    assert summary == {"rows": NUM_IMAGES, "errors": 1, "skipped": 0}
    rows = _read(output)
    assert rows[5]["caption"] is None and "img005.png" in rows[5]["error"]
    others = [r["caption"] for i, r in enumerate(rows) if i != 5]
    assert all(others) and others[:5] == expected[:5]


@pytest.mark.parametrize(("argv", "message"), [
    (["--output", "x.csv"], "must end in .jsonl or .parquet"),
    (["--split", "validation", "--output", "x.jsonl"], "no split 'validation'"),
    (["--image_column", "picture", "--output", "x.jsonl"], "no column 'picture'"),
])
def test_bad_arguments_are_named(saved_folder, image_folder, tmp_path, argv, message):
    with pytest.raises(ValueError, match=message):
        caption_command.caption_main(["--model", str(saved_folder), "--dataset", str(image_folder), *argv])


def test_load_rows_counts_an_image_folder(image_folder):
    rows, total = load_rows(str(image_folder))
    assert total == NUM_IMAGES and sum(1 for _ in rows) == NUM_IMAGES
