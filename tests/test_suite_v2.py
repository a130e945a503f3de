"""Suite v2 on the sandbox (sandbox/suite_v2.py): registration, well-formed samples, and the metrics it relies
on checked against hand-computed values. No model is loaded."""

import math

import pytest

from m2iv.data.tasks import TASKS, get_task, postprocess
from m2iv.evaluate.metrics import score
from m2iv.evaluate.vqa_metrics import vqa_accuracy
from m2iv.sandbox.labels import COLOURS, SHAPES
from m2iv.sandbox.tasks.suite_v2 import CAPTION_TEMPLATES, PAIR_WORDS, PAIRS, SUITE_V2

pytest.importorskip("easy_vqa")

NAMES = ["sandbox-vqa", "sandbox-caption", "sandbox-colour-caps", "sandbox-pair-nonce"]


def test_the_four_tasks_are_registered_with_their_metrics():
    assert list(SUITE_V2) == NAMES
    assert set(NAMES) <= set(TASKS.names())
    metrics = {n: get_task(n).metric for n in NAMES}
    assert metrics == {"sandbox-vqa": "vqa_accuracy", "sandbox-caption": "cider_d",
                       "sandbox-colour-caps": "words_match_cased", "sandbox-pair-nonce": "exact_match"}
    assert all(get_task(n).support_split == "train" and get_task(n).test_split == "test" for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_samples_are_well_formed_and_splits_disjoint(name):
    task = get_task(name)
    test = task.load("test", None)
    assert test and all(s.split == "test" and len(s.images) == 1 and s.answers and s.question for s in test)
    assert len({s.id for s in test}) == len(test)
    splits = task.splits(seed=0)
    assert len(splits["support"]) == task.n_support and len(splits["test"]) == task.n_test
    assert not {s.id for s in splits["support"]} & {s.id for s in splits["train"]}
    assert all(s.split == "train" for s in splits["support"] + splits["train"])
    assert all("/test/" in s.images[0] for s in splits["test"])
    # a perfect answer, through the task's own post-processing, gets the metric's best value on every sample
    sample = splits["test"][:20]
    preds = [postprocess(task, s.answers[0]) for s in sample]
    per = score(task.metric, preds, [list(s.answers) for s in sample])["per_example"]
    assert min(per) > 0 and (task.metric == "cider_d" or min(per) == 1.0)


def test_vqa_samples_are_easy_vqa_questions_with_their_single_answer():
    samples = get_task("sandbox-vqa").load("test", None)
    assert len(samples) == 9673  # every test question of easy-vqa
    assert {a for s in samples for a in s.answers} == {"yes", "no", *COLOURS, *SHAPES}
    assert all(len(s.answers) == 1 for s in samples)


def test_caption_references_are_the_three_phrasings_of_the_labels():
    s = get_task("sandbox-caption").load("test", None)[0]
    c, sh = s.meta["colour"], s.meta["shape"]
    assert s.answers == tuple(t.format(c=c, s=sh) for t in CAPTION_TEMPLATES)
    assert all(f"{c} {sh}" in a for a in s.answers)


def test_colour_caps_wants_the_colour_in_capitals_only():
    task = get_task("sandbox-colour-caps")
    s = task.load("test", None)[0]
    assert s.answers == (s.meta["colour"].upper(),)
    ref = [list(s.answers)]
    assert score(task.metric, [postprocess(task, s.meta["colour"].upper() + ".")], ref)["score"] == 1.0
    assert score(task.metric, [postprocess(task, s.meta["colour"])], ref)["score"] == 0.0  # lower case
    zero_shot = f"A {s.meta['colour']} {s.meta['shape']}."  # what the sandbox says zero-shot
    assert score(task.metric, [postprocess(task, zero_shot)], ref)["score"] == 0.0


def test_pair_words_are_24_new_invented_words():
    from m2iv.sandbox.episodes import RESERVED_WORDS, training_words

    assert len(PAIRS) == len(set(PAIR_WORDS)) == 24 == len(COLOURS) * len(SHAPES)
    assert not set(PAIR_WORDS) & (set(training_words()) | RESERVED_WORDS | set(COLOURS) | set(SHAPES))
    s = get_task("sandbox-pair-nonce").load("test", None)[0]
    assert s.answers == (PAIRS[s.meta["colour"], s.meta["shape"]],)


# ---- the metrics, on hand-computed cases ------------------------------------------------------------------------

def test_vqa_accuracy_hand_computed():
    assert vqa_accuracy("Yes.", ["yes"]) == 1.0  # one answer (easy-vqa): exact match after normalization
    assert vqa_accuracy("no", ["yes"]) == 0.0
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0  # identical answers: no normalization (official quirk)
    # 3 of 10 say red: the 3 leave-one-outs of a "red" answer see 2 matches (2/3), the 7 others see 3 (1)
    assert vqa_accuracy("red", ["red"] * 3 + ["blue"] * 7) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
    assert vqa_accuracy("red", ["red"] + ["blue"] * 9) == pytest.approx((9 * 1 / 3) / 10)


def test_cider_d_hand_computed():
    # one image: every n-gram is in every reference set, so idf = log(1/1) = 0 and the score is 0
    assert score("cider_d", ["a red circle"], [["a red circle"]])["score"] == 0.0
    # two images with disjoint words, exact matches: cos = 1 for 1- and 2-grams, no 3-/4-grams -> 10 * 2/4
    r = score("cider_d", ["red circle", "blue square"], [["red circle"], ["blue square"]])
    assert r["per_example"] == pytest.approx([5.0, 5.0])
    # "a" and "circle" occur in both images' references (idf 0); 1-, 2- and 3-grams match -> 10 * 3/4
    r = score("cider_d", ["a red circle", "a blue circle"], [["a red circle"], ["a blue circle"]])
    assert r["per_example"] == pytest.approx([7.5, 7.5]) and r["score"] == pytest.approx(7.5)
    # the wrong colour shares only idf-0 words: 0 for that image, the corpus mean halves
    r = score("cider_d", ["a blue circle", "a blue circle"], [["a red circle"], ["a blue circle"]])
    assert r["per_example"] == pytest.approx([0.0, 7.5]) and r["score"] == pytest.approx(3.75)
    # a shorter candidate: unigram cos 2/sqrt(6), bigram cos 1/sqrt(2), and the length penalty on the bigram
    # counts (1 vs 2): exp(-1 / (2 * 6^2))
    r = score("cider_d", ["red circle", "small blue square"], [["big red circle"], ["small blue square"]])
    expected = (2 / math.sqrt(6) + 1 / math.sqrt(2)) * math.exp(-1 / 72) / 4 * 10
    assert r["per_example"] == pytest.approx([expected, 7.5])


def test_cider_d_prefers_the_demonstrated_caption_style():
    """The zero-shot style ("A red circle.") scores below the task's own phrasing on the same labels."""
    refs = [[t.format(c=c, s=s) for t in CAPTION_TEMPLATES] for c, s in (("red", "circle"), ("blue", "triangle"),
                                                                         ("green", "rectangle"))]
    styled = score("cider_d", [r[0] for r in refs], refs)["score"]
    plain = score("cider_d", ["A red circle.", "A blue triangle.", "A green rectangle."], refs)["score"]
    assert styled > 2 * plain > 0
