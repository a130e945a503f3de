"""The optimiser step every stage of the sandbox recipe shares: the project's warm-up + cosine schedule
(`m2iv.train.schedule`, the vector trainer's) held above a floor, gradient clipping to norm 1, AdamW; and the
progress log."""

from __future__ import annotations

import time

import torch

from m2iv.sandbox.recipe.config import LR_FLOOR, WARMUP_STEPS
from m2iv.train.schedule import warmup_cosine


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def lr_at(step: int, total: int, base: float) -> float:
    """`base` x the trainer's multiplier over WARMUP_STEPS linear warm-up steps, then cosine to LR_FLOOR."""
    # (WARMUP_STEPS + 0.5) / total: the schedule takes the warm-up as a fraction and floors it back to whole steps
    mult = warmup_cosine(step, max(1, total), (WARMUP_STEPS + 0.5) / max(1, total))
    return base * mult if step < WARMUP_STEPS else base * (LR_FLOOR + (1 - LR_FLOOR) * mult)


def descend(opt: torch.optim.Optimizer, loss: torch.Tensor, params: list, step: int, total: int) -> None:
    """One optimiser step: each group at its own base rate (`group["base"]`) on the schedule, gradients
    clipped to norm 1."""
    for grp in opt.param_groups:
        grp["lr"] = lr_at(step, total, grp["base"])
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
