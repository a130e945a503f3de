"""Settings of `m2iv sandbox build --from-scratch`: the stages and their default hyperparameters. Torch-free,
so the CLI can offer one flag per setting without importing the trainer."""

from __future__ import annotations

from pathlib import Path

from m2iv.constants import m2iv_home

# Every setting of the from-scratch recipe (the shipped weights were trained with exactly these).
DEFAULTS: dict[str, int | float] = dict(
    seed=0, vision_steps=1200, vision_batch=64, vision_lr=1.5e-3, align_steps=1200, align_batch=64, align_lr=1e-3,
    meta_steps=300, meta_batch=6, meta_lr=5e-4, lora_rank=16, lora_alpha=32, eval_n=100, describe_n=0,
    align_resume=0)
STAGES = ("vision", "align", "meta", "export")
OPTIONAL_STAGES = ("baseline",)  # rerun the before-meta-training ICL baseline even if the work dir has one
WARMUP_STEPS = 20  # linear warm-up of every stage, then cosine down to LR_FLOOR x the base rate
LR_FLOOR = 0.1


def default_work_dir() -> Path:
    """Private scratch space for intermediate states (never a shared /tmp path)."""
    return m2iv_home() / "sandbox-train"
