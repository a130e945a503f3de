"""The whole path in Python: train vectors on a task and evaluate any method, as `m2iv train` and `m2iv eval` do.

    lm = m2iv.load_model("tiny:idefics3")
    task = m2iv.Task.from_samples("colours", train=train_rows, test=test_rows)
    vectors = m2iv.train(lm, task, out="out/colours", shots=4, steps=20)
    summary = m2iv.evaluate(lm, task, vectors=vectors)            # or method="icl", shots=4

Both take a loaded model or a model spec, and a Task or a task name (`m2iv tasks`). They follow the command-line
rules: a setting given wins, one left out keeps the method's own default; runs resume from their folders.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from m2iv.data.tasks import Task, get_task
from m2iv.errors import M2IVError
from m2iv.methods.base import LoadedVectors, Method, get_method
from m2iv.models.loading import LoadedModel, load_model
from m2iv.vectors.vector import InContextVectors


def _model(model: LoadedModel | str) -> LoadedModel:
    return load_model(model) if isinstance(model, str) else model


def _task(task: Task | str, train_queries: int | None = None) -> Task:
    task = get_task(task) if isinstance(task, str) else task
    return replace(task, n_train=train_queries) if train_queries else task


def train(model: LoadedModel | str, task: Task | str, out: str | Path, method: str = "m2iv", *,
          shots: int | None = None, train_queries: int | None = None, data_root: str | None = None,
          seed: int | None = None, method_config: dict | None = None, report_to: list[str] | None = None,
          progress: bool = True, overwrite: bool = False, **recipe: Any) -> InContextVectors:
    """Train (or extract) `method`'s vectors on `task` and save them to `out`; returns them.

    `recipe` holds training fields by name (steps=20, lr_vectors=1e-2, batch_size=8, w_ce=0, ...; see
    `m2iv.train.config.TrainConfig`), `method_config` the method's own settings (`--method-config`). A run of the
    same settings in `out` resumes where it stopped (a finished one returns its vectors without training); a run
    of other settings there is an error, unless `overwrite` deletes it first (what m2iv wrote there, nothing else)."""
    from m2iv.train.session import clear, previous_run

    if overwrite:
        clear(previous_run(out))
    lm, task = _model(model), _task(task, train_queries)
    options: dict[str, Any] = {"out": str(out), "train_config": dict(recipe), "method_config": method_config or {},
                               "progress": progress, "report_to": list(report_to or [])}
    if shots is not None:
        options["shots"] = shots
    if seed is not None:
        options["seed"] = seed
    m = get_method(method, options)
    if not isinstance(m, LoadedVectors) or not m.trainable:
        raise M2IVError(f"method {method!r} has nothing to train; use m2iv, live, mimic, i2cl, hificl or an "
                        "extraction method (tv, fv, icv, mtv, ...)")
    vectors, _ = m.train(lm, task, task.splits(data_root, seed=seed or 0))
    if vectors is None:
        raise M2IVError(f"method {method!r} produced no vectors")
    return vectors


def evaluate(model: LoadedModel | str, task: Task | str, method: str | None = None, *,
             vectors: InContextVectors | str | Path | None = None, shots: int = 0, n_test: int | None = None,
             out: str | Path | None = None, batch_size: int = 4, seed: int = 0, selection: str = "random",
             data_root: str | None = None, progress: bool = True) -> dict:
    """Evaluate a method on `task`'s test split and return the summary (as `summary.json`).

    `method`: zero-shot (the default without vectors), icl (with `shots`), or a vector method; `vectors`: an
    InContextVectors object, a vector directory or `library:NAME`. With `out` the run's files are written there
    (and a rerun resumes); without, the summary also carries the `predictions` rows."""
    from m2iv.evaluate.runner import EvalConfig, read_predictions
    from m2iv.evaluate.runner import evaluate as run_eval

    lm, task = _model(model), _task(task)
    m: Method
    if isinstance(vectors, InContextVectors):
        given = LoadedVectors({"progress": progress})
        given.name = vectors.method or "vectors"
        given.use(vectors)
        m = given
    else:
        options: dict[str, Any] = {"progress": progress}
        if vectors is not None:
            options["vectors"] = str(vectors)
        if shots:
            options["shots"] = shots
        m = get_method(method or ("vectors" if vectors is not None else "zero-shot"), options)
    cfg = EvalConfig(shots=shots, selection=selection, limit=n_test, batch_size=batch_size, seed=seed,
                     data_root=data_root)
    if out is not None:
        return run_eval(lm, task, m, cfg, out, show_progress=progress)
    with tempfile.TemporaryDirectory(prefix="m2iv-eval-") as tmp:
        summary = run_eval(lm, task, m, cfg, tmp, show_progress=progress)
        return {**summary, "predictions": read_predictions(tmp)}
