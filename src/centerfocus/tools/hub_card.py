"""The model card (`README.md`) of a CenterFocus Hub repository, and the usage snippets read back from it.

`build_model_card` writes Hub metadata (that `huggingface_hub.ModelCard` parses), usage snippets pinned to a revision,
the config's switches and settings, the training run's metrics, training data and limits. `usage_snippets` and
`localize_snippet` find those snippets again and point them at a local folder, for the verification process
(`hub_verify.py`) to run.
"""

import inspect
import json
import os
import re
from typing import Any, Optional, Union

from ..configuration_centerfocus import SWITCHES, CenterFocusConfig


#: The model code every repository must carry (loaded with `trust_remote_code=True`), with the modules these import
#: relatively (`hub.code_files`).
CODE_FILES = ("configuration_centerfocus.py", "modeling_centerfocus.py", "image_processing_centerfocus.py",
              "processing_centerfocus.py")

#: The card's component table: every switch of the config (`configuration_centerfocus.SWITCHES`).
SWITCH_FIELDS = {name: text for name, (_, text) in SWITCHES.items()}
#: The card's settings table: every other field `CenterFocusConfig` takes (sizes, stem, edge stem, decoding, tokens).
SETTING_FIELDS = tuple(name for name in inspect.signature(CenterFocusConfig.__init__).parameters
                       if name not in ("self", "kwargs") and name not in SWITCH_FIELDS)

# eval key (without "eval_") -> (name in the card, Hub metric id or None)
KNOWN_METRICS = {
    "bleu4": ("BLEU-4", "bleu"),
    "rougeL": ("ROUGE-L", "rouge"),
    "cider": ("CIDEr-D", "cider"),
    "exact_match": ("exact match", "exact_match"),
    "center_phrase_exact_match": ("centre-phrase exact match", None),
    "loss": ("loss", None),
}
CARD_TAGS = ["centerfocus", "image-to-text", "image-captioning", "custom_code"]


def _format_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return f"`{value}`" if isinstance(value, str) else str(value)


def _metric_name(key: str) -> str:
    return KNOWN_METRICS.get(key.removeprefix("eval_"), (key.removeprefix("eval_"), None))[0]


def _metric_id(key: str) -> str:
    return KNOWN_METRICS.get(key.removeprefix("eval_"), (None, None))[1] or key.removeprefix("eval_")


def build_model_card(config: dict, repo_id: str, revision: Optional[str] = None, license: str = "apache-2.0",
                     metrics: Optional[dict[str, float]] = None, datasets: Optional[list[str]] = None,
                     num_parameters: Optional[int] = None, lowercase_captions: bool = False,
                     has_onnx: bool = False, max_length: Optional[int] = None,
                     code_files: Optional[list[str]] = None) -> str:
    """Write the model card (`README.md`): Hub metadata, usage, components, evaluation and limits.

    Args:
        config: The contents of config.json.
        repo_id: `owner/name` of the repository (used in the usage snippets).
        revision: The branch the files go to; the snippets pin `revision=` to it ("main" when None).
        license: A Hub license id.
        metrics: `eval_*` metrics recorded by the training run (see `read_eval_metrics`).
        datasets: Hub dataset ids the model was trained on.
        num_parameters: Number of parameters stored in the weights.
        lowercase_captions: Whether the tokenizer lower-cases text (captions come out lower-case).
        has_onnx: Whether the repository has an `onnx/` folder.
        code_files: The code files the repository ships (default `CODE_FILES`; the assembly adds the modules they
            import relatively).
        max_length: The default caption length limit of generation_config.json (tokens, including the start).

    Returns:
        The card's text, with YAML metadata that `huggingface_hub.ModelCard` parses.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    metrics = dict(metrics or {})
    datasets = list(datasets or [])
    revision = revision or "main"
    name = repo_id.split("/")[-1]
    hub_metrics = [KNOWN_METRICS[k[5:]][1] for k in metrics if KNOWN_METRICS.get(k[5:], (None, None))[1]]
    eval_results = None
    if datasets and metrics:
        eval_results = [
            EvalResult(task_type="image-to-text", task_name="Image captioning", dataset_type=datasets[0],
                       dataset_name=datasets[0], metric_type=_metric_id(key), metric_name=_metric_name(key),
                       metric_value=round(value, 4))
            for key, value in metrics.items() if key != "eval_loss"
        ] or None
    card_data = ModelCardData(
        license=license, library_name="transformers", pipeline_tag="image-to-text",
        tags=[*CARD_TAGS, *(["onnx"] if has_onnx else [])], datasets=datasets or None,
        metrics=list(dict.fromkeys(hub_metrics)) or None, model_name=name if eval_results else None,
        eval_results=eval_results)

    q_repo, q_rev = json.dumps(repo_id), json.dumps(revision)
    pipeline_snippet = "\n".join([
        "from PIL import Image",
        "from transformers import pipeline",
        "",
        f'captioner = pipeline("image-text-to-text", model={q_repo}, revision={q_rev}, trust_remote_code=True)',
        'image = Image.open("image.png").convert("RGB")',
        '# text="" asks for a plain caption; a prompt goes there too (return_full_text=False: not echoed)',
        'print(captioner(images=image, text="", return_full_text=False)[0]["generated_text"])',
    ])
    generate_snippet = "\n".join([
        "from PIL import Image",
        "from transformers import AutoModelForImageTextToText, AutoProcessor",
        "",
        f"model = AutoModelForImageTextToText.from_pretrained({q_repo}, revision={q_rev}, trust_remote_code=True)",
        f"processor = AutoProcessor.from_pretrained({q_repo}, revision={q_rev}, trust_remote_code=True)",
        'image = Image.open("image.png").convert("RGB")',
        'inputs = processor(images=[image], return_tensors="pt")',
        "output_ids = model.eval().generate(**inputs)  # e.g. num_beams=4 for beam search",
        "print(processor.batch_decode(output_ids, skip_special_tokens=True)[0])",
    ])

    lines = [
        f"# {name}",
        "",
        "An image captioner of the CenterFocus family: a centre-weighted CNN stem (learnable Gaussian spatial "
        "attention, dynamic channel pruning of the periphery) turns the image into tokens, a multimodal encoder reads "
        "them with an optional prompt, and an autoregressive decoder writes the caption.",
        "",
        "The model code ships in this repository (`" + "`, `".join(code_files or CODE_FILES) + "`), so loading needs "
        "`trust_remote_code=True`, which **runs that code on your machine**. Read it first, and pin `revision=` to "
        "the commit hash you reviewed (the snippets below use "
        f"`revision={q_rev}`; replace it by a commit hash) so that later pushes cannot change the code you run.",
        "",
        "## Usage",
        "",
        "With the `image-text-to-text` pipeline (transformers 4.57 and 5.x; in 5.x, `image-to-text` names it and it "
        "needs text):",
        "",
        "```python",
        pipeline_snippet,
        "```",
        "",
        "With `generate()` (an optional encoder prompt goes in `processor(images=..., text=[...])`; it is never "
        "echoed into the caption):",
        "",
        "```python",
        generate_snippet,
        "```",
        "",
        "## Model",
        "",
        "| field | value | component |",
        "| --- | --- | --- |",
    ]
    lines += [f"| `{key}` | {_format_value(config[key])} | {text} |" for key, text in SWITCH_FIELDS.items()
              if key in config]
    lines += ["", "| setting | value |", "| --- | --- |"]
    lines += [f"| `{key}` | {_format_value(config[key])} |" for key in SETTING_FIELDS if key in config]
    if num_parameters is not None:
        lines.append(f"| parameters (stored) | {num_parameters:,} |")
    lines += ["", "## Evaluation", ""]
    if metrics:
        lines += ["Recorded by the training run (`all_results.json`) on the run's own evaluation split"
                  + (f" of {', '.join(f'`{d}`' for d in datasets)}" if datasets else "")
                  + "; they say how well the model fits that data, not how it does on other images.", "",
                  "| metric | value |", "| --- | --- |"]
        lines += [f"| {_metric_name(k)} | {v:.4f} |" for k, v in metrics.items()]
    else:
        lines.append("The training run recorded no evaluation metrics.")
    lines += ["", "## Training data", ""]
    lines.append(", ".join(f"[`{d}`](https://huggingface.co/datasets/{d})" for d in datasets) + "." if datasets else
                 "Not recorded with the model.")
    lines += [
        "",
        "## Limitations",
        "",
        "- The model only knows the data it was trained on. Small CenterFocus demo models trained on the built-in "
        "synthetic data set (`centerfocus demo`) have seen a few coloured shapes on dark, noisy backgrounds only and "
        "describe any image in those terms; they are demonstrations, not general-purpose captioners.",
        "- Captions use the vocabulary of the training captions (English for the built-in data set)"
        + ("; the tokenizer lower-cases text, so captions come out in lower case." if lowercase_captions else "."),
        (f"- Captions have at most {max_length - 1} tokens by default (`max_length={max_length}` in "
         "`generation_config.json`; pass `max_new_tokens` to change it)" if max_length else
         "- Caption length is limited by `generation_config.json`")
        + f", and never exceed {config.get('max_position_embeddings', '?')} decoder positions.",
        "- Tested on CPU in float32 with transformers 4.57; other dtypes and devices are not verified.",
        "- The encoder prompt steers the caption only as far as the training data had prompts.",
        "- Not evaluated for fairness, safety or robustness; do not use it where a wrong caption causes harm.",
    ]
    if has_onnx:
        lines += ["", "## ONNX", "", "`onnx/` holds an ONNX export of the model, copied as produced by its exporter."]
    lines += ["", "## Files", "",
              "`model.safetensors` (weights, safetensors only), `config.json` and the model code, "
              "`preprocessor_config.json` / `processor_config.json` / tokenizer files (the processor), "
              "`generation_config.json` (caption length and decoding defaults).", ""]
    template = "---\n{{ card_data }}\n---\n\n" + "\n".join(lines)
    return str(ModelCard.from_template(card_data, template_str=template))


_PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
_MODEL_ID_ARG = re.compile(r"""((?:\bmodel=|from_pretrained\()\s*)(["'])[^"']+\2""")
_REVISION_ARG = re.compile(r"""\s*\brevision=(["'])[^"']*\1\s*,|,\s*\brevision=(["'])[^"']*\2""")


def usage_snippets(card_text: str) -> list[str]:
    """The Python code blocks of a model card that load the model (`trust_remote_code=True`)."""
    return [code for code in _PYTHON_BLOCK.findall(card_text) if "trust_remote_code=True" in code]


def localize_snippet(code: str, folder: Union[str, os.PathLike]) -> str:
    """Point a usage snippet at a local folder: the repository id becomes the folder path, `revision=` is dropped."""
    code = _MODEL_ID_ARG.sub(lambda m: m.group(1) + repr(str(folder)), code)
    return _REVISION_ARG.sub("", code)

