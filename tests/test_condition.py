"""Conditional vectors: the decision per row from the plain prompt, under generate() with and without the KV cache,
in mixed batches, through the file format and the library; fitting on held-out training queries."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_inputs, random_vectors, tiny
from m2iv.errors import M2IVError
from m2iv.vectors import apply, load_vectors, save_vectors
from m2iv.vectors.condition import Condition, pool
from m2iv.vectors.record import record

FAMILIES = ["idefics3", "qwen2_vl", "llama"]  # two LVLM families of different layouts and a text LLM
QUESTIONS = ["What colour is it?", "Is there a long question here about many shapes and colours?", "Hi"]


def _mixed_condition(lm, inputs, layer: int = 1) -> tuple[Condition, list[bool]]:
    """A condition at `layer` whose threshold splits the batch: some rows fire and some do not."""
    with torch.no_grad(), record(lm.model, lm.adapter, sites=("layer",), layers=[layer], positions="all") as rec:
        lm.model(**inputs)
    pooled = pool(rec.data["layer"][layer][0], inputs["attention_mask"], "mean")
    g = torch.Generator().manual_seed(1)
    cond = Condition(layer=layer, vector=torch.randn(pooled.shape[1], generator=g),
                     center=torch.zeros(pooled.shape[1]), threshold=0.0)
    scores = cond.score(pooled).sort().values
    cond.threshold = float((scores[0] + scores[1]) / 2)  # the lowest row stays off, the others fire
    fires = cond.fires(pooled).tolist()
    assert any(fires) and not all(fires)
    return cond, fires


@pytest.mark.parametrize("family", FAMILIES)
def test_condition_gates_rows_of_a_mixed_batch(family):
    lm = tiny(family)
    inputs = make_inputs(lm, QUESTIONS)
    vec = random_vectors(lm, scale=0.5)
    cond, fires = _mixed_condition(lm, inputs)
    with torch.no_grad():
        plain = lm.model(**inputs).logits
        with apply(lm.model, vec, lm.adapter, freeze_base=False):
            steered = lm.model(**inputs).logits
        with apply(lm.model, vec.with_condition(cond), lm.adapter, freeze_base=False) as handle:
            gated = lm.model(**inputs).logits
            assert handle.fired == fires
    for i, fired in enumerate(fires):
        assert not torch.allclose(steered[i], plain[i])  # the vectors do change every row when applied
        torch.testing.assert_close(gated[i], steered[i] if fired else plain[i], rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("use_cache", [True, False])
def test_condition_holds_under_generate(family, use_cache):
    lm = tiny(family)
    inputs = make_inputs(lm, QUESTIONS)
    vec = random_vectors(lm, scale=0.5)
    cond, fires = _mixed_condition(lm, inputs)
    kw = {"max_new_tokens": 5, "do_sample": False, "use_cache": use_cache, "pad_token_id": lm.tokenizer.pad_token_id}
    with torch.no_grad():
        plain = lm.model.generate(**inputs, **kw)
        with apply(lm.model, vec.with_condition(None), lm.adapter, freeze_base=False):
            steered = lm.model.generate(**inputs, **kw)
        with apply(lm.model, vec.with_condition(cond), lm.adapter, freeze_base=False) as handle:
            gated = lm.model.generate(**inputs, **kw)
            assert handle.fired == fires  # decided once, at the prompt, and kept through every decoding step
    for i, fired in enumerate(fires):
        assert torch.equal(gated[i], steered[i] if fired else plain[i])


def test_condition_off_when_no_row_fires_and_ignored_on_request():
    lm = tiny("llama")
    inputs = make_inputs(lm, QUESTIONS)
    vec = random_vectors(lm, scale=0.5)
    cond, _ = _mixed_condition(lm, inputs)
    cond.threshold = 1e6  # nothing fires: the plain model exactly
    with torch.no_grad():
        plain = lm.model(**inputs).logits
        with apply(lm.model, vec.with_condition(cond), lm.adapter, freeze_base=False) as handle:
            torch.testing.assert_close(lm.model(**inputs).logits, plain, rtol=0, atol=0)
            assert handle.fired == [False] * 3
        with apply(lm.model, vec, lm.adapter, freeze_base=False, condition=False):
            assert not torch.allclose(lm.model(**inputs).logits, plain)
    with torch.no_grad():  # every hook is gone after the blocks
        torch.testing.assert_close(lm.model(**inputs).logits, plain, rtol=0, atol=0)


def test_condition_round_trips_through_the_file_and_refuses_a_malformed_one(tmp_path):
    lm = tiny("idefics3")
    inputs = make_inputs(lm, QUESTIONS)
    vec = random_vectors(lm, scale=0.5)
    cond, fires = _mixed_condition(lm, inputs)
    cond.fit = {"heldout_balanced_accuracy": 0.9}
    save_vectors(vec.with_condition(cond), tmp_path / "v", adapter=lm.adapter, base_model="tiny:idefics3")
    config = json.loads((tmp_path / "v" / "m2iv_config.json").read_text())
    assert config["format_version"] == 2 and config["condition"]["layer"] == cond.layer
    back, _ = load_vectors(tmp_path / "v", adapter=lm.adapter)
    assert back.condition is not None and back.condition.same_as(cond)
    assert back.condition.fit == cond.fit
    with torch.no_grad(), apply(lm.model, back, lm.adapter, freeze_base=False) as handle:
        lm.model(**inputs)
        assert handle.fired == fires
    config["condition"]["side"] = "sideways"
    (tmp_path / "v" / "m2iv_config.json").write_text(json.dumps(config))
    with pytest.raises(M2IVError, match="condition.side"):
        load_vectors(tmp_path / "v")


def test_format_1_file_loads_without_condition(tmp_path):
    lm = tiny("llama")
    save_vectors(random_vectors(lm), tmp_path / "v", adapter=lm.adapter, base_model="tiny:llama")
    path = tmp_path / "v" / "m2iv_config.json"
    config = json.loads(path.read_text())
    config["format_version"] = 1  # what m2iv wrote before conditions existed
    path.write_text(json.dumps(config))
    vectors, cfg = load_vectors(tmp_path / "v", adapter=lm.adapter)
    assert vectors.condition is None and cfg["format_version"] == 1


def test_condition_survives_the_library(tmp_path):
    from m2iv.library import Library

    lm = tiny("idefics3")
    inputs = make_inputs(lm, QUESTIONS)
    vec = random_vectors(lm, scale=0.5)
    cond, _ = _mixed_condition(lm, inputs)
    save_vectors(vec, tmp_path / "plain", adapter=lm.adapter, base_model="tiny:idefics3")
    with Library(tmp_path / "lib") as lib:
        src = lib.add(tmp_path / "plain", name="plain")
        gated = lib.with_condition(src.id, cond, name="gated", adapter=lm.adapter)
        assert gated.provenance["kind"] == "conditioned" and gated.provenance["source"]["name"] == "plain"
        loaded, _ = lib.load("gated", adapter=lm.adapter)
        assert loaded.condition is not None and loaded.condition.same_as(cond)
        assert lib.load("plain", adapter=lm.adapter)[0].condition is None  # the source is left as it was
        out = lib.export("gated", tmp_path / "exported")
        assert load_vectors(out, adapter=lm.adapter)[0].condition.same_as(cond)


def test_sum_keeps_a_shared_condition_and_refuses_different_ones():
    lm = tiny("llama")
    inputs = make_inputs(lm, QUESTIONS)
    cond, _ = _mixed_condition(lm, inputs)
    other = Condition(layer=0, vector=cond.vector, center=cond.center, threshold=cond.threshold)
    a, b = random_vectors(lm, seed=1), random_vectors(lm, seed=2)
    assert (a.with_condition(cond) + b.with_condition(cond)).condition.same_as(cond)
    with pytest.raises(M2IVError, match="different conditions"):
        a.with_condition(cond).combine([1.0, 1.0], [b.with_condition(other)])
    with pytest.raises(M2IVError, match="different conditions"):
        a.with_condition(cond).combine([1.0, 1.0], [b.with_condition(None)])


def test_best_threshold_and_scores_against_known_values():
    from m2iv.train.condition import best_threshold

    th, ba = best_threshold(torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0.1, 0.2, 0.75]))
    assert ba == pytest.approx((1.0 + 2 / 3) / 2) or ba == pytest.approx((2 / 3 + 1.0) / 2)
    th, ba = best_threshold(torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.2]))
    assert ba == 1.0 and 0.2 < th < 0.8
    # recall first: keep every positive (0.3 included), then refuse as few negatives as possible
    pos, neg = torch.tensor([0.9, 0.8, 0.3]), torch.tensor([0.1, 0.2, 0.5])
    th, tnr = best_threshold(pos, neg, recall=1.0)
    assert 0.2 < th <= 0.3 and tnr == pytest.approx(2 / 3)
    th, _ = best_threshold(pos, neg)  # balanced accuracy alone would give up the 0.3 positive
    assert th > 0.5
    v = torch.tensor([1.0, 0.0])
    cond = Condition(layer=0, vector=v, center=torch.tensor([0.5, 0.0]), threshold=0.0)
    assert cond.score(torch.tensor([[1.5, 0.0], [-0.5, 0.0], [0.5, 2.0]])).tolist() == pytest.approx([1, -1, 0])
    cast = Condition(layer=0, vector=v, center=torch.zeros(2), threshold=0.0, similarity="cast")
    h = torch.tensor([[3.0, 4.0]])  # P h = (3, 0); tanh -> (tanh 3, 0); cos with h = 3/5
    assert cast.score(h).item() == pytest.approx(0.6, abs=1e-6)


def test_fit_condition_separates_held_out_queries():
    """Two kinds of prompt a tiny model reads differently; layer and threshold come from the held-out part only."""
    from m2iv.data.prompts import PromptBuilder
    from m2iv.data.sample import Sample
    from m2iv.train.condition import condition_for_task, fit_condition, pooled_states

    lm = tiny("llama")
    pos = [Sample(f"p{i}", (), "zebra zebra zebra zebra " * 3 + str(i), ("x",), meta={"condition": True})
           for i in range(12)]
    neg = [Sample(f"n{i}", (), f"What is {i} plus {i}?", ("y",), meta={"condition": False}) for i in range(12)]
    cond = fit_condition(lm, PromptBuilder(lm), pos, neg, seed=0)
    assert cond.fit["heldout_balanced_accuracy"] == 1.0 and cond.fit["n"] == [12, 12]
    assert len(cond.fit["per_layer"]) == lm.adapter.num_layers and cond.fit["pools_tried"] == ["last", "mean"]
    states = pooled_states(lm, PromptBuilder(lm), pos + neg, [cond.layer], cond.pool)[:, 0]
    assert cond.fires(states).tolist() == [True] * 12 + [False] * 12  # the final direction keeps the threshold
    from m2iv.data.tasks import Task

    task = Task("t", "jsonl", "exact_match", "test", "test", instruction="{question}")
    again = condition_for_task(lm, task, {"train": pos + neg}, seed=0)
    assert again.same_as(cond)
    with pytest.raises(M2IVError, match="condition-negatives"):
        condition_for_task(lm, task, {"train": [Sample("u", (), "q", ("a",))] * 4})


def test_queries_of_one_group_share_a_fold_and_the_demonstration_pool_is_training_data():
    """A request worded four ways is scored out of fold as a whole (the test split holds unseen requests)."""
    import dataclasses

    from m2iv.data.prompts import PromptBuilder
    from m2iv.data.sample import Sample
    from m2iv.data.tasks import Task
    from m2iv.train.condition import _folds, condition_for_task, fit_condition

    folds = _folds([g for g in "abcdefgh" for _ in range(4)], 4, seed=0)
    assert all(len(set(folds[i:i + 4].tolist())) == 1 for i in range(0, 32, 4))
    assert sorted(folds.tolist()) == [k for k in range(4) for _ in range(8)]  # two whole groups per fold
    lm = tiny("llama")
    pos = [Sample(f"p{i}", (), "zebra zebra zebra zebra " * 3 + str(i), ("x",),
                  meta={"condition": True, "group": f"z{i // 4}"}) for i in range(16)]
    neg = [Sample(f"n{i}", (), f"What is {i} plus {i}?", ("y",), meta={"condition": False, "group": f"s{i // 4}"})
           for i in range(16)]
    cond = fit_condition(lm, PromptBuilder(lm), pos, neg, seed=0)
    assert cond.fit["groups"] == [4, 4] and cond.fit["n"] == [16, 16]
    with pytest.raises(M2IVError, match="counting queries of one meta"):  # 3 groups cannot fill 4 folds
        fit_condition(lm, PromptBuilder(lm), pos[:12], neg, seed=0)
    task = Task("t", "jsonl", "exact_match", "test", "test", instruction="{question}")
    both = condition_for_task(lm, task, {"train": pos[:8] + neg[:8], "support": pos[8:] + neg[8:]}, seed=0)
    assert both.fit["n"] == [16, 16] and both.same_as(cond)
    test = [dataclasses.replace(s, id="t" + s.id) for s in pos]  # a test split is never read
    assert condition_for_task(lm, task, {"train": pos + neg, "test": test}, seed=0).fit["n"] == [16, 16]
