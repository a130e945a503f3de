"""Process-group state shared by evaluation and training: `accelerate launch` or `torchrun` on GPUs, and
torchrun on CPUs (gloo); a plain single process otherwise."""

from __future__ import annotations

import torch


def state():
    from accelerate import PartialState

    # accelerate only starts a CPU process group (gloo) when asked for the CPU explicitly.
    return PartialState(cpu=not torch.cuda.is_available())
