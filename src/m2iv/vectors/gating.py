"""Taking a condition's decision: once per sequence, from the un-steered prompt, before any vector acts.

When a call starts a sequence (the prefill of `generate()`, or a plain forward), a pre-hook on the top-level
model runs a *probe*: the same call again, with no KV cache and every vector hook standing aside, cut short by
an exception raised from a forward hook on the condition's layer once that layer's output is pooled. The
decision (one bool per row) is then the tracker's row gate for the real call and for every later call of the
sequence (decoding steps with a cache, or longer input_ids without one), so:

- a row's prompt is scored as the plain model reads it, whichever layers the vectors sit on;
- rows that fire and rows that do not can share a batch; a row that does not fire is the plain model exactly;
- the probe costs a forward pass up to the condition's layer, once per prompt.

Only `register_forward_pre_hook` / `register_forward_hook` are used, like the rest of the injection engine.
"""

from __future__ import annotations

import torch
from torch import nn

from m2iv.models.adapter import ModelAdapter
from m2iv.vectors.condition import Condition, pool
from m2iv.vectors.positions import TokenTracker


class _ProbeDone(Exception):
    """Raised from the condition layer's hook to stop the probe forward once its state is read."""


class ConditionGate:
    def __init__(self, model: nn.Module, adapter: ModelAdapter, condition: Condition, tracker: TokenTracker) -> None:
        self.model, self.condition, self.tracker = model, condition, tracker
        self.layer = adapter.module(condition.layer, "layer")
        self._mask: torch.Tensor | None = None
        self.scores: torch.Tensor | None = None  # the last decision's scores (B,), for records and tests

    @property
    def fired(self) -> list[bool] | None:
        g = self.tracker.row_gate
        return None if g is None else [bool(x) for x in g.tolist()]

    def hooks(self) -> list[torch.utils.hooks.RemovableHandle]:
        """Register the decision hooks (after the tracker's own pre-hook, which marks new sequences)."""
        return [self.model.register_forward_pre_hook(self.pre_hook, with_kwargs=True),
                self.layer.register_forward_hook(self.layer_hook)]

    def pre_hook(self, module, args, kwargs) -> None:
        if self.tracker.probing or not self.tracker.new_sequence:
            return
        probe = {**kwargs, "use_cache": False}
        for key in ("cache", "past_key_values"):  # the cache's name moved in transformers 5; fill neither
            if key in probe:
                probe[key] = None
        mask = kwargs.get("attention_mask")
        self._mask = mask if torch.is_tensor(mask) and mask.dim() == 2 else None
        self.tracker.probing = True
        try:
            with torch.no_grad():
                module(*args, **probe)
        except _ProbeDone:
            pass
        finally:
            self.tracker.probing = False
            self._mask = None

    def layer_hook(self, _module, _args, out) -> None:
        if not self.tracker.probing:
            return
        h = out[0] if isinstance(out, tuple) else out
        pooled = pool(h, self._mask, self.condition.pool)
        self.scores = self.condition.score(pooled).cpu()
        self.tracker.row_gate = self.condition.fires(pooled).cpu()
        self.tracker._masks = {}
        raise _ProbeDone


__all__ = ["ConditionGate"]
