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
ENTRY_POINTS = {"generate-data": "generate_data_main", "export": "export_main", "caption": "caption_main"}
# What needs the `export` extra (onnx, onnxruntime): `export`, and `caption --onnx`. Both run in the calling
# environment on either transformers line (onnx_export.py, onnx_runner.py); Optimum is used where installed.
ONNX_COMMANDS = ("export",)


def _missing_onnx_packages() -> list[str]:
    import importlib.util

    return [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]


def add_server_arguments(parser, port: int) -> None:
    """`--model`, `--host` (loopback by default) and `--port`: what every command that serves a model takes."""
    parser.add_argument("--model", required=True, help="A saved CenterFocus captioner folder.")
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0: every interface).")
    parser.add_argument("--port", type=int, default=port)


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
    needs_onnx = command in ONNX_COMMANDS or (command == "caption" and any(
        arg == "--onnx" or arg.startswith("--onnx=") for arg in rest))
    missing = _missing_onnx_packages() if needs_onnx and "--help" not in rest and "-h" not in rest else []
    if missing:
        print(f"centerfocus {command}: error: this environment lacks {' and '.join(missing)}: install the export "
              "extra (`pip install -e \".[export]\"`; it keeps the installed transformers).", file=sys.stderr)
        return 1
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
