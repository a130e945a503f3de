"""The evaluation runner: one task, one method, one model -> predictions.jsonl + summary.json.

    m2iv eval tiny:idefics2 --task vqav2 --data-root DATA --method icl --shots 4 --out runs/x

Rows are appended (and fsynced) batch by batch, so a killed run resumes where it stopped: finished
example ids are read back and skipped. Under `accelerate launch` each process takes every
world_size-th example, writes its own rank file, and the main process merges them in test order into
the same two files a single process writes.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from m2iv.data.images import ImageError, open_image
from m2iv.data.prompts import PromptBuilder
from m2iv.data.sample import Sample, content_hash
from m2iv.data.selection import SELECTORS, RicesSelector, model_embedder
from m2iv.errors import M2IVError
from m2iv.evaluate.tasks import Task, postprocess
from m2iv.files import write_text_atomic
from m2iv.methods.base import Method

PREDICTIONS = "predictions.jsonl"
SUMMARY = "summary.json"
RUN = "run.json"


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
    with open(path, "a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def peak_memory_mb(device: torch.device | str = "cpu") -> float:
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


class _ImageCheck:
    def __init__(self) -> None:
        self.good: set[str] = set()

    def first_bad(self, paths: list[str]) -> ImageError | None:
        for p in paths:
            if p in self.good:
                continue
            try:
                open_image(p)
            except ImageError as e:
                return e
            self.good.add(p)
        return None


def _eos_ids(lm) -> list[int]:
    tok = lm.tokenizer
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    for t in ("<end_of_utterance>", "<|im_end|>", "<|eot_id|>"):
        i = tok.convert_tokens_to_ids(t)
        if isinstance(i, int) and i != tok.unk_token_id and i >= 0:
            ids.add(i)
    return sorted(ids)


def evaluate(lm, task: Task, method: Method, cfg: EvalConfig, out_dir: str | Path,
             splits: dict[str, list[Sample]] | None = None) -> dict:
    """Run (or resume) an evaluation and return the summary (also written to out_dir/summary.json)."""
    from m2iv.constants import __version__
    from m2iv.dist import state as dist_state
    from m2iv.evaluate.metrics import score
    from m2iv.models.adapter import weights_fingerprint

    state = dist_state()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.on_bad_image not in ("skip", "stop"):
        raise M2IVError(f"--on-bad-image must be skip or stop, not {cfg.on_bad_image!r}")
    splits = splits or task.splits(cfg.data_root, seed=cfg.seed)
    test = splits["test"][: cfg.limit] if cfg.limit else splits["test"]
    if not test:
        raise M2IVError(f"task {task.name} has no test examples; check the data root and split")
    n_demos = method.prompt_shots(cfg.shots)
    shots = 0 if method.name == "zero-shot" else cfg.shots  # vector methods: the teacher's shots
    run = {"task": task.name, "task_version": task.version, "method": method.name, "shots": shots,
           "selection": cfg.selection, "seed": cfg.seed, "model": lm.spec,
           "model_fingerprint": weights_fingerprint(lm.model), "test_hash": content_hash(test),
           "method_options": method.describe()}
    prev = json.loads((out / RUN).read_text()) if (out / RUN).is_file() else None
    if prev is not None and prev != run:
        diff = sorted(k for k in run if prev.get(k) != run[k])
        raise M2IVError(f"{out} holds results of a different run (differs in {', '.join(diff)}); "
                        "choose another --out or delete it")
    if state.is_main_process:
        _write_json_atomic(out / RUN, run)
    state.wait_for_everyone()

    builder = PromptBuilder(lm, task.instruction, task.answer_template)
    selector = None
    if n_demos:
        cls = SELECTORS.get(cfg.selection)
        if cls is None:
            raise M2IVError(f"unknown --selection {cfg.selection!r}; use random, fixed or rices")
        if cls is RicesSelector:
            from m2iv.constants import m2iv_home

            selector = RicesSelector(splits["support"], model_embedder(lm, builder), seed=cfg.seed,
                                     cache_dir=m2iv_home() / "cache" / "rices",
                                     cache_key=run["model_fingerprint"])
        else:
            selector = cls(splits["support"], seed=cfg.seed)
    method.prepare(lm, task, splits)

    world, rank = state.num_processes, state.process_index
    mine = test[rank::world]
    part = out / (PREDICTIONS if world == 1 else f"predictions.rank{rank}.jsonl")
    done = {r["id"] for r in _read_rows(out / PREDICTIONS)} | {r["id"] for r in _read_rows(part)}
    todo = [s for s in mine if s.id not in done]
    checker, eos = _ImageCheck(), _eos_ids(lm)
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=f"{task.name} {method.name}",
               disable=not state.is_main_process, dynamic_ncols=True)
    groups = method.groups(todo) if hasattr(method, "groups") else [(None, todo)]
    for key, items in groups:
        with torch.no_grad(), method.inference(lm, key) as handle:
            for i in range(0, len(items), cfg.batch_size):
                chunk, rows, prompts, stop = items[i:i + cfg.batch_size], [], [], None
                for q in chunk:
                    demos = selector.select(q, n_demos) if selector else []
                    bad = checker.first_bad([p for d in demos for p in d.images] + list(q.images))
                    if bad is not None:
                        if cfg.on_bad_image == "stop":
                            stop = bad  # answer the queries before it, keep them, then stop
                            break
                        rows.append({"id": q.id, "skipped": True, "error": str(bad)})
                        continue
                    prompts.append((q, demos, builder.build(demos, q)))
                if prompts:
                    batch = builder.encode([p for _, _, p in prompts])
                    query_start = batch.pop("query_start")
                    if handle is not None and hasattr(handle, "set_query_start"):
                        handle.set_query_start(query_start)
                    batch = {k: v.to(lm.model.device) for k, v in batch.items()}
                    t0 = time.perf_counter()
                    gen = lm.model.generate(**batch, max_new_tokens=task.max_new_tokens, do_sample=False,
                                            eos_token_id=eos, pad_token_id=lm.tokenizer.pad_token_id)
                    ms = (time.perf_counter() - t0) * 1000 / len(prompts)
                    texts = lm.tokenizer.batch_decode(gen[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
                    n_tokens = batch["attention_mask"].sum(dim=1).tolist()
                    for (q, demos, _), raw, n in zip(prompts, texts, n_tokens, strict=False):
                        rows.append({"id": q.id, "prediction": postprocess(task, raw), "raw": raw,
                                     "answers": list(q.answers), "demos": [d.id for d in demos],
                                     "prompt_tokens": int(n), "latency_ms": round(ms, 3),
                                     **({"route": key} if key is not None else {})})
                _append(part, rows)
                if stop is not None:
                    raise stop
                bar.update(len(chunk))
    bar.close()
    state.wait_for_everyone()
    if not state.is_main_process:
        return {}

    by_id = {r["id"]: r for r in _read_rows(out / PREDICTIONS)}
    for r_ in range(world if world > 1 else 0):
        by_id.update({r["id"]: r for r in _read_rows(out / f"predictions.rank{r_}.jsonl")})
    rows = [by_id[s.id] for s in test if s.id in by_id]
    scored = [r for r in rows if not r.get("skipped")]
    result = score(task.metric, [r["prediction"] for r in scored], [r["answers"] for r in scored]) if scored \
        else {"score": 0.0, "per_example": None, "n": 0}
    if result.get("per_example") is not None:
        for r, s in zip(scored, result["per_example"], strict=False):
            r["score"] = s
    _write_jsonl_atomic(out / PREDICTIONS, rows)
    for r_ in range(world if world > 1 else 0):
        (out / f"predictions.rank{r_}.jsonl").unlink(missing_ok=True)
    mean = lambda key: sum(r[key] for r in scored) / len(scored) if scored else 0.0  # noqa: E731
    summary = {**run, "n": len(scored), "metric": task.metric, "score": result["score"],
               "mean_prompt_tokens": mean("prompt_tokens"), "mean_latency_ms": mean("latency_ms"),
               "peak_memory_mb": round(peak_memory_mb(lm.model.device), 1),
               "skipped": [{"id": r["id"], "error": r["error"]} for r in rows if r.get("skipped")],
               "splits": {k: {"n": len(v), "hash": content_hash(v)} for k, v in splits.items()},
               "batch_size": cfg.batch_size, "world_size": world, "m2iv_version": __version__}
    _write_json_atomic(out / SUMMARY, summary)
    return summary
