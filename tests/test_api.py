"""The public Python API (`import m2iv`): tasks from Python lists or a `datasets.Dataset`, train, evaluate, save and
load, and a steered model with PEFT's habits."""

from __future__ import annotations

import pytest
import torch

import m2iv
from conftest import image, random_vectors, tiny


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))


def _rows(n: int, offset: int = 0) -> list[dict]:
    colours = ["red", "blue"]
    return [{"image": image(offset + i), "question": f"What colour is thing {i}?", "answer": colours[i % 2]}
            for i in range(n)]


def test_train_and_evaluate_a_task_built_from_python_lists(tmp_path):
    # Was: training needed train_vectors, TrainConfig, TeacherConfig, get_task and PromptBuilder from internal modules.
    lm = m2iv.load_model("tiny:idefics3")
    task = m2iv.Task.from_samples("colours", train=_rows(14), test=_rows(6, offset=100), max_new_tokens=3)
    vectors = m2iv.train(lm, task, out=tmp_path / "v", shots=1, steps=3, batch_size=2, val_every=0, progress=False)
    assert isinstance(vectors, m2iv.InContextVectors) and (tmp_path / "v" / "m2iv_config.json").is_file()
    loaded, config = m2iv.load_vectors(tmp_path / "v", adapter=lm.adapter)
    assert config["method"] == "m2iv" and config["recipe"]["steps"] == 3
    for k in vectors.params:
        assert torch.equal(vectors.params[k], loaded.params[k])
    summary = m2iv.evaluate(lm, task, vectors=vectors, n_test=4, progress=False)
    assert summary["n"] == 4 and summary["method"] == "m2iv" and len(summary["predictions"]) == 4
    with pytest.raises(m2iv.M2IVError, match="other settings"):  # another recipe into the same folder
        m2iv.train(lm, task, out=tmp_path / "v", shots=1, steps=2, batch_size=2, val_every=0, progress=False)
    again = m2iv.train(lm, task, out=tmp_path / "v", shots=1, steps=2, batch_size=2, val_every=0, progress=False,
                       overwrite=True)
    assert again.spec() == vectors.spec() and m2iv.load_vectors(tmp_path / "v")[1]["recipe"]["steps"] == 2
    icl = m2iv.evaluate(lm, task, "icl", shots=1, out=tmp_path / "icl", progress=False)
    assert icl["n"] == 6 and (tmp_path / "icl" / "summary.json").is_file()
    assert icl["mean_prompt_tokens"] > summary["mean_prompt_tokens"]


def test_a_task_from_a_datasets_dataset_and_one_list():
    datasets = pytest.importorskip("datasets")
    rows = _rows(12)
    ds = datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in ("image", "question", "answer")})
    task = m2iv.Task.from_dataset("colours-ds", ds)
    splits = task.splits(seed=0)
    assert sum(len(v) for v in splits.values()) <= 12 and splits["test"] and splits["support"]
    s = splits["test"][0]
    assert s.answers[0] in ("red", "blue") and s.images and s.images[0].endswith(".png")
    again = m2iv.Task.from_samples("colours-list", rows).splits(seed=0)
    assert len(again["test"]) == len(splits["test"])


def test_steered_model_generates_like_the_model_with_vectors_that_switch_off_and_swap():
    lm = tiny("idefics3")
    vectors = random_vectors(lm, scale=4.0)
    steered = m2iv.SteeredModel(lm, vectors)
    inputs = m2iv.prompt(lm, ["What colour is it?", "What shape is it?"], images=[image(1), image(2)])
    query_start = inputs.pop("query_start")
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
    before = [p.requires_grad for p in lm.model.parameters()]
    plain = lm.model.generate(**inputs, **kw)
    with m2iv.apply(lm.model, vectors, lm.adapter, freeze_base=False):
        expected = lm.model.generate(**inputs, **kw)
    assert torch.equal(steered.generate(**inputs, query_start=query_start, **kw), expected)
    assert not torch.equal(expected, plain)  # the vectors change the answer, so the checks below can fail
    with steered.disable_vectors():
        assert torch.equal(steered.generate(**inputs, **kw), plain)
    assert torch.equal(steered.generate(**inputs, **kw), expected)  # back on after the block
    steered.vectors = None
    assert torch.equal(steered.generate(**inputs, **kw), plain)
    assert torch.equal(lm.model.generate(**inputs, **kw), plain)  # no hook is left behind
    assert [p.requires_grad for p in lm.model.parameters()] == before  # answering froze nothing
    steered.vectors = vectors
    assert isinstance(steered.answer("What colour is it?", images=[image(1)]), str)
    assert steered.config is lm.model.config  # the model's attributes pass through
