"""How well captioners trained with `centerfocus train` read the centre of the character benchmarks (fonts and handwriting).

    centerfocus generate-data --kind characters --output_dir chars
    centerfocus train --dataset chars --output_dir runs/small --model_size small \\
        --config_overrides encoder_layers=4,decoder_layers=4,image_size=224 --max_steps 600 \\
        --per_device_train_batch_size 32 --learning_rate 5e-4 --warmup_steps 50 --logging_steps 50
    python benchmarks/learning_quality.py --data chars --run small=runs/small --run bn5=runs/bn5 \\
        --out benchmarks/results/learning_quality.json --plots docs/benchmarks

For each run folder (a saved model with its processor and `trainer_state.json`): greedy captions of the held-out
test split (fonts disjoint from training), then
- centre identity exact match: the digit named for the centre equals the scene's (`center_digit` in the metadata);
- centre phrase exact match (colour and digit) and full-caption exact match (every edge digit too);
- layout exact match (the caption right but for the digits it names: colours, positions, how many edge digits) and
  edge-digit identity (per edge digit of the truth, the caption names that digit at that position);
- the 10x10 confusion of the centre digit (rows: truth, columns: the caption's digit; "none" when it names none);
- training FLOPs per example (torch.utils.flop_counter over one forward + backward at the run's caption length).
`--plots` writes the learning curves (training loss against step) and each run's confusion as PNGs (matplotlib).
`--from_json REPORT --plots FOLDER` redraws them from a report already written, without evaluating anything:

    python benchmarks/learning_quality.py --from_json benchmarks/results/learning_quality.json --plots docs/benchmarks \
        --curves ved --curves f76e --confusion ved --confusion f76e
"""

import argparse
import json
import math
import re
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from common import count_cpu_flash_attention
from compare_captioners import training_flops  # benchmarks/ runs as scripts: python benchmarks/NAME.py
from PIL import Image
from train_ved import build_ved
from transformers import AutoConfig, VisionEncoderDecoderModel

from centerfocus import CenterFocusForConditionalGeneration, CenterFocusProcessor
from centerfocus.tools.caption_data import CaptionCollator
from centerfocus.tools.captioning import caption_images
from centerfocus.tools.pretrain import PRETRAIN_ARGS_FILE, ClassificationCollator


CENTRE = re.compile(r"^an? (\w+) (\d) in the centre")
EDGE = re.compile(r"an? small (\w+) (\d) at the (\w+)")
DIGITS = [str(d) for d in range(10)]


def read_split(data: Path, split: str = "test") -> list[dict]:
    rows = [json.loads(line) for line in (data / split / "metadata.jsonl").read_text().splitlines() if line.strip()]
    if not rows or "center_digit" not in rows[0]:
        raise ValueError(f"{data / split} is not the character benchmark (no `center_digit` in its metadata); "
                         "write it with `centerfocus generate-data --kind characters`.")
    return rows


def centre_of(caption: str) -> tuple[str, str]:
    """(colour, digit) the caption names for the centre, or ("", "none")."""
    match = CENTRE.match(caption.strip())
    return (match.group(1), match.group(2)) if match else ("", "none")


def score(rows: list[dict], captions: list[str]) -> dict:
    named = [centre_of(c) for c in captions]
    truth = [r["center_digit"] for r in rows]
    confusion = np.zeros((10, 11), dtype=int)  # the last column: the caption names no centre digit
    for t, (_, d) in zip(truth, named):
        confusion[int(t), 10 if d == "none" else int(d)] += 1
    # the edge digits: per edge digit of the truth, whether the caption names the same digit at that position
    edge_hits = []
    for caption, row in zip(captions, rows):
        named_at = {position: digit for _, digit, position in EDGE.findall(caption)}
        edge_hits += [named_at.get(position) == digit for _, digit, position in EDGE.findall(row["text"])]
    return {
        "center_identity_exact_match": float(np.mean([d == t for (_, d), t in zip(named, truth)])),
        "edge_digit_identity": float(np.mean(edge_hits)) if edge_hits else None,
        # the caption right except for which digits it names: colours, positions, how many edge digits
        "layout_exact_match": float(np.mean([re.sub(r"\d", "#", c.strip()) == re.sub(r"\d", "#", r["text"])
                                             for c, r in zip(captions, rows)])),
        "center_phrase_exact_match": float(np.mean([[c, d] == r["center_phrase"].split()[-2:]
                                                    for (c, d), r in zip(named, rows)])),
        "full_caption_exact_match": float(np.mean([c.strip() == r["text"] for c, r in zip(captions, rows)])),
        "confusion": confusion.tolist(),
        "examples": [{"truth": r["text"], "caption": c} for r, c in list(zip(rows, captions))[:5]],
    }


def training_flops_per_example(model, collator: CaptionCollator, features: list[dict]) -> float:
    """FLOPs of one training example (forward + backward, torch.utils.flop_counter) on the batch `centerfocus
    train`'s collator makes of `features`."""
    batch = collator(features)
    model.train()
    flops = training_flops(model, lambda p, y: model(pixel_values=p, labels=y).loss, batch["pixel_values"],
                           batch["labels"])
    model.eval()
    return flops / len(features)


def stage_one_cost(folder: Path, images: list) -> dict:
    """What a stage-1 run (`centerfocus pretrain-vision`, whose folder initialised a run with `--vision_init`) cost:
    the classifier's training FLOPs per example on `images` and the examples it trained on (its steps times its
    batch, from `all_results.json`)."""
    from centerfocus import CenterFocusForImageClassification, CenterFocusImageProcessor

    classifier = CenterFocusForImageClassification.from_pretrained(folder).train()
    processor = CenterFocusImageProcessor.from_pretrained(folder)
    pixel_values = processor(images, return_tensors="pt")["pixel_values"]
    labels = torch.zeros(len(images), dtype=torch.long)
    if classifier.config.problem_type == "multi_label_classification":  # --caption_words
        labels = torch.zeros(len(images), classifier.config.num_labels)
    arguments = folder / PRETRAIN_ARGS_FILE
    scale = json.loads(arguments.read_text()).get("edge_object_scale") if arguments.exists() else None
    extra = {}
    if scale:  # the edge stem's images too, as the stage-1 collator makes them
        collator = ClassificationCollator(processor, "image", "label", scale, math.prod(classifier.config.stem_strides))
        extra["edge_pixel_values"] = collator([{"image": image, "label": 0} for image in images])["edge_pixel_values"]
    flops = training_flops(classifier, lambda p, y: classifier(pixel_values=p, labels=y, **extra).loss, pixel_values,
                           labels)
    results = json.loads((folder / "all_results.json").read_text())
    examples = round(results["train_samples_per_second"] * results["train_runtime"])
    return {"stage1_folder": str(folder), "stage1_gflops_per_example": flops / len(images) / 1e9,
            "stage1_examples": examples, "stage1_eval_accuracy": results.get("eval_accuracy"),
            **{f"stage1_eval_{k}": results[f"eval_{k}"] for k in ("word_f1", "exact_match") if f"eval_{k}" in results}}


def last_trainer_state(folder: Path) -> Optional[dict]:
    """The Trainer's log of a run: `trainer_state.json` of the folder, or of its latest `checkpoint-N` (what
    `centerfocus train` leaves)."""
    states = [folder / "trainer_state.json"]
    states += sorted(folder.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    found = [p for p in states if p.exists()]
    return json.loads(found[-1].read_text()) if found else None


def load_run(folder: Path):
    """The trained captioner in `folder`: CenterFocus, or VisionEncoderDecoder trained by train_ved.py."""
    if AutoConfig.from_pretrained(folder).model_type == "vision-encoder-decoder":
        return VisionEncoderDecoderModel.from_pretrained(folder)
    return CenterFocusForConditionalGeneration.from_pretrained(folder)


def evaluate_run(name: str, folder: Path, data: Path, rows: list[dict], stage1: Optional[Path] = None) -> dict:
    model = load_run(folder)
    processor = CenterFocusProcessor.from_pretrained(folder)
    images = [Image.open(data / "test" / r["file_name"]).convert("RGB") for r in rows]
    # greedy with the run's saved generation config: the captions a user of the folder gets
    captions = caption_images(model, processor, images)
    result = {"run": name, "folder": str(folder), "model_type": model.config.model_type, **score(rows, captions)}
    features = [{"image": image, "text": r["text"]} for image, r in list(zip(images, rows))[:32]]
    collator = CaptionCollator(processor)
    result["training_gflops_per_example"] = training_flops_per_example(model, collator, features) / 1e9
    if isinstance(model, CenterFocusForConditionalGeneration):
        # VisionEncoderDecoder at the same width, depth, image size and vocabulary (random weights: FLOPs do not
        # depend on them), the comparison the benchmark sets
        ved = build_ved(model.config)
        result["ved_training_gflops_per_example"] = training_flops_per_example(ved, collator, features) / 1e9
    state = last_trainer_state(folder)
    if state is not None:
        history = state["log_history"]
        result["loss_curve"] = [(h["step"], h["loss"]) for h in history if "loss" in h]
        # what the whole run cost: every example it trained on, and the stage-1 run before it
        examples = state["global_step"] * state["train_batch_size"]
        result["training_examples"] = examples
        result["training_tflops"] = result["training_gflops_per_example"] * examples / 1e3
        if "ved_training_gflops_per_example" in result:
            result["ved_training_tflops"] = result["ved_training_gflops_per_example"] * examples / 1e3
    if stage1 is not None:
        result.update(stage_one_cost(stage1, [f["image"] for f in features]))
        if "training_tflops" in result:
            result["training_tflops"] += result["stage1_gflops_per_example"] * result["stage1_examples"] / 1e3
    result["config"] = {k: v for k, v in model.config.to_diff_dict().items()
                        if k.startswith(("stem_", "image_tokenizer", "center_", "encoder_layers", "decoder_layers",
                                         "hidden_size", "image_size", "contrastive", "foveated", "edge_"))}
    return result


def plot(results: list[dict], out: Path, confusion_runs: Optional[list[str]] = None,
         curve_runs: Optional[list[str]] = None) -> None:
    """Learning curves of each run in `curve_runs` (default: every run) in one PNG; the centre-digit confusion of each
    run in `confusion_runs` (default: every run) in one PNG each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(8, 5))
    for r in results:
        if r.get("loss_curve") and (curve_runs is None or r["run"] in curve_runs):
            steps, losses = zip(*r["loss_curve"])
            axis.plot(steps, losses, label=f"{r['run']} (centre {r['center_identity_exact_match']:.2f})")
    axis.set(xlabel="step", ylabel="training loss", yscale="log", title="Character benchmark: learning curves")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "learning_quality_curves.png", dpi=120)
    for r in results:
        if confusion_runs is not None and r["run"] not in confusion_runs:
            continue
        figure, axis = plt.subplots(figsize=(5, 4))
        axis.imshow(np.array(r["confusion"]), cmap="Blues")
        axis.set(xticks=range(11), xticklabels=[*DIGITS, "-"], yticks=range(10), yticklabels=DIGITS,
                 xlabel="digit the caption names", ylabel="centre digit",
                 title=f"{r['run']}: centre identity {r['center_identity_exact_match']:.2f}")
        figure.tight_layout()
        figure.savefig(out / f"learning_quality_confusion_{r['run']}.png", dpi=120)
    plt.close("all")


TABLE_COLUMNS = (("center_identity_exact_match", "centre digit"), ("full_caption_exact_match", "full caption"),
                 ("layout_exact_match", "layout"), ("edge_digit_identity", "edge digits"))
SEED_SUFFIX = re.compile(r"_s\d+$")


def table(report: list[dict]) -> str:
    """The report as a markdown table, one row per configuration: runs whose names differ only in a `_sN` suffix are
    seeds of one configuration, shown as mean (lowest-highest, n seeds); training TFLOP as a multiple of VED's."""
    groups: dict[str, list[dict]] = {}
    for r in report:
        groups.setdefault(SEED_SUFFIX.sub("", r["run"]), []).append(r)
    lines = ["| configuration | seeds | " + " | ".join(name for _, name in TABLE_COLUMNS) + " | training TFLOP (x VED) |",
             "| --- | --- | " + " | ".join("---" for _ in TABLE_COLUMNS) + " | --- |"]
    for name, runs in groups.items():
        cells = []
        for key, _ in TABLE_COLUMNS:
            values = [r[key] for r in runs if r.get(key) is not None]
            if not values:
                cells.append("")
            elif len(values) == 1:
                cells.append(f"{values[0]:.3f}")
            else:
                cells.append(f"{np.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})")
        flops = runs[0].get("training_tflops")
        ved = runs[0].get("ved_training_tflops")
        cost = f"{flops:.1f} ({flops / ved:.2f}x)" if flops and ved else (f"{flops:.1f}" if flops else "")
        lines.append(f"| `{name}` | {len(runs)} | " + " | ".join(cells) + f" | {cost} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="The character benchmark's folder (needed with --run).")
    parser.add_argument("--run", action="append", default=[], metavar="NAME=FOLDER", help="A trained run.")
    parser.add_argument("--from_json", type=Path, metavar="REPORT",
                        help="Redraw --plots from this report (a JSON --out wrote) instead of evaluating --run folders.")
    parser.add_argument("--stage1", action="append", default=[], metavar="NAME=FOLDER",
                        help="The pretrain-vision folder that initialised run NAME (--vision_init): its training FLOPs "
                             "are added to the run's.")
    parser.add_argument("--confusion", action="append", metavar="NAME",
                        help="With --plots, draw the centre-digit confusion of this run only (repeatable; default all).")
    parser.add_argument("--curves", action="append", metavar="NAME",
                        help="With --plots, draw the learning curve of this run only (repeatable; default all).")
    parser.add_argument("--out", type=Path, help="JSON report.")
    parser.add_argument("--merge", action="store_true",
                        help="Keep the runs already in --out, replacing those evaluated again under the same name.")
    parser.add_argument("--plots", type=Path, help="Folder for the PNGs.")
    parser.add_argument("--table", action="store_true",
                        help="Print the report as a markdown table (seeds of one configuration, `NAME_sN`, grouped).")
    args = parser.parse_args(argv)
    if args.from_json and (args.run or not (args.plots or args.table)):
        parser.error("--from_json redraws --plots or prints --table from a report; it takes no --run")
    if not args.from_json and (not args.run or args.data is None):
        parser.error("give --data and at least one --run (or --from_json REPORT --plots FOLDER)")
    report = json.loads(args.from_json.read_text()) if args.from_json else None
    # before any evaluation: a misspelt name would otherwise fail only after every run is captioned
    known = {r["run"] for r in report} if report else {spec.partition("=")[0] for spec in args.run}
    unknown = sorted({*(args.confusion or []), *(args.curves or [])} - known)
    if unknown:
        parser.error(f"runs {unknown} are not in {'the report' if report else '--run'} (it has {sorted(known)})")
    if report:
        if args.plots:
            plot(report, args.plots, args.confusion, args.curves)
        if args.table:
            print(table(report))
        return report
    count_cpu_flash_attention()  # CPU SDPA's flash kernel is invisible to torch's FLOP counter otherwise
    rows = read_split(args.data)
    stage1 = {}
    for spec in args.stage1:
        name, sep, folder = spec.partition("=")
        if not sep:
            parser.error(f"--stage1 takes NAME=FOLDER, got {spec!r}")
        stage1[name] = Path(folder)
    results = []
    for spec in args.run:
        name, sep, folder = spec.partition("=")
        if not sep:
            parser.error(f"--run takes NAME=FOLDER, got {spec!r}")
        results.append(evaluate_run(name, Path(folder), args.data, rows, stage1.get(name)))
        r = results[-1]
        ved = r.get("ved_training_gflops_per_example")
        print(f"{name:12s} centre identity {r['center_identity_exact_match']:.3f}  centre phrase "
              f"{r['center_phrase_exact_match']:.3f}  full caption {r['full_caption_exact_match']:.3f}  "
              f"layout {r['layout_exact_match']:.3f}  edge digits {r['edge_digit_identity'] or 0:.3f}  "
              f"{r['training_gflops_per_example']:.2f} GFLOP/example"
              + (f" (VED at its sizes: {ved:.2f})" if ved else "")
              + (f", {r['training_tflops']:.1f} TFLOP in all" if "training_tflops" in r else "")
              + (f" (VED: {r['ved_training_tflops']:.1f})" if "ved_training_tflops" in r else ""), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.merge and args.out.exists():
            names = {r["run"] for r in results}
            results = [r for r in json.loads(args.out.read_text()) if r["run"] not in names] + results
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    if args.plots:
        plot(results, args.plots, args.confusion, args.curves)
    if args.table:
        print(table(results))
    return results


if __name__ == "__main__":
    main()
