"""Corpus-level BLEU (BLEU-4 by default) for image captions, as a local `evaluate` module.

Self-contained on purpose: `evaluate.load("/abs/path/cf_bleu")` copies this single file into its module cache, so it
must not import `centerfocus`. The caption normalisation below is a copy of `centerfocus.tools.metrics`.
"""

import math
import re
import unicodedata
from collections import Counter

import datasets
import evaluate


_DESCRIPTION = """\
Corpus-level BLEU (Papineni et al., 2002) over normalised captions: NFKC, lowercase, every character that is neither
a letter, a digit nor whitespace (punctuation, symbols, underscore) replaced by a space, whitespace-split. Clipped
n-gram precisions (counts clipped by the maximum count in any single reference) are summed over the corpus, combined
by an unweighted geometric mean over orders 1..max_order, and multiplied by the brevity penalty computed from the
summed closest reference lengths (ties go to the shorter reference). No smoothing: a corpus without a single matching
n-gram of some order scores 0. Equal to `sacrebleu.corpus_bleu(..., tokenize="none", smooth_method="none")` / 100 on
normalised text.
"""

_CITATION = """\
@inproceedings{papineni-etal-2002-bleu,
    title = "{B}leu: a Method for Automatic Evaluation of Machine Translation",
    author = "Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing",
    booktitle = "Proceedings of the 40th Annual Meeting of the Association for Computational Linguistics",
    year = "2002",
    pages = "311--318",
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): one generated caption per image.
    references (`list` of `list` of `str`): one or more reference captions per image.
    max_order (`int`, defaults to 4): the largest n-gram order.
Returns:
    bleu (`float`): corpus BLEU in [0, 1].
Examples:
    >>> bleu = evaluate.load("/path/to/centerfocus/metrics/cf_bleu")
    >>> bleu.compute(predictions=["A red circle in the centre."], references=[["a red circle in the centre"]])
    {'bleu': 1.0}
"""

_NON_WORD = re.compile(r"[^\w\s]|_")


def _normalize(text: str) -> str:
    """NFKC, lowercase, punctuation/symbols to spaces, collapsed whitespace (copy of `normalize_caption`)."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_NON_WORD.sub(" ", text).split())


def _ngram_counts(tokens: list[str], max_order: int) -> Counter:
    """Counts of all n-grams of orders 1..max_order."""
    counts: Counter = Counter()
    for order in range(1, max_order + 1):
        for start in range(len(tokens) - order + 1):
            counts[tuple(tokens[start : start + order])] += 1
    return counts


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CfBleu(evaluate.Metric):
    """Corpus BLEU over normalised captions."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string"), id="sequence"),
                }
            ),
            reference_urls=["https://aclanthology.org/P02-1040/"],
        )

    def _compute(self, predictions, references, max_order=4):
        if not isinstance(max_order, int) or max_order < 1:
            raise ValueError(f"max_order must be a positive integer, got {max_order!r}.")
        if len(predictions) == 0:
            raise ValueError("BLEU needs at least one prediction.")
        matches = [0] * max_order
        totals = [0] * max_order
        hyp_length = ref_length = 0
        for prediction, refs in zip(predictions, references):
            if len(refs) == 0:
                raise ValueError("Every prediction needs at least one reference.")
            hyp = _normalize(prediction).split()
            ref_tokens = [_normalize(ref).split() for ref in refs]
            max_ref_counts: Counter = Counter()
            for tokens in ref_tokens:
                max_ref_counts |= _ngram_counts(tokens, max_order)  # `|` keeps the maximum count per n-gram
            for ngram, count in _ngram_counts(hyp, max_order).items():
                totals[len(ngram) - 1] += count
                matches[len(ngram) - 1] += min(count, max_ref_counts[ngram])
            hyp_length += len(hyp)
            ref_length += min((abs(len(tokens) - len(hyp)), len(tokens)) for tokens in ref_tokens)[1]
        if hyp_length == 0 or min(matches) == 0:
            return {"bleu": 0.0}
        log_precision = sum(math.log(match / total) for match, total in zip(matches, totals)) / max_order
        brevity_penalty = 1.0 if hyp_length >= ref_length else math.exp(1.0 - ref_length / hyp_length)
        return {"bleu": float(brevity_penalty * math.exp(log_precision))}
