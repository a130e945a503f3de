"""What every steering application shares: a runner over ordinary eval folders, rows with n, standard error and
the command that reproduces them, and the answer checks of the style tasks."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

MODEL = "sandbox"  # the model spec the commands name (the bench's MODEL argument replaces it)


def standard_error(p: float, n: int) -> float | None:
    """Binomial standard error of a rate measured on n queries."""
    return round(math.sqrt(max(p * (1 - p), 0.0) / n), 4) if n else None


def eval_command(model: str, task: str, method: str, out: str, vectors: str | None = None, shots: int = 0,
                 n_test: int | None = None, extra: tuple[str, ...] = ()) -> str:
    """The `m2iv eval` command a row's numbers come from (its folder holds predictions.jsonl and summary.json)."""
    words = ["m2iv", "eval", model, "--task", task, "--method", method]
    if vectors:
        words += ["--vectors", vectors]
    if shots:
        words += ["--shots", str(shots)]
    if n_test:
        words += ["--n-test", str(n_test)]
    return shlex.join([*words, *extra, "--out", out])


def rate(rows: list[dict], key) -> float:
    """Share of `rows` for which key(row) is true (0.0 for none)."""
    return round(sum(bool(key(r)) for r in rows) / len(rows), 4) if rows else 0.0


def styled_checks(rows: list[dict], samples: dict) -> dict[str, float]:
    """Share of answers in capitals, naming the image's colour and shape in French / in English, and doing both
    styles at once (French words in capitals)."""
    from m2iv.evaluate.text_metrics import all_caps, words_match, words_match_cased
    from m2iv.sandbox.tasks.applications import styled

    def check(fn, style):
        return rate(rows, lambda r: fn(r["prediction"], [styled(*_cs(samples, r), style)]))

    return {"capitals": rate(rows, lambda r: all_caps(r["prediction"], [])),
            "french_content": check(words_match, "french"), "english_content": check(words_match, "plain"),
            "caps_and_french": check(words_match_cased, "caps-french")}


def _cs(samples: dict, row: dict) -> tuple[str, str]:
    meta = samples[row["id"]].meta
    return meta["colour"], meta["shape"]


class Runner:
    """Evaluates (and trains, through `bench.run_plan`) into resumable folders under `work`."""

    def __init__(self, lm, work: Path, model: str, shots: int, n_test: int, seed: int, batch_size: int,
                 train_defaults: dict, task_overrides: dict | None, log) -> None:
        self.lm, self.work, self.model, self.shots, self.n_test, self.seed = lm, work, model, shots, n_test, seed
        self.batch_size, self.train_defaults, self.task_overrides, self.log = (batch_size, train_defaults,
                                                                               task_overrides, log)
        self._exported: dict[str, Path] = {}

    def export(self, lib, name: str) -> Path:
        """The library entry `name` as a plain vector directory (what --vectors takes), written once per run."""
        if name not in self._exported:
            self._exported[name] = lib.export(lib.get(name).id, self.work / "library-apps" / "exported" / name,
                                              force=True)
        return self._exported[name]

    def save(self, vectors, label: str) -> str:
        """Vectors made here (a composition under test) as a directory under work/, for `run`."""
        from m2iv.vectors.format import save_vectors

        return str(save_vectors(vectors, self.work / "library-apps" / "made" / label, adapter=self.lm.adapter,
                                base_model=self.lm.spec))

    def plan(self, task: str, cells) -> list[dict]:
        from m2iv.evaluate.bench import run_plan

        return run_plan(self.lm, [task], cells, self.work, shots=self.shots, n_test=self.n_test, seed=self.seed,
                        batch_size=self.batch_size, train_defaults=self.train_defaults,
                        task_overrides=self.task_overrides, log=self.log)

    def trained(self, task: str, variant: str = "", train: dict | None = None, options: dict | None = None
                ) -> tuple[dict, str]:
        """Train (or reuse) M²IV on `task` and evaluate it there; the row and its vector directory."""
        from m2iv.evaluate.bench import Cell

        row = self.plan(task, [Cell("m2iv", variant, dict(train or {}), dict(options or {}))])[0]
        return row, row["vectors"]

    def run(self, task_name: str, label: str, vectors: str | None = None, method: str = "zero-shot",
            shots: int = 0, library_root: Path | None = None, options: dict | None = None, limit: int | None = None,
            queries: list | None = None) -> tuple[dict, list[dict], str]:
        """Evaluate `vectors` (a directory, or "library:auto" routed over `library_root`; else a plain method) on
        a task's test split, or on `queries` (held-out training queries, for choices made before the test split is
        read); summary, prediction rows and the equivalent command."""
        from m2iv.data.tasks import get_task
        from m2iv.evaluate.runner import EvalConfig, evaluate
        from m2iv.methods import get_method

        task = get_task(task_name)
        splits = task.splits(None, seed=self.seed)
        if queries is not None:
            splits = {**splits, "test": list(queries)}
        opts = {"vectors": vectors} if vectors else {}
        if library_root is not None:
            opts["library_root"] = str(library_root)
        opts.update(options or {})
        m = get_method("vectors" if vectors else method, opts)  # any method's or a composed entry's vectors
        out = self.work / "library-apps" / task_name / label
        n = limit or self.n_test
        self.log(f"[{task_name}] {label}: evaluating")
        summary = evaluate(self.lm, task, m, EvalConfig(shots=shots, limit=n, batch_size=self.batch_size,
                                                        seed=self.seed), out, splits=splits)
        rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines() if line.strip()]
        rows = [r for r in rows if not r.get("skipped")]
        self.log(f"[{task_name}] {label}: {summary['metric']} = {summary['score']:.4f}")
        extra = ("--ignore-condition",) if (options or {}).get("condition") is False else ()
        cmd = eval_command(self.model, task_name, "vectors" if vectors else method, str(out), vectors, shots, n,
                           extra)
        return summary, rows, cmd


def row(app: str, task: str, config: str, summary: dict, command: str, **extra) -> dict:
    """One application row: the score with its n and standard error (binary checks), costs and its command."""
    score, n = round(summary["score"], 4), summary["n"]
    return {"application": app, "task": task, "config": config, "metric": summary["metric"], "score": score, "n": n,
            "se": standard_error(score, n) if 0 <= score <= 1 else None,
            "mean_prompt_tokens": round(summary["mean_prompt_tokens"], 1),
            "mean_latency_ms": round(summary["mean_latency_ms"], 1), **extra, "command": command}


__all__ = ["MODEL", "Runner", "eval_command", "rate", "row", "standard_error", "styled_checks"]
