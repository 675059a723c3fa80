"""User inputs to the command-line tools: sparsify's output folder and flags, image-folder metadata as spreadsheets
write it, and caption indexes whose embedding model has moved. Each stops with a ValueError naming the problem and
the file, or is read correctly."""

import json
import re
import shutil
from pathlib import Path

import pytest

from centerfocus.tools import caption, sparsity
from centerfocus.tools.caption_data import check_caption_dataset, check_image_folder, load_image_dataset
from centerfocus.tools.retrieval import SEPARATOR, CaptionIndex, retrieval_prompts

from ..conftest import make_image


pytestmark = pytest.mark.timeout(120)

CAPTIONS = ["a red circle in the centre", "a blue square in the centre", "a green star in the centre"]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def model_copy(saved_folder, tmp_path) -> Path:
    """A private copy of the tiny model folder: a test that fails must not damage the session's shared one."""
    return Path(shutil.copytree(saved_folder, tmp_path / "model"))


# --- centerfocus sparsify MODEL OUT -------------------------------------------------------------------------------

def test_sparsify_refuses_the_model_folder_as_output(model_copy, tmp_path):
    before = _files(model_copy)
    (tmp_path / "link").symlink_to(model_copy, target_is_directory=True)
    for output in (model_copy, tmp_path / "model" / ".." / "model", tmp_path / "link"):
        message = rf"output folder {re.escape(str(output))} is the model folder .*Name a new or empty output folder"
        with pytest.raises(ValueError, match=message):
            sparsity.main([str(model_copy), str(output)])
    assert _files(model_copy) == before  # the dense model is untouched


def test_sparsify_refuses_a_non_empty_output_folder(model_copy, saved_folder, tmp_path):
    other = Path(shutil.copytree(saved_folder, tmp_path / "other"))  # another model with its run's files
    (other / "checkpoint-5").mkdir()
    (other / "checkpoint-5" / "trainer_state.json").write_text("{}")
    (other / "all_results.json").write_text('{"eval_loss": 1.0}')
    before = _files(other)
    with pytest.raises(ValueError, match=rf"output folder {re.escape(str(other))} is not empty"):
        sparsity.main([str(model_copy), str(other)])
    assert _files(other) == before
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(ValueError, match=rf"output folder {re.escape(str(a_file))} is a file"):
        sparsity.main([str(model_copy), str(a_file)])
    assert a_file.read_text() == "mine"

    empty = tmp_path / "empty"  # an existing empty folder is fine
    empty.mkdir()
    report = sparsity.main([str(model_copy), str(empty)])
    assert report["all_2_4"] and (empty / "model.safetensors").is_file()
    assert json.loads((empty / "sparsity_report.json").read_text())["all_2_4"]


def test_sparsify_finetune_steps_needs_a_dataset(model_copy, tmp_path):
    with pytest.raises(ValueError, match="--finetune_steps needs --dataset"):
        sparsity.main([str(model_copy), str(tmp_path / "out"), "--finetune_steps", "3"])
    assert not (tmp_path / "out").exists()  # refused before any work


# --- image-folder metadata ------------------------------------------------------------------------------------------

def _image_folder(root: Path, count: int = 3) -> Path:
    split = root / "train"
    split.mkdir(parents=True)
    for i in range(count):
        make_image(i, size=32).save(split / f"{i}.png")
    return split


@pytest.mark.parametrize("name", ["metadata.csv", "metadata.jsonl"])
def test_metadata_saved_with_a_utf8_byte_order_mark_is_read(tmp_path, name):
    split = _image_folder(tmp_path / "data")
    if name.endswith(".csv"):  # what Excel's "CSV UTF-8" writes
        text = "file_name,text\r\n" + "".join(f"{i}.png,{c}\r\n" for i, c in enumerate(CAPTIONS))
    else:
        text = "".join(json.dumps({"file_name": f"{i}.png", "text": c}) + "\n" for i, c in enumerate(CAPTIONS))
    (split / name).write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    check_image_folder(tmp_path / "data", ("text",))
    train, _ = check_caption_dataset(load_image_dataset(str(tmp_path / "data"), required_columns=("text",)), "image",
                                     "text", validation_fraction=0)
    assert sorted(train["text"]) == sorted(CAPTIONS)


@pytest.mark.parametrize(
    ("name", "lines", "message"),
    [
        pytest.param("metadata.jsonl", ['{"file_name": "0.png", "text": "a"}', "",
                                        '{"file_name": "1.png", "text": "b"}', '{"text": "c"}'],
                     r"metadata\.jsonl, line 4: the row has no 'file_name'", id="jsonl-key-missing"),
        pytest.param("metadata.jsonl", ['{"file_name": "0.png", "text": "a"}', '{"file_name": null, "text": "b"}'],
                     r"metadata\.jsonl, line 2: the row has no 'file_name'", id="jsonl-null"),
        pytest.param("metadata.jsonl", ['{"file_name": "0.png", "text": "a"}', '["1.png", "b"]'],
                     r"metadata\.jsonl: line 2 is not a JSON object \(got list\)", id="jsonl-not-an-object"),
        pytest.param("metadata.csv", ["file_name,text", "0.png,a", "1.png,b", ",c"],
                     r"metadata\.csv, line 4: the row has no 'file_name'", id="csv-empty"),
        pytest.param("metadata.csv", ["file_name,text", "0.png,a", '1.png,"two', 'lines"', "   ,c"],
                     r"metadata\.csv, line 5: the row has no 'file_name'", id="csv-after-multiline-field"),
    ],
)
def test_metadata_row_without_file_name_is_named(tmp_path, name, lines, message):
    split = _image_folder(tmp_path / "data")
    (split / name).write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        check_image_folder(tmp_path / "data", ("text",))
    with pytest.raises(ValueError, match=message):
        load_image_dataset(str(tmp_path / "data"), required_columns=("text",))


def test_missing_image_names_the_metadata_line(tmp_path):
    split = _image_folder(tmp_path / "data")
    rows = [{"file_name": f"{i}.png", "text": c} for i, c in enumerate(CAPTIONS)]
    rows.append({"file_name": "9.png", "text": "d"})
    (split / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"9\.png listed in .*metadata\.jsonl does not exist \(line 4\)"):
        check_image_folder(tmp_path / "data")


# --- caption indexes ----------------------------------------------------------------------------------------------

def test_index_whose_embedding_model_is_gone_says_to_rebuild_it(model_copy, saved_folder, tmp_path, images):
    index_dir = CaptionIndex.build(str(model_copy), images[:3], CAPTIONS).save(str(tmp_path / "index"))
    shutil.rmtree(model_copy)
    message = (rf"Caption index {re.escape(str(index_dir))} was built with the embedding model "
               rf"{re.escape(str(model_copy.resolve()))}, which no longer "
               r"exists .*Rebuild the index with `centerfocus index")
    with pytest.raises(ValueError, match=message):
        CaptionIndex.load(str(index_dir))
    query = tmp_path / "query.png"
    make_image(9).save(query)
    with pytest.raises(ValueError, match=message):  # what `centerfocus caption --index` runs
        caption.caption_main(["--model", str(saved_folder), "--index", str(index_dir), str(query)])


def test_index_moved_together_with_its_embedding_model_still_works(saved_folder, tmp_path, images):
    index_dir = tmp_path / "index"
    inside = shutil.copytree(saved_folder, index_dir / "embedder")
    index = CaptionIndex.build(str(inside), images[:3], CAPTIONS)
    index.save(str(index_dir))
    assert json.loads((index_dir / "captions.json").read_text())["embedding_model"] == "embedder"
    expected = retrieval_prompts(index, images[3:], k=2)
    moved = Path(shutil.move(str(index_dir), str(tmp_path / "moved")))
    loaded = CaptionIndex.load(str(moved))
    assert loaded.embedding_model == str((moved / "embedder").resolve())
    assert retrieval_prompts(loaded, images[3:], k=2) == expected
    assert len(expected[0].split(SEPARATOR)) == 2


def test_index_without_an_embedding_model_refuses_to_embed_queries(tmp_path, images):
    import torch

    CaptionIndex(torch.eye(3), CAPTIONS).save(str(tmp_path / "index"))
    loaded = CaptionIndex.load(str(tmp_path / "index"))
    assert loaded.prompts(torch.eye(3)[:1], k=1) == [CAPTIONS[0]]  # search needs no model
    with pytest.raises(ValueError, match="records no embedding model"):
        retrieval_prompts(loaded, images[:1], k=1)


# --- centerfocus caption ----------------------------------------------------------------------------------------

def test_caption_in_batches_equals_one_generate_over_all_images(saved_folder, tiny_model, tiny_processor, tmp_path,
                                                                 capsys):
    import torch

    paths = []
    for seed in range(5):
        path = tmp_path / f"{seed}.png"
        make_image(seed).save(path)
        paths.append(str(path))
    captions = caption.caption_main(["--model", str(saved_folder), "--batch_size", "2", *paths])
    printed = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [row["image"] for row in printed] == paths
    with torch.no_grad():
        expected = tiny_processor.batch_decode(tiny_model.generate(**tiny_processor(images=[make_image(s) for s in
                                                                                            range(5)])),
                                               skip_special_tokens=True)
    assert captions == expected
    assert [row["caption"] for row in printed] == [c.strip() for c in expected]


@pytest.mark.parametrize("flags, message", [
    (["--num_beams", "0"], "argument --num_beams: must be at least 1, got 0"),
    (["--k", "-1"], "argument --k: must be at least 1, got -1"),
    (["--max_new_tokens", "0"], "argument --max_new_tokens: must be at least 1, got 0"),
    (["--batch_size", "x"], "argument --batch_size: expected a whole number, got 'x'"),
    (["--prompt", "hi", "--index", "idx"], "--prompt and --index both set the encoder prompt"),
])
def test_caption_refuses_bad_flag_values(saved_folder, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        caption.caption_main(["--model", str(saved_folder), *flags, "x.png"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("names", [("train", "test"), ("train",), ("img",)], ids=["train-and-test", "train", "none"])
def test_a_flat_image_folder_with_split_named_files_keeps_its_captions(tmp_path, names):
    # datasets assigns train_00000.png to "train" by name and leaves metadata.jsonl out: the captions were lost
    rows = []
    for prefix in names:
        for i in range(3):
            name = f"{prefix}_{i:05d}.png"
            make_image(i).save(tmp_path / name)
            rows.append({"file_name": name, "text": f"{prefix} caption {i}"})
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = load_image_dataset(str(tmp_path), required_columns=("text",))
    expected_splits = {"test": "test"}.get(names[-1], "train") if len(names) > 1 else "train"
    assert set(data) == ({"train", expected_splits} if len(names) > 1 else {"train"})
    for split in data:
        assert sorted(data[split]["text"]) == sorted(row["text"] for row in rows
                                                    if (split == "test") == row["file_name"].startswith("test"))
    check_caption_dataset(data, "image", "text", "train")


@pytest.mark.parametrize("setting", ["1", None], ids=["terminal-or-asked", "not-a-terminal"])
def test_captioning_many_images_shows_progress_on_a_terminal_only(saved_folder, tmp_path, capsys, monkeypatch,
                                                                  setting):
    paths = []
    for i in range(5):
        paths.append(str(tmp_path / f"image_{i}.png"))
        make_image(i).save(paths[-1])
    if setting is None:
        monkeypatch.delenv("CENTERFOCUS_PROGRESS", raising=False)  # pytest's stderr is not a terminal
    else:
        monkeypatch.setenv("CENTERFOCUS_PROGRESS", setting)
    caption.caption_main(["--model", str(saved_folder), "--batch_size", "2", *paths])
    err = capsys.readouterr().err
    assert ("Captioning: 100%" in err and "5/5" in err) == (setting == "1")


def test_the_demo_trains_with_the_trainers_progress_bar_on_a_terminal(monkeypatch, tmp_path):
    from centerfocus.tools import demo, train

    seen = {}

    class Stop(Exception):
        pass

    def fake_train(argv):
        seen["argv"] = argv
        raise Stop

    monkeypatch.setattr(train, "main", fake_train)
    for setting, expected in (("1", "false"), ("0", "true")):
        monkeypatch.setenv("CENTERFOCUS_PROGRESS", setting)
        with pytest.raises(Stop):
            demo.main(["--output_dir", str(tmp_path / setting), "--num_train", "4", "--num_test", "2"])
        argv = seen["argv"]
        assert argv[argv.index("--disable_tqdm") + 1] == expected
