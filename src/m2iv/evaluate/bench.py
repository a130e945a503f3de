"""Benchmarks as data: run a plan of (method, variant) over tasks through the same runner, collect rows.

    rows = run_plan(lm, ["sandbox-colour-nonce"], suite_plan(16), work="runs/bench", n_test=100)
    write_table(rows, "benchmarks/sandbox_suite.json")      # + .md next to it

Every cell is an ordinary `m2iv eval` run directory under `work/` (so a rerun resumes), and every
trained method writes an ordinary vector directory there: a row can always be traced back to files.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path


@dataclass
class Cell:
    method: str  # registered method name
    variant: str = ""  # e.g. "mimicry-only"; part of the row and of the run folder name
    train: dict = field(default_factory=dict)  # TrainConfig overrides for trained methods
    options: dict = field(default_factory=dict)  # extra method options


def suite_plan(shots: int) -> list[Cell]:
    """Zero-shot, N-shot ICL, and M²IV with its loss ablations (issue: what distillation adds over CE)."""
    return [Cell("zero-shot"), Cell("icl"), Cell("m2iv", "all-losses"),
            Cell("m2iv", "mimicry-only", {"w_ce": 0.0, "w_synergy": 0.0}),
            Cell("m2iv", "supervised-only", {"w_mimicry": 0.0, "w_synergy": 0.0})]


# What the bench reads off each method (plug-ins carry it, see `Method`): `cpu_budget`, smaller extraction / search
# budgets for a 2-core CPU (`--budget cpu`; every other setting is the method's default; recorded in each vector
# directory's config and in the benchmark's meta); `variants`, the rows a comparison runs per method; `lr_fields`
# and `lr_grid`, where the learning rate lives and the grid `--lr-sweep default` tries (one decade either way of the
# original rate; LIVE's starts a decade above its original 1e-4: that rate was set for Idefics2-8B, whose MLP
# outputs are small per coordinate, and a norm-preserving shift only acts once |sigmoid(alpha) v| nears |h|; on
# the sandbox (MLP-output norms 16-580, D = 576) 1e-4 leaves v at its init in 60 steps (0.00), 1e-2 gives KL 3.5
# and constant answers (0.00), 1e-1 KL 0.87 and 0.56 in 30 steps).
# TV, FV and MTV run their original searches: TV sweeps every layer, FV scores every head on 25 prompts and sums
# the top 10, MTV samples 32 masks per REINFORCE step; patches of the last position rerun only that position on
# a cached prefix, which made FV's head scoring ~14x and MTV's steps ~10x cheaper (methods/extraction.py).
def cpu_budgets() -> dict[str, dict]:
    """Each registered method's `--budget cpu` settings (methods without one left out)."""
    from m2iv.methods import METHODS

    return {m: dict(METHODS.get(m).cpu_budget) for m in METHODS.names() if METHODS.get(m).cpu_budget}


def lr_methods() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Method -> (where its learning rate lives: "method_config" or "train", the rate's field names)."""
    from m2iv.methods import METHODS

    return {m: fields for m in METHODS.names() if (fields := METHODS.get(m).lr_fields) is not None}


def default_grids() -> dict[str, list[float]]:
    """Method -> the rates `--lr-sweep default` tries."""
    from m2iv.methods import METHODS

    return {m: list(METHODS.get(m).lr_grid) for m in lr_methods() if METHODS.get(m).lr_grid}


def compare_plan(methods: list[str], budget: str = "original") -> list[Cell]:
    """One cell per (method, variant); `budget` "cpu" or "tiny" sets each method's `cpu_budget` / `tiny_budget`."""
    from m2iv.methods import METHODS

    cells = []
    for m in methods:
        cls = METHODS.get(m)
        overrides = dict({"cpu": cls.cpu_budget, "tiny": cls.tiny_budget}.get(budget, {}))
        for variant, settings in cls.variants:
            options = {}
            if (overrides or settings) and cls.config_cls is not None:
                # set exactly these; the rest stay the method's defaults
                options["method_config"] = {**overrides, **settings}
            cells.append(Cell(m, variant, options=options))
    return cells


def _grid(text: str, spec: str) -> list[float]:
    from m2iv.errors import M2IVError

    try:
        grid = sorted({float(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise M2IVError(f"--lr-sweep {spec!r}: give 'default', comma-separated rates such as 1e-3,1e-2, or "
                        "per-method grids such as live=0.03,0.1;mimic=0.05") from None
    if not grid or min(grid) <= 0:
        raise M2IVError(f"--lr-sweep {spec!r}: rates must be positive numbers, e.g. 1e-3,1e-2,1e-1")
    return grid


def lr_grids(spec: str | None, methods: list[str]) -> dict[str, list[float]]:
    """`--lr-sweep`: "" / None -> no sweep; "default" -> each method's `lr_grid`; "1e-3,1e-2" -> that grid for every
    trained method;
    "live=0.03,0.1;mimic=0.05" -> a grid per method (a one-rate grid fixes that method's rate), the others unswept.
    Each task of the run is swept on its own held-out queries, so one command gives per-task rates."""
    if not spec:
        return {}
    if spec == "default":
        grids = default_grids()
        return {m: grids[m] for m in methods if m in grids}
    fields = lr_methods()
    if "=" not in spec:
        grid = _grid(spec, spec)
        return {m: list(grid) for m in methods if m in fields}
    from m2iv.errors import M2IVError

    out: dict[str, list[float]] = {}
    for part in filter(str.strip, spec.split(";")):
        name, _, rates = part.partition("=")
        name = name.strip()
        if name not in fields:
            raise M2IVError(f"--lr-sweep {spec!r}: {name!r} has no learning rate to sweep; methods with one: "
                            f"{', '.join(sorted(fields))}")
        if name not in methods:
            raise M2IVError(f"--lr-sweep {spec!r}: {name!r} is not among --method {','.join(methods)}")
        out[name] = _grid(rates, spec)
    return out


def with_lr(cell: Cell, lr: float) -> Cell:
    """`cell` with its method's learning rate(s) set to `lr` (see `Method.lr_fields`)."""
    where, names = lr_methods()[cell.method]
    if where == "train":
        return replace(cell, train={**cell.train, **dict.fromkeys(names, lr)})
    mc = {**cell.options.get("method_config", {}), **dict.fromkeys(names, lr)}
    return replace(cell, options={**cell.options, "method_config": mc})


def pick_lr(grid: list[float], scores: list[float], original: float | None = None) -> float:
    """The rate with the best validation score; ties go to the one nearest (in log) to the original rate, then to
    the smaller one, so a flat validation curve keeps the method's own setting."""
    import math

    best = max(scores)
    tied = [lr for lr, s in zip(grid, scores, strict=True) if s == best]
    ref = original if original else tied[0]
    return min(tied, key=lambda lr: (abs(math.log(lr / ref)), lr))


def split_validation(splits: dict, n_val: int) -> tuple[dict, list]:
    """Training splits with the last `n_val` train queries held out as the sweep's validation queries."""
    train = list(splits["train"])
    n_val = max(1, min(n_val, len(train) // 4))
    return {**splits, "train": train[:-n_val], "test": train[-n_val:]}, train[-n_val:]


def _slug(cell: Cell, shots: int) -> str:
    name = cell.method + (f"-{cell.variant}" if cell.variant else "")
    return f"{name}-{shots}shot" if cell.method not in ("zero-shot",) else name


def _cell_vectors(lm, task, cell: Cell, splits: dict, work: Path, shots: int, seed: int,
                  train_defaults: dict | None, log, held_out: int = 0):
    """The cell's method, ready to answer: a trained method is trained (or its earlier vectors reused) on `splits`.
    Returns (method, vector dir, training info, seconds). `held_out` (validation queries kept out of training by
    an lr sweep) is part of the folder name, so swept vectors never pass for full-data ones."""
    from m2iv.data.sample import content_hash
    from m2iv.evaluate.runner import method_identity
    from m2iv.methods import get_method
    from m2iv.methods.base import LoadedVectors
    from m2iv.train.config import TeacherConfig, TrainConfig

    slug = _slug(cell, shots)
    base = {**(train_defaults or {}), **cell.train}
    cfg = TrainConfig(**{k: v for k, v in base.items() if k != "teacher"},
                      teacher=TeacherConfig(**{**base.get("teacher", {}), "shots": shots}))
    # The comparison's budget (steps, batch size, ...) counts as set by the user: it wins over every
    # method's own recipe defaults, which keep the fields the comparison leaves alone.
    options = {"train_config": dict(base), "shots": shots, "seed": seed, "progress": False, **cell.options}
    method = get_method(cell.method, options)
    # Everything that changes the vectors names their folder: vectors are reused only for the same model weights,
    # data, recipe and resolved method settings (the method's own defaults included, so a changed default is
    # never answered by stale vectors).
    parts = [cfg.to_json(), {k: str(v) for k, v in cell.options.items()}, task.n_train, method_identity(method),
             lm.fingerprint, {k: content_hash(list(v)) for k, v in sorted(splits.items())}]
    recipe = json.dumps(parts + ([{"held_out": held_out}] if held_out else []), sort_keys=True, default=str)
    vec_dir = work / task.name / slug / f"vectors-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}"
    method.options["out"] = str(vec_dir)
    t0 = time.perf_counter()
    info: dict = {}
    if isinstance(method, LoadedVectors) and method.trainable:
        if (vec_dir / "m2iv_config.json").is_file():  # trained before: evaluate those vectors
            method.options["vectors"] = str(vec_dir)
            log(f"[{task.name}] {slug}: reusing {vec_dir}")
        else:
            log(f"[{task.name}] {slug}: training")
            _, info = method.train(lm, task, splits, str(vec_dir))  # handed to the evaluation in memory
            method.options["vectors"] = str(vec_dir)  # where they are saved: the run's identity names it
            method.vector_config = _saved_config(vec_dir)
    train_s = time.perf_counter() - t0
    if method.uses_vectors:
        info = info or _saved_config(vec_dir).get("training", {})
    return method, vec_dir, info, train_s


def _saved_config(vec_dir: Path) -> dict:
    """A vector directory's config: its training record, and (`sha256`) the file hash a run's identity names, so
    a run of vectors handed over in memory and a rerun that loads them are the same run."""
    return json.loads((vec_dir / "m2iv_config.json").read_text(encoding="utf-8"))


def sweep_lr(lm, task, cell: Cell, splits: dict, grid: list[float], work: Path, shots: int, seed: int,
             batch_size: int, train_defaults: dict | None, n_val: int, log=print) -> tuple[Cell, dict, dict]:
    """Train `cell` once per rate of `grid` on the train split minus `n_val` held-out train queries, score each on
    those queries with the task's metric, and return (the cell at the best rate, the training splits, a record of
    the grid, the scores and the choice). The test split is never looked at."""
    from m2iv.evaluate.runner import EvalConfig, evaluate

    train_splits, val = split_validation(splits, n_val)
    where, names = lr_methods()[cell.method]
    scores = []
    for lr in grid:
        c = with_lr(cell, lr)
        method, vec_dir, _, _ = _cell_vectors(lm, task, c, train_splits, work, shots, seed, train_defaults, log,
                                              held_out=len(val))
        summary = evaluate(lm, task, method, EvalConfig(shots=shots, limit=None, batch_size=batch_size, seed=seed),
                           vec_dir.parent / f"val-{vec_dir.name[8:]}", splits=train_splits)
        scores.append(round(float(summary["score"]), 4))
        log(f"[{task.name}] {_slug(cell, shots)}: lr {lr:g} -> validation {summary['metric']} {scores[-1]}")
    probe = get_method_defaults(cell.method)
    original = probe.get(names[0]) if where == "method_config" else None
    chosen = pick_lr(grid, scores, original)
    record = {"fields": [f"{where}.{n}" for n in names], "grid": list(grid), "val_scores": scores,
              "n_val": len(val), "chosen": chosen, "original": original}
    return with_lr(cell, chosen), train_splits, record


def get_method_defaults(name: str) -> dict:
    """The default settings of a registered method (its original paper's), as a dict; {} without settings."""
    from dataclasses import asdict

    from m2iv.methods import METHODS

    cls = getattr(METHODS.get(name), "config_cls", None)
    return asdict(cls()) if cls is not None else {}


def run_plan(lm, task_names: list[str], plan: list[Cell], work: str | Path, shots: int = 16, n_test: int = 100,
             seed: int = 0, batch_size: int = 8, data_root: str | None = None, train_defaults: dict | None = None,
             task_overrides: dict | None = None, log=print, lr_sweep: dict[str, list[float]] | None = None,
             n_val: int = 24) -> list[dict]:
    """One row per (task, cell); `task_overrides` replaces Task fields (e.g. n_train) for every task.

    With `lr_sweep` (method -> rates, see `lr_grids`) a listed trained method is first trained at every rate on
    the train split minus `n_val` validation queries; the rate with the best validation score is kept, its vectors
    are evaluated once on the test split and the row records the sweep (`lr_sweep`)."""
    from m2iv.data.tasks import get_task
    from m2iv.evaluate.runner import EvalConfig, evaluate
    from m2iv.evaluate.tables import label_rate
    from m2iv.train.run import cost_seconds

    rows: list[dict] = []
    work = Path(work)
    for name in task_names:
        task = get_task(name)
        if task_overrides:
            task = replace(task, **task_overrides)
        splits = task.splits(data_root, seed=seed)
        for cell in plan:
            train_splits, sweep, held_out = splits, None, 0
            if lr_sweep and cell.method in lr_sweep:
                cell, train_splits, sweep = sweep_lr(lm, task, cell, splits, lr_sweep[cell.method], work, shots,
                                                     seed, batch_size, train_defaults, n_val, log)
                held_out = sweep["n_val"]
            slug = _slug(cell, shots)
            method, vec_dir, info, train_s = _cell_vectors(lm, task, cell, train_splits, work, shots, seed,
                                                           train_defaults, log, held_out=held_out)
            log(f"[{task.name}] {slug}: evaluating")
            summary = evaluate(lm, task, method, EvalConfig(shots=shots, limit=n_test, batch_size=batch_size,
                                                            seed=seed), vec_dir.parent / f"eval-{vec_dir.name[8:]}"
                               if method.uses_vectors else work / task.name / slug / "eval", splits=splits)
            params = method.vectors.num_parameters() if method.uses_vectors and method.vectors is not None else 0
            row = {"task": task.name, "method": cell.method, "variant": cell.variant,
                   "shots": shots if cell.method != "zero-shot" else 0, "metric": summary["metric"],
                   "score": round(summary["score"], 4), "n": summary["n"],
                   "mean_prompt_tokens": round(summary["mean_prompt_tokens"], 1),
                   "mean_latency_ms": round(summary["mean_latency_ms"], 1), "parameters": params,
                   "train_seconds": round(cost_seconds(info) if info else
                                          (train_s if method.uses_vectors else 0.0), 1)}
            if method.uses_vectors:
                row["vectors"] = str(vec_dir)
            if sweep is not None:
                row["lr_sweep"] = sweep
            rows.append(label_rate(row))
            teacher = (info or {}).get("teacher", {})
            if (cell.method == "m2iv" and cell.variant in ("", "all-losses")
                    and teacher.get("accuracy_train") is not None):
                rows.append({"task": task.name, "method": "icl-teacher", "variant": "train-queries", "shots": shots,
                             "metric": "teacher_forced_exact_match", "score": round(teacher["accuracy_train"], 4),
                             "n": (info or {}).get("n_train", 0),
                             "mean_prompt_tokens": round(teacher.get("mean_prompt_tokens") or 0.0, 1),
                             "mean_latency_ms": None, "parameters": 0, "train_seconds": 0.0})
            log(f"[{task.name}] {slug}: {row['metric']} = {row['score']}")
    return rows


def icl_curve(lm, task_names: list[str], shots: list[int], work: str | Path, n_test: int = 100, seed: int = 0,
              batch_size: int = 8, log=print) -> list[dict]:
    """Accuracy against the number of demonstrations (0 = zero-shot) for each task."""
    rows = []
    for name in task_names:
        for k in shots:
            cell = Cell("zero-shot") if k == 0 else Cell("icl")
            rows += run_plan(lm, [name], [cell], work, shots=k, n_test=n_test, seed=seed, batch_size=batch_size,
                             log=log)
    return rows


def many_shot(lm, task_names: list[str], window: int, icl_shots: list[int], m2iv_shots: list[int],
              work: str | Path, n_test: int = 100, seed: int = 0, batch_size: int = 8,
              train_defaults: dict | None = None, task_overrides: dict | None = None, ensemble_mode: str = "product",
              log=print) -> list[dict]:
    """ICL limited by a context `window` against M²IV distilled from more demonstrations than fit.

    ICL rows beyond the window are recorded with `fits: false` and no score. M²IV at N shots uses a teacher over
    E = ceil(N / fit) disjoint contexts of ceil(N / E) shots each (N = 128 with 17 fitting: 8 contexts of 16),
    combined as a product of experts or a mixture (`ensemble_mode`, TeacherConfig).
    """
    from dataclasses import replace

    from m2iv.data.prompts import PromptBuilder, shots_that_fit
    from m2iv.data.tasks import get_task

    rows: list[dict] = []
    for name in task_names:
        task = get_task(name)
        if task_overrides:
            task = replace(task, **task_overrides)
        splits = task.splits(None, seed=seed)
        builder = PromptBuilder(lm, task.instruction, task.answer_template)
        probe = splits["test"][0]
        fit = shots_that_fit(builder, splits["support"][: max(icl_shots + m2iv_shots)], probe, limit=window,
                             reserve=task.max_new_tokens)
        log(f"[{name}] {fit} shots fit in a {window}-token window")
        for k in icl_shots:
            if k > fit:
                rows.append({"task": task.name, "method": "icl", "variant": f"window-{window}", "shots": k,
                             "fits": False, "score": None, "metric": task.metric, "n": 0})
                continue
            cell = Cell("zero-shot") if k == 0 else Cell("icl")
            r = run_plan(lm, [name], [cell], work, shots=k, n_test=n_test, seed=seed, batch_size=batch_size,
                         task_overrides=task_overrides, log=log)[0]
            rows.append({**r, "method": "icl", "variant": f"window-{window}", "fits": True})
        for k in m2iv_shots:
            experts = -(-k // fit)  # fewest contexts that hold k shots, then k spread evenly over them
            chunk = -(-k // experts)
            teacher = {**(train_defaults or {}).get("teacher", {}), "ensemble": experts}
            variant = f"{experts}x{chunk}"
            if ensemble_mode != "product":  # the product's names and cells stay as they were
                teacher["ensemble_mode"] = ensemble_mode
                variant += f"-{ensemble_mode}"
            cell = Cell("m2iv", variant, {**(train_defaults or {}), "teacher": teacher})
            r = run_plan(lm, [name], [cell], work, shots=chunk, n_test=n_test, seed=seed, batch_size=batch_size,
                         task_overrides=task_overrides, log=log)[0]
            rows.append({**r, "shots": experts * chunk, "fits": experts == 1, "teacher_contexts": experts,
                         "ensemble_mode": ensemble_mode})
    return rows


__all__ = ["Cell", "compare_plan", "icl_curve", "lr_grids", "many_shot", "run_plan", "suite_plan",
           "sweep_lr"]
