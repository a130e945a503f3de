"""The evaluation runner: one task, one method, one model -> predictions.jsonl + summary.json.

    m2iv eval tiny:idefics2 --task vqav2 --data-root DATA --method icl --shots 4 --out runs/x

Rows are appended (and fsynced) batch by batch, so a killed run resumes where it stopped: finished
example ids are read back and skipped. A run resumes only its own rows: run.json holds the run's
identity (method and settings, model weights, task, data, and the vectors' layout and hashes), and a
folder holding another run's results, or predictions with no run.json, is refused (never adopted, never
deleted). Under `accelerate launch` each process takes every world_size-th example, writes its own rank
file, and the main process merges them in test order into the same two files a single process writes.

The steps: `_check_run` / `_record_run` (identity), `_selector` + `_resume` (plan), `_answer_all` with
`answering.Answerer` (batch answering), `_merge` + `_score` (scoring, with `results`), `_write_results` (writing).
"""

from __future__ import annotations

import json
import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from m2iv.data.prompts import PromptBuilder
from m2iv.data.sample import Sample, content_hash
from m2iv.data.selection import SELECTORS, RicesSelector, Selector, model_embedder
from m2iv.data.tasks import Task
from m2iv.errors import M2IVError
from m2iv.evaluate.answering import Answerer, eos_ids
from m2iv.evaluate.results import run_record
from m2iv.files import append_lines, read_json_object, write_json_atomic, write_jsonl_atomic
from m2iv.identity import identity_diff, jsonable, tensors_sha256
from m2iv.methods.base import Method
from m2iv.progress import Bar

PREDICTIONS = "predictions.jsonl"
SUMMARY = "summary.json"
RUN = "run.json"
VECTORS_KEY = "vectors"  # the part of a run's identity known only once the method is prepared
# Method options that do not change an answer (where to save, progress bars, the fingerprint check).
NOT_IDENTITY_OPTIONS = ("out", "progress", "strict", "report_to")


@dataclass
class EvalConfig:
    shots: int = 0
    selection: str = "random"
    limit: int | None = None
    batch_size: int = 4
    seed: int = 0
    on_bad_image: str = "skip"  # or "stop"
    data_root: str | None = None
    extra: dict = field(default_factory=dict)


def _read_rows(path: Path) -> list[dict]:
    """Complete rows of a JSONL file; a torn last line (killed mid-write) is cut off."""
    if not path.is_file():
        return []
    rows, good = [], 0
    with open(path, "rb") as f:
        data = f.read()
    for line in data.split(b"\n"):
        if not line.strip():
            good += len(line) + 1
            continue
        try:
            rows.append(json.loads(line))
            good += len(line) + 1
        except json.JSONDecodeError:
            break
    if good < len(data):
        with open(path, "r+b") as f:
            f.truncate(min(good, len(data)))
    return rows


def _append(path: Path, rows: list[dict]) -> None:
    """Append rows durably (the resumable log; the finished file is rewritten atomically by `_write_results`)."""
    append_lines(path, [json.dumps(r, ensure_ascii=False) + "\n" for r in rows])


def peak_memory_mb(device: torch.device | str = "cpu") -> float:
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


# -- run identity ---------------------------------------------------------------------------------------
def method_identity(method: Method) -> dict:
    """The method, its options and its typed settings: everything of the method that changes an answer."""
    ident: dict[str, Any] = {**method.describe(),
                             "options": {k: v for k, v in method.options.items() if k not in NOT_IDENTITY_OPTIONS}}
    if method.spec.settings is not None:
        ident["settings"] = method.spec.settings_json()
    return jsonable(ident)


def vectors_identity(method: Method) -> dict:
    """Layout and hashes of the prepared vectors (each route's, when routing): retrained vectors at the same path
    are another run."""
    if not method.uses_vectors:
        return {}
    sets = method.vector_sets()  # type: ignore[attr-defined]
    vc = method.vector_config or {}
    return {VECTORS_KEY: jsonable({"file_sha256": vc.get("sha256"), "routes": vc.get("routes"),
                                   "layout": {k: v.spec() for k, v in sets.items()},
                                   "tensors_sha256": {k: tensors_sha256(v.to_tensors()) for k, v in sets.items()}})}


def run_identity(lm, task: Task, method: Method, cfg: EvalConfig, test: list[Sample], splits: dict) -> dict:

    shots = 0 if method.name == "zero-shot" else cfg.shots  # vector methods: the teacher's shots
    return {"task": task.name, "task_version": task.version, "method": method.name, "shots": shots,
            "selection": cfg.selection, "seed": cfg.seed, "model": lm.spec,
            "model_fingerprint": lm.fingerprint, "test_hash": content_hash(test),
            "data_hash": {k: content_hash(list(v)) for k, v in sorted(splits.items())},
            "method_options": method_identity(method)}


def _previous_run(out: Path) -> dict | None:
    """The identity stored in out/run.json; predictions without one belong to no known run and are refused."""
    path = out / RUN
    if not path.is_file():
        leftovers = sorted(p.name for p in out.glob("predictions*.jsonl"))
        if leftovers:
            raise M2IVError(f"{out} holds {leftovers[0]} but no {RUN} saying which run wrote it; choose another "
                            f"--out, or delete {out / leftovers[0]} to start afresh")
        return None
    return read_json_object(path, f"{path} is corrupt", f"choose another --out or delete {out}",
                            f"{path} does not hold a run identity; choose another --out or delete {out}")


def _check_run(out: Path, prev: dict | None, run: dict, skip: tuple[str, ...] = ()) -> None:
    if prev is None:
        return
    diff = identity_diff(prev, run, skip)
    if diff:
        raise M2IVError(f"{out} holds results of a different run (differs in {', '.join(diff)}); "
                        "choose another --out or delete it")


# -- plan -------------------------------------------------------------------------------------------------
def _selector(lm, builder: PromptBuilder, cfg: EvalConfig, splits: dict, n_demos: int,
              fingerprint: str) -> Selector | None:
    if not n_demos:
        return None
    cls = SELECTORS.get(cfg.selection)
    if cls is None:
        raise M2IVError(f"unknown --selection {cfg.selection!r}; use random, fixed or rices")
    if cls is RicesSelector:
        from m2iv.constants import m2iv_home

        return RicesSelector(splits["support"], model_embedder(lm, builder), seed=cfg.seed,
                             cache_dir=m2iv_home() / "cache" / "rices", cache_key=fingerprint)
    return cls(splits["support"], seed=cfg.seed)


def _resume(out: Path, test: list[Sample], world: int, rank: int) -> tuple[Path, list[Sample], list[Sample]]:
    """(this process's rows file, its share of the test set, what of it is still unanswered)."""
    mine = test[rank::world]
    part = out / (PREDICTIONS if world == 1 else f"predictions.rank{rank}.jsonl")
    done = {r["id"] for r in _read_rows(out / PREDICTIONS)} | {r["id"] for r in _read_rows(part)}
    return part, mine, [s for s in mine if s.id not in done]


def _answer_all(answerer: Answerer, method: Method, todo: list[Sample], n_mine: int, part: Path,
                show: bool) -> None:
    cfg, lm = answerer.cfg, answerer.lm
    bar = Bar(n_mine, f"{answerer.task.name} {method.name}", initial=n_mine - len(todo), disable=not show,
              unit="queries")
    answerer.bar = bar
    groups = method.groups(todo)
    for key, items in groups:
        with torch.no_grad(), method.inference(lm, key) as handle:
            for i in range(0, len(items), cfg.batch_size):
                chunk = items[i:i + cfg.batch_size]
                rows, prompts, stop = answerer.prompts(chunk)
                if prompts:
                    rows += answerer.answer(prompts, handle, key)
                _append(part, rows)
                if stop is not None:
                    raise stop
                bar.update(len(chunk))
    bar.close()


# -- scoring and writing ---------------------------------------------------------------------------------
def _merge(out: Path, test: list[Sample], world: int) -> list[dict]:
    """Every process's rows, in test order."""
    by_id = {r["id"]: r for r in _read_rows(out / PREDICTIONS)}
    for r_ in range(world if world > 1 else 0):
        by_id.update({r["id"]: r for r in _read_rows(out / f"predictions.rank{r_}.jsonl")})
    return [by_id[s.id] for s in test if s.id in by_id]


def _score(task: Task, rows: list[dict], seed: int = 0) -> tuple[list[dict], dict]:
    """The answered rows (each given its per-example score where the metric has one) and the task score with its
    standard error (`results.standard_error`)."""
    from m2iv.evaluate.metrics import score
    from m2iv.evaluate.results import standard_error

    scored = [r for r in rows if not r.get("skipped")]
    if not scored:
        return scored, {"score": 0.0, "score_stderr": None, "stderr_method": "none (no examples)"}
    preds, refs = [str(r["prediction"]) for r in scored], [list(r["answers"]) for r in scored]
    result = score(task.metric, preds, refs)
    per_example = result.get("per_example")
    if isinstance(per_example, list):
        for r, s in zip(scored, per_example, strict=True):
            r["score"] = s
    se, how = standard_error(task.metric, preds, refs, per_example, float(result["score"]), seed)
    return scored, {"score": float(result["score"]), "score_stderr": se, "stderr_method": how}


def _write_results(out: Path, rows: list[dict], summary: dict, world: int) -> None:
    write_jsonl_atomic(out / PREDICTIONS, rows)
    for r_ in range(world if world > 1 else 0):
        (out / f"predictions.rank{r_}.jsonl").unlink(missing_ok=True)
    write_json_atomic(out / SUMMARY, summary)


def read_predictions(out_dir: str | Path) -> list[dict]:
    """The rows of a run's predictions.jsonl."""
    return _read_rows(Path(out_dir) / PREDICTIONS)


def evaluate(lm, task: Task, method: Method, cfg: EvalConfig, out_dir: str | Path,
             splits: dict[str, list[Sample]] | None = None, show_progress: bool = True) -> dict:
    """Run (or resume) an evaluation and return the summary (also written to out_dir/summary.json)."""
    from m2iv.constants import __version__
    from m2iv.dist import state as dist_state

    state = dist_state()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.on_bad_image not in ("skip", "stop"):
        raise M2IVError(f"--on-bad-image must be skip or stop, not {cfg.on_bad_image!r}")
    splits = splits or task.splits(cfg.data_root, seed=cfg.seed, parts=method.splits_needed())
    test = splits["test"][: cfg.limit] if cfg.limit else splits["test"]
    if not test:
        raise M2IVError(f"task {task.name} has no test examples; check the data root and split")

    # 1. identity: refuse another run's folder before any work, then again once the vectors are known
    run = run_identity(lm, task, method, cfg, test, splits)
    prev = _previous_run(out)
    _check_run(out, prev, run, skip=(VECTORS_KEY,))
    builder = PromptBuilder(lm, task.instruction, task.answer_template)
    n_demos = method.prompt_shots(cfg.shots)
    selector = _selector(lm, builder, cfg, splits, n_demos, run["model_fingerprint"])
    method.prepare(lm, task, splits)
    run.update(vectors_identity(method))
    _check_run(out, prev, run)
    if state.is_main_process:
        write_json_atomic(out / RUN, run)
    state.wait_for_everyone()

    # 2. plan and answer what is left
    world = state.num_processes
    part, mine, todo = _resume(out, test, world, state.process_index)
    answerer = Answerer(lm, task, cfg, builder, selector, n_demos, method, eos=eos_ids(lm),
                        quiet=not state.is_main_process)
    _answer_all(answerer, method, todo, len(mine), part, show=show_progress and state.is_main_process)
    state.wait_for_everyone()
    if not state.is_main_process:
        return {}

    # 3. score and write
    rows = _merge(out, test, world)
    scored, score = _score(task, rows, cfg.seed)
    mean = lambda key: sum(r.get(key, 0) for r in scored) / len(scored) if scored else 0.0  # noqa: E731
    example = next((r["prompt"] for r in scored if "prompt" in r), None)
    summary = {**run, "n": len(scored), "metric": task.metric, **score,
               "mean_prompt_tokens": mean("prompt_tokens"), "mean_output_tokens": mean("output_tokens"),
               "mean_latency_ms": mean("latency_ms"),
               "peak_memory_mb": round(peak_memory_mb(lm.device), 1),
               "skipped": [{"id": r["id"], "error": r["error"]} for r in rows if r.get("skipped")],
               "splits": {k: {"n": len(v), "hash": content_hash(v)} for k, v in splits.items()},
               "batch_size": cfg.batch_size, "world_size": world, "m2iv_version": __version__,
               "prompt": {"instruction": task.instruction, "answer_template": task.answer_template},
               **run_record(lm, task, cfg, builder, answerer.eos, example)}
    _write_results(out, rows, summary, world)
    return summary
