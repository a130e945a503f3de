"""Scoring a prediction set by metric name. Importing this module registers every built-in metric: the
official VQA/GQA ports (vqa_metrics), the caption metrics (caption_metrics: PTB tokenizer, CIDEr-D, BLEU)
and the steering checks (text_metrics). Scores are fractions in [0, 1], except CIDEr-D (pycocoevalcap's scale).

    score("vqa_accuracy", ["yes"], [["yes"] * 10])  # {"score": 1.0, "per_example": [1.0], "n": 1}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from m2iv.evaluate import caption_metrics, metric_registry, text_metrics, vqa_metrics  # noqa: F401 - they register


def score(metric_name: str, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Score a whole set: {"score": float, "per_example": list[float] | None, "n": int}."""
    metric = metric_registry.METRICS.get(metric_name)  # looked up at call time: tests swap the registry
    metric_registry.check_inputs(metric_name, predictions, references)
    if metric.corpus:
        value, per_example = metric.fn(predictions, references)
    else:
        per_example = [float(metric.fn(p, list(r))) for p, r in zip(predictions, references, strict=True)]
        value = float(sum(per_example)) / len(per_example)  # same summation as vqaEval's overall
    return {"score": float(value), "per_example": per_example, "n": len(predictions)}


__all__ = ["score"]
