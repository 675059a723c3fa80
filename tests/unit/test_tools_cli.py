"""The `centerfocus` command dispatcher: every command's --help prints its usage and exits 0."""

import pytest

from centerfocus.tools.cli import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_prints_its_help(command, capsys):
    # argparse %-formats each help string: a stray "%" in one of them crashes --help with a TypeError
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    output = capsys.readouterr().out
    assert all(command in output for command in COMMANDS)


def test_unknown_command_is_named(capsys):
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


def test_a_refused_command_prints_one_line_and_exits_1(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CENTERFOCUS_DEBUG", raising=False)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    assert main(["train", "--dataset", str(tmp_path), "--output_dir", str(taken)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("centerfocus train: error: Output directory") and "\n" not in error
    assert (taken / "notes.txt").read_text() == "keep me"


def test_centerfocus_debug_shows_the_exception(tmp_path, monkeypatch):
    monkeypatch.setenv("CENTERFOCUS_DEBUG", "1")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="already exists and is not empty"):
        main(["train", "--dataset", str(tmp_path), "--output_dir", str(taken)])


@pytest.mark.parametrize("argv", [["export", "model", "out"], ["caption", "--onnx", "folder", "image.png"]])
def test_an_onnx_command_without_onnx_names_the_export_extra(monkeypatch, capsys, argv):
    from centerfocus.tools import cli

    monkeypatch.setattr(cli, "_missing_onnx_packages", lambda: ["onnxruntime"])
    assert cli.main(argv) == 1
    message = capsys.readouterr().err
    assert "lacks onnxruntime" in message and '".[export]"' in message
