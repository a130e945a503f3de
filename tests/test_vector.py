import pytest
import torch

from conftest import make_inputs, random_vectors, tiny
from m2iv.errors import M2IVError
from m2iv.vectors import apply
from m2iv.vectors.vector import InContextVectors, SiteSpec


def test_shapes_and_parameter_count_follow_the_sites():
    a = tiny("llama").adapter  # L=2, D=64, H=4, Dh=16
    vec = InContextVectors.for_model(a, sites=("attn", "mlp"), operator="linear")
    assert vec.vector("attn").shape == (2, 64) and vec.scale("mlp", "beta").shape == (2,)
    assert vec.num_parameters() == 2 * 2 * 64 + 2 * 2 * 2  # M²IV: 2dL vectors + two scalars per branch/layer
    heads = InContextVectors.for_model(a, sites=("attn_head",), operator="additive")
    assert heads.vector("attn_head").shape == (2, 4, 16) and heads.scale("attn_head", "alpha").shape == (2, 4)


@pytest.mark.parametrize("kw,match", [(dict(sites={"nope": SiteSpec()}), "unknown site"),
                                      (dict(sites={"mlp": SiteSpec("magic", [0])}), "unknown operator"),
                                      (dict(sites={"mlp": SiteSpec("linear", [5])}), "layers"),
                                      (dict(sites={"mlp": SiteSpec("linear", [0])}, token_policy="x"), "policy"),
                                      (dict(sites={}), "at least one site")])
def test_bad_specs_are_refused(kw, match):
    with pytest.raises(M2IVError, match=match):
        InContextVectors(num_layers=2, hidden_size=8, num_heads=2, head_dim=4, **kw)


def test_combination_injects_the_weighted_sum_of_effective_vectors():
    lm = tiny("llama")
    v1 = random_vectors(lm, sites=("mlp",), operator="additive", seed=1)
    v2 = random_vectors(lm, sites=("mlp",), operator="additive", seed=2)
    with torch.no_grad():
        v1.params["mlp__alpha"].fill_(0.5)
    both = v1.combine([1.0, -2.0], [v2])
    torch.testing.assert_close(both.vector("mlp"), 0.5 * v1.vector("mlp") - 2.0 * v2.vector("mlp"))
    inputs = make_inputs(lm, ["hi"])
    with torch.no_grad():
        base = lm.model(**inputs).logits
        with apply(lm.model, v1 + (-v1), lm.adapter):
            cancelled = lm.model(**inputs).logits
    torch.testing.assert_close(cancelled, base)


def test_combination_of_different_layouts_is_refused():
    lm = tiny("llama")
    with pytest.raises(M2IVError, match="different sites"):
        random_vectors(lm, sites=("mlp",)) + random_vectors(lm, sites=("attn",))
