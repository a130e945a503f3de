"""MTV: mean o_proj inputs of ICL runs replace REINFORCE-selected heads at the last token."""

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import m2iv.methods.mtv  # noqa: F401  (registers "mtv")
from conftest import (
    fixture_task,
    for_model,
    logits_with,
    make_inputs,
    method_splits,
    tiny,
    write_colour_jsonl,
    write_samples,
)
from m2iv.data.prompts import PromptBuilder
from m2iv.methods import get_method
from m2iv.methods.mtv import MTVConfig
from m2iv.methods.mtv.method import SampledReplacement, _QueryScorer, mask_vectors, mean_head_activations, reinforce
from m2iv.vectors import apply, load_vectors
from m2iv.vectors.record import record

TASK = fixture_task()
SMALL = dict(n_trials=3, batch_size=2, steps=3, samples=4, sample_batch=4, n_queries=4, n_final=3, n_val=2)


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return method_splits(tmp_path_factory.mktemp("data"), 6)


def _mean(lm, seed=0):
    a = lm.adapter
    return torch.randn((a.num_layers, a.num_heads, a.head_dim), generator=torch.Generator().manual_seed(seed)) * 3


def test_replacement_sets_selected_heads_at_last_token_only():
    lm = tiny("qwen2_vl")
    H, L = lm.adapter.num_heads, lm.adapter.num_layers
    mean = _mean(lm)
    mask = torch.zeros(L, H, dtype=torch.bool)
    mask[1, 0] = mask[1, 2] = True
    vec = mask_vectors(lm.adapter, mean, mask, list(range(L)))
    assert vec.sites["attn_head"].operator == "linear" and vec.token_policy == "last_onward"
    assert torch.equal(vec.scale("attn_head", "alpha"), mask.float())
    assert torch.equal(vec.scale("attn_head", "beta"), 1 - mask.float())
    inputs = make_inputs(lm, ["What is it?", "Which colour is the large object?"])
    with torch.no_grad(), record(lm.model, lm.adapter, sites=("attn_head",), positions="all") as rec:
        lm.model(**inputs)
    base = {i: rec.data["attn_head"][i][0] for i in range(L)}  # (B, T, H, Dh)
    with torch.no_grad(), apply(lm.model, vec, lm.adapter), \
            record(lm.model, lm.adapter, sites=("attn_head",), positions="all") as rec:  # sees the edited input
        lm.model(**inputs)
    got = {i: rec.data["attn_head"][i][0] for i in range(L)}
    assert torch.equal(got[0], base[0])  # layers before the patched one are untouched
    for b in range(2):
        assert torch.equal(got[1][b, -1, 0], mean[1, 0]) and torch.equal(got[1][b, -1, 2], mean[1, 2])
        torch.testing.assert_close(got[1][b, -1, [1, 3]], base[1][b, -1, [1, 3]])  # unselected heads
    torch.testing.assert_close(got[1][:, :-1], base[1][:, :-1])  # every other position


@pytest.mark.parametrize("replace_generated", [True, False])
def test_inference_replaces_generated_tokens_like_the_original(tmp_path, replace_generated):
    lm = tiny("llama")
    L, H = lm.adapter.num_layers, lm.adapter.num_heads
    mean, mask = _mean(lm), torch.zeros(L, H, dtype=torch.bool)
    mask[0, 1] = True
    m = get_method("mtv", {"method_config": MTVConfig(replace_generated=replace_generated)})
    m.vectors = mask_vectors(lm.adapter, mean, mask, list(range(L)), replace_generated=replace_generated)
    inputs = make_inputs(lm, ["What is it?"])
    with torch.no_grad(), m.inference(lm), \
            record(lm.model, lm.adapter, sites=("attn_head",), layers=[0]) as rec:  # last column of each call
        lm.model.generate(**inputs, max_new_tokens=3, do_sample=False)
    calls = [t[0, 1] for t in rec.data["attn_head"][0]]  # prefill + 2 decoding steps
    assert len(calls) == 3 and torch.equal(calls[0], mean[0, 1])
    assert all(torch.equal(c, mean[0, 1]) == replace_generated for c in calls[1:])


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics2"])  # full forwards / last position on a cached prefix
def test_vectorised_reward_equals_engine_replacement(family):
    lm = tiny(family)
    L, H = lm.adapter.num_layers, lm.adapter.num_heads
    mean = _mean(lm, seed=2)
    masks = torch.rand((3, L, H), generator=torch.Generator().manual_seed(0)) < 0.5
    sample = write_samples_once()
    builder = PromptBuilder(lm, TASK.instruction)
    with SampledReplacement(lm, mean, list(range(L))) as rep:
        losses = _QueryScorer(lm, builder, rep, sample_batch=2).losses(sample, masks)  # two chunks, one padded
    target = _QueryScorer(lm, builder, None, 1).target(sample)
    batch = builder.encode([builder.build([], sample)])
    batch.pop("query_start")
    for i in range(3):
        with torch.no_grad(), apply(lm.model, mask_vectors(lm.adapter, mean, masks[i], list(range(L))), lm.adapter):
            logits = lm.model(**batch).logits[:, -1]
        torch.testing.assert_close(losses[i], F.cross_entropy(logits, torch.tensor([target]))[()], rtol=1e-4,
                                   atol=1e-4)


_SAMPLE = []


def write_samples_once():
    if not _SAMPLE:
        import tempfile
        from pathlib import Path

        _SAMPLE.append(write_samples(Path(tempfile.mkdtemp()), 1)[0])
    return _SAMPLE[0]


def test_reinforce_raises_the_probability_of_a_helpful_head():
    """Planted toy: replacing head (0, 1) lowers the loss by 1; every other head only adds noise."""
    g = torch.Generator().manual_seed(0)

    def loss_fn(step, masks):  # masks (S, L, H)
        return 2.0 - masks[:, 0, 1].float() + 0.3 * torch.randn(masks.shape[0], generator=g)

    logits, history = reinforce(loss_fn, (2, 4), steps=60, samples=16, lr=0.1, init_logit=-1.0, seed=0)
    p = torch.sigmoid(logits)
    assert p[0, 1] > 0.9  # from sigmoid(-1) = 0.27
    others = torch.cat([p[0, [0, 2, 3]], p[1]])
    assert float(others.max()) < float(p[0, 1]) - 0.3
    assert sum(history[-5:]) < sum(history[:5])


def test_mean_activations_are_the_mean_over_icl_runs():
    lm = tiny("idefics2")
    root = write_samples_once()
    builder = PromptBuilder(lm, TASK.instruction)
    demos = [replace(root, id=f"d{i}", question=f"Which colour {i}?") for i in range(2)]
    prompts = [builder.build(demos, replace(root, id="q", question="Is it red?")), builder.build(demos[:1], root)]
    got = mean_head_activations(lm, builder, prompts, [0, 1], batch_size=1)  # (L, H, Dh)
    per = []
    for p in prompts:
        seen = {}
        hooks = [lm.adapter.module(i, "attn_head").register_forward_pre_hook(
            lambda _m, a, i=i, seen=seen: seen.__setitem__(i, a[0][0, -1].reshape(lm.adapter.num_heads, -1)))
            for i in (0, 1)]
        batch = builder.encode([p])
        batch.pop("query_start")
        with torch.no_grad():
            lm.model(**batch)
        for h in hooks:
            h.remove()
        per.append(torch.stack([seen[0], seen[1]]))
    torch.testing.assert_close(got, torch.stack(per).mean(0))


@pytest.mark.parametrize("family", ["qwen2_vl", "llama", "idefics2"])
def test_fit_saves_a_binary_head_mask_and_reloads(tmp_path, splits, family):
    lm = tiny(family)
    sp = for_model(lm, splits)
    m = get_method("mtv", {"out": str(tmp_path / "v"), "shots": 2, "method_config": MTVConfig(**SMALL)})
    m.train(lm, TASK, sp)
    loaded, cfg = load_vectors(tmp_path / "v", adapter=lm.adapter)
    a, b = loaded.scale("attn_head", "alpha"), loaded.scale("attn_head", "beta")
    assert cfg["method"] == "mtv" and loaded.token_policy == "last_onward" and torch.equal(a + b, torch.ones_like(a))
    assert set(a.unique().tolist()) <= {0.0, 1.0} and cfg["metrics"]["selected_heads"] == int(a.sum())
    assert cfg["training"]["threshold"] == (0.8 if family == "idefics2" else None)
    assert len(cfg["training"]["reinforce_mean_loss"]) == 3
    ev = get_method("mtv", {"vectors": str(tmp_path / "v")})
    ev.prepare(lm, TASK, sp)
    assert ev.vectors.token_policy == "last_onward"  # the file alone says how to apply it
    inputs = make_inputs(lm, ["What is it?"])
    assert torch.equal(logits_with(lm, inputs, ev.inference(lm)), logits_with(lm, inputs, m.vectors))


def test_cli_train_then_eval_on_idefics2(tmp_path, monkeypatch):
    from m2iv.cli.main import main

    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    data = write_colour_jsonl(tmp_path)
    out = tmp_path / "vec"
    assert main(["train", "tiny:idefics2", "--task", f"jsonl:{data}", "--method", "mtv", "--shots", "2",
                 "--steps", "3", "--val-size", "2", "--method-config", "n_trials=8", "--out", str(out)]) == 0
    cfg = json.loads((out / "m2iv_config.json").read_text())
    assert cfg["method"] == "mtv" and cfg["method_config"]["steps"] == 3 and cfg["method_config"]["n_val"] == 2
    assert cfg["method_config"]["n_trials"] == 8
    assert main(["eval", "tiny:idefics2", "--task", f"jsonl:{data}", "--method", "mtv", "--vectors", str(out),
                 "--n-test", "2", "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["n"] == 2
