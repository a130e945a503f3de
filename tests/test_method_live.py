"""LIVE: a norm-preserving shift sigmoid(alpha)*v per layer (MLP or layer output), trained by KL to the teacher."""

import json
import math

import pytest
import torch

import m2iv.methods.live  # noqa: F401  (registers "live")
from conftest import fixture_task, for_model, logits_with, make_inputs, method_splits, tiny, write_colour_jsonl
from m2iv.methods import get_method
from m2iv.methods.live import LIVEConfig
from m2iv.vectors import apply, load_vectors

TASK = fixture_task()


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return method_splits(tmp_path_factory.mktemp("data"), 8)


@pytest.mark.parametrize("site", ["mlp", "layer"])
def test_shift_keeps_token_norm_and_alpha_is_sigmoid_of_logit(site):
    lm = tiny("qwen2_vl")
    vec = get_method("live", {}).make_vectors(lm, LIVEConfig(site=site), seed=1)
    assert list(vec.sites) == [site] and vec.sites[site].operator == "norm_preserving" and vec.token_policy == "all"
    v = vec.vector(site)  # (L, D)
    assert torch.equal(vec.params[f"{site}__alpha"], torch.zeros(2)) and 0.005 < float(v.detach().std()) < 0.015
    with torch.no_grad():
        vec.params[f"{site}__alpha"].copy_(torch.tensor([0.7, -1.3]))
        v.mul_(300)  # a visible shift
    logit = [0.7, -1.3]
    alpha = torch.tensor([1 / (1 + math.exp(-x)) for x in logit])
    torch.testing.assert_close(vec.scale(site, "alpha"), alpha)
    mod = lm.adapter.module(1, site)
    seen = {}
    first = lambda o: o[0] if isinstance(o, tuple) else o  # noqa: E731
    before = mod.register_forward_hook(lambda _m, _a, o: seen.__setitem__("pre", first(o).detach().clone()))
    with apply(lm.model, vec, lm.adapter):
        after = mod.register_forward_hook(lambda _m, _a, o: seen.__setitem__("post", first(o).detach().clone()))
        with torch.no_grad():
            lm.model(**make_inputs(lm, ["What is it?", "Which colour?"]))
    before.remove()
    after.remove()
    h, new = seen["pre"], seen["post"]  # (B, T, D) around the injection hook
    shifted = h + alpha[1] * v[1]
    torch.testing.assert_close(new, h.norm(dim=-1, keepdim=True) * shifted / shifted.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(new.norm(dim=-1), h.norm(dim=-1))
    assert not torch.allclose(new, h)


@pytest.mark.parametrize("family", ["qwen2_vl", "mistral", "smolvlm"])
def test_training_is_kl_only_with_live_rates_and_reloads(tmp_path, splits, family, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    lm = tiny(family)
    sp = for_model(lm, splits)
    fast = family == "qwen2_vl"  # the CLI-style override: a field away from the shared default wins
    tc = {"steps": 8 if fast else 2, "batch_size": 4, "teacher": {"shots": 2, "topk": 16},
          **({"lr_vectors": 0.05} if fast else {})}
    m = get_method("live", {"out": str(tmp_path / "v"), "train_config": tc, "progress": False})
    init = m.make_vectors(lm, LIVEConfig(), seed=0).vector("mlp").clone()
    m.train(lm, TASK, sp)
    loaded, cfg = load_vectors(tmp_path / "v", adapter=lm.adapter)
    r = cfg["recipe"]
    assert cfg["method"] == "live" and cfg["method_config"]["site"] == "mlp"
    assert (r["lr_vectors"], r["lr_scales"], r["weight_decay"], r["warmup"], r["w_ce"], r["w_synergy"], r["synergy"],
            r["w_mimicry"], r["temperature"], r["val_every"]) == (0.05 if fast else 1e-4, 1e-2, 1e-3, 0.1, 0.0, 0.0,
                                                                   "none", 1.0, 1.0, 0)
    log = [json.loads(x) for x in (tmp_path / "v.train" / "train_log.jsonl").read_text().splitlines()]
    assert all(set(x) & {"ce", "mimicry", "synergy"} == {"mimicry"} for x in log)
    moved = (loaded.vector("mlp") - init).abs().max()
    assert moved > 0 and (moved > 1e-2 if fast else moved < 2 * 1e-4 * 2 + 1e-6)  # ~ lr per Adam step
    if fast:
        assert sum(x["mimicry"] for x in log[-3:]) < sum(x["mimicry"] for x in log[:3])
    ev = get_method("live", {"vectors": str(tmp_path / "v")})
    ev.prepare(lm, TASK, sp)
    inputs = make_inputs(lm, ["What is it?"])
    assert torch.equal(logits_with(lm, inputs, ev.inference(lm)), logits_with(lm, inputs, m.vectors))


def test_cli_train_then_eval_on_idefics2(tmp_path, monkeypatch):
    from m2iv.cli.main import main

    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    data = write_colour_jsonl(tmp_path)
    out = tmp_path / "vec"
    assert main(["train", "tiny:idefics2", "--task", f"jsonl:{data}", "--method", "live", "--shots", "2",
                 "--steps", "2", "--train-batch-size", "4", "--out", str(out)]) == 0
    cfg = json.loads((out / "m2iv_config.json").read_text())
    assert cfg["method"] == "live" and cfg["training"]["teacher"]["shots"] == 2
    assert main(["eval", "tiny:idefics2", "--task", f"jsonl:{data}", "--method", "live", "--vectors", str(out),
                 "--n-test", "2", "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["n"] == 2
