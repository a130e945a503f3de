"""What a results file records besides the score, in the shape lm-evaluation-harness gives its results: the
configuration, library versions, the git revision, the generation settings, the prompt template, the date, and a
standard error per score.

    se, how = standard_error("exact_match", predictions, references, per_example, score)
    meta = run_record(lm, task, cfg, builder, eos, example_prompt)

Standard errors: a metric whose per-example scores are all 0 or 1 gets the binomial sqrt(p (1 - p) / n); any other
per-example metric the bootstrap over examples (1000 resamples, seeded); a corpus metric (CIDEr-D) the bootstrap
recomputing the corpus score on each resample (100 resamples).
"""

from __future__ import annotations

import hashlib
import math
import random
import subprocess
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BOOTSTRAP = 1000  # resamples of a per-example mean
BOOTSTRAP_CORPUS = 100  # resamples of a corpus metric (each recomputes the metric)


def _std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def standard_error(metric_name: str, predictions: list[str], references: list[list[str]],
                   per_example: list[float] | None, value: float, seed: int = 0) -> tuple[float | None, str]:
    """(standard error of the score, how it was computed); None for fewer than 2 examples."""
    from m2iv.evaluate.metric_registry import METRICS

    n = len(predictions)
    if n < 2:
        return None, "none (fewer than 2 examples)"
    metric = METRICS.get(metric_name)
    rng = random.Random(seed)
    if not metric.corpus and per_example is not None:
        if all(s in (0.0, 1.0) for s in per_example):
            return math.sqrt(value * (1 - value) / n), "binomial"
        means = [sum(per_example[rng.randrange(n)] for _ in range(n)) / n for _ in range(BOOTSTRAP)]
        return _std(means), f"bootstrap ({BOOTSTRAP} resamples)"
    scores = []
    for _ in range(BOOTSTRAP_CORPUS):
        idx = [rng.randrange(n) for _ in range(n)]
        scores.append(float(metric.fn([predictions[i] for i in idx], [references[i] for i in idx])[0]))
    return _std(scores), f"bootstrap ({BOOTSTRAP_CORPUS} resamples, corpus score recomputed)"


def versions() -> dict[str, str | None]:
    import platform

    import torch
    import transformers

    from m2iv.constants import __version__

    return {"m2iv": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def git_revision() -> dict[str, Any] | None:
    """The commit of the m2iv checkout this code runs from (and whether it has uncommitted changes); None when m2iv
    is not running from a git checkout (an installed wheel) or git is missing."""
    root = Path(__file__).resolve().parents[3]  # src/m2iv/evaluate/results.py -> the checkout
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": sha, "dirty": bool(dirty)} if sha else None


def run_record(lm, task, cfg, builder, eos: list[int], example_prompt: str | None) -> dict[str, Any]:
    """The run's configuration, versions, git revision, generation settings, prompt template and date."""
    chat = builder.chat_template if isinstance(builder.chat_template, str) else None
    return {
        "config": {"eval": asdict(cfg), "task": task.to_json(), "model": lm.spec, "model_type": lm.family,
                   "dtype": str(next(lm.model.parameters()).dtype).replace("torch.", "")},
        "versions": versions(),
        "git_revision": git_revision(),
        "generation": {"max_new_tokens": task.max_new_tokens, "do_sample": False, "num_beams": 1,
                       "eos_token_id": list(eos), "pad_token_id": lm.tokenizer.pad_token_id,
                       "postprocess": task.postprocess},
        "prompt_template": {"instruction": task.instruction, "answer_template": task.answer_template,
                            "chat_template_sha256": hashlib.sha256(chat.encode()).hexdigest()[:16] if chat else None,
                            "example": example_prompt},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
