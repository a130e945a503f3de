"""`--vectors library:auto`: each query answered by the library entry whose task prototype is nearest."""

import json

import numpy as np
from PIL import Image

from conftest import random_vectors, tiny
from m2iv.data.tasks import get_task
from m2iv.evaluate.runner import EvalConfig, evaluate
from m2iv.library import Library
from m2iv.methods import get_method
from m2iv.vectors import save_vectors


def _jsonl(root, name, colour, question, n, start=0):
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.jsonl"
    with open(path, "w") as f:
        for i in range(start, start + n):
            arr = np.full((32, 32, 3), colour, dtype=np.uint8)
            arr[i % 9:(i % 9) + 6, 4:12] = 255
            Image.fromarray(arr).save(root / f"{name}{i}.png")
            f.write(json.dumps({"id": f"{name}{i}", "image": f"{name}{i}.png", "question": question,
                                "answer": "x"}) + "\n")
    return path


def test_library_auto_routes_each_query_to_its_tasks_vectors(tmp_path, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("M2IV_LIBRARY", str(tmp_path / "lib"))
    lm = tiny("idefics2")
    red = _jsonl(tmp_path / "red", "red", (220, 20, 20), "What colour is the big square?", 24)
    blue = _jsonl(tmp_path / "blue", "blue", (20, 20, 220), "How many dots can you count here?", 24)
    lib = Library()
    ids = {}
    for name, path, seed in (("red", red, 1), ("blue", blue, 2)):
        d = save_vectors(random_vectors(lm, seed=seed), tmp_path / f"v-{name}", adapter=lm.adapter,
                         base_model="tiny:idefics2")
        ids[name] = lib.add(d, name=f"task-{name}").id
        lib.add_prototype_from_task(ids[name], lm, get_task(f"jsonl:{path}"), n=8)
    mixed_red = _jsonl(tmp_path / "mix", "mred", (220, 20, 20), "What colour is the big square?", 5, start=100)
    mixed_blue = _jsonl(tmp_path / "mix", "mblue", (20, 20, 220), "How many dots can you count here?", 5, start=100)
    rows = [json.loads(x) for p in (mixed_red, mixed_blue) for x in p.read_text().splitlines()]
    (tmp_path / "mix" / "all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = get_task(f"jsonl:{tmp_path / 'mix' / 'all.jsonl'}")
    from m2iv.data.datasets import load_dataset

    test = load_dataset("jsonl", "test", tmp_path / "mix" / "all.jsonl")
    splits = {"train": [], "support": test[:1], "test": test}
    method = get_method("vectors", {"vectors": "library:auto"})
    evaluate(lm, task, method, EvalConfig(batch_size=4), tmp_path / "out", splits=splits)
    out = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    right = [r["route"] == ids["red" if r["id"].startswith("mred") else "blue"] for r in out]
    assert len(out) == 10 and sum(right) >= 9  # routing accuracy >= 90 %


def test_library_auto_keeps_a_routed_entrys_condition(tmp_path, monkeypatch):
    """The routed entry carries a condition that no query fires: its answers are the plain model's, row by row."""
    import torch

    from m2iv.data.datasets import load_dataset
    from m2iv.vectors.condition import Condition

    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("M2IV_LIBRARY", str(tmp_path / "lib"))
    lm = tiny("idefics2")
    red = _jsonl(tmp_path / "red", "red", (220, 20, 20), "What colour is the big square?", 8)
    never = Condition(layer=0, vector=torch.ones(lm.adapter.hidden_size), center=torch.zeros(lm.adapter.hidden_size),
                      threshold=2.0)  # a cosine never reaches 2
    vec = random_vectors(lm, seed=1, scale=2.0).with_condition(never)
    lib = Library()
    e = lib.add(save_vectors(vec, tmp_path / "v", adapter=lm.adapter, base_model="tiny:idefics2"), name="gated")
    lib.add_prototype_from_task(e.id, lm, get_task(f"jsonl:{red}"), n=4)
    task = get_task(f"jsonl:{red}")
    test = load_dataset("jsonl", "test", red)
    splits = {"train": [], "support": test[:1], "test": test}
    evaluate(lm, task, get_method("vectors", {"vectors": "library:auto"}), EvalConfig(batch_size=4), tmp_path / "auto",
             splits=splits)
    evaluate(lm, task, get_method("zero-shot"), EvalConfig(batch_size=4), tmp_path / "plain", splits=splits)
    auto = [json.loads(x) for x in (tmp_path / "auto" / "predictions.jsonl").read_text().splitlines()]
    plain = [json.loads(x) for x in (tmp_path / "plain" / "predictions.jsonl").read_text().splitlines()]
    assert [r["route"] for r in auto] == [e.id] * len(test)
    assert [r["condition_fired"] for r in auto] == [False] * len(test)
    assert [r["raw"] for r in auto] == [r["raw"] for r in plain]
