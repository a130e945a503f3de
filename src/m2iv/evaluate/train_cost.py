"""What one training step of a trained method costs, measured as a fine-tune would be (issue 26).

- Time: one optimizer step of the method (its own losses, its teacher targets, the recipe it was trained with, at
  one micro-batch of `batch` training queries) against a plain forward + backward of the whole model on the same
  queries (zero-shot prompt + answer, CE on the answer): the median of paired ratios, the two alternating in one
  process after a warm-up of each, as `bench efficiency` pairs latencies.
- Memory: the weights plus the peak of live tensors during the method's first optimizer step (activations, its
  gradients and optimizer states, from the profiler's allocation events), against the same for a plain fine-tune
  step (forward, backward and a first AdamW update of every weight: gradients and both moments included).

    rows = measure_training("sandbox", "sandbox-colour-nonce", {"m2iv": "runs/bench/shared/.../vectors-ab12"})
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import tempfile
from collections.abc import Mapping
from pathlib import Path


def reference_step(lm, builder, queries: list, optimizer=None) -> None:
    """Forward + backward of the whole model on zero-shot prompts + answers (CE on the answer tokens); with
    `optimizer` (over every weight) its update too: a plain fine-tune step. Gradients are dropped after."""
    from m2iv.train import losses
    from m2iv.train.teacher import _answer_logits, student_batch

    batch, labels, _ = student_batch(builder, queries)
    batch = {k: v.to(lm.device) for k, v in batch.items()}
    logits, _ = _answer_logits(lm, batch, labels.shape[1], False)
    losses.supervised(logits, labels.to(logits.device)).backward()
    if optimizer is not None:
        optimizer.step()
    lm.model.zero_grad(set_to_none=True)


def _load_trainable(lm, directory: str):
    """The trained parameters of a vector or adapter directory and the recipe they were trained with."""
    from m2iv.adapters.peft_dir import is_adapter_dir, load_adapter
    from m2iv.vectors.format import load_vectors

    if is_adapter_dir(directory):
        return load_adapter(directory, lm)
    return load_vectors(directory, adapter=lm.adapter, device=lm.device)


def _method_step(lm, task, splits: dict, builder, queries: list, directory: str, workdir: str):
    """A callable running one optimizer step of the method saved in `directory` on `queries` (hooks attached for
    the step only, so a reference pass in between sees the plain model)."""
    from m2iv.train.config import TrainConfig
    from m2iv.train.teacher import compute_teacher
    from m2iv.train.trainer import VectorTrainer, attach

    params, config = _load_trainable(lm, directory)
    recipe = {**config["recipe"], "batch_size": len(queries), "grad_accum": 1, "val_every": 0, "steps": 10**6}
    cfg = TrainConfig(**recipe)
    teacher = None
    if cfg.w_mimicry or cfg.w_align:
        teacher = compute_teacher(lm, builder, queries, splits["support"], cfg.teacher, task.name, seed=cfg.seed,
                                  show_progress=False)
    trainer = VectorTrainer(lm, params, cfg, workdir, show_progress=False)

    def step() -> None:
        handle = attach(lm, params)
        try:
            trainer.optimizer_step(builder, queries, teacher, handle)
        finally:
            handle.remove()

    return step


def _plain_forward_backward(lm, builder, queries: list) -> None:
    flags = [(p, p.requires_grad) for p in lm.model.parameters()]
    for p, _ in flags:
        p.requires_grad_(True)
    try:
        reference_step(lm, builder, queries)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _worker(spec: dict) -> dict:
    import torch

    from m2iv.data.prompts import PromptBuilder
    from m2iv.data.tasks import get_task
    from m2iv.evaluate.profiling import elapsed_ms, tensor_peak_mb
    from m2iv.models.loading import load_model

    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    torch.manual_seed(0)
    lm = load_model(spec["model"])
    task = get_task(spec["task"])
    splits = task.splits(spec.get("data_root"), seed=spec.get("seed", 0))
    builder = PromptBuilder(lm, task.instruction, task.answer_template)
    queries = list(splits["train"])[: spec["batch"]]
    weights = sum(p.numel() * p.element_size() for p in lm.model.parameters()) / 2**20
    if spec.get("directory") is None:  # the plain fine-tune step's memory
        opt = torch.optim.AdamW(lm.model.parameters(), lr=1e-5)
        peak = tensor_peak_mb(lambda: reference_step(lm, builder, queries, opt))
        return {"train_peak_tensor_mb": None if peak is None else round(weights + peak, 1)}
    with tempfile.TemporaryDirectory() as work:
        step = _method_step(lm, task, splits, builder, queries, spec["directory"], work)
        peak = tensor_peak_mb(step)  # the first step: its optimizer states are allocated here
        _plain_forward_backward(lm, builder, queries)  # warm-up of the reference
        mine: list[float] = []
        ref: list[float] = []
        for i in range(spec.get("repeats", 3)):
            pair = [("m", step), ("r", lambda: _plain_forward_backward(lm, builder, queries))]
            for name, call in pair if i % 2 == 0 else pair[::-1]:
                (mine if name == "m" else ref).append(elapsed_ms(call))
    return {"train_step_ms": round(statistics.median(mine), 1),
            "reference_fwd_bwd_ms": round(statistics.median(ref), 1),
            "train_step_ratio": round(statistics.median(m / r for m, r in zip(mine, ref, strict=True)), 3),
            "train_peak_tensor_mb": None if peak is None else round(weights + peak, 1)}


def _run(spec: dict) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_worker, (spec,))


def measure_training(model: str, task: str, directories: Mapping[str, str | Path], batch: int = 16, seed: int = 0,
                     data_root: str | None = None, repeats: int = 3, log=print) -> dict:
    """Per trained method (name -> its saved directory): step time, its ratio to a plain forward + backward, peak
    tensor memory and its ratio to a plain fine-tune step; `reference` holds the fine-tune step's memory."""
    base = {"model": model, "task": task, "batch": batch, "seed": seed, "data_root": data_root, "repeats": repeats}
    log(f"measuring a plain fine-tune step (batch {batch})")
    reference = _run({**base, "directory": None})
    rows = {}
    for name, directory in directories.items():
        log(f"measuring a training step of {name}")
        r = _run({**base, "directory": str(directory)})
        ref = reference["train_peak_tensor_mb"]
        r["train_peak_vs_finetune"] = None if ref is None or r["train_peak_tensor_mb"] is None else round(
            r["train_peak_tensor_mb"] / ref, 4)
        rows[name] = r
    return {"reference": {"method": "full fine-tune", "batch": batch, **reference}, "rows": rows}
