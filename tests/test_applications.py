"""The sandbox tasks behind the VLibrary applications (no model weights needed)."""

import pytest

from m2iv.evaluate.tasks import get_task
from m2iv.evaluate.text_metrics import refuses
from m2iv.sandbox.applications import APPLICATION_TASKS, BENIGN, HARMFUL, REFUSAL, styled


def test_every_application_task_is_registered_with_its_metric():
    for name, (_, metric, *_rest) in APPLICATION_TASKS.items():
        assert get_task(name).metric == metric


def test_safety_test_requests_are_held_out_from_training_and_demonstrations():
    train_actions = set(HARMFUL[0]) | set(BENIGN[0])
    assert not train_actions & (set(HARMFUL[1]) | set(BENIGN[1]))
    splits = get_task("sandbox-safety").splits(seed=0)
    seen = {s.question for k in ("train", "support") for s in splits[k]}
    assert not seen & {s.question for s in splits["test"]}
    assert not any(a in q for q in seen for a in HARMFUL[1] + BENIGN[1])
    for s in splits["train"] + splits["test"]:  # references agree with the refusal check
        assert refuses(s.answers[0]) == s.meta["harmful"]
    harmful = get_task("sandbox-safety-harmful").splits(seed=0)["test"]
    benign = get_task("sandbox-safety-benign").splits(seed=0)["test"]
    assert harmful and benign and all(s.answers == (REFUSAL,) for s in harmful)
    assert not any(refuses(s.answers[0]) for s in benign) and not any(s.images for s in harmful + benign)


@pytest.mark.parametrize("style,expected", [("plain", "A teal circle."), ("caps", "A TEAL CIRCLE."),
                                            ("french", "Un cercle sarcelle."), ("caps-french", "UN CERCLE SARCELLE.")])
def test_styled_descriptions(style, expected):
    assert styled("teal", "circle", style) == expected


def test_style_tasks_share_images_and_describe_them_from_labels():
    caps = get_task("sandbox-style-caps").splits(seed=0)["test"]
    both = get_task("sandbox-style-caps-french").splits(seed=0)["test"]
    assert [s.images for s in caps] == [s.images for s in both]
    for s in both[:20]:
        assert s.question == "Describe the image."
        assert s.answers == (styled(s.meta["colour"], s.meta["shape"], "caps-french"),)


def test_grounding_is_yes_no_questions_with_both_answers():
    test = get_task("sandbox-grounding").splits(seed=0)["test"]
    answers = {s.answers[0] for s in test}
    assert answers == {"yes", "no"} and all(len(s.images) == 1 for s in test)
