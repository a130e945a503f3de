"""Conditions: a vector acts only on the prompts whose hidden state fires its condition (CAST-style gating).

A condition reads one decoder layer's output on the prompt, pools it over the prompt's real tokens (their
mean, or the last one), scores it against a stored direction, and fires on one side of a threshold:

    similarity "cosine":  score = cos(h - center, vector)
        kind "direction": vector = mean(positive) - mean(negative), center = their midpoint (diff-in-means)
        kind "prototype": vector = mean of the positive prompts' normalised states, center = 0 (ELICIT-style gate)
    similarity "cast":    score = cos(h, tanh(P h)), P = v v^T / |v|^2   (CAST, IBM activation-steering)

    fires = score >= threshold (side "above") or score <= threshold (side "below")

The tensors are kept in float32 whatever the vectors' dtype: a decision near the threshold must not flip with
the precision the behaviour vectors were saved in. Fitting from data lives in `m2iv.train.condition`; the hooks
that take the decision once per sequence live in `m2iv.vectors.gating`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from m2iv.errors import M2IVError

KINDS = ("direction", "prototype")
SIMILARITIES = ("cosine", "cast")
POOLS = ("mean", "last")
SIDES = ("above", "below")
TENSORS = ("condition.vector", "condition.center")
_FIELDS = {"kind", "layer", "pool", "similarity", "threshold", "side", "fit"}


@dataclass
class Condition:
    layer: int  # decoder layer whose output is read
    vector: torch.Tensor  # (D,)
    center: torch.Tensor  # (D,); zeros for prototypes and CAST's similarity
    threshold: float
    kind: str = "direction"
    similarity: str = "cosine"
    pool: str = "mean"
    side: str = "above"
    fit: dict[str, Any] = field(default_factory=dict)  # how it was fitted and its held-out scores

    def __post_init__(self) -> None:
        self.vector = self.vector.detach().float().cpu()
        self.center = self.center.detach().float().cpu()
        for name, value, choices in (("kind", self.kind, KINDS), ("similarity", self.similarity, SIMILARITIES),
                                     ("pool", self.pool, POOLS), ("side", self.side, SIDES)):
            if value not in choices:
                raise M2IVError(f"condition {name} {value!r} is not one of {', '.join(choices)}")
        if self.vector.dim() != 1 or self.center.shape != self.vector.shape:
            raise M2IVError(f"a condition needs a vector and a center of one shape (D,); got "
                            f"{tuple(self.vector.shape)} and {tuple(self.center.shape)}")
        if not math.isfinite(float(self.threshold)):
            raise M2IVError(f"condition threshold {self.threshold!r} is not a finite number")
        self.threshold = float(self.threshold)

    # -- the decision ---------------------------------------------------------------------------------
    def score(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, D) pooled states -> (B,) scores, in float32."""
        h = pooled.float()
        v = self.vector.to(h.device)
        if self.similarity == "cast":
            proj = torch.tanh((h @ v / v.dot(v).clamp_min(1e-12)).unsqueeze(-1) * v)  # tanh(P h), P = v v^T/|v|^2
            return F.cosine_similarity(h, proj, dim=-1, eps=1e-12)
        return F.cosine_similarity(h - self.center.to(h.device), v.expand_as(h), dim=-1, eps=1e-12)

    def fires(self, pooled: torch.Tensor) -> torch.Tensor:
        s = self.score(pooled)
        return s >= self.threshold if self.side == "above" else s <= self.threshold

    # -- (de)serialisation ---------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "layer": self.layer, "pool": self.pool, "similarity": self.similarity,
                "threshold": self.threshold, "side": self.side, "fit": self.fit}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"condition.vector": self.vector.contiguous(), "condition.center": self.center.contiguous()}

    @classmethod
    def from_json(cls, spec: dict, hidden_size: int, tensors: dict[str, torch.Tensor] | None = None) -> Condition:
        """A condition from its config entry and (when given) its two tensors; zeros until `load` fills them."""
        t = tensors or {}
        vector = t.get("condition.vector", torch.zeros(hidden_size))
        center = t.get("condition.center", torch.zeros(hidden_size))
        return cls(layer=int(spec["layer"]), vector=vector, center=center, threshold=float(spec["threshold"]),
                   kind=spec.get("kind", "direction"), similarity=spec.get("similarity", "cosine"),
                   pool=spec.get("pool", "mean"), side=spec.get("side", "above"), fit=dict(spec.get("fit") or {}))

    def same_as(self, other: Condition | None) -> bool:
        """Equal decisions on every input: the same fields (fit record aside) and the same tensors."""
        if other is None:
            return False
        mine, theirs = self.to_json(), other.to_json()
        mine.pop("fit")
        theirs.pop("fit")
        return mine == theirs and torch.equal(self.vector, other.vector) and torch.equal(self.center, other.center)


def pool(h: torch.Tensor, attention_mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """(B, T, D) states of a (left- or right-padded) prompt -> (B, D): the mean over real tokens, or the last one."""
    if how not in POOLS:
        raise M2IVError(f"condition pool {how!r} is not one of {', '.join(POOLS)}")
    if attention_mask is None:
        attention_mask = torch.ones(h.shape[:2], dtype=torch.long, device=h.device)
    m = attention_mask.to(h.device)[:, -h.shape[1]:].float()
    if how == "last":
        last = (m.cumsum(-1) * m).argmax(-1)  # the last position whose mask is 1
        return h[torch.arange(h.shape[0], device=h.device), last].float()
    return (h.float() * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp_min(1.0)


def validate_condition(spec: Any, where: str, num_layers: int) -> None:
    """Refuse a malformed `condition` entry of a vector config (one line naming the field)."""
    fix = "the file is damaged or was not written by m2iv; refit the condition"
    if not isinstance(spec, dict) or set(spec) - _FIELDS:
        raise M2IVError(f"{where}: field condition must be an object with fields among {', '.join(sorted(_FIELDS))} "
                        f"({fix})")
    layer = spec.get("layer")
    if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < num_layers:
        raise M2IVError(f"{where}: field condition.layer is {layer!r}; it must be a layer index in [0, {num_layers}) "
                        f"({fix})")
    th = spec.get("threshold")
    if not isinstance(th, (int, float)) or isinstance(th, bool) or not math.isfinite(th):
        raise M2IVError(f"{where}: field condition.threshold is {th!r}; it must be a finite number ({fix})")
    for name, choices in (("kind", KINDS), ("similarity", SIMILARITIES), ("pool", POOLS), ("side", SIDES)):
        if spec.get(name, choices[0]) not in choices:
            raise M2IVError(f"{where}: field condition.{name} is {spec.get(name)!r}; it must be one of "
                            f"{', '.join(choices)} ({fix})")
    if not isinstance(spec.get("fit", {}), dict):
        raise M2IVError(f"{where}: field condition.fit must be an object ({fix})")


__all__ = ["Condition", "KINDS", "POOLS", "SIDES", "SIMILARITIES", "TENSORS", "pool", "validate_condition"]
