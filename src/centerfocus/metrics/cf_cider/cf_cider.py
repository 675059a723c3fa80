"""CIDEr-D (COCO caption flavour) for image captions, as a local `evaluate` module.

Self-contained on purpose: `evaluate.load("/abs/path/cf_cider")` copies this single file into its module cache, so it
must not import `centerfocus`. The caption normalisation below is a copy of `centerfocus.tools.metrics`.
"""

import math
import re
import unicodedata
from collections import Counter

import datasets
import evaluate


_DESCRIPTION = """\
CIDEr-D (Vedantam et al., 2015) as computed by the COCO caption evaluation (`pycocoevalcap.cider`), over normalised
captions (NFKC, lowercase, every character that is neither a letter, a digit nor whitespace replaced by a space,
whitespace-split). Each caption becomes TF-IDF vectors of its 1..n-grams, where the document frequency of an n-gram
is the number of images of the evaluated corpus whose references contain it and the IDF is
log(#images) - log(max(1, df)). For every order, the prediction/reference similarity is the clipped cosine
sum(min(w_pred, w_ref) * w_ref) / (|pred| |ref|) times the Gaussian length penalty exp(-(len_pred - len_ref)^2 /
(2 sigma^2)); the image score is 10 x the mean over orders of the mean over references, and the corpus score is the
mean over images.

The IDF statistics come from the evaluated corpus itself, so scores depend on the corpus: the same caption scores
differently inside different corpora, and a corpus of one image always scores 0 (log(1) - log(1) = 0).
"""

_CITATION = """\
@inproceedings{vedantam2015cider,
    title = {CIDEr: Consensus-based Image Description Evaluation},
    author = {Vedantam, Ramakrishna and Zitnick, C. Lawrence and Parikh, Devi},
    booktitle = {Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
    year = {2015},
    pages = {4566--4575},
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): one generated caption per image.
    references (`list` of `list` of `str`): one or more reference captions per image.
    n (`int`, defaults to 4): the largest n-gram order.
    sigma (`float`, defaults to 6.0): the standard deviation of the Gaussian length penalty.
Returns:
    cider (`float`): corpus CIDEr-D (0 to about 10; typical COCO models score about 1).
Examples:
    >>> cider = evaluate.load("/path/to/centerfocus/metrics/cf_cider")
    >>> result = cider.compute(predictions=["a red circle", "a blue square"], references=[["a red circle"], ["a dog"]])
    >>> round(result["cider"], 6)  # image 1: orders 1-3 match exactly, no 4-grams; image 2: only "a", whose IDF is 0
    3.75
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
class CfCider(evaluate.Metric):
    """COCO-style CIDEr-D over normalised captions."""

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
            reference_urls=["https://arxiv.org/abs/1411.5726", "https://github.com/tylin/coco-caption"],
        )

    def _compute(self, predictions, references, n=4, sigma=6.0):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}.")
        if len(predictions) == 0:
            raise ValueError("CIDEr-D needs at least one prediction.")
        hyp_tokens = [_normalize(prediction).split() for prediction in predictions]
        ref_tokens = []
        for refs in references:
            if len(refs) == 0:
                raise ValueError("Every prediction needs at least one reference.")
            ref_tokens.append([_normalize(ref).split() for ref in refs])

        ref_counts = [[_ngram_counts(tokens, n) for tokens in refs] for refs in ref_tokens]
        document_frequency: Counter = Counter()
        for counts in ref_counts:
            document_frequency.update(set().union(*counts))
        log_corpus_size = math.log(len(predictions))

        def tfidf(counts: Counter) -> tuple[list[dict], list[float]]:
            vectors: list[dict] = [{} for _ in range(n)]
            norms = [0.0] * n
            for ngram, term_frequency in counts.items():
                weight = term_frequency * (log_corpus_size - math.log(max(1.0, document_frequency[ngram])))
                vectors[len(ngram) - 1][ngram] = weight
                norms[len(ngram) - 1] += weight * weight
            return vectors, [math.sqrt(norm) for norm in norms]

        penalty_denominator = 2 * sigma**2
        scores = []
        for hyp, refs, counts_per_ref in zip(hyp_tokens, ref_tokens, ref_counts):
            hyp_vectors, hyp_norms = tfidf(_ngram_counts(hyp, n))
            per_order = [0.0] * n
            for ref, ref_counts_one in zip(refs, counts_per_ref):
                ref_vectors, ref_norms = tfidf(ref_counts_one)
                # pycocoevalcap measures lengths in bigrams; that equals the word-length difference whenever both
                # captions are non-empty, and an empty caption has a zero vector (similarity 0) anyway
                length_penalty = math.exp(-((len(hyp) - len(ref)) ** 2) / penalty_denominator)
                for order in range(n):
                    if hyp_norms[order] == 0 or ref_norms[order] == 0:
                        continue
                    ref_vector = ref_vectors[order]
                    dot = sum(
                        min(weight, ref_vector.get(ngram, 0.0)) * ref_vector.get(ngram, 0.0)
                        for ngram, weight in hyp_vectors[order].items()
                    )
                    per_order[order] += dot / (hyp_norms[order] * ref_norms[order]) * length_penalty
            scores.append(10.0 * sum(per_order) / n / len(refs))
        return {"cider": float(sum(scores) / len(scores))}
