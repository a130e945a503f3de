"""One entry point that trains any vector method on a task: teacher -> trainer -> the best vectors.

    vectors, info = train_vectors(lm, task, splits, vectors, TrainConfig(), "out/easy-vqa")

It saves nothing but checkpoints (next to `out`): the method that asked for the training writes the vector
directory (`LoadedVectors.save`, the one place vectors are saved), from `info["recipe"]` and `info["metrics"]`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from m2iv.constants import TRAIN_DIR_SUFFIX
from m2iv.data.prompts import PromptBuilder
from m2iv.data.sample import Sample, content_hash
from m2iv.errors import M2IVError
from m2iv.identity import tensors_sha256
from m2iv.progress import Progress
from m2iv.train.config import TrainConfig
from m2iv.train.teacher import compute_teacher
from m2iv.train.tracking import open_tracker
from m2iv.train.trainer import Trainable, VectorTrainer
from m2iv.vectors.inject import apply
from m2iv.vectors.vector import InContextVectors


@contextmanager
def _frozen_under(lm, base: InContextVectors | None) -> Iterator[None]:
    """`base` injected (every position, no condition) and frozen while the block runs; nothing without it."""
    if base is None:
        yield
        return
    base = base.to(lm.device)
    for p in base.parameters():
        p.requires_grad_(False)
    with apply(lm.model, base, lm.adapter, freeze_base=False, condition=False):
        yield


def training_identity(lm, task, train: list[Sample], val: list[Sample], support: list[Sample],
                      method_config: dict | None) -> dict:
    """What a checkpoint is a checkpoint of, besides recipe and vector layout (the trainer adds those): the model's
    weights, the task and the data. A checkpoint is resumed only for the same identity."""
    return {"model": lm.fingerprint, "task": task.name,
            "task_version": getattr(task, "version", None),
            "data": {"train": content_hash(train), "val": content_hash(val), "support": content_hash(list(support))},
            "method_config": method_config or {}}


def train_vectors(lm, task, splits: dict, vectors: Trainable, cfg: TrainConfig, out: str | Path,
                  method_config: dict | None = None, show_progress: bool = True,
                  stop_after: int | None = None, experts: list[list[Sample]] | None = None,
                  base_vectors: InContextVectors | None = None,
                  report_to: list[str] | None = None) -> tuple[Any, dict]:
    """Train `vectors` (or an adapter: LoRA, a KV prefix) on task's train split against its N-shot teacher; return
    (the best vectors, info). Checkpoints live in `out` + TRAIN_DIR_SUFFIX; a run of the same identity (model,
    task, data, `method_config`, recipe) resumes there.

    `experts`: one demonstration pool per name in cfg.teacher.experts (a teacher of several experts).
    `base_vectors`: vectors injected, frozen, under the student while it trains (sequential training: the new
    vectors learn to act on top of these; only the new ones are returned).
    `report_to`: experiment trackers that receive every step's record (tensorboard, wandb, trackio; `tracking`)."""
    from m2iv.dist import state as dist_state

    show = show_progress and dist_state().is_main_process
    out = Path(out)
    vectors = vectors.to(lm.device)  # type: ignore[attr-defined]
    builder = PromptBuilder(lm, task.instruction, task.answer_template)
    train, val = _train_and_val(lm, builder, task, cfg, splits)
    needs_teacher = bool(cfg.w_mimicry or cfg.w_align)
    job = job_progress(cfg, len(train) if needs_teacher else 0, show)
    t0 = time.perf_counter()
    teacher = None
    try:
        if needs_teacher:
            teacher = compute_teacher(lm, builder, train, splits["support"], cfg.teacher, task.name, seed=cfg.seed,
                                      experts=experts, progress=job)
        t_teacher = time.perf_counter() - t0
        identity = training_identity(lm, task, train, val, splits["support"], method_config)
        if base_vectors is not None:
            identity["base_vectors"] = tensors_sha256(base_vectors.to_tensors())
        workdir = out.parent / f"{out.name}{TRAIN_DIR_SUFFIX}"
        trainer = VectorTrainer(lm, vectors, cfg, workdir, show_progress=show, identity=identity)
        best = _fit(trainer, lm, task, cfg, builder, (train, val), teacher, base_vectors, workdir, out,
                    method_config, stop_after, job, report_to)
    finally:
        job.close()
    info = _record(task, cfg, trainer, teacher, (train, val), t_teacher, time.perf_counter() - t0 - t_teacher)
    if base_vectors is not None:
        info["trained_with"] = {"sha256": identity["base_vectors"], "spec": base_vectors.spec()}
    return best, info


def _train_and_val(lm, builder: PromptBuilder, task, cfg: TrainConfig, splits: dict) -> tuple[list, list]:
    """The training queries (the model's own answers as negatives when asked) and the validation hold-out."""
    train = list(splits["train"])
    if cfg.teacher.negatives == "zero-shot":
        from m2iv.train.contrastive import own_answers

        train = own_answers(lm, builder, train, task.max_new_tokens)
    if len(train) < 2:
        raise M2IVError(f"task {task.name} has {len(train)} training queries; vector training needs more "
                        "(enlarge the data or lower n_support)")
    n_val = validation_size(cfg, len(train))
    return train[: len(train) - n_val], train[len(train) - n_val:]


def validation_size(cfg: TrainConfig, n_train: int) -> int:
    """How many of `n_train` training queries the trainer holds out to pick its best step (none without
    validation; at most a fifth)."""
    return min(cfg.val_size, n_train // 5) if cfg.val_every else 0


def _fit(trainer: VectorTrainer, lm, task, cfg: TrainConfig, builder, data: tuple[list, list], teacher, base_vectors,
         workdir: Path, out: Path, method_config: dict | None, stop_after: int | None, job: Progress,
         report_to: list[str] | None):
    """The trainer's loop with the frozen base vectors under it and the experiment trackers open."""
    from m2iv.dist import state as dist_state

    tracker = open_tracker(report_to or [], workdir, {"recipe": cfg.to_json(), "task": task.name,
                           "model": lm.spec, **({"method": method_config} if method_config else {})},
                           name=out.name) if dist_state().is_main_process else None
    try:
        with _frozen_under(lm, base_vectors):
            return trainer.fit(builder, data[0], teacher, data[1], stop_after=stop_after, progress=job,
                               tracker=tracker)
    finally:
        if tracker is not None:
            tracker.close()


def cost_seconds(info: dict) -> float:
    """A training run's one-off cost: its training plus computing its teacher, even where this run found the
    teacher cached (a run that reused another's teacher would otherwise look free of it)."""
    teacher = info.get("teacher") or {}
    spent = teacher.get("compute_seconds")
    if spent is None:
        spent = teacher.get("seconds") or 0.0
    return float(info.get("train_seconds") or 0.0) + float(spent)


def _record(task, cfg: TrainConfig, trainer: VectorTrainer, teacher, data: tuple[list, list], t_teacher: float,
            t_train: float) -> dict[str, Any]:
    """What a training run reports and its method saves: the teacher, the best step, the recipe and the metrics;
    `complete` is False when it stopped before its last step (nothing to save)."""
    info: dict[str, Any] = {"teacher": {**cfg.teacher.__dict__, "accuracy_train": teacher.accuracy if teacher else None,
                            "mean_prompt_tokens": teacher.prompt_tokens if teacher else None,
                            "cache_key": teacher.key if teacher else None, "seconds": round(t_teacher, 1),
                            "compute_seconds": teacher.compute_seconds if teacher else None},
                            "best": trainer.best, "steps_done": trainer.step, "n_train": len(data[0]),
                            "n_val": len(data[1]),
                            "prompt": {"instruction": task.instruction, "answer_template": task.answer_template},
                            "train_seconds": round(t_train, 1)}
    info.update(recipe=cfg.to_json(), complete=trainer.step >= cfg.steps,
                metrics={"val_teacher_forced_acc": trainer.best["metric"], "best_step": trainer.best["step"],
                         "teacher_acc_train": info["teacher"]["accuracy_train"]})
    return info


def job_progress(cfg: TrainConfig, n_queries: int, show: bool) -> Progress:
    """One progress line for teacher pass and training, with the time left for both. Until a step is timed, a
    step is estimated from the teacher's time per item: `batch x accum` student forward + backward passes (about
    3 forwards each) of prompts `shots x ensemble + 1` times shorter than the teacher's."""
    teacher_items = n_queries * cfg.teacher.draws
    factor = 3 * cfg.batch_size * cfg.grad_accum / (cfg.teacher.shots * cfg.teacher.ensemble + 1)
    phases = ([("teacher", teacher_items)] if teacher_items else []) + [("steps", cfg.steps)]
    return Progress("train job", phases, hint={"steps": ("teacher", factor)}, disable=not show)
