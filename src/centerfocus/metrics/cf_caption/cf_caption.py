"""Caption metrics (BLEU, COCO's ROUGE-L and CIDEr-D) as one local `evaluate` module with a configuration each.

`evaluate.load("/abs/path/cf_caption", "bleu")` (or `"rougeL"`, `"cider"`) copies this single file into its module
cache, so it is self-contained on purpose and must not import `centerfocus`: every metric tokenises captions with
`_normalize`, a copy of `centerfocus.tools.metrics.normalize_caption` (a test checks that they agree).
"""

import math
import re
import unicodedata
from collections import Counter

import datasets
import evaluate


_DESCRIPTIONS = {
    "bleu": """\
Corpus-level BLEU (Papineni et al., 2002) over normalised captions: NFKC, lowercase, every character that is neither
a letter, a digit nor whitespace (punctuation, symbols, underscore) replaced by a space, whitespace-split. Clipped
n-gram precisions (counts clipped by the maximum count in any single reference) are summed over the corpus, combined
by an unweighted geometric mean over orders 1..max_order, and multiplied by the brevity penalty computed from the
summed closest reference lengths (ties go to the shorter reference). No smoothing: a corpus without a single matching
n-gram of some order scores 0. Equal to `sacrebleu.corpus_bleu(..., tokenize="none", smooth_method="none")` / 100 on
normalised text.
""",
    "rougeL": """\
ROUGE-L F-measure (Lin, 2004) as computed by the COCO caption evaluation (`pycocoevalcap.rouge`), over normalised
captions (NFKC, lowercase, every character that is neither a letter, a digit nor whitespace replaced by a space,
whitespace-split). For each image, the longest common subsequence (LCS) with each reference gives a precision
LCS/len(prediction) and a recall LCS/len(reference); like pycocoevalcap, the maximum precision and the maximum recall
over the references (each maximised separately) are combined into F = (1 + beta^2) P R / (R + beta^2 P) with
beta = 1.2. The corpus score is the mean over images. An empty prediction scores 0.
""",
    "cider": """\
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
""",
}

_CITATIONS = {
    "bleu": "Papineni, Roukos, Ward and Zhu: BLEU: a Method for Automatic Evaluation of Machine Translation. ACL 2002, "
            "pages 311-318.",
    "rougeL": "Lin: ROUGE: A Package for Automatic Evaluation of Summaries. Text Summarization Branches Out, 2004, "
              "pages 74-81.",
    "cider": "Vedantam, Zitnick and Parikh: CIDEr: Consensus-based Image Description Evaluation. CVPR 2015, "
             "pages 4566-4575.",
}

_KWARGS_DESCRIPTIONS = {
    "bleu": """
Args:
    predictions (`list` of `str`): one generated caption per image.
    references (`list` of `list` of `str`): one or more reference captions per image.
    max_order (`int`, defaults to 4): the largest n-gram order.
Returns:
    bleu (`float`): corpus BLEU in [0, 1].
Examples:
    >>> bleu = evaluate.load("/path/to/centerfocus/metrics/cf_caption", "bleu")
    >>> bleu.compute(predictions=["A red circle in the centre."], references=[["a red circle in the centre"]])
    {'bleu': 1.0}
""",
    "rougeL": """
Args:
    predictions (`list` of `str`): one generated caption per image.
    references (`list` of `list` of `str`): one or more reference captions per image.
    beta (`float`, defaults to 1.2): the recall weight of the F-measure.
Returns:
    rougeL (`float`): mean sentence-level ROUGE-L F-measure in [0, 1].
Examples:
    >>> rouge = evaluate.load("/path/to/centerfocus/metrics/cf_caption", "rougeL")
    >>> rouge.compute(predictions=["A red circle."], references=[["a red circle", "a circle"]])
    {'rougeL': 1.0}
""",
    "cider": """
Args:
    predictions (`list` of `str`): one generated caption per image.
    references (`list` of `list` of `str`): one or more reference captions per image.
    n (`int`, defaults to 4): the largest n-gram order.
    sigma (`float`, defaults to 6.0): the standard deviation of the Gaussian length penalty.
Returns:
    cider (`float`): corpus CIDEr-D (0 to about 10; typical COCO models score about 1).
Examples:
    >>> cider = evaluate.load("/path/to/centerfocus/metrics/cf_caption", "cider")
    >>> result = cider.compute(predictions=["a red circle", "a blue square"], references=[["a red circle"], ["a dog"]])
    >>> round(result["cider"], 6)  # image 1: orders 1-3 match exactly, no 4-grams; image 2: only "a", whose IDF is 0
    3.75
""",
}

_REFERENCE_URLS = {
    "bleu": ["https://aclanthology.org/P02-1040/"],
    "rougeL": ["https://aclanthology.org/W04-1013/", "https://github.com/tylin/coco-caption"],
    "cider": ["https://arxiv.org/abs/1411.5726", "https://github.com/tylin/coco-caption"],
}

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


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTIONS["bleu"], _KWARGS_DESCRIPTIONS["bleu"])
class CfCaption(evaluate.Metric):
    """Caption metrics over normalised captions; the configuration names the metric: "bleu", "rougeL" or "cider"."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in _DESCRIPTIONS:
            raise KeyError(f"cf_caption has the configurations {sorted(_DESCRIPTIONS)}, got {self.config_name!r}: "
                           'load it as evaluate.load(path, "bleu").')
        return evaluate.MetricInfo(
            description=_DESCRIPTIONS[self.config_name],
            citation=_CITATIONS[self.config_name],
            inputs_description=_KWARGS_DESCRIPTIONS[self.config_name],
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string"), id="sequence"),
                }
            ),
            reference_urls=_REFERENCE_URLS[self.config_name],
        )

    def _compute(self, predictions, references, **kwargs):
        return {"bleu": self._bleu, "rougeL": self._rouge, "cider": self._cider}[self.config_name](
            predictions, references, **kwargs)

    @staticmethod
    def _bleu(predictions, references, max_order=4):
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

    @staticmethod
    def _rouge(predictions, references, beta=1.2):
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

    @staticmethod
    def _cider(predictions, references, n=4, sigma=6.0):
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
