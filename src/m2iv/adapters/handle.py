"""One removable handle for an adapter's hooks: `remove()` detaches them and restores `requires_grad`."""

from __future__ import annotations

import torch
from torch import nn


class HookHandle:
    """Hooks and frozen flags of one attachment; usable as a context manager. `set_query_start` is accepted and
    ignored (adapters act on every token), so the trainer and the runner treat it like a vector injection."""

    def __init__(self) -> None:
        self.hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._frozen: list[tuple[nn.Parameter, bool]] = []

    def freeze(self, model: nn.Module, keep: set[int]) -> None:
        """Freeze every parameter of `model` except those whose id is in `keep` (restored by `remove`)."""
        for p in model.parameters():
            if id(p) not in keep:
                self._frozen.append((p, p.requires_grad))
                p.requires_grad_(False)

    def set_query_start(self, query_start) -> None:
        pass

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()
        self.hooks.clear()
        for p, flag in self._frozen:
            p.requires_grad_(flag)
        self._frozen.clear()

    def __enter__(self) -> HookHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
