"""MimIC's gated per-head shift against a hand-written attention oracle."""

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from conftest import ALL_FAMILIES, make_inputs, tiny
from m2iv.errors import M2IVError
from m2iv.vectors import InContextVectors, SiteSpec, apply


def gated_vectors(lm, seed=0, scale=1.0):
    a = lm.adapter
    vec = InContextVectors(num_layers=a.num_layers, hidden_size=a.hidden_size, num_heads=a.num_heads,
                           head_dim=a.head_dim, sites={"attn_head": SiteSpec("gated", list(range(a.num_layers)))},
                           method="mimic")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in vec.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return vec


def test_gate_matches_oracle_on_llama():
    lm = tiny("llama")
    a = lm.adapter
    inputs = make_inputs(lm, ["What colour is the square?"])
    vec = gated_vectors(lm)
    attn0 = a.layers[0].self_attn
    seen = {}
    h1 = attn0.register_forward_pre_hook(lambda m, args, kw: seen.update(x=kw["hidden_states"],
                                                                       pe=kw["position_embeddings"]),
                                         with_kwargs=True)
    o_in = []

    def capture():  # registered after the injection's pre-hook, so it sees the shifted input
        return attn0.o_proj.register_forward_pre_hook(lambda m, args: o_in.append(args[0].detach().clone()))

    try:
        with torch.no_grad():
            h2 = capture()
            lm.model(**inputs)
            h2.remove()
            with apply(lm.model, vec, a):
                h2 = capture()
                lm.model(**inputs)
                h2.remove()
    finally:
        h1.remove()
    base, shifted = o_in[0], o_in[1]
    x, (cos, sin) = seen["x"], seen["pe"]
    B, T, _ = x.shape
    with torch.no_grad():
        q = attn0.q_proj(x).view(B, T, -1, a.head_dim).transpose(1, 2)  # (B, H, T, Dh)
        k = attn0.k_proj(x).view(B, T, -1, a.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k = k.repeat_interleave(a.num_heads // k.shape[1], dim=1)
        s = q @ k.transpose(-1, -2) / a.head_dim**0.5
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        lse = s.logsumexp(-1).transpose(1, 2)  # (B, T, H)
        w, b, v = vec.params["attn_head__gate_w"][0], vec.params["attn_head__gate_b"][0], vec.vector("attn_head")[0]
        log_z1 = torch.einsum("bhtd,hd->bth", q, w) + b
        mu = torch.exp(log_z1 - torch.logaddexp(log_z1, lse)).unsqueeze(-1)  # MimIC's formula
        expected = base.view(B, T, a.num_heads, a.head_dim) + mu * v
    torch.testing.assert_close(shifted.view(B, T, a.num_heads, a.head_dim), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_gated_heads_restore_model_and_agree_under_kv_cache(family):
    lm = tiny(family)
    inputs = make_inputs(lm, ["What is it?", "Is it round and red?"])
    impl = lm.model.get_decoder().config._attn_implementation
    with torch.no_grad():
        base = lm.model(**inputs).logits
        vec = gated_vectors(lm, scale=2.0)
        outs = []
        with apply(lm.model, vec, lm.adapter):
            steered = lm.model(**inputs).logits
            for cache in (True, False):
                outs.append(lm.model.generate(**inputs, max_new_tokens=4, do_sample=False, use_cache=cache,
                                              pad_token_id=lm.tokenizer.pad_token_id))
        assert not torch.equal(steered, base)
        assert torch.equal(outs[0], outs[1])
        assert torch.equal(lm.model(**inputs).logits, base)
    assert lm.model.get_decoder().config._attn_implementation == impl


def test_gate_only_at_attn_head():
    with pytest.raises(M2IVError, match="attn_head"):
        InContextVectors(num_layers=2, hidden_size=8, num_heads=2, head_dim=4, sites={"mlp": SiteSpec("gated", [0])})
