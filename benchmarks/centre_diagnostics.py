"""Where a captioner's knowledge of the centre digit is, step by step (docs/benchmarks.md, "Real handwriting"):
diagnostics, not a user path.

    python benchmarks/centre_diagnostics.py --data hw --run runs/base_s42 --out benchmarks/results/centre_probe_base.json
    # a run started from a stage-1 folder (--vision_init): step 0 is that folder's vision weights
    python benchmarks/centre_diagnostics.py --data hw --run runs/cw_s42 --vision_init runs/cw_s1_s42 ...

For step 0 (the run's config freshly initialised with its seed, plus `--vision_init`'s weights when given) and each
`checkpoint-N` folder of the run, then the final model:
- linear probes (scikit-learn logistic regression on standardised features, fitted on `--probe_train` training
  scenes, scored on every test scene) of the centre digit from the image tokens (the image tokenizer's output, all
  tokens concatenated) and from the encoder's output (after the transformer layers): is the identity in the tokens?
- the decoder's teacher-forced cross-entropy and accuracy on the centre digit's token, on the edge digits' tokens and
  on every other caption token of the test scenes: is it in the tokens but not read by the decoder?

`--readouts` instead probes one model (`--step`: 0 for the run's initialisation, `final`, or a checkpoint's step) with
the same linear probe on four read-outs of the image tokens and of the encoder's image states: all tokens
concatenated (a position-specific read-out, as a flattened CNN head), the fovea's tokens concatenated, and the mean
of all tokens and of the fovea's tokens (position-blind, as attention or global pooling sees them):

    python benchmarks/centre_diagnostics.py --data hw --run runs/base_s42 --readouts --step 0
"""

import argparse
import json
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from centerfocus import CenterFocusConfig, CenterFocusForConditionalGeneration, CenterFocusProcessor
from centerfocus.tools import train


def load_split(data: Path, split: str, limit: int | None = None) -> tuple[list, np.ndarray, list[str]]:
    rows = [json.loads(line) for line in (data / split / "metadata.jsonl").read_text().splitlines()][:limit]
    images = [Image.open(data / split / r["file_name"]).convert("RGB") for r in rows]
    return images, np.array([int(r["center_digit"]) for r in rows]), [r["text"] for r in rows]


@torch.no_grad()
def features(model, processor, images: list, batch_size: int = 50) -> dict[str, np.ndarray]:
    """`tokens`: the image tokenizer's output, flattened; `encoder`: the encoder's last hidden state, flattened."""
    captured, out = {}, {"tokens": [], "encoder": []}
    encoder = model.get_encoder()
    hook = encoder.image_tokenizer.register_forward_hook(lambda m, i, o: captured.__setitem__("tokens", o))
    try:
        for start in range(0, len(images), batch_size):
            pixel_values = processor(images=images[start:start + batch_size], return_tensors="pt")["pixel_values"]
            hidden = encoder(pixel_values=pixel_values).last_hidden_state
            out["tokens"].append(captured["tokens"].flatten(1).numpy())
            out["encoder"].append(hidden.flatten(1).numpy())
    finally:
        hook.remove()
    return {k: np.concatenate(v) for k, v in out.items()}


def probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=300))
    classifier.fit(train_x, train_y)
    return {"train": float(classifier.score(train_x, train_y)), "test": float(classifier.score(test_x, test_y))}


@torch.no_grad()
def token_losses(model, processor, images: list, captions: list[str], batch_size: int = 50) -> dict:
    """Teacher-forced cross-entropy and accuracy of the centre digit's token (the caption's first digit token), the
    edge digits' tokens (its later digit tokens) and every other token."""
    tokenizer = processor.tokenizer
    sums = {k: [0.0, 0, 0] for k in ("centre", "edge", "other")}  # loss sum, correct, count
    for start in range(0, len(images), batch_size):
        batch = processor(images=images[start:start + batch_size], text_target=captions[start:start + batch_size],
                          return_tensors="pt")
        labels = batch["labels"]
        output = model(pixel_values=batch["pixel_values"], labels=labels)
        logits = output.logits.float()
        for row in range(len(labels)):
            seen_digit = False
            for position, token in enumerate(labels[row].tolist()):
                if token < 0 or token == tokenizer.pad_token_id:
                    continue
                text = tokenizer.decode([token]).strip()
                kind = "other"
                if re.fullmatch(r"\d", text):
                    kind, seen_digit = ("edge" if seen_digit else "centre"), True
                loss = F.cross_entropy(logits[row, position][None], torch.tensor([token])).item()
                entry = sums[kind]
                entry[0] += loss
                entry[1] += int(logits[row, position].argmax().item() == token)
                entry[2] += 1
    return {k: {"loss": s / max(1, n), "accuracy": c / max(1, n), "tokens": n} for k, (s, c, n) in sums.items()}


def readout_probes(model, processor, data: Path, probe_train: int) -> dict[str, float]:
    """Held-out accuracy of the linear probe of the centre digit on concatenated and mean-pooled read-outs of all image
    tokens and of the centre region's (a foveated model's fovea), from the tokenizer's output (`tokens_*`) and from the encoder's image states (`encoder_*`)."""
    train_images, train_y, _ = load_split(data, "train", probe_train)
    test_images, test_y, _ = load_split(data, "test")
    count, width = model.config.num_image_tokens, model.config.hidden_size
    fovea = model.get_encoder().image_tokenizer.token_is_center.numpy()  # a foveated model's fovea is its centre region
    train_f, test_f = features(model, processor, train_images), features(model, processor, test_images)
    results = {}
    for key in ("tokens", "encoder"):
        a = train_f[key].reshape(len(train_images), -1, width)[:, :count]  # (n, N, D)
        b = test_f[key].reshape(len(test_images), -1, width)[:, :count]
        for name, pick, pool in (("concat", slice(None), False), ("fovea_concat", fovea, False),
                                 ("mean", slice(None), True), ("fovea_mean", fovea, True)):
            x, y = a[:, pick], b[:, pick]
            x, y = (x.mean(1), y.mean(1)) if pool else (x.reshape(len(x), -1), y.reshape(len(y), -1))
            results[f"{key}_{name}"] = probe(x, train_y, y, test_y)["test"]
    return results


def step_model(run: Path, step: str, seed: int, vision_init: Path | None):
    """The run's model at `step`: "0" (its config initialised with `seed`, plus `vision_init`'s vision weights),
    "final", or a checkpoint's step."""
    if step == "0":
        torch.manual_seed(seed)
        model = CenterFocusForConditionalGeneration(CenterFocusConfig.from_pretrained(run))
        if vision_init is not None:
            train.load_vision_weights(model, str(vision_init))
        return model.eval()
    folder = run if step == "final" else run / f"checkpoint-{step}"
    return CenterFocusForConditionalGeneration.from_pretrained(folder).eval()


def steps_of(run: Path) -> list[tuple[int, Path]]:
    checkpoints = sorted((int(p.name.split("-")[1]), p) for p in run.glob("checkpoint-*"))
    final = json.loads((run / "trainer_state.json").read_text())["global_step"] if (run / "trainer_state.json").exists() else None
    if final is not None and all(step != final for step, _ in checkpoints):
        checkpoints.append((final, run))
    return checkpoints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True, help="A `centerfocus train` folder with checkpoints.")
    parser.add_argument("--vision_init", type=Path, help="The stage-1 folder the run started from, if any.")
    parser.add_argument("--seed", type=int, default=42, help="The run's seed (its step-0 initialisation).")
    parser.add_argument("--probe_train", type=int, default=1500, help="Training scenes the probes are fitted on.")
    parser.add_argument("--readouts", action="store_true", help="Probe pooled and concatenated read-outs of --step.")
    parser.add_argument("--step", default="final", help="With --readouts: 0, final, or a checkpoint's step.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    processor = CenterFocusProcessor.from_pretrained(args.run)
    if args.readouts:
        model = step_model(args.run, args.step, args.seed, args.vision_init)
        results = {"run": str(args.run), "step": args.step,
                   **readout_probes(model, processor, args.data, args.probe_train)}
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}), flush=True)
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))
        return
    train_images, train_y, _ = load_split(args.data, "train", args.probe_train)
    test_images, test_y, test_captions = load_split(args.data, "test")
    results = []
    models = [(0, None), *steps_of(args.run)]
    for step, folder in models:
        model = step_model(args.run, "0", args.seed, args.vision_init) if folder is None else \
            CenterFocusForConditionalGeneration.from_pretrained(folder).eval()
        train_f, test_f = features(model, processor, train_images), features(model, processor, test_images)
        row = {"step": step, **{f"probe_{k}": probe(train_f[k], train_y, test_f[k], test_y) for k in train_f},
               "teacher_forced": token_losses(model, processor, test_images, test_captions)}
        results.append(row)
        tf = row["teacher_forced"]
        print(f"step {step:4d}  probe tokens {row['probe_tokens']['test']:.3f} (train {row['probe_tokens']['train']:.3f})"
              f"  probe encoder {row['probe_encoder']['test']:.3f}  centre token loss {tf['centre']['loss']:.3f} "
              f"acc {tf['centre']['accuracy']:.3f}  edge {tf['edge']['loss']:.3f} / {tf['edge']['accuracy']:.3f}"
              f"  other {tf['other']['loss']:.3f} / {tf['other']['accuracy']:.3f}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"run": str(args.run), "data": str(args.data), "vision_init":
                                        None if args.vision_init is None else str(args.vision_init),
                                        "probe_train": args.probe_train, "steps": results}, indent=1))


if __name__ == "__main__":
    main()
