"""Caption metrics: the packaged `evaluate` modules against independent references (sacrebleu, pycocoevalcap)."""

import ast
import math
import types

import evaluate
import pytest
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from sacrebleu.metrics import BLEU

from centerfocus.tools.metrics import METRICS_DIR, compute_caption_metrics, load_caption_metrics, normalize_caption

from ..fresh_process import run_without_package


TOLERANCE = 1e-6

# (prediction, references): raw text with case, punctuation and odd spacing, 1-3 references each; some predictions
# are short (brevity penalty), one has repeated words (clipping), one is punctuation only (empty after normalising)
CORPUS = [
    ("A red circle in the centre.", ["a red circle in the centre", "A red round shape in the middle."]),
    ("a blue square in the centre", ["A blue square in the centre, with a green triangle at the left."]),
    ("A yellow star.", ["a yellow star in the centre", "a bright yellow star", "the star is yellow"]),
    ("a green triangle near a red square", ["A green triangle in the centre near a red square!"]),
    ("a small white cross at the top right", ["a small white cross at the top right", "a white cross, top-right"]),
    ("a big purple circle in the middle of the picture", ["A BIG purple circle in the middle of the picture"]),
    ("the the the the the", ["the cat sat on the mat", "the dog"]),
    ("a dog runs on the beach", ["A dog is running along the beach.", "a brown dog runs on sand"]),
    ("two people riding bikes down a street", ["Two people ride bicycles down the street.",
                                               "two cyclists on a city street", "people riding bikes"]),
    ("a plate of food with broccoli", ["A plate with broccoli and rice.", "a plate of food"]),
    ("a man holding an umbrella in the rain", ["a man holds an umbrella in the rain"]),
    ("a cat", ["A cat sleeping on a sofa.", "a grey cat lying on the couch"]),
    ("a train on the tracks", ["a red train travelling on the railway tracks"]),
    ("a kitchen with a stove and a fridge", ["A kitchen with a stove, a sink and a fridge.", "a small kitchen"]),
    ("someone is surfing a big wave", ["A surfer rides a big wave.", "a person surfing on a big wave",
                                       "someone surfing"]),
    ("...", ["a bowl of fruit on a table"]),
    ("a clock tower at night", ["A tall clock tower lit up at night.", "a clock tower"]),
    ("a giraffe standing next to a tree", ["a giraffe standing next to a tall tree", "giraffe by a tree"]),
    ("a woman's hat -- blue & white", ["A woman wearing a blue and white hat."]),
    ("a bus parked on the side of the road", ["A bus parked at the side of a road.",
                                              "a city bus on the road side"]),
]
PREDICTIONS = [prediction for prediction, _ in CORPUS]
REFERENCES = [refs for _, refs in CORPUS]
# slices of different sizes: CIDEr-D's document frequencies and IDF depend on the corpus
SUBSETS = {"full": slice(None), "first7": slice(0, 7), "every3rd": slice(None, None, 3), "two": slice(9, 11)}


@pytest.fixture(scope="module")
def metrics() -> dict:
    return load_caption_metrics()


def _normalized(predictions: list[str], references: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    return [normalize_caption(p) for p in predictions], [[normalize_caption(r) for r in refs] for refs in references]


def _sacrebleu(predictions: list[str], references: list[list[str]], max_order: int = 4):
    """sacrebleu on pre-normalised text; a variable number of references is given as None-padded streams."""
    hyps, refs = _normalized(predictions, references)
    streams = [[r[i] if i < len(r) else None for r in refs] for i in range(max(map(len, refs)))]
    bleu = BLEU(tokenize="none", smooth_method="none", max_ngram_order=max_order, force=True)
    return bleu.corpus_score(hyps, streams)


def _coco(scorer, predictions: list[str], references: list[list[str]]) -> float:
    hyps, refs = _normalized(predictions, references)
    score, _ = scorer.compute_score(dict(enumerate(refs)), {i: [h] for i, h in enumerate(hyps)})
    return float(score)


def _load_module_file(name: str = "cf_caption") -> types.ModuleType:
    """Execute a module file directly (no `__pycache__` is written next to it: its folder must hold one file)."""
    path = METRICS_DIR / name / f"{name}.py"
    module = types.ModuleType(f"_test_{name}")
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    return module


def test_normalize_caption():
    assert normalize_caption("  A Man's HAT -- red!\n") == "a man s hat red"
    assert normalize_caption("top-right,left;(x)_y") == "top right left x y"
    assert normalize_caption("Caf\u00e9 \u00bfqu\u00e9?  \u201cquoted\u201d") == "café qué quoted"
    assert normalize_caption("\uff21\uff22 \ufb01sh") == "ab fish"  # NFKC: full-width letters, ligature
    assert normalize_caption("...!?") == ""
    assert normalize_caption("3 dogs") == "3 dogs"


def test_module_directory_holds_one_self_contained_file():
    name = "cf_caption"
    assert [path.name for path in METRICS_DIR.iterdir() if path.name != "__pycache__"] == [name]
    assert [path.name for path in (METRICS_DIR / name).iterdir() if path.name != "__pycache__"] == [f"{name}.py"]
    tree = ast.parse((METRICS_DIR / name / f"{name}.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"collections", "datasets", "evaluate", "math", "re", "unicodedata"}, imported
    # the tokenizer copy in each module agrees with the package's
    normalize = _load_module_file(name)._normalize
    for text in [p for p, _ in CORPUS] + [r for _, refs in CORPUS for r in refs] + ["\uff21 \ufb01_x", " \t"]:
        assert normalize(text) == normalize_caption(text)


@pytest.mark.parametrize("subset", SUBSETS)
def test_bleu_matches_sacrebleu(metrics, subset):
    predictions, references = PREDICTIONS[SUBSETS[subset]], REFERENCES[SUBSETS[subset]]
    expected = _sacrebleu(predictions, references)
    result = metrics["bleu4"].compute(predictions=predictions, references=references)
    assert set(result) == {"bleu"}
    assert result["bleu"] == pytest.approx(expected.score / 100, abs=TOLERANCE)


def test_bleu_exercises_brevity_penalty_clipping_and_other_orders(metrics):
    # the corpus is not trivial for BLEU: scores strictly between 0 and 1, and the brevity penalty bites somewhere
    scores = {name: _sacrebleu(PREDICTIONS[s], REFERENCES[s]) for name, s in SUBSETS.items()}
    assert all(0 < score.score < 100 for score in scores.values())
    assert min(score.bp for score in scores.values()) < 1 == max(score.bp for score in scores.values())
    # by hand: "the the the the the" gets 2/5 clipped unigrams (not 5/5) and the closest reference length is 6, not 2
    only_the = metrics["bleu4"].compute(predictions=[PREDICTIONS[6]], references=[REFERENCES[6]], max_order=1)
    assert only_the["bleu"] == pytest.approx(_sacrebleu(PREDICTIONS[6:7], REFERENCES[6:7], 1).score / 100, abs=1e-9)
    assert only_the["bleu"] == pytest.approx(2 / 5 * math.exp(1 - 6 / 5), abs=1e-12)
    for max_order in (1, 2, 3):
        result = metrics["bleu4"].compute(predictions=PREDICTIONS, references=REFERENCES, max_order=max_order)
        expected = _sacrebleu(PREDICTIONS, REFERENCES, max_order).score / 100
        assert result["bleu"] == pytest.approx(expected, abs=TOLERANCE)


def test_bleu_perfect_and_zero(metrics):
    references = [refs[:1] for refs in REFERENCES if len(normalize_caption(refs[0]).split()) >= 4]
    perfect = [refs[0].upper() + " !" for refs in references]  # case and punctuation are normalised away
    result = metrics["bleu4"].compute(predictions=perfect, references=references)
    assert result["bleu"] == pytest.approx(1.0, abs=1e-12)
    # no 4-gram matches anywhere: unsmoothed BLEU-4 is exactly 0, like sacrebleu without smoothing
    predictions, refs = ["a red circle", "a blue square"], [["a red circle here"], ["a blue square there"]]
    assert _sacrebleu(predictions, refs).score == 0.0
    assert metrics["bleu4"].compute(predictions=predictions, references=refs)["bleu"] == 0.0


@pytest.mark.parametrize("subset", SUBSETS)
def test_rouge_matches_pycocoevalcap(metrics, subset):
    predictions, references = PREDICTIONS[SUBSETS[subset]], REFERENCES[SUBSETS[subset]]
    expected = _coco(Rouge(), predictions, references)
    result = metrics["rougeL"].compute(predictions=predictions, references=references)
    assert set(result) == {"rougeL"}
    assert 0 < expected < 1
    assert result["rougeL"] == pytest.approx(expected, abs=TOLERANCE)


@pytest.mark.parametrize("subset", SUBSETS)
def test_cider_matches_pycocoevalcap(metrics, subset):
    predictions, references = PREDICTIONS[SUBSETS[subset]], REFERENCES[SUBSETS[subset]]
    expected = _coco(Cider(), predictions, references)
    result = metrics["cider"].compute(predictions=predictions, references=references)
    assert set(result) == {"cider"}
    assert expected > 0
    assert result["cider"] == pytest.approx(expected, abs=TOLERANCE)


def test_cider_options_and_corpus_dependence(metrics):
    expected = _coco(Cider(sigma=3.0), PREDICTIONS, REFERENCES)
    result = metrics["cider"].compute(predictions=PREDICTIONS, references=REFERENCES, sigma=3.0)["cider"]
    assert result == pytest.approx(expected, abs=TOLERANCE)
    # a single image: IDF = log(1) - log(1) = 0 for every reference n-gram, so CIDEr-D is 0 (pycocoevalcap agrees)
    single = metrics["cider"].compute(predictions=PREDICTIONS[:1], references=REFERENCES[:1])["cider"]
    assert single == 0.0
    assert _coco(Cider(), PREDICTIONS[:1], REFERENCES[:1]) == 0.0


def test_compute_caption_metrics_agrees_with_the_modules(metrics):
    result = compute_caption_metrics(PREDICTIONS, REFERENCES)
    assert set(result) == {"bleu4", "rougeL", "cider"}
    assert all(isinstance(value, float) for value in result.values())
    assert result["bleu4"] == metrics["bleu4"].compute(predictions=PREDICTIONS, references=REFERENCES)["bleu"]
    assert result["rougeL"] == metrics["rougeL"].compute(predictions=PREDICTIONS, references=REFERENCES)["rougeL"]
    assert result["cider"] == metrics["cider"].compute(predictions=PREDICTIONS, references=REFERENCES)["cider"]
    # and with the independent references
    assert result["bleu4"] == pytest.approx(_sacrebleu(PREDICTIONS, REFERENCES).score / 100, abs=TOLERANCE)
    assert result["rougeL"] == pytest.approx(_coco(Rouge(), PREDICTIONS, REFERENCES), abs=TOLERANCE)
    assert result["cider"] == pytest.approx(_coco(Cider(), PREDICTIONS, REFERENCES), abs=TOLERANCE)


def test_one_reference_string_per_prediction():
    single = [refs[0] for refs in REFERENCES]
    assert compute_caption_metrics(PREDICTIONS, single) == compute_caption_metrics(
        PREDICTIONS, [[ref] for ref in single])
    assert compute_caption_metrics(tuple(PREDICTIONS), tuple(single)) == compute_caption_metrics(PREDICTIONS, single)


def test_load_caption_metrics_returns_local_modules(metrics):
    assert set(metrics) == {"bleu4", "rougeL", "cider"}
    assert all(isinstance(module, evaluate.EvaluationModule) for module in metrics.values())
    assert {module.name for module in metrics.values()} == {"cf_caption"}
    assert [module.config_name for module in metrics.values()] == ["bleu", "rougeL", "cider"]


def test_modules_load_offline_by_path_in_a_fresh_process(tmp_path):
    # a fresh process: empty HF cache, offline flags, an unreachable endpoint, and `centerfocus` not importable
    code = f"""
        import json
        import evaluate
        import huggingface_hub.constants
        assert evaluate.config.HF_EVALUATE_OFFLINE and huggingface_hub.constants.HF_HUB_OFFLINE
        predictions, references = {PREDICTIONS!r}, {REFERENCES!r}
        out = {{}}
        for name in ("bleu", "rougeL", "cider"):
            module = evaluate.load({str(METRICS_DIR)!r} + "/cf_caption", name)
            assert isinstance(module, evaluate.EvaluationModule), type(module)
            out.update(module.compute(predictions=predictions, references=references))
        print(json.dumps(out))
    """
    env = {"HF_EVALUATE_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"),
           "HF_ENDPOINT": "http://127.0.0.1:9"}
    result = run_without_package(code, timeout=120, env=env)
    expected = compute_caption_metrics(PREDICTIONS, REFERENCES)
    expected = {"bleu": expected["bleu4"], "rougeL": expected["rougeL"], "cider": expected["cider"]}
    assert result == pytest.approx(expected, abs=1e-12)
    assert list((tmp_path / "hf_home").rglob("cf_caption.py"))  # evaluate copied the file into the fresh module cache
    assert all(math.isfinite(value) for value in result.values())


@pytest.mark.parametrize(
    ("predictions", "references", "error", "message"),
    [
        (["a cat", "a dog"], [["a cat"]], ValueError, "2 predictions but 1 references"),
        (["a cat"], [["a cat"], ["a dog"]], ValueError, "1 predictions but 2 references"),
        ([], [], ValueError, "at least one prediction"),
        (["a cat", "a dog"], [["a cat"], []], ValueError, "Prediction 1 has an empty list of references"),
        ([None], ["a cat"], TypeError, "Prediction 0"),
        (["a cat"], [["a cat", 3]], TypeError, "references of prediction 0"),
    ],
)
def test_invalid_inputs_raise(predictions, references, error, message):
    with pytest.raises(error, match=message):
        compute_caption_metrics(predictions, references)


@pytest.mark.parametrize("key, message", [("bleu4", "BLEU needs"), ("rougeL", "ROUGE-L needs"),
                                          ("cider", "CIDEr-D needs")])
def test_every_module_refuses_an_empty_corpus(metrics, key, message):
    with pytest.raises(ValueError, match=f"{message} at least one prediction"):
        metrics[key].compute(predictions=[], references=[])


def test_the_module_without_a_configuration_names_the_configurations():
    with pytest.raises(KeyError, match=r"bleu.*cider.*rougeL"):
        evaluate.load(str(METRICS_DIR / "cf_caption"), keep_in_memory=True)
