"""Composition operators: one vector set that does what several would do together.

Per layer and site every additive or linear entry is an affine map of the branch output, h -> b*h + a*v (b = 1 for
additive). Three ways to put entries i = 1..n with weights w_i together:

    sum        h -> b_1*h + sum_i w_i*a_i*v_i              the shifts added, the first entry's scale on h
    stack      h -> f_n(...f_2(f_1(h))), f_i = b_i*h + w_i*a_i*v_i
               = (prod_i b_i)*h + sum_i (prod_{j>i} b_j) * w_i*a_i*v_i     each applied in turn, exactly
    partition  stack, but entry i acts only on its layer band (elsewhere it is the identity): each effect on
               the layers where it lives (bands from a per-band ablation, `m2iv bench library`)

`sum` works for every shift operator (it is `InContextVectors.combine`); `stack` and `partition` need the affine
ones. The result is a `linear` set (an `additive` one when every entry is additive) with alpha = 1.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from m2iv.errors import M2IVError
from m2iv.vectors.vector import InContextVectors, shared_condition

OPERATORS = ("sum", "stack", "partition")
AFFINE = ("additive", "linear")


def _affine(items: list[InContextVectors], operator: str) -> None:
    for v in items:
        ops = {sp.operator for sp in v.sites.values()}
        if not ops <= set(AFFINE):
            raise M2IVError(f"the {operator} composition applies affine maps (operators {', '.join(AFFINE)}); these "
                            f"vectors use {', '.join(sorted(ops))}: compose them with the sum operator")


def compose_vectors(items: list[InContextVectors], weights: list[float], operator: str = "sum",
                    bands: list[list[int] | None] | None = None) -> InContextVectors:
    """One vector set composing `items` (same layout) with `weights` by `operator`; `bands[i]` (partition) lists the
    layers item i acts on (None: all of its layers)."""
    if operator not in OPERATORS:
        raise M2IVError(f"unknown composition operator {operator!r}; use {', '.join(OPERATORS)}")
    if len(weights) != len(items) or not items:
        raise M2IVError(f"got {len(weights)} weights for {len(items)} vector sets")
    if operator == "sum":
        if bands and any(b is not None for b in bands):
            raise M2IVError("layer bands (name@LAYERS) belong to the partition operator; add --operator partition")
        return items[0].combine(list(weights), items[1:])
    for o in items[1:]:
        items[0]._check_same_layout(o)
    _affine(items, operator)
    bands = list(bands) if bands is not None else [None] * len(items)
    if len(bands) != len(items):
        raise M2IVError(f"got {len(bands)} layer bands for {len(items)} vector sets")
    if operator == "partition" and all(b is None for b in bands):
        raise M2IVError("the partition operator needs a layer band per entry, e.g. 'caps@20-29 + french@0-19'")
    first = items[0]
    linear = any(sp.operator == "linear" for v in items for sp in v.sites.values())
    sites = {s: replace(sp, operator="linear" if linear else "additive", scale_activation="identity")
             for s, sp in first.sites.items()}
    out = InContextVectors(num_layers=first.num_layers, hidden_size=first.hidden_size, num_heads=first.num_heads,
                           head_dim=first.head_dim, sites=sites, token_policy=first.token_policy, method="composed",
                           dtype=next(first.parameters()).dtype, condition=shared_condition(items))
    with torch.no_grad():
        for site, spec in first.sites.items():
            shift = torch.zeros_like(first.vector(site))
            scale = torch.ones(shift.shape[:-1], dtype=shift.dtype)
            for w, item, band in zip(weights, items, bands, strict=True):
                on = torch.tensor([band is None or layer in band for layer in spec.layers])
                on = on.view(-1, *([1] * (shift.dim() - 2)))  # (n,) or (n, 1) per head
                a = item.scale(site, "alpha")
                b = item.scale(site, "beta")
                a = torch.ones_like(scale) if a is None else a
                b = torch.ones_like(scale) if b is None else torch.where(on, b, torch.ones_like(b))
                shift = b.unsqueeze(-1) * shift + on.unsqueeze(-1) * w * a.unsqueeze(-1) * item.vector(site)
                scale = b * scale
            out.params[f"{site}__vector"].copy_(shift)
            out.params[f"{site}__alpha"].fill_(1.0)
            if linear:
                out.params[f"{site}__beta"].copy_(scale)
    return out


__all__ = ["AFFINE", "OPERATORS", "compose_vectors"]
