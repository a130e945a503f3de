"""The injection engine: forward hooks that add in-context vectors to a model, removable as one handle.

    vectors = InContextVectors.for_model(adapter)             # zeros: the model is unchanged
    with apply(model, vectors, adapter) as handle:            # hooks on; removed on exit or error
        logits = model(**inputs).logits

Only `register_forward_hook` / `register_forward_pre_hook` are used: no module is replaced and no
forward is patched, so state_dict keys and attention kernels stay as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from m2iv.models.adapter import ModelAdapter, discover
from m2iv.vectors.compat import compat_reason
from m2iv.vectors.operators import OPERATORS
from m2iv.vectors.positions import TokenTracker
from m2iv.vectors.vector import InContextVectors


def _untuple(out):
    """Branch outputs are a Tensor (MLP, v5 decoder layers) or a tuple whose first item is the state."""
    return (out[0], out[1:]) if isinstance(out, tuple) else (out, None)


def _retuple(h, rest):
    return h if rest is None else (h, *rest)


def _operands(vectors: InContextVectors, site: str, row: int, h: torch.Tensor):
    """This row's vector, alpha and beta (None when the operator has none) on h's device and dtype."""
    v = vectors.vector(site)[row].to(h.device, h.dtype)  # (D,) or (H, Dh)
    a = vectors.scale(site, "alpha")
    b = vectors.scale(site, "beta")
    a = None if a is None else a[row].to(h.device, h.dtype)  # () or (H,)
    b = None if b is None else b[row].to(h.device, h.dtype)
    return v, a, b


def _apply_op(h: torch.Tensor, vectors: InContextVectors, site: str, row: int, tracker: TokenTracker,
              attn_module: nn.Module | None = None):
    """h: (B, T, D) for attn/mlp/layer; (B, T, H*Dh) at the o_proj input for attn_head."""
    spec = vectors.sites[site]
    op = OPERATORS[spec.operator]
    if spec.operator == "virtual_kv":  # HiFICL: no shift vector; the virtual keys/values give (a, v)
        from m2iv.vectors.virtual_kv import terms

        x = h.view(*h.shape[:2], vectors.num_heads, vectors.head_dim)
        share, part = terms(attn_module, vectors, site, row, x)
        return _masked(op(x, part, share, None).reshape(h.shape), h, tracker)
    v, a, b = _operands(vectors, site, row, h)
    x = h
    if site == "attn_head":
        B, T, _ = h.shape
        x = h.view(B, T, vectors.num_heads, vectors.head_dim)  # (B, T, H, Dh)
        a = None if a is None else a.unsqueeze(-1)  # (H, 1)
        b = None if b is None else b.unsqueeze(-1)
    if spec.operator == "gated":
        from m2iv.vectors.gate import gate

        w = vectors.params[f"{site}__gate_w"][row].to(h.device)
        b0 = vectors.params[f"{site}__gate_b"][row].to(h.device)
        a, b = gate(attn_module, w, b0).to(h.dtype), None  # mu: (B, T, H, 1)
    new = op(x, v, a, b)
    if site == "attn_head":
        new = new.reshape(h.shape)
    return _masked(new, h, tracker)


def _masked(new: torch.Tensor, h: torch.Tensor, tracker: TokenTracker) -> torch.Tensor:
    """`new` at the positions the token policy selects, `h` elsewhere."""
    mask = tracker.mask(h)  # (B, T) or None
    return new if mask is None else torch.where(mask.unsqueeze(-1), new, h)


def _inference_fn(vectors: InContextVectors, site: str, row: int, h: torch.Tensor):
    """h -> h' with the operands cast and pre-multiplied once: the hook then costs one fused op per call,
    which is what keeps M²IV's latency at zero-shot's (60 hooks per forward on a 30-layer model)."""
    spec = vectors.sites[site]
    v, a, b = _operands(vectors, site, row, h)
    if spec.operator == "additive":
        av = a * v
        return lambda x: x + av
    if spec.operator == "linear":
        av = a * v
        return lambda x: torch.addcmul(av, b, x)  # b*x + a*v in one kernel
    op = OPERATORS[spec.operator]
    return lambda x: op(x, v, a, b)


def _output_hook(vectors: InContextVectors, site: str, row: int, tracker: TokenTracker):
    # A factory, so that each hook captures its own site and row. Without autograd (generation,
    # evaluation) the prepared operands are cached and rebuilt only when a parameter is replaced or
    # changed in place (its version counter moves); with autograd every call reads the live parameters.
    # The cache lives on the vectors object, so injecting the same vectors again (per batch, per routed
    # group) reuses the prepared operands instead of rebuilding them on the first call.
    names = [k for k in vectors.params if k.startswith(f"{site}__")]
    cache: dict = vectors.__dict__.setdefault("_inference_cache", {}).setdefault((site, row), {})

    def hook(_module, _args, out):
        if _stand_aside(tracker):
            return None
        h, rest = _untuple(out)
        if torch.is_grad_enabled() or tracker.policy != "all":
            return _retuple(_apply_op(h, vectors, site, row, tracker), rest)
        state = (h.device, h.dtype, *((id(p), p._version) for p in map(vectors.params.__getitem__, names)))
        if cache.get("state") != state:
            cache["state"], cache["fn"] = state, _inference_fn(vectors, site, row, h)
        new = cache["fn"](h)
        return _retuple(_masked(new, h, tracker) if tracker.gated else new, rest)

    return hook


def _stand_aside(tracker: TokenTracker) -> bool:
    """A condition's probe is reading the plain model, or no row of this sequence fired its condition."""
    return tracker.probing or (tracker.row_gate is not None and not bool(tracker.row_gate.any()))


def _input_hook(vectors: InContextVectors, site: str, row: int, tracker: TokenTracker, attn_module=None):
    def hook(_module, args):
        if _stand_aside(tracker):
            return None
        return (_apply_op(args[0], vectors, site, row, tracker, attn_module), *args[1:])

    return hook


class InjectionHandle:
    """Owns every hook of one injection; `remove()` detaches them all and restores requires_grad."""

    def __init__(self, model: nn.Module, vectors: InContextVectors, adapter: ModelAdapter, tracker: TokenTracker):
        self.model, self.vectors, self.adapter, self.tracker = model, vectors, adapter, tracker
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._frozen: list[tuple[nn.Parameter, bool]] = []
        self._undo: list = []  # callables restoring other state (the gate's attention implementation)
        self.gate: Any = None  # the ConditionGate (vectors/gating.py) when the vectors carry a condition

    @property
    def fired(self) -> list[bool] | None:
        """Per row of the last sequence, whether the vectors' condition fired (None without a condition)."""
        return None if self.gate is None else self.gate.fired

    def set_query_start(self, query_start) -> None:
        self.tracker.set_query_start(query_start)

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        for p, flag in self._frozen:
            p.requires_grad_(flag)
        self._frozen.clear()
        while self._undo:
            self._undo.pop()()

    def __enter__(self) -> InjectionHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def inject(model: nn.Module, vectors: InContextVectors, adapter: ModelAdapter | None = None,
           token_policy: str | None = None, freeze_base: bool = True, condition: bool = True) -> InjectionHandle:
    """Attach `vectors` to `model`; the returned handle removes them. Base weights are frozen while
    attached (gradients reach the vectors only) unless `freeze_base=False`, which is what inference should
    pass: requires_grad also steers PyTorch's kernel choice even under no_grad (a 3-D @ 2-D matmul such as
    the LM head on the last position of a batch is folded into one mm only when the weight requires grad,
    else it runs as a bmm over a batch-expanded weight, ~30 ms on the sandbox at batch 8), so freezing
    for answering would make injected runs slower than the plain model for reasons not the vectors'.

    Vectors that carry a condition act only on the sequences whose prompt fires it (vectors/gating.py);
    `condition=False` applies them everywhere (training, and measuring what the condition adds)."""
    adapter = adapter or discover(model)
    compat_reason(vectors, adapter)
    policy = token_policy or vectors.token_policy
    tracker = TokenTracker(policy, adapter.image_token_ids)
    handle = InjectionHandle(model, vectors, adapter, tracker)
    try:
        if freeze_base:
            vec_ids = {id(p) for p in vectors.parameters()}
            for p in model.parameters():
                if id(p) not in vec_ids:
                    handle._frozen.append((p, p.requires_grad))
                    p.requires_grad_(False)
        attention_ops = [spec for spec in vectors.sites.values() if spec.operator in ("gated", "virtual_kv")]
        if attention_ops:
            from m2iv.vectors.gate import enable

            all_keys = any(spec.normaliser == "all_keys" for spec in attention_ops)
            handle._undo.append(enable(model, adapter, all_keys=all_keys))
        gated = condition and vectors.condition is not None
        if policy != "all" or gated:  # "all" needs no positions: skip the per-call bookkeeping on the top-level model
            handle._hooks.append(model.register_forward_pre_hook(tracker.pre_hook, with_kwargs=True))
            handle._hooks.append(model.register_forward_hook(tracker.post_hook, with_kwargs=True, always_call=True))
        if gated:
            from m2iv.vectors.gating import ConditionGate

            assert vectors.condition is not None
            handle.gate = ConditionGate(model, adapter, vectors.condition, tracker)
            handle._hooks.extend(handle.gate.hooks())
        for site, spec in vectors.sites.items():
            for row, layer in enumerate(spec.layers):
                module = adapter.module(layer, site)
                if site == "attn_head":
                    attn = adapter.module(layer, "attn")
                    handle._hooks.append(module.register_forward_pre_hook(
                        _input_hook(vectors, site, row, tracker, attn)))
                else:
                    handle._hooks.append(module.register_forward_hook(_output_hook(vectors, site, row, tracker)))
    except BaseException:
        handle.remove()
        raise
    return handle


@contextmanager
def apply(model: nn.Module, vectors: InContextVectors, adapter: ModelAdapter | None = None,
          token_policy: str | None = None, freeze_base: bool = True, condition: bool = True
          ) -> Iterator[InjectionHandle]:
    """Context-manager twin of `inject`: every hook is removed on exit, also after an exception."""
    handle = inject(model, vectors, adapter, token_policy=token_policy, freeze_base=freeze_base, condition=condition)
    try:
        yield handle
    finally:
        handle.remove()
