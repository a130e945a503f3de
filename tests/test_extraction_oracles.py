"""Oracles for the extract-and-inject baselines, recomputed the way the original code does it (one prompt at a
time, no padding, plain hooks) and compared with m2iv's batched, left-padded pipeline:

- Task Vectors (roeehendel/icl_task_vectors, `task_vector_accuracy_by_layer` + `HiddenInjector`): the dev
  accuracy of every layer, with the layer-ℓ output at the last position overwritten by the task hidden.
- Function Vectors (ericwtodd/function_vectors, `compute_indirect_effect`): each head's indirect effect.
- The read/patch position: the last prompt token is the token right before the answer (the `->` of the
  original prompts), also under a chat template whose last token is the assistant header.
"""

import random

import pytest
import torch

from conftest import fixture_task, for_model, method_splits, tiny
from m2iv.data.prompts import PromptBuilder
from m2iv.methods import get_method
from m2iv.methods.extraction import LastPositionRerun, answer_first_ids, model_batches, split_dev
from m2iv.methods.fv.method import indirect_effects, shuffle_labels
from m2iv.methods.tv import TVConfig

TASK = fixture_task()


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return method_splits(tmp_path_factory.mktemp("data"), 10)


def _alone(builder, prompt) -> dict:
    batch = builder.encode([prompt])
    batch.pop("query_start")
    batch.pop("labels", None)
    return batch


def _layer_out(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("family", ["llama", "idefics2"])
def test_tv_dev_sweep_matches_the_original_hidden_injector(family, splits):
    lm = tiny(family)
    sp = for_model(lm, splits)
    cfg = TVConfig(n_prompts=2, dummy_queries=2, dev_size=4, batch_size=3)  # batches mix prompt lengths
    method = get_method("tv", {"shots": 2, "seed": 0, "method_config": cfg})
    _, info = method.fit(lm, TASK, sp)
    builder = PromptBuilder(lm, TASK.instruction, TASK.answer_template)
    dev, pool = split_dev(sp["train"], cfg.dev_size, 0, "tv")
    layers = lm.adapter.layers
    # task hiddens: every decoder layer's output at the last token, each extraction prompt alone, averaged
    hid: list[list[torch.Tensor]] = [[] for _ in layers]
    hooks = [m.register_forward_hook(lambda _m, _a, out, i=i: hid[i].append(_layer_out(out)[0, -1].clone()))
             for i, m in enumerate(layers)]
    with torch.no_grad():
        for p in method.extraction_prompts(builder, sp["support"], pool, 2, cfg, 0):
            lm.model(**_alone(builder, p))
    for h in hooks:
        h.remove()
    task_hiddens = torch.stack([torch.stack(h).mean(0) for h in hid])  # (L, D)
    targets = answer_first_ids(builder, [[] for _ in dev], dev)

    def inject(layer):  # HiddenInjector: overwrite the layer output in place at position -1
        def hook(_m, _a, out):
            _layer_out(out)[:, -1] = task_hiddens[layer]
            return out
        return layers[layer].register_forward_hook(hook)

    for layer in range(len(layers)):
        hits, logps = [], []
        h = inject(layer)
        with torch.no_grad():
            for q, t in zip(dev, targets, strict=True):
                lp = torch.log_softmax(lm.model(**_alone(builder, builder.build([], q))).logits[0, -1].float(), -1)
                hits.append(float(lp.argmax() == t))
                logps.append(float(lp[t]))
        h.remove()
        got = info["dev_by_layer"][str(layer)]
        assert got["accuracy"] == pytest.approx(sum(hits) / len(hits))
        assert got["logprob"] == pytest.approx(sum(logps) / len(logps), abs=1e-4)


@pytest.mark.parametrize("family", ["llama", "idefics3", "qwen2_vl"])
def test_fv_indirect_effect_batched_with_padding_equals_one_prompt_at_a_time(family, splits):
    lm = tiny(family)
    ad = lm.adapter
    splits = for_model(lm, splits)
    builder = PromptBuilder(lm, TASK.instruction, TASK.answer_template)
    queries = splits["train"][:4]
    # different demonstration counts: the batch is left-padded
    demos = [shuffle_labels(random.Random(i), splits["support"][i:i + 1 + i % 3]) for i in range(4)]
    prompts = [builder.build(d, q) for d, q in zip(demos, queries, strict=True)]
    lens = {int(_alone(builder, p)["attention_mask"].sum()) for p in prompts}
    assert len(lens) > 1
    targets = answer_first_ids(builder, demos, queries)
    mean = torch.randn(ad.num_layers, ad.num_heads, ad.head_dim)
    got = indirect_effects(lm, builder, prompts, targets, mean, [0, ad.num_layers - 1], batch_size=4)  # (N, L, H)

    want = torch.zeros_like(got)
    with torch.no_grad():
        for n, (p, t) in enumerate(zip(prompts, targets, strict=True)):
            batch = _alone(builder, p)
            clean = torch.softmax(lm.model(**batch).logits[0, -1].float(), -1)[t]
            for layer in (0, ad.num_layers - 1):
                for head in range(ad.num_heads):
                    def pre(_m, args, layer=layer, head=head):
                        x = args[0].clone()
                        x[:, -1, head * ad.head_dim:(head + 1) * ad.head_dim] = mean[layer, head]
                        return (x, *args[1:])
                    h = ad.module(layer, "attn_head").register_forward_pre_hook(pre)
                    probs = torch.softmax(lm.model(**batch).logits[0, -1].float(), -1)
                    h.remove()
                    want[n, layer, head] = probs[t] - clean
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["llama", "idefics3", "qwen2_vl"])
def test_read_and_patch_position_is_the_token_right_before_the_answer(family, splits):
    """The extraction prompt's last token (TV/FV/MTV read there) and the zero-shot prompt's last token (they
    patch there) are both the position whose next token is the answer's first token: with a chat template,
    the end of the assistant header, not the end of the user's query."""
    lm = tiny(family)
    sp = for_model(lm, splits)
    builder = PromptBuilder(lm, TASK.instruction, TASK.answer_template)
    q = sp["train"][0]
    for demos in ([], sp["support"][:2]):
        plain = _alone(builder, builder.build(demos, q))["input_ids"][0]
        full = builder.encode([builder.build(demos, q, answer=builder.target(q))])
        ids, labels = full["input_ids"][0], full["labels"][0]
        first = int((labels != -100).float().argmax())  # the answer's first token
        assert first == len(plain) and torch.equal(ids[:first], plain)


@pytest.mark.parametrize("family,cached", [("llama", True), ("idefics2", True), ("qwen2_vl", False)])
def test_last_position_rerun_equals_the_full_forward_under_a_last_position_edit(family, cached, splits):
    """The cached path is taken where it reproduces the full forward (checked on the spot) and edits of the
    last position give the full forward's logits; elsewhere (Qwen2-VL's 3-D rope) it falls back."""
    lm = tiny(family)
    sp = for_model(lm, splits)
    builder = PromptBuilder(lm, TASK.instruction, TASK.answer_template)
    prompts = [builder.build(sp["support"][:i], q) for i, q in enumerate(sp["train"][:3])]  # left-padded
    batch = next(model_batches(lm, builder, prompts, 3))
    with torch.no_grad():
        full = lm.model(**batch).logits[:, -1]
    rerun = LastPositionRerun(lm, batch)
    assert rerun.cached == cached
    torch.testing.assert_close(rerun.full, full, atol=1e-4, rtol=1e-4)
    mlp = lm.adapter.module(1, "mlp")

    def edit(_m, _a, out):
        out = out.clone()
        out[:, -1] += 3.0
        return out

    h = mlp.register_forward_hook(edit)
    try:
        with torch.no_grad():
            want = lm.model(**batch).logits[:, -1]
        for _ in range(2):  # the cache is restored after every call
            torch.testing.assert_close(rerun.logits(), want, atol=1e-4, rtol=1e-4)
    finally:
        h.remove()
    torch.testing.assert_close(rerun.logits(), full, atol=1e-4, rtol=1e-4)
