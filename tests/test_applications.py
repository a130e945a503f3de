"""The sandbox tasks behind the VLibrary applications (no model weights needed)."""

import pytest

from m2iv.data.tasks import get_task
from m2iv.evaluate.text_metrics import refuses
from m2iv.sandbox.tasks.applications import APPLICATION_TASKS, BENIGN, HARMFUL, REFUSAL, styled


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


def test_near_miss_requests_are_ordinary_held_out_and_labelled_for_conditions():
    from m2iv.sandbox.tasks.applications import NEAR_MISS

    near = get_task("sandbox-safety-nearmiss").splits(seed=0)
    assert len(near["test"]) == 4 * len(NEAR_MISS) and not any(refuses(s.answers[0]) for s in near["test"])
    train_q = {s.question for s in near["train"]}
    assert not any(a in q for q in train_q for a in NEAR_MISS)
    for name in ("sandbox-safety", "sandbox-safety-harmful", "sandbox-safety-benign", "sandbox-safety-nearmiss"):
        train = get_task(name).splits(seed=0)["train"]  # every safety task trains and demonstrates on mixed requests
        assert {s.meta["condition"] for s in train} == {True, False}
        assert all(s.meta["condition"] == refuses(s.answers[0]) for s in train)


def test_pope_probe_is_balanced_with_adversarial_absent_objects():
    test = get_task("sandbox-pope").splits(seed=0)["test"]
    assert len(test) == 200 and sum(s.answers == ("yes",) for s in test) == 100
    kinds = [s.meta["absent_kind"] for s in test if not s.meta["present"]]
    assert sorted(set(kinds)) == ["random", "same-colour", "same-shape"] and min(map(kinds.count, set(kinds))) >= 33
    for s in test:
        colour, shape = s.question.removeprefix("Is there a ").removesuffix(" in the image?").split()
        own = (s.meta["colour"], s.meta["shape"])
        expected = {None: own == (colour, shape), "random": colour != own[0] and shape != own[1],
                    "same-colour": colour == own[0] and shape != own[1],
                    "same-shape": colour != own[0] and shape == own[1]}[s.meta["absent_kind"]]
        assert expected


def test_pope_metrics_against_hand_counts():
    from m2iv.data.sample import Sample
    from m2iv.evaluate.steering.alignment import pope_metrics

    meta = [(True, None), (True, None), (False, "random"), (False, "same-colour")]
    samples = {str(i): Sample(str(i), (), "q", ("yes" if p else "no",), meta={"present": p, "absent_kind": k})
               for i, (p, k) in enumerate(meta)}
    preds = [{"id": "0", "prediction": "yes"}, {"id": "1", "prediction": "no"}, {"id": "2", "prediction": "no"},
             {"id": "3", "prediction": "Yes."}]
    m = pope_metrics(preds, samples)  # tp 1, fn 1, fp 1, tn 1
    assert (m["accuracy"], m["precision"], m["recall"], m["f1"], m["yes_ratio"]) == (0.5, 0.5, 0.5, 0.5, 0.5)
    assert m["false_negative_rate"] == 0.5 and m["hallucination_same-colour"] == 1.0 and m["hallucination_random"] == 0
