"""Caption-quality metrics (BLEU-4, ROUGE-L, CIDEr-D) as local `evaluate` modules shipped inside the package.

`evaluate.load("bleu")` needs the Hugging Face Hub; the module under `METRICS_DIR` (`cf_caption`, one configuration
per metric) is loaded by path instead, so everything here works offline (`HF_HUB_OFFLINE=1`, `HF_EVALUATE_OFFLINE=1`). Every metric tokenises captions the same
way: `normalize_caption(text).split()`.
"""

import functools
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import evaluate
import numpy as np
from transformers import PreTrainedTokenizerBase


METRICS_DIR: Path = Path(__file__).resolve().parent.parent / "metrics"

METRICS_MODULE = "cf_caption"
# metric key -> the module's configuration, which is also the key of its result
_METRICS = {"bleu4": "bleu", "rougeL": "rougeL", "cider": "cider"}

# everything that is neither a letter, a digit nor whitespace (Unicode-aware), plus "_" which `\w` counts as a letter
_NON_WORD = re.compile(r"[^\w\s]|_")


def normalize_caption(text: str) -> str:
    """Normalise a caption the way every caption metric tokenises it.

    Applies Unicode NFKC normalisation (like the caption tokenizer), lowercases, replaces every character that is
    neither a letter, a digit nor whitespace (punctuation, symbols, underscore) by a space, and collapses runs of
    whitespace into single spaces. Tokens are `normalize_caption(text).split()`.

    Args:
        text: The caption.

    Returns:
        The normalised caption, e.g. `"A man's hat -- red!"` becomes `"a man s hat red"`.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_NON_WORD.sub(" ", text).split())


def load_caption_metrics() -> dict[str, evaluate.EvaluationModule]:
    """Load the packaged caption metrics from their local module file (no network access).

    Each call returns fresh modules (they keep state between `add_batch` and `compute`), kept in memory rather than
    in cache files.

    Returns:
        `{"bleu4": ..., "rougeL": ..., "cider": ...}`; their `compute(predictions=..., references=...)` take one
        caption per image and a list of reference captions per image and return `{"bleu": ...}`, `{"rougeL": ...}`
        and `{"cider": ...}` respectively.
    """
    return {
        key: evaluate.load(str(METRICS_DIR / METRICS_MODULE), name, keep_in_memory=True)
        for key, name in _METRICS.items()
    }


@functools.lru_cache(maxsize=1)
def _cached_caption_metrics() -> dict[str, evaluate.EvaluationModule]:
    return load_caption_metrics()


def compute_caption_metrics(
    predictions: Sequence[str], references: Sequence[Sequence[str]] | Sequence[str]
) -> dict[str, float]:
    """Score generated captions against reference captions with BLEU-4, ROUGE-L and CIDEr-D.

    Captions are normalised with `normalize_caption` inside the metrics. CIDEr-D takes its document frequencies from
    the references of this corpus, so score the whole evaluation set in one call (a single image always gets 0).

    Args:
        predictions: One generated caption per image.
        references: For each prediction, either one reference caption or a non-empty list of reference captions.

    Returns:
        `{"bleu4": corpus BLEU-4 in [0, 1], "rougeL": mean ROUGE-L F in [0, 1], "cider": corpus CIDEr-D}`.

    Raises:
        ValueError: If `predictions` is empty, if the numbers of predictions and references differ, or if a
            prediction has no reference.
        TypeError: If a prediction or a reference is not a string.
    """
    predictions = list(predictions)
    references = list(references)
    if not predictions:
        raise ValueError("compute_caption_metrics needs at least one prediction, got an empty list.")
    if len(predictions) != len(references):
        raise ValueError(
            f"Got {len(predictions)} predictions but {len(references)} references: give one reference (or one list "
            "of references) per prediction."
        )
    for index, prediction in enumerate(predictions):
        if not isinstance(prediction, str):
            raise TypeError(f"Prediction {index} is a {type(prediction).__name__}, expected a str.")
    reference_lists = []
    for index, refs in enumerate(references):
        refs = [refs] if isinstance(refs, str) else list(refs)
        if not refs:
            raise ValueError(f"Prediction {index} has an empty list of references; give at least one.")
        if not all(isinstance(ref, str) for ref in refs):
            raise TypeError(f"The references of prediction {index} must be strings, got {refs!r}.")
        reference_lists.append(refs)
    modules = _cached_caption_metrics()
    return {
        key: float(modules[key].compute(predictions=predictions, references=reference_lists)[name])
        for key, name in _METRICS.items()
    }


def center_phrase(caption: str) -> Optional[str]:
    """The phrase before " in the centre" (the built-in data set's caption pattern), or None."""
    text = " ".join(caption.lower().split())
    return text.split(" in the centre")[0].strip() if " in the centre" in text else None


def make_compute_metrics(tokenizer: PreTrainedTokenizerBase):
    """`compute_metrics` for predict_with_generate: BLEU-4, ROUGE-L, CIDEr-D, exact match, and the centre-phrase
    exact match when the references follow the built-in data set's pattern."""
    def compute_metrics(eval_prediction) -> dict:
        predictions, labels = eval_prediction.predictions, eval_prediction.label_ids
        if isinstance(predictions, tuple):
            predictions = predictions[0]
        predictions = np.where(predictions < 0, tokenizer.pad_token_id, predictions)
        labels = np.where(labels < 0, tokenizer.pad_token_id, labels)
        texts = [t.strip() for t in tokenizer.batch_decode(predictions, skip_special_tokens=True)]
        references = [t.strip() for t in tokenizer.batch_decode(labels, skip_special_tokens=True)]
        metrics = compute_caption_metrics(texts, references)
        metrics["exact_match"] = float(np.mean([p == r for p, r in zip(texts, references)]))
        phrases = [center_phrase(r) for r in references]
        if all(phrases):
            metrics["center_phrase_exact_match"] = float(np.mean([center_phrase(p) == r
                                                                  for p, r in zip(texts, phrases)]))
        return metrics

    return compute_metrics
