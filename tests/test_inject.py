"""Acceptance of the injection engine on every tiny family."""

import pytest
import torch

from conftest import ALL_FAMILIES, VLM_FAMILIES, make_inputs, random_vectors, tiny
from m2iv.errors import M2IVError
from m2iv.vectors import InContextVectors, SiteSpec, apply, inject
from m2iv.vectors.vector import TOKEN_POLICIES


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def logits(lm, inputs):
    with torch.no_grad():
        return lm.model(**inputs).logits


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_zero_vectors_identity_and_clean_exit(family):
    lm = tiny(family)
    inputs = make_inputs(lm, ["What colour is it?"])
    base = logits(lm, inputs)
    hooks_before = _hook_count(lm.model)
    for sites, op in [(("attn", "mlp"), "linear"), (("attn_head", "layer"), "additive"), (("mlp",), "norm_preserving")]:
        vec = InContextVectors.for_model(lm.adapter, sites=sites, operator=op)
        with apply(lm.model, vec, lm.adapter):
            assert torch.equal(logits(lm, inputs), base), (sites, op)
    assert torch.equal(logits(lm, inputs), base)
    vec = random_vectors(lm)
    with pytest.raises(RuntimeError, match="boom"), apply(lm.model, vec, lm.adapter):
        assert not torch.equal(logits(lm, inputs), base)
        raise RuntimeError("boom")
    assert torch.equal(logits(lm, inputs), base)
    assert _hook_count(lm.model) == hooks_before
    assert all(p.requires_grad for p in lm.model.parameters())  # freezing undone


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("site,operator", [("attn", "linear"), ("mlp", "linear"), ("attn_head", "additive"),
                                           ("layer", "norm_preserving"), ("mlp", "icv")])
def test_nonzero_vectors_change_logits(family, site, operator):
    lm = tiny(family)
    inputs = make_inputs(lm, ["What shape is it?"])
    base = logits(lm, inputs)
    with apply(lm.model, random_vectors(lm, sites=(site,), operator=operator), lm.adapter):
        steered = logits(lm, inputs)
    assert (steered - base).abs().max() > 1e-3


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics3", "llava_onevision", "llama"])
def test_per_head_oproj_injection_matches_oracle(family):
    """Shifting head h at the o_proj input by a*v must change the layer-0 MHA output by W_o[:, h] @ (a*v)."""
    lm = tiny(family)
    a = lm.adapter
    inputs = make_inputs(lm, ["Is it red?"])
    vec = InContextVectors(num_layers=a.num_layers, hidden_size=a.hidden_size, num_heads=a.num_heads,
                           head_dim=a.head_dim, sites={"attn_head": SiteSpec("additive", [0])})
    head, alpha = 2, 0.7
    v = torch.randn(a.head_dim)
    with torch.no_grad():
        vec.vector("attn_head")[0, head] = v
        vec.params["attn_head__alpha"][0, head] = alpha
    captured = []
    attn0 = a.layers[0].self_attn
    hook = attn0.register_forward_hook(lambda m, i, o: captured.append(o[0].detach().clone()))
    try:
        logits(lm, inputs)
        with apply(lm.model, vec, a):
            logits(lm, inputs)
    finally:
        hook.remove()
    base, shifted = captured
    W = attn0.o_proj.weight.detach()  # (D, H*Dh)
    expected = W[:, head * a.head_dim:(head + 1) * a.head_dim] @ (alpha * v)  # (D,)
    torch.testing.assert_close(shifted - base, expected.expand_as(base), atol=1e-5, rtol=1e-4)


def _generate(lm, inputs, use_cache, handle=None, n=5):
    with torch.no_grad():
        return lm.model.generate(**inputs, max_new_tokens=n, do_sample=False, use_cache=use_cache,
                                 pad_token_id=lm.tokenizer.pad_token_id)


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("policy", TOKEN_POLICIES)
def test_generate_with_and_without_cache_agree(family, policy):
    lm = tiny(family)
    inputs = make_inputs(lm, ["What colour is the shape?", "Is it round?"])
    vec = random_vectors(lm, scale=2.0, seed=1)
    plain = _generate(lm, inputs, True)
    outs = []
    for use_cache in (True, False):
        with apply(lm.model, vec, lm.adapter, token_policy=policy) as handle:
            handle.set_query_start([inputs["input_ids"].shape[1] - 3] * 2)
            outs.append(_generate(lm, inputs, use_cache))
    assert torch.equal(outs[0], outs[1]), policy
    # The vectors are strong enough that every policy changes what is generated.
    assert not torch.equal(outs[0], plain), policy


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_left_padded_batch_matches_each_sample_alone(family):
    lm = tiny(family)
    qs = ["What colour is the big shape in the picture?", "Red?"]
    n_images = [1, 2] if family in VLM_FAMILIES and family != "llava_onevision" else None
    batch = make_inputs(lm, qs, n_images=n_images)
    vec = random_vectors(lm, scale=1.0)
    with apply(lm.model, vec, lm.adapter, token_policy="text"):
        together = logits(lm, batch)[:, -1]
        for i, q in enumerate(qs):
            alone = make_inputs(lm, [q], n_images=None if n_images is None else [n_images[i]], seed=10 * i)
            torch.testing.assert_close(logits(lm, alone)[0, -1], together[i], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_text_policy_leaves_image_tokens_unchanged_at_first_layer(family):
    lm = tiny(family)
    inputs = make_inputs(lm, ["What is it?"])
    is_image = torch.isin(inputs["input_ids"][0], torch.tensor(lm.adapter.image_token_ids))
    assert is_image.any()
    outs = []
    hook = lm.adapter.layers[0].register_forward_hook(
        lambda m, i, o: outs.append((o[0] if isinstance(o, tuple) else o).detach().clone()))
    try:
        logits(lm, inputs)
        with apply(lm.model, random_vectors(lm, scale=1.0), lm.adapter, token_policy="text"):
            logits(lm, inputs)
    finally:
        hook.remove()
    base, steered = outs
    assert torch.equal(steered[0, is_image], base[0, is_image])
    assert not torch.equal(steered[0, ~is_image], base[0, ~is_image])


@pytest.mark.parametrize("family", ["llama", "idefics2", "qwen2_5_vl"])
def test_last_and_generated_policies_touch_only_their_positions(family):
    lm = tiny(family)
    inputs = make_inputs(lm, ["What is it?"])
    base = logits(lm, inputs)
    vec = random_vectors(lm, scale=1.0)
    with apply(lm.model, vec, lm.adapter, token_policy="last"):
        last = logits(lm, inputs)
    with apply(lm.model, vec, lm.adapter, token_policy="generated"):
        gen = logits(lm, inputs)
    assert torch.equal(last[:, :-1], base[:, :-1]) and not torch.equal(last[:, -1], base[:, -1])
    assert torch.equal(gen, base)  # a prompt has no generated tokens yet


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_gradients_reach_vectors_only(family):
    lm = tiny(family)
    inputs = make_inputs(lm, ["What colour?"])
    vec = random_vectors(lm, sites=("attn", "attn_head", "mlp"), operator="linear", scale=0.1)
    with apply(lm.model, vec, lm.adapter):
        out = lm.model(**inputs, labels=inputs["input_ids"])
        out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vec.parameters())
    assert all(p.grad is None for p in lm.model.parameters())


def test_answering_leaves_base_requires_grad_alone():
    # requires_grad picks PyTorch kernels even under no_grad (the batched LM head on the last position runs
    # as one mm only when the weight requires grad), so a method's answering context must not freeze it.
    from m2iv.methods import get_method

    lm = tiny("idefics3")
    before = [p.requires_grad for p in lm.model.parameters()]
    m = get_method("vectors", {})
    m.vectors = random_vectors(lm)
    with m.inference(lm):
        assert [p.requires_grad for p in lm.model.parameters()] == before
    with apply(lm.model, m.vectors, lm.adapter):  # training's default: the base is frozen, then restored
        assert not any(p.requires_grad for p in lm.model.parameters())
    assert [p.requires_grad for p in lm.model.parameters()] == before


def test_query_policy_requires_query_start():
    lm = tiny("llama")
    with apply(lm.model, random_vectors(lm), lm.adapter, token_policy="query"), \
            pytest.raises(M2IVError, match="set_query_start"):
        logits(lm, make_inputs(lm, ["hi"]))


def test_vectors_for_another_model_are_refused_by_inject():
    vec = random_vectors(tiny("llama"))
    other = tiny("llama")
    import transformers as T
    small = T.LlamaForCausalLM(T.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=2, vocab_size=64))
    with pytest.raises(M2IVError, match="hidden_size=64"):
        inject(small, vec)
    assert other.adapter.hidden_size == 64


def test_inject_handle_removes_everything():
    lm = tiny("idefics3")
    inputs = make_inputs(lm, ["What?"])
    base = logits(lm, inputs)
    handle = inject(lm.model, random_vectors(lm), lm.adapter)
    assert not torch.equal(logits(lm, inputs), base)
    handle.remove()
    handle.remove()  # idempotent
    assert torch.equal(logits(lm, inputs), base)


def test_record_reads_last_token_site_outputs():
    from m2iv.vectors.record import record

    lm = tiny("qwen2_vl")
    inputs = make_inputs(lm, ["What colour?", "Big?"])
    with torch.no_grad(), record(lm.model, lm.adapter, sites=("attn", "mlp", "layer", "attn_head")) as rec:
        out = lm.model(**inputs, output_hidden_states=True)
    a = lm.adapter
    assert rec.stacked("mlp").shape == (2, a.num_layers, a.hidden_size)
    assert rec.stacked("attn_head").shape == (2, a.num_layers, a.num_heads, a.head_dim)
    # the decoder-layer output at the last token is the model's hidden state there
    for i in range(a.num_layers - 1):  # the last hidden state is after the final norm
        torch.testing.assert_close(rec.stacked("layer")[:, i], out.hidden_states[i + 1][:, -1])
    assert _hook_count(lm.model) == sum(len(m._forward_hooks) + len(m._forward_pre_hooks)
                                        for m in lm.model.modules())


@pytest.mark.parametrize("operator", ["linear", "additive", "norm_preserving"])
def test_inference_fast_path_matches_autograd_path_and_sees_in_place_updates(operator):
    """Without autograd the hooks cache their operands; the result must equal the autograd path, and an
    in-place change of a vector (an optimizer step, a user edit) must reach the next call."""
    lm = tiny("llama")
    inputs = make_inputs(lm, ["What shape is it?"])
    vec = random_vectors(lm, sites=("attn", "mlp"), operator=operator)
    with apply(lm.model, vec, lm.adapter):
        with torch.enable_grad():
            slow = lm.model(**inputs).logits.detach()
        fast = logits(lm, inputs)
        torch.testing.assert_close(fast, slow)
        with torch.no_grad():
            vec.params["mlp__vector"].mul_(-10.0)
        changed = logits(lm, inputs)
        with torch.enable_grad():
            slow_changed = lm.model(**inputs).logits.detach()
    assert (changed - fast).abs().max() > 1e-3
    torch.testing.assert_close(changed, slow_changed)
