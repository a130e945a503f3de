"""The learning-rate schedule the vector trainer and the sandbox recipe share: linear warm-up, then cosine decay
to 0, over each cycle. A module of its own so the sandbox recipe uses it without importing the vector trainer."""

from __future__ import annotations

import math
from collections.abc import Sequence


def warmup_cosine(step: int, steps: int, warmup: float, restarts: Sequence[int] = ()) -> float:
    """Multiplier of the base rates at `step` of `steps`: `warmup` (a fraction of the cycle, floored to whole steps,
    at least 1) linear warm-up steps, then cosine to 0; `restarts` start new cycles (a continued run)."""
    start = max((r for r in restarts if r <= step), default=0)
    end = min((r for r in restarts if r > step), default=steps)
    step, steps = step - start, end - start
    warm = max(1, int(warmup * steps))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
