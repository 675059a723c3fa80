"""The `centerfocus` command: `centerfocus <command> [arguments]`; `centerfocus <command> --help` for each."""

import os
import sys
from typing import Optional


COMMANDS = {
    "train": ("centerfocus.tools.train", "Fine-tune a captioner with the HF Seq2SeqTrainer."),
    "pretrain-vision": ("centerfocus.tools.pretrain", "Stage 1: train the CNN as an image classifier."),
    "demo": ("centerfocus.tools.demo", "Generate the built-in data set, train, evaluate, draw captions."),
    "generate-data": ("centerfocus.tools.demo", "Write the built-in synthetic data set as an image folder."),
    "export": ("centerfocus.tools.onnx_export", "Export to ONNX (torch.onnx or Optimum; optimise, INT8, TensorRT check)."),
    "caption": ("centerfocus.tools.caption", "Caption images with ONNX Runtime or PyTorch."),
    "sparsify": ("centerfocus.tools.sparsity", "2:4-prune the image branch (optionally fine-tune), report quality."),
    "index": ("centerfocus.tools.retrieval", "Build a caption index for retrieval-augmented captioning."),
    "serve": ("centerfocus.tools.serving", "Serve captions over HTTP with Ray Serve (the `ray` extra)."),
    "app": ("centerfocus.tools.app", "A Gradio captioning page with the focus map (the `app` extra)."),
}
ENTRY_POINTS = {"generate-data": "generate_data_main", "export": "export_main", "caption": "caption_main",
                "app": "app_main"}
# What needs Optimum's ONNX stack: `export`, and `caption --onnx` (ONNX Runtime through Optimum's ORTModel).
# optimum-onnx 0.1.0 (its latest release) requires transformers<4.58, so on the transformers 5 line they run in a
# separate environment on that stack: `bash scripts/setup.sh export` builds it as .venv-export beside the checkout;
# CENTERFOCUS_EXPORT_PYTHON names another one's python. `caption --model` runs where it is called.
OPTIMUM_COMMANDS = ("export",)
EXPORT_PYTHON_VARIABLE = "CENTERFOCUS_EXPORT_PYTHON"


def export_python() -> Optional[str]:
    """The python of the environment on Optimum's stack: $CENTERFOCUS_EXPORT_PYTHON, else the checkout's
    .venv-export (an editable install), else None."""
    from pathlib import Path

    named = os.environ.get(EXPORT_PYTHON_VARIABLE)
    if named:
        return named
    candidate = Path(__file__).resolve().parents[3] / ".venv-export" / "bin" / "python"
    return str(candidate) if candidate.is_file() else None


def _has_optimum_onnx() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("optimum.onnxruntime") is not None
    except ModuleNotFoundError:  # no `optimum` at all
        return False


def _run_in_export_environment(command: str, rest: list[str]) -> int:
    """Run `centerfocus <command>` in the Optimum-stack environment, or say how to build one."""
    import subprocess

    import transformers

    python = export_python()
    if python is None or not os.path.isfile(python):
        where = f"{EXPORT_PYTHON_VARIABLE}={python!r} does not exist; " if python else ""
        print(f"centerfocus {command}: error: {where}this environment has no Optimum ONNX exporter (transformers "
              f"{transformers.__version__}; optimum-onnx 0.1.0 requires transformers<4.58). Run `bash scripts/setup.sh "
              f"export` to build .venv-export on that stack (or set {EXPORT_PYTHON_VARIABLE} to the python of one); "
              f"`centerfocus {command}` then runs there.", file=sys.stderr)
        return 1
    print(f"centerfocus {command}: running in the Optimum environment {python}", file=sys.stderr)
    return subprocess.call([python, "-m", "centerfocus.tools.cli", command, *rest])


def _usage() -> str:
    lines = ["usage: centerfocus <command> [arguments]", "", "commands:"]
    lines += [f"  {name:<16} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"centerfocus: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    needs_optimum = command in OPTIMUM_COMMANDS or (command == "caption" and any(
        arg == "--onnx" or arg.startswith("--onnx=") for arg in rest))
    if needs_optimum and not _has_optimum_onnx():
        return _run_in_export_environment(command, rest)
    import importlib

    module = importlib.import_module(COMMANDS[command][0])
    entry = getattr(module, ENTRY_POINTS.get(command, "main"))
    try:
        entry(rest)
    except (ValueError, OSError) as error:  # bad input: say what is wrong in one line (CENTERFOCUS_DEBUG=1: traceback)
        if os.environ.get("CENTERFOCUS_DEBUG", "0") not in ("", "0"):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"centerfocus {command}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
