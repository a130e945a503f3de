"""The sandbox suite's task definitions (no model weights needed)."""

from m2iv.data.sample import content_hash
from m2iv.data.tasks import TASKS, get_task
from m2iv.sandbox.tasks.suite import SUITE, task_names


def test_at_least_five_registered_tasks_with_fixed_mappings():
    names = task_names()
    assert len(names) >= 5 and all(n in TASKS for n in names)
    for name in names:
        attribute, mapping = SUITE[name]
        assert attribute in ("colour", "shape") and len(set(mapping.values())) == len(mapping)


def test_splits_are_fixed_hashed_and_never_share_images():
    task = get_task("sandbox-colour-nonce")
    a, b = task.splits(seed=0), task.splits(seed=0)
    assert {k: content_hash(v) for k, v in a.items()} == {k: content_hash(v) for k, v in b.items()}
    assert {k: len(v) for k, v in a.items()} == {"train": 512, "support": 256, "test": 200}
    test_imgs = {p for s in a["test"] for p in s.images}
    assert not test_imgs & {p for k in ("train", "support") for s in a[k] for p in s.images}
    attribute, mapping = SUITE["sandbox-colour-nonce"]
    for s in a["test"][:20]:
        assert s.answers == (mapping[s.meta["colour"]],) and s.question == a["train"][0].question
