"""ICV: the direction is the first principal component (+ mean) of per-demo (y - x) last-token states over all
layers, and after every MLP the state is steered towards it with its norm kept."""

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import fixture_task, for_model, method_splits, tiny, write_samples
from m2iv.cli.main import main
from m2iv.data.images import open_image
from m2iv.data.prompts import PromptBuilder
from m2iv.methods import METHODS, get_method
from m2iv.methods.icv import ICVConfig
from m2iv.methods.icv.method import icv_direction, strip_special
from m2iv.vectors import apply

TASK = fixture_task()


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return method_splits(tmp_path_factory.mktemp("data"), 4)


def test_direction_is_first_right_singular_vector_plus_mean():
    g = torch.Generator().manual_seed(0)
    diffs = torch.randn(5, 3, 8, generator=g) + torch.tensor([2.0] + [0.0] * 7)  # (n, L+1, D)
    flat = diffs.reshape(5, 24)
    mean = flat.mean(0)
    u, _, vh = torch.linalg.svd(flat - mean, full_matrices=False)
    sign = torch.sign(u[u[:, 0].abs().argmax(), 0])  # svd_flip: the largest |U| entry of the component > 0
    expected = (sign * vh[0] + mean).view(3, 8)[1:]
    torch.testing.assert_close(icv_direction(diffs), expected)
    # an independent check: vh[0] is the top eigenvector of the centred covariance
    evals, evecs = torch.linalg.eigh((flat - mean).T @ (flat - mean))
    assert torch.allclose((icv_direction(diffs).flatten() - mean[8:]).abs(), evecs[8:, -1].abs(), atol=1e-5)
    # per-layer variant: each layer's own component, pointing along its mean difference
    per = icv_direction(diffs, "per_layer")
    for layer in (1, 2):
        z = diffs[:, layer] - diffs[:, layer].mean(0)
        v = torch.linalg.svd(z, full_matrices=False).Vh[0]
        v = v if float(v @ diffs[:, layer].mean(0)) >= 0 else -v
        torch.testing.assert_close(per[layer - 1], v)
    # one demonstration: no spread to analyse, the vector is the (only) difference
    torch.testing.assert_close(icv_direction(diffs[:1]), diffs[0, 1:])


@pytest.mark.parametrize("family", ["llama", "qwen2_vl"])
def test_icv_extracts_from_separate_x_and_y_sequences(family, splits):
    lm = tiny(family)
    sp = for_model(lm, splits)
    vec, info = get_method("icv", {"shots": 3, "seed": 0}).fit(lm, TASK, sp)
    assert "icv" in METHODS and info["alpha"] == 0.1
    spec = vec.spec()
    assert spec["token_policy"] == "all" and spec["sites"] == {
        "mlp": {"operator": "icv", "layers": list(range(lm.adapter.num_layers)), "scale_activation": "identity"}}
    # oracle: x = image markup + question, y = answer, each run alone; last-token states at every layer
    builder = PromptBuilder(lm, TASK.instruction, TASK.answer_template)
    demos = [next(s for s in sp["support"] if s.id == i) for i in info["demos"]]

    def states(text, imgs):
        if imgs:
            batch = lm.processor(text=[text], images=[[open_image(p) for p in imgs]], return_tensors="pt")
        else:
            batch = lm.tokenizer([text], return_tensors="pt")
        got = []  # decoder-layer outputs by hook: hidden_states[-1] has the final norm applied
        hooks = [layer.register_forward_hook(lambda _m, _a, o: got.append((o[0] if isinstance(o, tuple) else o)
                                                                          [0, -1])) for layer in lm.adapter.layers]
        emb = lm.model(**batch, output_hidden_states=True).hidden_states[0][0, -1]
        for h in hooks:
            h.remove()
        return torch.stack([emb] + got)  # (L+1, D)

    with torch.no_grad():
        diffs = torch.stack([
            states(strip_special(d.answers[0]), []) -
            states(builder.image_markup * len(d.images) + strip_special(d.question), list(d.images)) for d in demos])
    assert "?" not in strip_special(demos[0].question) and strip_special("a.b?") == "ab"
    torch.testing.assert_close(vec.vector("mlp"), icv_direction(diffs), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["mistral", "idefics2"])
def test_icv_injection_keeps_the_norm_and_follows_the_rule_after_every_mlp(family, splits):
    lm = tiny(family)
    sp = for_model(lm, splits)
    vec, _ = get_method("icv", {"shots": 2, "method_config": ICVConfig(alpha=0.5)}).fit(lm, TASK, sp)
    builder = PromptBuilder(lm, TASK.instruction, TASK.answer_template)
    batch = builder.encode([builder.build([], q) for q in sp["train"][:2]])
    batch.pop("query_start")
    pre, post, hooks = {}, {}, []
    mlps = [lm.adapter.module(i, "mlp") for i in range(lm.adapter.num_layers)]
    with torch.no_grad():
        for i, m in enumerate(mlps):  # registered before the injection hooks: sees the MLP output as computed
            hooks.append(m.register_forward_hook(lambda _m, _a, o, i=i: pre.__setitem__(i, o.clone())))
        with apply(lm.model, vec, lm.adapter):
            for i, m in enumerate(mlps):  # registered after: sees what the next layer receives
                hooks.append(m.register_forward_hook(lambda _m, _a, o, i=i: post.__setitem__(i, o.clone())))
            lm.model(**batch)
        for h in hooks:
            h.remove()
    for i in range(lm.adapter.num_layers):
        h, v = pre[i], vec.vector("mlp")[i]
        torch.testing.assert_close(post[i].norm(dim=-1), h.norm(dim=-1), atol=1e-5, rtol=1e-5)
        lam = 0.5 * (1 + F.cosine_similarity(h, -v.expand_as(h), dim=-1).clamp_min(0))[..., None]
        want = h.norm(dim=-1, keepdim=True) * F.normalize(F.normalize(h, dim=-1) + lam * F.normalize(v, dim=0), dim=-1)
        torch.testing.assert_close(post[i], want, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(post[i], h)


def test_cli_train_then_eval_on_idefics2(tmp_path, monkeypatch):
    import m2iv.methods.icv  # noqa: F401  (the CLI resolves --method through the registry)

    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    rows = []
    for s in write_samples(tmp_path / "img", 12):
        rows.append({"image": s.images[0], "question": s.question, "answer": s.answers[0]})
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "icv"
    assert main(["train", "tiny:idefics2", "--task", f"jsonl:{data}", "--method", "icv", "--shots", "2",
                 "--out", str(out)]) == 0
    cfg = json.loads((out / "m2iv_config.json").read_text())
    assert cfg["method"] == "icv" and cfg["method_config"]["alpha"] == 0.1
    assert main(["eval", "tiny:idefics2", "--task", f"jsonl:{data}", "--method", "icv", "--vectors", str(out),
                 "--n-test", "2", "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["method"] == "icv" and summary["n"] == 2
