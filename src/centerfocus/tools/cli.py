"""The `centerfocus` command: `centerfocus <command> [arguments]`; `centerfocus <command> --help` for each."""

import os
import sys
from typing import Optional


COMMANDS = {
    "train": ("centerfocus.tools.train", "Fine-tune a captioner with the HF Seq2SeqTrainer."),
    "pretrain-vision": ("centerfocus.tools.pretrain", "Stage 1: train the CNN as an image classifier."),
    "demo": ("centerfocus.tools.demo", "Generate the built-in data set, train, evaluate, draw captions."),
    "generate-data": ("centerfocus.tools.demo", "Write the built-in synthetic data set as an image folder."),
    "export": ("centerfocus.tools.export", "Export to ONNX with Optimum (optimise, INT8, TensorRT check)."),
    "caption": ("centerfocus.tools.export", "Caption images with ONNX Runtime or PyTorch."),
    "sparsify": ("centerfocus.tools.sparsity", "2:4-prune the image branch (optionally fine-tune), report quality."),
    "index": ("centerfocus.tools.retrieval", "Build a caption index for retrieval-augmented captioning."),
}
ENTRY_POINTS = {"generate-data": "generate_data_main", "export": "export_main", "caption": "caption_main"}


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
