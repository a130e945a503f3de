"""Reading activations at injection sites: the extraction half of TV, FV, ICV, I2CL and MTV.

    with record(model, adapter, sites=("attn", "mlp")) as rec:
        model(**batch)
    rec.stacked("mlp")  # (N, L, D): each sample's last-token MLP output at every layer

Positions default to the last one of each sequence (left padding keeps it real). `positions="all"`
keeps full (B, T, D) tensors. Hooks are read-only and always removed on exit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from m2iv.models.adapter import ModelAdapter


class Recording:
    def __init__(self, num_layers: int) -> None:
        self.num_layers = num_layers
        self.data: dict[str, dict[int, list[torch.Tensor]]] = defaultdict(lambda: defaultdict(list))

    def stacked(self, site: str) -> torch.Tensor:
        """(N, L, ...) over every recorded call, for the recorded layers in order."""
        per_layer = self.data[site]
        layers = sorted(per_layer)
        return torch.stack([torch.cat(per_layer[i]) for i in layers], dim=1)

    def clear(self) -> None:
        self.data.clear()


def _pick(h: torch.Tensor, positions: str) -> torch.Tensor:
    return h[:, -1].detach().float().cpu() if positions == "last" else h.detach().float().cpu()


@contextmanager
def record(model, adapter: ModelAdapter, sites: tuple[str, ...] = ("layer",), layers: list[int] | None = None,
           positions: str = "last") -> Iterator[Recording]:
    """Record site activations (attn: MHA output; attn_head: o_proj input as (.., H, Dh); mlp; layer)."""
    rec = Recording(adapter.num_layers)
    hooks = []
    layers = list(range(adapter.num_layers)) if layers is None else layers

    def out_hook(site: str, layer: int):
        def hook(_m, _a, out):
            h = out[0] if isinstance(out, tuple) else out
            rec.data[site][layer].append(_pick(h, positions))

        return hook

    def in_hook(layer: int):
        def hook(_m, args):
            h = args[0]
            h = h.reshape(*h.shape[:-1], adapter.num_heads, adapter.head_dim)  # (B, T, H, Dh)
            rec.data["attn_head"][layer].append(_pick(h, positions))

        return hook

    try:
        for site in sites:
            for i in layers:
                mod = adapter.module(i, site)
                hooks.append(mod.register_forward_pre_hook(in_hook(i)) if site == "attn_head"
                             else mod.register_forward_hook(out_hook(site, i)))
        yield rec
    finally:
        for h in hooks:
            h.remove()
