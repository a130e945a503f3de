"""The metric registry: a name -> scoring function plus how it aggregates (per example or over the corpus).

The metric families register themselves on import (vqa_metrics, text_metrics, caption_metrics);
`m2iv.evaluate.metrics.score` imports them all and scores a set by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from m2iv.errors import M2IVError
from m2iv.registry import Registry


@dataclass(frozen=True)
class Metric:
    """A scoring function plus how to aggregate it. Per-example: ``fn(prediction, references) -> float``, averaged.
    Corpus (document frequencies, brevity penalty are pooled over the set): ``fn(predictions, references) ->
    (score, per_example | None)``."""

    name: str
    fn: Callable[..., Any]
    higher_is_better: bool = True
    corpus: bool = False


METRICS: Registry[Metric] = Registry("metric")


def register_metric(name: str, higher_is_better: bool = True, corpus: bool = False) -> Callable:
    """Decorator: register `fn` as metric `name`; the function itself is returned unchanged."""

    def _add(fn: Callable) -> Callable:
        METRICS.register(name, Metric(name, fn, higher_is_better, corpus))
        return fn

    return _add


def check_inputs(name: str, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    """Fail early with one clear line rather than deep inside a scorer (or, worse, silently zip-truncate)."""
    if isinstance(predictions, str) or isinstance(references, str):
        raise M2IVError(f"metric {name!r} takes a list of predictions and a list of reference lists, not a string")
    if len(predictions) != len(references):
        raise M2IVError(f"metric {name!r} got {len(predictions)} predictions but {len(references)} reference lists; "
                        "pass one list of references per prediction")
    if not predictions:
        raise M2IVError(f"metric {name!r} got no predictions to score; check that the evaluation split is not empty")
    for i, (p, refs) in enumerate(zip(predictions, references, strict=True)):
        if not isinstance(p, str):
            raise M2IVError(f"prediction {i} is {type(p).__name__}, not str; store an empty string for no answer")
        if isinstance(refs, str) or not refs or not all(isinstance(r, str) for r in refs):
            raise M2IVError(f"references for example {i} must be a non-empty list of strings, got {refs!r}; "
                            "wrap a single answer in a list")


__all__ = ["METRICS", "Metric", "check_inputs", "register_metric"]
