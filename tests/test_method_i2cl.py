"""I2CL: context vectors = mean last-token attn/mlp outputs of demonstrations run alone; only (a, b) train."""

import json

import pytest
import torch

import m2iv.methods.i2cl  # noqa: F401  (registers "i2cl")
from conftest import fixture_task, for_model, method_splits, random_vectors, tiny, write_colour_jsonl
from m2iv.data.prompts import PromptBuilder
from m2iv.methods import get_method
from m2iv.methods.i2cl import I2CLConfig
from m2iv.methods.i2cl.method import demo_prompt, training_noise
from m2iv.train.config import TrainConfig
from m2iv.vectors import apply, load_vectors

TASK = fixture_task()


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return method_splits(tmp_path_factory.mktemp("data"), 6)


def _fit(lm, splits, out, steps=6, **cfg):
    sp = for_model(lm, splits)
    m = get_method("i2cl", {"out": str(out), "shots": 3, "seed": 0, "progress": False,
                            "train_config": {"steps": steps}, "method_config": I2CLConfig(**cfg)})
    m.train(lm, TASK, sp)
    return m, sp


def test_context_vectors_are_mean_of_demos_run_alone_and_only_scalars_train(tmp_path, splits, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    lm = tiny("qwen2_vl")
    m, sp = _fit(lm, splits, tmp_path / "v", lr=0.05)
    demos = [s for s in sp["support"] if s.id in m.info["demo_ids"]]
    assert len(demos) == 3
    # Oracle: each demonstration alone (batch of one), own hooks, last token, plain mean.
    builder = PromptBuilder(lm, TASK.instruction, TASK.answer_template)
    got = {"attn": [], "mlp": []}
    for d in demos:
        per = {"attn": {}, "mlp": {}}
        hooks = [lm.adapter.module(i, s).register_forward_hook(
            lambda _m, _a, out, s=s, i=i, per=per: per[s].__setitem__(
                i, (out[0] if isinstance(out, tuple) else out)[0, -1]))
            for s in per for i in range(lm.adapter.num_layers)]
        batch = builder.encode([demo_prompt(builder, d)])
        batch.pop("query_start")
        assert batch["input_ids"].shape[0] == 1 and "<|im_end|>" in lm.tokenizer.decode(batch["input_ids"][0, -3:])
        with torch.no_grad():
            lm.model(**batch)
        for h in hooks:
            h.remove()
        for s in per:
            got[s].append(torch.stack([per[s][i] for i in range(lm.adapter.num_layers)]))
    loaded, cfg = load_vectors(tmp_path / "v", adapter=lm.adapter)
    assert cfg["method"] == "i2cl" and loaded.token_policy == "all"
    for s in ("attn", "mlp"):
        assert loaded.sites[s].operator == "linear" and loaded.sites[s].layers == [0, 1]
        torch.testing.assert_close(loaded.vector(s), torch.stack(got[s]).mean(0), rtol=1e-5, atol=1e-6)
        a, b = loaded.scale(s, "alpha"), loaded.scale(s, "beta")
        assert not torch.allclose(a, torch.full_like(a, 0.1)) and not torch.allclose(b, torch.ones_like(b))
    r = cfg["recipe"]
    assert (r["w_ce"], r["w_mimicry"], r["w_synergy"], r["lr_scales"], r["weight_decay"], r["val_every"]) == (
        1.0, 0.0, 0.0, 0.05, 1e-3, 0)
    log = [json.loads(x) for x in (tmp_path / "v.train" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 6 and all(set(x) & {"ce", "mimicry", "synergy"} == {"ce"} for x in log)


def test_noise_gives_the_original_value_and_gradients(tmp_path):
    """o' = (b*o + a*cv) + n*|b*o + a*cv|*s, and d o'/d(a, b) as without noise (the noise is detached)."""
    lm = tiny("llama")
    m = get_method("i2cl", {})
    D, L = lm.adapter.hidden_size, lm.adapter.num_layers
    vec = m.make_vectors(lm, {"attn": torch.randn(L, D), "mlp": torch.randn(L, D)}, list(range(L)), I2CLConfig())
    with torch.no_grad():
        vec.params["mlp__alpha"].copy_(torch.tensor([0.3, -0.2]))
        vec.params["mlp__beta"].copy_(torch.tensor([0.7, 1.4]))
    mlp, x = lm.adapter.module(1, "mlp"), torch.randn(2, 5, D)
    with torch.no_grad():
        o = mlp(x)
    a, b, cv = -0.2, 1.4, vec.vector("mlp")[1]
    clean = b * o + a * cv
    with training_noise(lm, vec, 0.001), apply(lm.model, vec, lm.adapter):
        torch.manual_seed(3)
        out = mlp(x)
        with torch.no_grad():  # no noise without gradients (validation, inference)
            assert torch.allclose(mlp(x), clean, atol=1e-6)
    torch.manual_seed(3)
    noise = torch.randn_like(clean) * clean.norm(dim=-1, keepdim=True) * 0.001
    torch.testing.assert_close(out, clean + noise, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(out)
    (out * g).sum().backward()
    torch.testing.assert_close(vec.params["mlp__beta"].grad[1], (o * g).sum(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(vec.params["mlp__alpha"].grad[1], (cv * g).sum(), rtol=1e-4, atol=1e-5)
    assert vec.params["mlp__vector"].grad is None  # the context vectors are fixed


@pytest.mark.parametrize("family", ["llama", "idefics2", "llava"])
def test_families_train_save_and_steer(tmp_path, splits, family, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    lm = tiny(family)
    m, sp = _fit(lm, splits, tmp_path / "v", steps=2)
    ev = get_method("i2cl", {"vectors": str(tmp_path / "v")})
    ev.prepare(lm, TASK, sp)
    builder = PromptBuilder(lm, TASK.instruction)
    batch = builder.encode([builder.build([], sp["train"][0])])
    batch.pop("query_start")
    with torch.no_grad():
        plain = lm.model(**batch).logits
        with ev.inference(lm):
            steered = lm.model(**batch).logits
        with apply(lm.model, m.vectors, lm.adapter):
            fitted = lm.model(**batch).logits
    assert not torch.allclose(plain, steered) and torch.equal(steered, fitted)


def test_cli_train_then_eval_on_idefics2(tmp_path, monkeypatch):
    from m2iv.cli.main import main

    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    data = write_colour_jsonl(tmp_path)
    out = tmp_path / "vec"
    assert main(["train", "tiny:idefics2", "--task", f"jsonl:{data}", "--method", "i2cl", "--shots", "2",
                 "--steps", "3", "--out", str(out)]) == 0
    assert json.loads((out / "m2iv_config.json").read_text())["method"] == "i2cl"
    assert main(["eval", "tiny:idefics2", "--task", f"jsonl:{data}", "--method", "i2cl", "--vectors", str(out),
                 "--n-test", "2", "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["n"] == 2


def test_recipe_precedence_method_defaults_unless_the_user_set_a_field():
    from m2iv.methods.spec import recipe

    mine = {"steps": 800, "lr_scales": 0.01, "w_ce": 1.0, "w_mimicry": 0.0, "w_synergy": 0.0}
    r = recipe(mine, {}, {})
    assert (r.steps, r.lr_scales, r.w_ce, r.w_mimicry, r.batch_size) == (800, 0.01, 1.0, 0.0, TrainConfig().batch_size)
    r = recipe(mine, {"steps": 5, "lr_scales": 0.3}, {})
    assert (r.steps, r.lr_scales, r.w_ce) == (5, 0.3, 1.0)
    # A value the user set equal to the shared default still wins over the method's default.
    r = recipe(mine, {"steps": TrainConfig().steps}, {})
    assert r.steps == TrainConfig().steps


def test_i2cl_first_token_calibration_loss_is_the_originals(tmp_path):
    """`ce_span="first"`: the original's calibration CE on the label word's first token only; the default CE covers
    every answer token and the end of turn."""
    import torch.nn.functional as F

    from m2iv.data.prompts import PromptBuilder
    from m2iv.train.config import TrainConfig
    from m2iv.train.teacher import student_batch
    from m2iv.train.trainer import VectorTrainer
    from m2iv.vectors.inject import inject

    lm = tiny("qwen2")
    q = for_model(lm, method_splits(tmp_path / "d", 2))["train"]
    builder = PromptBuilder(lm, "")
    vec = random_vectors(lm)
    got = {}
    for span in ("first", "answer"):
        cfg = TrainConfig(steps=1, w_mimicry=0.0, w_synergy=0.0, synergy="none", w_ce=1.0, ce_span=span)
        with inject(lm.model, vec, lm.adapter) as handle, torch.no_grad():
            got[span] = VectorTrainer(lm, vec, cfg, tmp_path / span, show_progress=False)._loss(
                builder, q, None, [0, 1], handle)[1]["ce"]
            batch, labels, start = student_batch(builder, q)
            handle.set_query_start(start)
            logits = lm.model(**batch).logits
    n_real = (labels != -100).sum(1)  # left-padded answers: the first real one sits at column A - n_real
    a = labels.shape[1]
    rows = torch.arange(len(q))
    first_pred = logits[rows, logits.shape[1] - 1 - n_real]  # the position that predicts the first answer token
    first_tok = labels[rows, a - n_real]
    assert got["first"] == pytest.approx(float(F.cross_entropy(first_pred, first_tok)), rel=1e-5)
    assert abs(got["first"] - got["answer"]) > 1e-4
