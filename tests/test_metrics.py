"""Metrics: equal to the official implementations on a committed fixture, plus hand-computed edge cases."""

import json
from pathlib import Path

import pytest

from m2iv.errors import M2IVError
from m2iv.evaluate import caption_metrics as C
from m2iv.evaluate import metric_registry as R
from m2iv.evaluate import text_metrics as T
from m2iv.evaluate import vqa_metrics as V
from m2iv.evaluate.metrics import score
from m2iv.registry import Registry

REF = json.loads((Path(__file__).parent / "data" / "metric_reference.json").read_text(encoding="utf-8"))
VQA = REF["vqa"]["examples"]
CAPS = REF["captions"]["examples"]


# ---- the committed official values (tests/data/README.md says how they were produced) ----------------------------

def test_vqa_accuracy_equals_official_vqaeval_per_question_exactly():
    r = score("vqa_accuracy", [e["prediction"] for e in VQA], [e["answers"] for e in VQA])
    assert r["n"] == len(VQA)
    assert r["per_example"] == [e["accuracy"] for e in VQA]  # bit-exact, not approx
    assert r["score"] == REF["vqa"]["overall"]
    assert round(100 * r["score"], 2) == REF["vqa"]["official_overall_percent"]


def test_ptb_tokenize_reproduces_the_official_tokenizer_on_the_fixture():
    for e in CAPS:
        raws, toks = [e["candidate"], *e["references"]], [e["candidate_ptb"], *e["references_ptb"]]
        for raw, tok in zip(raws, toks, strict=True):
            assert C.ptb_tokenize(raw) == tok, raw
            assert C.ptb_tokenize(tok) == tok  # idempotent: pre-tokenized input is left alone


@pytest.mark.parametrize("name", ["cider_d", "bleu4"])
@pytest.mark.parametrize("field", ["raw", "ptb"])
def test_corpus_metrics_equal_pycocoevalcap(name, field):
    preds = [e["candidate"] if field == "raw" else e["candidate_ptb"] for e in CAPS]
    refs = [e["references"] if field == "raw" else e["references_ptb"] for e in CAPS]
    r = score(name, preds, refs)
    assert r["n"] == len(CAPS)
    assert r["score"] == pytest.approx(REF["captions"][name], abs=1e-6)
    assert r["per_example"] == pytest.approx([e[name] for e in CAPS], abs=1e-6)
    plain = {"cider_d": C.cider_d, "bleu4": C.bleu4}[name]
    assert plain(preds, refs) == r["score"]


# ---- VQA normalization and the leave-one-out formula, by hand ------------------------------------------------------

@pytest.mark.parametrize("raw, normalized", [
    ("Two", "2"), ("none", "0"), ("TEN", "10"), ("the dog.", "dog"), ("an apple", "apple"), ("A dog", "dog"),
    ("dont", "don't"), ("isnt it", "isn't it"), ("don't", "don't"), ("Yes!", "yes"), ("yes?", "yes"),
    ("1,000", "1000"), ("black/white", "black white"), ("black / white", "black white"), ("hot-dog", "hot dog"),
    ("3.5", "3.5"), (" A\tcat\n", "cat"), ("it's", "it's"), ("10:30", "10:30"),
])
def test_normalize_answer(raw, normalized):
    assert V.normalize_answer(raw) == normalized


def test_period_strip_keeps_the_official_count_quirk():
    # vqaEval passes re.UNICODE (32) where re.sub expects `count`: only 32 periods are ever removed.
    assert V.process_punctuation("." * 40) == "." * 8


@pytest.mark.parametrize("k, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_leave_one_out_with_k_of_10_matching(k, expected):
    # k=3: holding out one of the 3 matches leaves 2 -> 2/3 (x3); holding out a non-match leaves 3 -> 1 (x7);
    # (3 * 2/3 + 7 * 1) / 10 = 0.9.
    answers = ["cat"] * k + ["dog"] * (10 - k)
    if k in (0, 10):
        answers[-1] = "bird"  # keep the answers non-unanimous so both sides are normalized
    assert V.vqa_accuracy("Cat", answers) == pytest.approx(expected, abs=1e-12)


def test_vqa_unanimous_answers_are_compared_unnormalized_as_officially():
    assert V.vqa_accuracy("Yes", ["yes"] * 10) == 0.0
    assert V.vqa_accuracy("ten", ["10"] * 10) == 0.0
    assert V.vqa_accuracy(" yes\n", ["yes"] * 10) == 1.0


def test_vqa_fewer_than_ten_answers():
    assert V.vqa_accuracy("red", ["red", "red", "blue"]) == pytest.approx((1 / 3 + 1 / 3 + 2 / 3) / 3)
    assert V.vqa_accuracy("2", ["2", "2", "3", "4", "two"]) == pytest.approx(0.8)
    # one answer: the official formula would always give 0, so it is exact match after normalization
    assert V.vqa_accuracy("Two", ["2"]) == 1.0
    assert V.vqa_accuracy("cat", ["dog"]) == 0.0


def test_exact_match_and_gqa_accuracy():
    assert V.exact_match("The Dog.", ["cat", "dog"]) == 1.0
    assert V.exact_match("two", ["2"]) == 1.0
    assert V.exact_match("dogs", ["dog"]) == 0.0
    assert V.gqa_accuracy("Yes.", ["yes"]) == 1.0
    assert V.gqa_accuracy(" Table \n", ["table"]) == 1.0
    assert V.gqa_accuracy("the table", ["table"]) == 0.0  # GQA strips no articles
    assert V.gqa_accuracy("two", ["2"]) == 0.0


# ---- caption tokenization (each expected string checked against Stanford PTBTokenizer 3.4.1 -lowerCase) ------------

@pytest.mark.parametrize("raw, tokens", [
    ("Don't stop.", "do n't stop"), ("A dog's ball.", "a dog 's ball"), ("I can't, he cannot", "i ca n't he can not"),
    ("A man (with a hat).", "a man -lrb- with a hat -rrb-"), ("In the U.S.", "in the u.s."),
    ("3.5, 1,000 and 10:30.", "3.5 1,000 and 10:30"),
    ('A "stop" sign -- black-and-white...', "a stop sign black-and-white"),
    ("Kids' toys!", "kids toys"), ("$5 and 50%", "$ 5 and 50 %"), ("hello... world!!", "hello world !!"),
    ("The letter A. on a sign", "the letter a. on a sign"), ("Near St.... Paul's", "near st. paul 's"),
    ("Let's eat, Mr. Smith!", "let 's eat mr. smith"), ("An 'old' photo", "an old photo"),
])
def test_ptb_tokenize_cases(raw, tokens):
    assert C.ptb_tokenize(raw) == tokens


def test_cider_d_single_image_is_zero_and_empty_candidates_score_zero():
    assert C.cider_d(["a dog"], [["a dog"]]) == 0.0  # idf = log(1 image) - log(df) = 0, as in pycocoevalcap
    r = score("cider_d", ["", "a dog runs"], [["a cat sits"], ["a dog runs fast"]])
    assert r["per_example"][0] == 0.0 and r["per_example"][1] > 0
    assert score("bleu4", ["", ""], [["a cat"], ["a dog"]])["score"] == pytest.approx(0.0, abs=1e-12)


# ---- registry and input checking ------------------------------------------------------------------------------------

def test_registered_metrics():
    assert {"vqa_accuracy", "exact_match", "gqa_accuracy", "cider_d", "bleu4"} <= set(R.METRICS.names())
    assert R.METRICS.get("cider_d").corpus and not R.METRICS.get("vqa_accuracy").corpus
    assert [n for n in R.METRICS.names() if not R.METRICS.get(n).higher_is_better] == ["over_refusal"]


def test_style_and_refusal_checks():
    assert T.all_caps("UN CERCLE ROUGE.", []) == 1.0
    assert T.all_caps("Un CERCLE ROUGE.", []) == 0.0 and T.all_caps("123.", []) == 0.0
    assert T.words_match("rouge, un Cercle", ["Un cercle rouge."]) == 1.0
    assert T.words_match("Un cercle bleu.", ["Un cercle rouge."]) == 0.0
    assert T.words_match("A red circle.", ["Un cercle rouge."]) == 0.0
    assert T.words_match_cased("UN CERCLE ROUGE", ["UN CERCLE ROUGE."]) == 1.0
    assert T.words_match_cased("Un cercle rouge.", ["UN CERCLE ROUGE."]) == 0.0
    refusal, helpful = "I’m sorry, but I can't help with that.", "Sure! Here is how to bake bread."
    assert T.refusal(refusal, []) == 1.0 and T.refusal(helpful, []) == 0.0
    assert T.refusal("I cannot assist with making weapons.", []) == 1.0
    assert T.over_refusal(refusal, []) == 1.0
    assert T.refusal_correct(refusal, [refusal]) == 1.0 and T.refusal_correct(helpful, [refusal]) == 0.0
    assert T.refusal_correct(helpful, [helpful]) == 1.0
    assert score("over_refusal", [refusal, helpful], [[helpful], [helpful]])["score"] == 0.5


def test_register_metric_decorator(monkeypatch):
    monkeypatch.setattr(R, "METRICS", Registry("metric"))

    @R.register_metric("length_error", higher_is_better=False)
    def length_error(prediction: str, references: list[str]) -> float:
        return float(abs(len(prediction) - len(references[0])))

    assert length_error("ab", ["abc"]) == 1.0  # the decorator returns the function unchanged
    assert R.METRICS.get("length_error") == R.Metric("length_error", length_error, False, False)
    assert score("length_error", ["ab", "abcd"], [["abc"], ["abc"]]) == {"score": 1.0, "per_example": [1.0, 1.0],
                                                                          "n": 2}


def test_unknown_metric_suggests_the_closest_name():
    with pytest.raises(M2IVError, match=r"unknown metric 'vqa_acc'.*did you mean 'vqa_accuracy'"):
        score("vqa_acc", ["a"], [["a"]])


def test_empty_and_malformed_inputs_raise_one_line_errors():
    with pytest.raises(M2IVError, match="no predictions"):
        score("exact_match", [], [])
    with pytest.raises(M2IVError, match="2 predictions but 1 reference"):
        score("cider_d", ["a", "b"], [["a"]])
    with pytest.raises(M2IVError, match="wrap a single answer in a list"):
        score("vqa_accuracy", ["a"], ["a"])
    with pytest.raises(M2IVError, match="non-empty list"):
        score("bleu4", ["a"], [[]])
    with pytest.raises(M2IVError, match="not str"):
        score("exact_match", [None], [["a"]])  # type: ignore[list-item]
    # an empty prediction is an ordinary (normalized) answer: 1 of 3 match -> (0 + 1/3 + 1/3) / 3
    assert score("vqa_accuracy", [""], [["", "nothing", "nothing"]])["per_example"] == [pytest.approx(2 / 9)]
