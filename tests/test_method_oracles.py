"""Oracle tests for the trained baselines: each original's formula, re-implemented here straight from its code
(the repos and commits in docs/method-notes.md), against what m2iv computes on a tiny Llama-based Idefics3.

- LIVE (ForJadeForest/LIVE@83e8491): `icv_module.forward` scales the per-layer vector by sigmoid(alpha) and
  `LearnableICVInterventionLMM._apply_intervention` shifts the hooked output, then restores each token's norm;
  `calculate_kl_divergence` is the token-mean of KL(softmax(t/T) || softmax(s/T)) * T^2 (with eps 1e-6).
- I2CL (LzVv123456/I2CL@c2c6dd9): `extract_latent` + `get_context_vector` average the last-token outputs of
  `self_attn` and `mlp` over demonstrations run alone; `inject_hook_func` ('linear', inject_pos 'all') sets
  o' = b*o + a*cv and, while calibrating, adds randn * |o'| * noise_scale.
- MimIC (Kamichanw/MimIC@9eda50b): `AttnApproximator.do_shift` adds mu*v per head before o_proj, with
  mu = exp(logZ1 - logaddexp(logZ1, logZ2)), logZ1 = MultiheadLinear(q), logZ2 = logsumexp(q K^T / sqrt(d_h)).
"""

import pytest
import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

import m2iv.methods.i2cl  # noqa: F401  (registers "i2cl")
import m2iv.methods.live  # noqa: F401  (registers "live")
import m2iv.methods.mimic  # noqa: F401  (registers "mimic")
from conftest import fixture_task, make_inputs, method_splits, tiny
from m2iv.data.prompts import PromptBuilder
from m2iv.methods import get_method
from m2iv.methods.i2cl import I2CLConfig
from m2iv.methods.i2cl.method import demo_prompt, extract_context_vectors, training_noise
from m2iv.methods.live import LIVEConfig
from m2iv.train import losses
from m2iv.vectors import apply
from m2iv.vectors.vector import InContextVectors, SiteSpec

TASK = fixture_task()


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _put(out, h):
    return (h, *out[1:]) if isinstance(out, tuple) else h


def _logits(lm, inputs, ctx=None):
    with torch.no_grad():
        if ctx is None:
            return lm.model(**inputs).logits
        with ctx:
            return lm.model(**inputs).logits


class _Hooks:
    def __init__(self):
        self.handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


# -- LIVE ------------------------------------------------------------------------------------------
def live_original(lm, icv_param: torch.Tensor, alpha_param: torch.Tensor, site_module: str) -> _Hooks:
    """The original's hooks: icv = sigmoid(alpha)[:, None] * icv; h' = (h + icv_l) / |h + icv_l| * |h|."""
    icv = torch.sigmoid(alpha_param).unsqueeze(-1) * icv_param  # (L, D), GlobalICVEncoder(use_sigmoid=True)
    hooks = _Hooks()
    for layer in range(lm.adapter.num_layers):
        def hook(_m, _a, out, layer=layer):
            h = _first(out)
            shifted = h + icv[layer][None, None, :]
            return _put(out, shifted / shifted.norm(dim=-1, keepdim=True) * h.norm(dim=-1, keepdim=True))
        hooks.handles.append(lm.adapter.module(layer, site_module).register_forward_hook(hook))
    return hooks


@pytest.mark.parametrize("site", ["mlp", "layer"])
def test_live_injection_matches_the_original_hook(site):
    lm = tiny("idefics3")
    vec = get_method("live", {}).make_vectors(lm, LIVEConfig(site=site), seed=3)
    with torch.no_grad():
        vec.vector(site).mul_(400)  # a shift of the size of the hidden states
        vec.params[f"{site}__alpha"].copy_(torch.tensor([0.4, -2.0]))
    inputs = make_inputs(lm, ["What colour is it?", "Which?"])
    ours = _logits(lm, inputs, apply(lm.model, vec, lm.adapter))
    theirs = _logits(lm, inputs, live_original(lm, vec.vector(site).detach(), vec.params[f"{site}__alpha"].detach(),
                                               site))
    assert not torch.allclose(ours, _logits(lm, inputs), atol=1e-3)  # the shift does something
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_live_initialisation_is_the_originals():
    lm = tiny("idefics3")
    vec = get_method("live", {}).make_vectors(lm, LIVEConfig(), seed=0)
    v = vec.vector("mlp").detach()
    assert torch.equal(vec.params["mlp__alpha"], torch.zeros(2))  # alpha_init_value 0. -> sigmoid = 0.5
    assert abs(float(v.std()) - 0.01) < 0.002 and abs(float(v.mean())) < 0.002  # normal_(0, 0.01)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_live_kl_matches_the_original_formula(temperature):
    g = torch.Generator().manual_seed(0)
    # Logits of unit scale: no probability comes near the original's eps (1e-6), which m2iv leaves out (it caps
    # log-probabilities at log(1e-6) and damps the gradient of tokens the student deems impossible).
    stu, tea = torch.randn(3, 4, 50, generator=g), torch.randn(3, 4, 50, generator=g)  # (B, A, V)
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    s, t = stu[mask] / temperature, tea[mask] / temperature  # the tokens the original's masks keep, (N, V)
    eps = 1e-6
    original = (t.softmax(1) * ((t.softmax(1) + eps).log() - (s.softmax(1) + eps).log())).sum(1).mean() \
        * temperature**2
    ours = losses.mimicry(stu, F.log_softmax(tea, -1), None, mask, temperature)  # the cache holds log-probs
    torch.testing.assert_close(ours, original, rtol=1e-4, atol=1e-5)


def test_live_kl_with_the_originals_eps_matches_it_where_probabilities_are_tiny():
    """`kl_eps=1e-6` is the original's calculate_kl_divergence where eps matters (p_s << 1e-6); 0 is exact."""
    g = torch.Generator().manual_seed(1)
    stu, tea = torch.randn(2, 3, 40, generator=g) * 30, torch.randn(2, 3, 40, generator=g) * 30
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]], dtype=torch.bool)
    s, t = stu[mask], tea[mask]
    eps = 1e-6
    original = (t.softmax(1) * ((t.softmax(1) + eps).log() - (s.softmax(1) + eps).log())).sum(1).mean()
    ours = losses.mimicry(stu, F.log_softmax(tea, -1), None, mask, 1.0, eps=eps)
    torch.testing.assert_close(ours, original, rtol=1e-4, atol=1e-5)
    exact = losses.mimicry(stu, F.log_softmax(tea, -1), None, mask, 1.0)
    assert float(exact) > float(original) + 1.0  # the eps caps log p_s: the default (exact) KL is much larger here


def test_live_kl_positions_switch_is_the_originals_masks():
    """The original's masks keep the logits AT the answer tokens: the predictions of the 2nd answer token onward
    (left-padded rows; the prediction after EOS is not in m2iv's teacher cache)."""
    mask = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]], dtype=torch.bool)
    original = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1], [0, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(losses.answer_positions(mask, skip_first=True), original)
    assert torch.equal(losses.answer_positions(mask), mask)
    first = torch.tensor([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(losses.first_answer_position(mask), first)  # I2CL's ce_span=first


# -- I2CL ------------------------------------------------------------------------------------------
def i2cl_original(lm, cv: dict, coef: dict, noise_scale: float = 0.0) -> _Hooks:
    """inject_hook_func('linear', inject_pos='all'): o' = b*o + a*cv; in train mode o' += randn * |o'| * scale."""
    hooks = _Hooks()
    for layer in range(lm.adapter.num_layers):
        for site in ("attn", "mlp"):
            a, b = coef[site][0][layer], coef[site][1][layer]

            def hook(_m, _a, out, a=a, b=b, v=cv[site][layer]):
                o = _first(out)
                o = b * o + a * v.expand_as(o)
                if noise_scale:
                    o = o + torch.randn_like(o).detach() * torch.norm(o, p=2, dim=-1).detach().unsqueeze(-1) \
                        * noise_scale
                return _put(out, o)
            hooks.handles.append(lm.adapter.module(layer, site).register_forward_hook(hook))
    return hooks


@pytest.fixture(scope="module")
def i2cl_setup(tmp_path_factory):
    lm = tiny("idefics3")
    splits = method_splits(tmp_path_factory.mktemp("data"), 4, n_support=4)
    builder = PromptBuilder(lm, TASK.instruction, TASK.answer_template)
    return lm, builder, splits["support"][:3]


def test_i2cl_context_vectors_are_the_mean_last_token_outputs_of_demos_run_alone(i2cl_setup):
    lm, builder, demos = i2cl_setup
    ours = extract_context_vectors(lm, builder, demos, ["attn", "mlp"], [0, 1])
    latents: dict[str, list[torch.Tensor]] = {"attn": [], "mlp": []}
    for d in demos:  # extract_latent: one demonstration per forward, outputs[0] of tuples, [:, -1, :]
        batch = builder.encode([demo_prompt(builder, d)])
        batch.pop("query_start")
        seen: dict[tuple[str, int], torch.Tensor] = {}
        with _Hooks() as hooks:
            for layer in (0, 1):
                for site in ("attn", "mlp"):
                    def grab(_m, _a, o, key=(site, layer), seen=seen):
                        seen[key] = _first(o)[:, -1].detach()
                    hooks.handles.append(lm.adapter.module(layer, site).register_forward_hook(grab))
            with torch.no_grad():
                lm.model(**batch)
        for site in latents:
            latents[site].append(torch.cat([seen[(site, layer)] for layer in (0, 1)]))  # (L, D)
    for site in latents:  # post_fuse_method 'mean'
        torch.testing.assert_close(ours[site], torch.stack(latents[site]).mean(0), rtol=1e-5, atol=1e-5)


def _i2cl_vectors(lm, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = lm.adapter.hidden_size
    cv = {s: torch.randn(2, d, generator=g) * 3 for s in ("attn", "mlp")}
    vec = get_method("i2cl", {}).make_vectors(lm, cv, [0, 1], I2CLConfig())
    with torch.no_grad():
        for s in ("attn", "mlp"):
            vec.params[f"{s}__alpha"].copy_(torch.tensor([0.3, -0.2]))
            vec.params[f"{s}__beta"].copy_(torch.tensor([0.9, 1.2]))
    coef = {s: (vec.params[f"{s}__alpha"].detach(), vec.params[f"{s}__beta"].detach()) for s in ("attn", "mlp")}
    return vec, cv, coef


def test_i2cl_injection_matches_the_original_linear_hook(i2cl_setup):
    lm = i2cl_setup[0]
    vec, cv, coef = _i2cl_vectors(lm)
    assert vec.sites["attn"].operator == "linear" and vec.token_policy == "all"
    inputs = make_inputs(lm, ["What colour is it?", "Which?"])
    torch.testing.assert_close(_logits(lm, inputs, apply(lm.model, vec, lm.adapter)),
                               _logits(lm, inputs, i2cl_original(lm, cv, coef)), rtol=1e-4, atol=1e-4)


def test_i2cl_training_noise_matches_the_originals_draw_for_draw(i2cl_setup):
    lm = i2cl_setup[0]
    vec, cv, coef = _i2cl_vectors(lm, seed=1)
    inputs = make_inputs(lm, ["What colour is it?"])
    scale = 0.05  # large enough to move the logits visibly
    with torch.enable_grad():
        torch.manual_seed(7)
        with training_noise(lm, vec, scale), apply(lm.model, vec, lm.adapter):
            ours = lm.model(**inputs).logits.detach()
        torch.manual_seed(7)
        with i2cl_original(lm, cv, coef, noise_scale=scale):
            theirs = lm.model(**inputs).logits.detach()
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    clean = _logits(lm, inputs, apply(lm.model, vec, lm.adapter))
    assert not torch.allclose(ours, clean, atol=1e-3)  # the noise was there, and only while training


# -- MimIC -----------------------------------------------------------------------------------------
def mimic_original(lm, layer: int, v: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> _Hooks:
    """do_shift at one layer (MULTI_HEAD | LEARNABLE_SHIFT_SCALE): q, K post-RoPE from the attention's own
    projections; logZ2 over every key of the sequence, as the original (no mask)."""
    attn = lm.adapter.module(layer, "attn")
    H, Dh = lm.adapter.num_heads, lm.adapter.head_dim
    state = {}

    def pre(_m, args, kwargs):
        h = kwargs.get("hidden_states", args[0] if args else None)
        B, T, _ = h.shape
        cos, sin = kwargs["position_embeddings"]
        q = attn.q_proj(h).view(B, T, -1, Dh).transpose(1, 2)
        k = attn.k_proj(h).view(B, T, -1, Dh).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        log_z2 = torch.logsumexp(q @ k.transpose(-2, -1) / Dh**0.5, dim=-1).transpose(-2, -1)  # (B, T, H)
        log_z1 = torch.einsum("btnd,nd->btn", q.transpose(1, 2), w) + b  # MultiheadLinear
        state["mu"] = torch.exp(log_z1 - torch.logaddexp(log_z1, log_z2)).unsqueeze(-1)  # (B, T, H, 1)

    def o_pre(_m, args):
        o = args[0]
        B, T, _ = o.shape
        return ((o.view(B, T, H, Dh) + state["mu"] * v[None, None]).reshape(B, T, H * Dh), *args[1:])

    hooks = _Hooks()
    hooks.handles.append(attn.register_forward_pre_hook(pre, with_kwargs=True))
    hooks.handles.append(lm.adapter.module(layer, "attn_head").register_forward_pre_hook(o_pre))
    return hooks


def test_mimic_gated_head_shift_matches_the_original_at_the_last_position():
    """At the last layer the last position's logits depend on that position's shift only, where every key is
    visible: m2iv's masked logZ2 and the original's unmasked one agree there (earlier positions differ by design:
    the original lets a query see future keys in its gate; see methods/mimic/method.py)."""
    lm = tiny("idefics3")
    L, H, Dh = lm.adapter.num_layers, lm.adapter.num_heads, lm.adapter.head_dim
    g = torch.Generator().manual_seed(0)
    v, w, b = torch.randn(H, Dh, generator=g) * 2, torch.randn(H, Dh, generator=g) * 0.3, torch.randn(H, generator=g)
    vec = InContextVectors(num_layers=L, hidden_size=lm.adapter.hidden_size, num_heads=H, head_dim=Dh,
                           sites={"attn_head": SiteSpec("gated", [L - 1])}, method="mimic")
    with torch.no_grad():
        vec.params["attn_head__vector"][0].copy_(v)
        vec.params["attn_head__gate_w"][0].copy_(w)
        vec.params["attn_head__gate_b"][0].copy_(b)
    inputs = make_inputs(lm, ["What colour is it?"])
    ours = _logits(lm, inputs, apply(lm.model, vec, lm.adapter))[:, -1]
    theirs = _logits(lm, inputs, mimic_original(lm, L - 1, v, w, b))[:, -1]
    assert not torch.allclose(ours, _logits(lm, inputs)[:, -1], atol=1e-3)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_mimic_all_keys_normaliser_is_the_original_at_every_position():
    """`normaliser="all_keys"`: logZ2 over every key of the sequence, future ones included, as the original; then
    every position's logits agree with its hooks, not only the last one's."""
    lm = tiny("idefics3")
    L, H, Dh = lm.adapter.num_layers, lm.adapter.num_heads, lm.adapter.head_dim
    g = torch.Generator().manual_seed(0)
    v, w, b = torch.randn(H, Dh, generator=g) * 2, torch.randn(H, Dh, generator=g) * 0.3, torch.randn(H, generator=g)
    vec = get_method("mimic", {"method_config": {"normaliser": "all_keys"}}).make_vectors(lm)
    with torch.no_grad():
        vec.params["attn_head__vector"].zero_()  # no shift before the last layer
        vec.params["attn_head__vector"][L - 1].copy_(v)
        vec.params["attn_head__gate_w"][L - 1].copy_(w)
        vec.params["attn_head__gate_b"][L - 1].copy_(b)
    inputs = make_inputs(lm, ["What colour is it?"])
    ours = _logits(lm, inputs, apply(lm.model, vec, lm.adapter))
    theirs = _logits(lm, inputs, mimic_original(lm, L - 1, v, w, b))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    masked = get_method("mimic", {}).make_vectors(lm)  # zero shifts before the last layer, as above
    with torch.no_grad():
        for k, p in vec.params.items():
            masked.params[k].copy_(p)
    assert not torch.allclose(_logits(lm, inputs, apply(lm.model, masked, lm.adapter))[:, :-1], theirs[:, :-1],
                              atol=1e-3)  # the default (masked) differs from the original before the last position


def test_mimic_initialisation_is_the_originals():
    lm = tiny("idefics3")
    vec = get_method("mimic", {}).make_vectors(lm, seed=0)
    v, w = vec.vector("attn_head").detach(), vec.params["attn_head__gate_w"].detach()
    assert abs(float(v.std()) - 1e-3) < 3e-4  # randn * 0.001
    assert abs(float(w.std()) - 0.02) < 6e-3 and torch.equal(vec.params["attn_head__gate_b"], torch.zeros(2, 4))
