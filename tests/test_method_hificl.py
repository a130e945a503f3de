"""HiFICL's virtual key/value heads against softmax attention over [virtual keys; real keys], written out."""

import json
from typing import Any

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from conftest import fixture_task, for_model, logits_with, make_inputs, method_splits, tiny
from m2iv.errors import M2IVError
from m2iv.methods import get_method
from m2iv.methods.hificl.method import HiFICL
from m2iv.vectors import InContextVectors, SiteSpec, apply, load_vectors, save_vectors

TASK = fixture_task()


def hificl_vectors(lm, random_values: bool, normaliser: str = "masked", seed: int = 0):
    """The original's init; with `random_values` the value factor B_V (0 at init) is drawn too."""
    vec = HiFICL({"method_config": {"normaliser": normaliser}}).make_vectors(lm, seed=seed)
    if random_values:
        with torch.no_grad():
            p = vec.params["attn_head__value_b"]
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + 1)) * 0.3)
    return vec


def o_proj_inputs(lm, inputs, vec):
    """Layer 0's o_proj input without and with `vec`, and the attention's hidden input / position embeddings."""
    attn0: Any = lm.adapter.layers[0].self_attn
    seen: dict[str, Any] = {}
    o_in: list[torch.Tensor] = []
    h1 = attn0.register_forward_pre_hook(lambda m, args, kw: seen.update(x=kw["hidden_states"],
                                                                       pe=kw["position_embeddings"]),
                                         with_kwargs=True)

    def capture():  # registered after the injection's pre-hook, so it sees the changed input
        return attn0.o_proj.register_forward_pre_hook(lambda m, args: o_in.append(args[0].detach().clone()))

    try:
        with torch.no_grad():
            h2 = capture()
            lm.model(**inputs)
            h2.remove()
            with apply(lm.model, vec, lm.adapter):
                h2 = capture()
                lm.model(**inputs)
                h2.remove()
    finally:
        h1.remove()
    return o_in[0], o_in[1], seen


@pytest.mark.parametrize("random_values", [False, True], ids=["init", "trained-like"])
@pytest.mark.parametrize("normaliser", ["masked", "all_keys"])
def test_heads_match_softmax_over_virtual_and_real_keys(random_values, normaliser):
    lm = tiny("llama")
    a = lm.adapter
    inputs = make_inputs(lm, ["What colour is the square?"])
    vec = hificl_vectors(lm, random_values, normaliser)
    base, out, seen = o_proj_inputs(lm, inputs, vec)
    attn0: Any = a.layers[0].self_attn
    x, (cos, sin) = seen["x"], seen["pe"]
    B, T, _ = x.shape
    H, Dh = a.num_heads, a.head_dim
    p = {k.split("__")[1]: v[0] for k, v in vec.params.items()}  # layer 0
    with torch.no_grad():
        q = attn0.q_proj(x).view(B, T, -1, Dh).transpose(1, 2)  # (B, H, T, Dh)
        k = attn0.k_proj(x).view(B, T, -1, Dh).transpose(1, 2)
        v = attn0.v_proj(x).view(B, T, -1, Dh).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k, v = (t.repeat_interleave(H // t.shape[1], dim=1) for t in (k, v))  # GQA
        kv, vv = p["key_a"] @ p["key_b"], p["value_a"] @ p["value_b"]  # (H, V, Dh): K = A_K B_K, V = A_V B_V
        s_real = (q @ k.transpose(-1, -2)) / Dh**0.5  # (B, H, T, T)
        s_real = s_real.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        s_virt = torch.einsum("bhtd,hvd->bhtv", q, kv) / Dh**0.5  # (B, H, T, V)
        if normaliser == "masked":  # one softmax over [virtual keys; real keys], values [V_virtual; V]
            w = torch.cat([s_virt, s_real], -1).softmax(-1)
            nv = kv.shape[1]
            expected = w[..., :nv] @ vv + w[..., nv:] @ v  # (B, H, T, Dh)
        else:  # the original's formula: logZ2 over every key, the model's own causal output o
            lse_all = (q @ k.transpose(-1, -2) / Dh**0.5).logsumexp(-1)
            o = s_real.softmax(-1) @ v
            den = torch.logaddexp(s_virt.logsumexp(-1), lse_all)
            expected = (lse_all - den).exp().unsqueeze(-1) * o + (s_virt - den.unsqueeze(-1)).exp() @ vv
        expected = expected.transpose(1, 2).reshape(B, T, H * Dh)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    if not random_values:  # the original's init: values 0, so the heads' outputs are only rescaled (not identity)
        share = out.view(B, T, H, Dh).norm(dim=-1) / base.view(B, T, H, Dh).norm(dim=-1)
        assert torch.all(share < 1) and torch.all(share > 0)


def test_init_follows_the_original_and_changes_the_model():
    lm = tiny("qwen2")
    m = get_method("hificl", {})  # registered under its name
    assert isinstance(m, HiFICL)
    vec = m.make_vectors(lm)
    a = lm.adapter
    p = vec.params
    assert p["attn_head__key_a"].shape == (a.num_layers, a.num_heads, 8, 8)
    assert p["attn_head__value_b"].shape == (a.num_layers, a.num_heads, 8, a.head_dim)
    assert torch.count_nonzero(p["attn_head__value_b"]) == 0  # V_learn_B = 0
    assert 0.005 < float(p["attn_head__key_b"].detach().std()) < 0.02  # K_learn_B ~ N(0, 0.01^2)
    assert 0.8 < float(p["attn_head__key_a"].detach().std()) < 1.2  # K_learn_A ~ N(0, 1)
    assert vec.num_parameters() == a.num_layers * a.num_heads * 2 * (8 * 8 + 8 * a.head_dim)
    inputs = make_inputs(lm, ["What is it?"])
    # Virtual keys take softmax mass from the start, so even the untrained heads change the logits.
    assert not torch.allclose(logits_with(lm, inputs, vec), logits_with(lm, inputs), atol=1e-4)


def test_gradients_reach_only_the_virtual_pairs():
    lm = tiny("idefics2")
    vec = hificl_vectors(lm, random_values=True)
    inputs = make_inputs(lm, ["What is it?", "Is it round and red?"])
    with apply(lm.model, vec, lm.adapter):  # base frozen while attached (training)
        lm.model(**inputs).logits[:, -1].logsumexp(-1).sum().backward()
    assert all(p.grad is None for p in lm.model.parameters())
    for name, p in vec.params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert all(p.requires_grad for p in lm.model.parameters())  # restored after removal


def test_kv_cache_agrees_and_model_is_restored():
    lm = tiny("qwen2_vl")
    inputs = make_inputs(lm, ["What is it?", "Is it round and red?"])  # left-padded
    impl = lm.model.get_decoder().config._attn_implementation
    vec = hificl_vectors(lm, random_values=True)
    with torch.no_grad():
        base = lm.model(**inputs).logits
        with apply(lm.model, vec, lm.adapter):
            outs = [lm.model.generate(**inputs, max_new_tokens=4, do_sample=False, use_cache=c,
                                      pad_token_id=lm.tokenizer.pad_token_id) for c in (True, False)]
        assert torch.equal(outs[0], outs[1])
        assert torch.equal(lm.model(**inputs).logits, base)
    assert lm.model.get_decoder().config._attn_implementation == impl


def test_trains_saves_and_loads_on_every_vlm_family(tmp_path, vlm_family, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    lm = tiny(vlm_family)
    splits = for_model(lm, method_splits(tmp_path / "d", 8))
    cfg = {"steps": 8, "batch_size": 8, "val_every": 0, "warmup": 0.0}
    m = HiFICL({"out": str(tmp_path / "v"), "train_config": cfg, "progress": False, "method_config": {"lr": 0.05}})
    init = m.make_vectors(lm)
    m.train(lm, TASK, splits)
    log = [json.loads(x) for x in (tmp_path / "v.train" / "train_log.jsonl").read_text().splitlines()]
    assert set(log[0]) >= {"loss", "ce"} and not {"mimicry", "align", "synergy"} & set(log[0])
    assert log[-1]["ce"] < log[0]["ce"]  # same 8 queries every step: the answer loss goes down
    vec, config = load_vectors(tmp_path / "v", adapter=lm.adapter)
    assert config["method"] == "hificl" and config["method_config"]["virtual_tokens"] == 8
    assert config["sites"]["attn_head"] == {"operator": "virtual_kv", "layers": list(range(lm.adapter.num_layers)),
                                            "scale_activation": "identity", "virtual_tokens": 8, "rank": 8}
    assert config["recipe"]["w_ce"] == 1.0 and config["recipe"]["w_mimicry"] == 0.0
    assert m.vectors is not None
    for k in vec.params:  # all four factors learned (B_V leaves 0, A_V then moves); what was saved is what trained
        assert not torch.equal(vec.params[k], init.params[k]), k
        assert torch.equal(vec.params[k], m.vectors.params[k].cpu()), k
    inputs = make_inputs(lm, ["What is it?"])
    assert torch.equal(logits_with(lm, inputs, vec), logits_with(lm, inputs, m.vectors))


def test_save_load_round_trip_is_exact(tmp_path):
    lm = tiny("llava")
    vec = hificl_vectors(lm, random_values=True, normaliser="all_keys")
    save_vectors(vec, tmp_path / "v", adapter=lm.adapter, base_model="tiny:llava")
    back, config = load_vectors(tmp_path / "v", adapter=lm.adapter)
    assert config["sites"]["attn_head"]["normaliser"] == "all_keys"
    assert back.sites == vec.sites and set(back.params) == set(vec.params)
    for k, p in vec.params.items():
        assert torch.equal(back.params[k], p), k
    inputs = make_inputs(lm, ["What is it?"])
    assert torch.equal(logits_with(lm, inputs, back), logits_with(lm, inputs, vec))


def test_bad_layouts_are_refused():
    kw: dict[str, Any] = {"num_layers": 2, "hidden_size": 8, "num_heads": 2, "head_dim": 4}
    with pytest.raises(M2IVError, match="attn_head"):
        InContextVectors(**kw, sites={"attn": SiteSpec("virtual_kv", [0], virtual_tokens=2, rank=2)})
    with pytest.raises(M2IVError, match="rank > 0"):
        InContextVectors(**kw, sites={"attn_head": SiteSpec("virtual_kv", [0], virtual_tokens=2)})
    with pytest.raises(M2IVError, match="normaliser"):
        InContextVectors(**kw, sites={"attn_head": SiteSpec("gated", [0], normaliser="future")})
    vec = InContextVectors(**kw, sites={"attn_head": SiteSpec("virtual_kv", [0, 1], virtual_tokens=2, rank=2)})
    with pytest.raises(M2IVError, match="not a shift"):
        vec + vec
    with pytest.raises(M2IVError, match="rank"):
        HiFICL({"method_config": {"rank": 0}}).method_config()
