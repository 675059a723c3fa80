"""ROUGE-L (COCO caption flavour) for image captions, as a local `evaluate` module.

Self-contained on purpose: `evaluate.load("/abs/path/cf_rouge")` copies this single file into its module cache, so it
must not import `centerfocus`. The caption normalisation below is a copy of `centerfocus.tools.metrics`.
"""

import re
import unicodedata

import datasets
import evaluate


_DESCRIPTION = """\
ROUGE-L F-measure (Lin, 2004) as computed by the COCO caption evaluation (`pycocoevalcap.rouge`), over normalised
captions (NFKC, lowercase, every character that is neither a letter, a digit nor whitespace replaced by a space,
whitespace-split). For each image, the longest common subsequence (LCS) with each reference gives a precision
LCS/len(prediction) and a recall LCS/len(reference); like pycocoevalcap, the maximum precision and the maximum recall
over the references (each maximised separately) are combined into F = (1 + beta^2) P R / (R + beta^2 P) with
beta = 1.2. The corpus score is the mean over images. An empty prediction scores 0.
"""

_CITATION = """\
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    pages = "74--81",
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): one generated caption per image.
    references (`list` of `list` of `str`): one or more reference captions per image.
    beta (`float`, defaults to 1.2): the recall weight of the F-measure.
Returns:
    rougeL (`float`): mean sentence-level ROUGE-L F-measure in [0, 1].
Examples:
    >>> rouge = evaluate.load("/path/to/centerfocus/metrics/cf_rouge")
    >>> rouge.compute(predictions=["A red circle."], references=[["a red circle", "a circle"]])
    {'rougeL': 1.0}
"""

_NON_WORD = re.compile(r"[^\w\s]|_")


def _normalize(text: str) -> str:
    """NFKC, lowercase, punctuation/symbols to spaces, collapsed whitespace (copy of `normalize_caption`)."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_NON_WORD.sub(" ", text).split())


def _lcs_length(first: list[str], second: list[str]) -> int:
    """Length of the longest common subsequence of two token lists (dynamic programming, one row of memory)."""
    if len(first) < len(second):
        first, second = second, first
    row = [0] * (len(second) + 1)
    for token in first:
        diagonal = 0
        for j, other in enumerate(second, start=1):
            above = row[j]
            row[j] = diagonal + 1 if token == other else max(above, row[j - 1])
            diagonal = above
    return row[-1]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CfRouge(evaluate.Metric):
    """COCO-style ROUGE-L over normalised captions."""

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
            reference_urls=["https://aclanthology.org/W04-1013/", "https://github.com/tylin/coco-caption"],
        )

    def _compute(self, predictions, references, beta=1.2):
        if len(predictions) == 0:
            raise ValueError("ROUGE-L needs at least one prediction.")
        scores = []
        for prediction, refs in zip(predictions, references):
            if len(refs) == 0:
                raise ValueError("Every prediction needs at least one reference.")
            candidate = _normalize(prediction).split()
            if not candidate:
                scores.append(0.0)
                continue
            precision = recall = 0.0
            for ref in refs:
                tokens = _normalize(ref).split()
                if not tokens:
                    continue
                lcs = _lcs_length(tokens, candidate)
                precision = max(precision, lcs / len(candidate))
                recall = max(recall, lcs / len(tokens))
            if precision > 0 and recall > 0:
                scores.append((1 + beta**2) * precision * recall / (recall + beta**2 * precision))
            else:
                scores.append(0.0)
        return {"rougeL": float(sum(scores) / len(scores))}
