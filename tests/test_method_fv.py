"""Function Vectors: FV = sum over the top heads of W_O[:, head] @ mean head output; heads ranked by the
indirect effect of patching their mean into shuffled-label runs; added at the last token of one layer."""

import random
from dataclasses import replace

import pytest
import torch

from conftest import fixture_task, for_model, method_splits, tiny
from m2iv.data.prompts import PromptBuilder
from m2iv.methods import METHODS, get_method
from m2iv.methods.extraction import answer_first_ids, record_last
from m2iv.methods.fv import FVConfig
from m2iv.methods.fv.method import indirect_effects, shuffle_labels, top_heads
from m2iv.vectors import apply

TASK = fixture_task()
CFG = FVConfig(n_mean_prompts=3, n_ie_prompts=2, n_top_heads=3)


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return method_splits(tmp_path_factory.mktemp("data"), 8)


def _single(builder, prompt) -> dict:
    batch = builder.encode([prompt])
    batch.pop("query_start")
    return batch


@pytest.mark.parametrize("family", ["llama", "qwen2_vl", "idefics3"])
def test_fv_is_sum_of_top_heads_through_w_o_added_at_last_token(family, splits):
    lm = tiny(family)
    ad = lm.adapter
    sp = for_model(lm, splits)
    method = get_method("fv", {"shots": 2, "seed": 0, "method_config": CFG})
    vec, info = method.fit(lm, TASK, sp)
    assert "fv" in METHODS and vec.spec()["token_policy"] == "last"
    assert vec.spec()["sites"] == {"layer": {"operator": "additive", "layers": [ad.num_layers // 3],
                                             "scale_activation": "identity"}}
    assert float(vec.scale("layer", "alpha")[0]) == 1.0
    # heads = the top-k of the mean indirect effect, best first
    ie = torch.tensor(info["indirect_effect"])  # (L, H)
    heads = [(L, H) for L, H, _ in info["top_heads"]]
    assert len(heads) == 3 and heads == [divmod(int(i), ad.num_heads) for i in ie.flatten().topk(3).indices]

    # oracle: mean o_proj input per head at the last token, each clean prompt run alone
    builder = PromptBuilder(lm, TASK.instruction, TASK.answer_template)
    clean, demos, queries, _, _ = method.prompts(builder, sp["support"], list(sp["train"]), 2, CFG, 0)
    assert all(p.answer is None for p in clean) and len(clean) == CFG.n_mean_prompts
    acts = {i: [] for i in range(ad.num_layers)}
    hooks = [ad.module(i, "attn_head").register_forward_pre_hook(
        lambda _m, args, i=i: acts[i].append(args[0][0, -1].detach().clone())) for i in range(ad.num_layers)]
    with torch.no_grad():
        for p in clean:
            lm.model(**_single(builder, p))
    for h in hooks:
        h.remove()
    mean = {i: torch.stack(a).mean(0) for i, a in acts.items()}  # (H*Dh,) per layer
    expected = torch.zeros(ad.hidden_size)
    for L, H in heads:
        o = ad.module(L, "attn_head")
        sl = slice(H * ad.head_dim, (H + 1) * ad.head_dim)
        expected += o.weight[:, sl].detach() @ mean[L][sl] + (o.bias.detach() if o.bias is not None else 0)
    torch.testing.assert_close(vec.vector("layer")[0], expected, atol=1e-4, rtol=1e-4)

    # the shuffled prompts keep each demo's question and permute only the answers
    for d in demos:
        assert sorted(x.answers for x in d) == sorted(s.answers for s in sp["support"] if s.id in {x.id for x in d})

    # injection: FV added to the layer output at the last prompt position only
    batch = _single(builder, builder.build([], sp["train"][0]))
    pre, post = [], []
    layer = ad.layers[ad.num_layers // 3]

    def grab(store):
        return lambda _m, _a, out: store.append((out[0] if isinstance(out, tuple) else out).clone())

    with torch.no_grad():
        h1 = layer.register_forward_hook(grab(pre))
        with apply(lm.model, vec, ad):
            h2 = layer.register_forward_hook(grab(post))
            lm.model(**batch)
        h1.remove()
        h2.remove()
    assert torch.equal(post[0][:, :-1], pre[0][:, :-1])
    torch.testing.assert_close(post[0][0, -1], pre[0][0, -1] + expected, atol=1e-4, rtol=1e-4)


def test_fv_head_ranking_follows_a_planted_indirect_effect(splits):
    lm = tiny("llama")
    ad = lm.adapter
    sp = {k: [replace(s, images=(), answers=("red",)) for s in v] for k, v in splits.items()}  # one target token
    builder = PromptBuilder(lm, TASK.instruction, TASK.answer_template)
    queries = sp["train"][:3]
    demos = [shuffle_labels(random.Random(i), sp["support"][i:i + 2]) for i in range(3)]
    prompts = [builder.build(d, q) for d, q in zip(demos, queries, strict=True)]
    targets = answer_first_ids(builder, demos, queries)
    assert len(set(targets.tolist())) == 1

    # patching each head with its own activation on the same prompt changes nothing: the effect is exactly 0
    own = record_last(lm, builder, prompts[:1], "attn_head", 1)[0]  # (L, H, Dh)
    zero = indirect_effects(lm, builder, prompts[:1], targets[:1], own, [0, 1], 1)
    assert zero.abs().max() < 1e-7

    # plant: head (1, 2)'s mean is a large input whose W_O image points at the target's unembedding row
    mean = record_last(lm, builder, prompts, "attn_head", 2).mean(0)
    w = ad.module(1, "attn_head").weight.detach()[:, 2 * ad.head_dim:3 * ad.head_dim]  # (D, Dh)
    u = lm.model.get_output_embeddings().weight.detach()[targets[0]]  # (D,)
    mean[1, 2] = 1e3 * torch.linalg.lstsq(w, u[:, None]).solution[:, 0]
    ie = indirect_effects(lm, builder, prompts, targets, mean, [0, 1], 2).mean(0)  # (L, H)
    ranked = top_heads(ie, 10, [0, 1])
    assert len(ranked) == ad.num_layers * ad.num_heads  # k capped by the heads the model has
    assert ranked[0][:2] == (1, 2) and ie[1, 2] > 10 * ie.flatten()[torch.arange(8) != 6].abs().max()
    assert top_heads(ie, 3, [0])[0][0] == 0  # ie_layers restricts the candidates


def test_fv_icl_filter_keeps_the_prompts_the_model_answers_right(splits, monkeypatch):
    """`icl_filter=True` (the original's filter_set): the mean is taken over the clean prompts whose next-token
    argmax, each prompt run alone, is the first token of its answer; none right is a one-line error."""
    import m2iv.methods.fv.method as fvm
    from m2iv.errors import M2IVError

    lm = tiny("qwen2_vl")
    sp = for_model(lm, splits)
    builder = PromptBuilder(lm, TASK.instruction, TASK.answer_template)
    cfg = replace(CFG, n_mean_prompts=6, icl_filter=True)
    method = get_method("fv", {"shots": 2, "seed": 0, "method_config": cfg})
    clean, _, _, c_demos, c_queries = method.prompts(builder, sp["support"], list(sp["train"]), 2, cfg, 0)
    with torch.no_grad():
        alone = [int(lm.model(**_single(builder, p)).logits[0, -1].argmax()) for p in clean]
    # pretend the answers of prompts 0, 2 and 4 are what the model predicts there, the others something else
    fake = torch.tensor([a if i % 2 == 0 else a + 1 for i, a in enumerate(alone)])
    monkeypatch.setattr(fvm, "answer_first_ids", lambda *a, **k: fake)
    assert fvm.icl_correct(lm, builder, clean, c_demos, c_queries, batch_size=4) == clean[0::2]
    monkeypatch.setattr(fvm, "answer_first_ids", lambda *a, **k: torch.tensor(alone) + 1)
    with pytest.raises(M2IVError, match="icl_filter"):
        fvm.icl_correct(lm, builder, clean, c_demos, c_queries, batch_size=4)
