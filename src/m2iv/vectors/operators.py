"""How a vector enters a branch output h (docs/method-notes.md).

Every operator maps (h, v, alpha, beta) -> h', broadcasting over (B, T, ..., D):
- additive:        h + a*v                              (LIVE-like form A, TV/FV adds)
- linear:          b*h + a*v                            (I2CL; M²IV form B, the ζ/η pair)
- norm_preserving: |h| * (h + a*v) / |h + a*v|          (LIVE's shift, norm kept per token)
- icv:             |h| * n(n(h) + a(1 + max(0, cos(h, -v))) n(v))   (ICV, Liu+23; n = L2-normalize)
- replace:         v                                    (Task Vectors patch a state outright)
- gated:           h + mu*v, mu = sigmoid(w.q + b - logZ2)  (MimIC heads; attn_head only, see gate.py)
- virtual_kv:      a*h + v, a = Z2 / (Z1 + Z2) the real keys' share and v the virtual values' part of
                   attention over [virtual keys; real keys]  (HiFICL heads; attn_head only, see virtual_kv.py)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Operator = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]

_EPS = 1e-6


def additive(h, v, a, b=None):
    return h + a * v


def linear(h, v, a, b):
    return b * h + a * v


def norm_preserving(h, v, a, b=None):
    shifted = h + a * v
    return shifted * (h.norm(dim=-1, keepdim=True) / shifted.norm(dim=-1, keepdim=True).clamp_min(_EPS))


def icv(h, v, a, b=None):
    cos = F.cosine_similarity(h, -v.expand_as(h), dim=-1, eps=_EPS).unsqueeze(-1)
    mixed = F.normalize(h, dim=-1, eps=_EPS) + a * (1 + cos.clamp_min(0)) * F.normalize(v, dim=-1, eps=_EPS)
    return h.norm(dim=-1, keepdim=True) * F.normalize(mixed, dim=-1, eps=_EPS)


def replace(h, v, a=None, b=None):
    return v.expand_as(h)


def gated(h, v, mu, b=None):
    return h + mu * v


def virtual_kv(h, v, share, b=None):
    return share * h + v


OPERATORS: dict[str, Operator] = {
    "additive": additive, "linear": linear, "norm_preserving": norm_preserving, "icv": icv, "replace": replace,
    "gated": gated, "virtual_kv": virtual_kv}
# Scalars each operator learns per (layer[, head]); "alpha" scales v, "beta" scales h.
OPERATOR_SCALES: dict[str, tuple[str, ...]] = {
    "additive": ("alpha",), "linear": ("alpha", "beta"), "norm_preserving": ("alpha",), "icv": ("alpha",),
    "replace": (), "gated": ("gate_w", "gate_b"), "virtual_kv": ("key_a", "key_b", "value_a", "value_b")}
# Value at which a scale leaves h unchanged for a zero vector (beta) or gives v its full weight (alpha).
SCALE_INIT = {"alpha": 1.0, "beta": 1.0, "gate_w": 0.0, "gate_b": 0.0}
