"""Composition operators: sum, stack (each entry applied in turn, exactly) and partition (each on its layer band),
checked against injecting the entries' hooks one after the other."""

from __future__ import annotations

import contextlib

import pytest
import torch

from conftest import logits_with, make_inputs, random_vectors, tiny
from m2iv.errors import M2IVError
from m2iv.library.compose import mask, parse_expression
from m2iv.vectors import apply
from m2iv.vectors.composition import compose_vectors


def _scaled(lm, seed: int, operator: str = "linear"):
    """Random vectors with non-trivial weight factors (alpha and beta away from 1)."""
    v = random_vectors(lm, scale=0.3, seed=seed, operator=operator)
    g = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():
        for key, p in v.params.items():
            if not key.endswith("__vector"):
                p.copy_(0.7 + 0.6 * torch.rand(p.shape, generator=g))
    return v


def _in_turn(lm, inputs, items):
    with torch.no_grad(), contextlib.ExitStack() as stack:
        for v in items:  # hooks registered in order run in order
            stack.enter_context(apply(lm.model, v, lm.adapter, freeze_base=False))
        return lm.model(**inputs).logits


@pytest.mark.parametrize("family", ["idefics3", "llama"])
def test_stack_equals_the_entries_applied_in_turn(family):
    lm = tiny(family)
    inputs = make_inputs(lm, ["What colour is it?", "Which shape?"])
    a, b = _scaled(lm, 1), _scaled(lm, 2)
    stacked = compose_vectors([a, b], [1.0, 1.0], "stack")
    torch.testing.assert_close(logits_with(lm, inputs, stacked), _in_turn(lm, inputs, [a, b]), rtol=1e-4, atol=1e-4)
    # weights scale each entry's shift, not its scale on h
    half = compose_vectors([a, b], [0.5, -1.0], "stack")
    a2, b2 = _scaled(lm, 1), _scaled(lm, 2)
    with torch.no_grad():
        for site in a2.sites:
            a2.vector(site).mul_(0.5)
            b2.vector(site).mul_(-1.0)
    torch.testing.assert_close(logits_with(lm, inputs, half), _in_turn(lm, inputs, [a2, b2]), rtol=1e-4, atol=1e-4)


def test_partition_puts_each_entry_on_its_band():
    lm = tiny("llama")
    inputs = make_inputs(lm, ["What colour is it?"])
    a, b = _scaled(lm, 1), _scaled(lm, 2)
    n = lm.adapter.num_layers
    low, high = list(range(n // 2)), list(range(n // 2, n))
    part = compose_vectors([a, b], [1.0, 1.0], "partition", [low, high])
    expected = _in_turn(lm, inputs, [mask(a, layers=low), mask(b, layers=high)])
    torch.testing.assert_close(logits_with(lm, inputs, part), expected, rtol=1e-4, atol=1e-4)
    # outside every band: the identity (beta 1, no shift)
    only_low = compose_vectors([a], [1.0], "partition", [low])
    for site in only_low.sites:
        assert torch.all(only_low.vector(site)[n // 2:] == 0)
        assert torch.all(only_low.scale(site, "beta")[n // 2:] == 1)


def test_sum_matches_combine_and_operators_refuse_what_they_cannot_do():
    lm = tiny("llama")
    a, b = _scaled(lm, 1), _scaled(lm, 2)
    s = compose_vectors([a, b], [0.5, 2.0], "sum")
    c = a.combine([0.5, 2.0], [b])
    for key in s.params:
        assert torch.equal(s.params[key], c.params[key])
    n = lm.adapter.num_layers
    with pytest.raises(M2IVError, match="partition"):
        compose_vectors([a, b], [1.0, 1.0], "sum", [[0], None])
    with pytest.raises(M2IVError, match="layer band per entry"):
        compose_vectors([a, b], [1.0, 1.0], "partition")
    with pytest.raises(M2IVError, match="affine"):
        norm = [random_vectors(lm, operator="norm_preserving", seed=s) for s in (1, 2)]
        compose_vectors(norm, [1.0, 1.0], "stack")
    with pytest.raises(M2IVError, match="unknown composition operator"):
        compose_vectors([a], [1.0], "blend")
    assert n > 1


def test_library_compose_records_operator_and_bands(tmp_path):
    from m2iv.library import Library
    from m2iv.vectors import load_vectors, save_vectors

    lm = tiny("llama")
    a, b = _scaled(lm, 1), _scaled(lm, 2)
    save_vectors(a, tmp_path / "a", adapter=lm.adapter, base_model="tiny:llama")
    save_vectors(b, tmp_path / "b", adapter=lm.adapter, base_model="tiny:llama")
    assert [(t.weight, t.ref, t.band) for t in parse_expression("a@0-1 + 0.5*b@2")] == [(1.0, "a", "0-1"),
                                                                                        (0.5, "b", "2")]
    with Library(tmp_path / "lib") as lib:
        lib.add(tmp_path / "a", name="a")
        lib.add(tmp_path / "b", name="b")
        e = lib.compose("ab", "a@0 + b@1", operator="partition")
        assert e.provenance["operator"] == "partition"
        assert [t["band"] for t in e.provenance["terms"]] == [[0], [1]]
        got = load_vectors(lib.export("ab", tmp_path / "ab"), adapter=lm.adapter)[0]
        want = compose_vectors([a, b], [1.0, 1.0], "partition", [[0], [1]])
        for key in want.params:
            torch.testing.assert_close(got.params[key], want.params[key])
        with pytest.raises(M2IVError, match="partition"):
            lib.compose("bad", "a@0 + b")  # bands without the partition operator
