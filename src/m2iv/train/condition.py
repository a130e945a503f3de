"""Fitting a condition from a task's positive and negative training queries (CAST-style; threshold out of fold).

    cond = fit_condition(lm, builder, positives, negatives)          # layer, pooling and threshold cross-fitted
    vectors.with_condition(cond)                                     # the vectors now act on positives only

1. The plain model reads each query's zero-shot prompt (the prompt the runner will build); every candidate
   layer's output is pooled over the prompt: the last token's state, or the mean over the real tokens.
2. The queries are dealt, seeded and class by class, into `folds` folds; queries that share a
   `meta["group"]` (e.g. one request worded four ways) go to the same fold, so each fold is scored as unseen
   groups, the way test requests differ from training ones. For each fold, the direction (mean
   positive - mean negative, centred on their midpoint) or the prototype (mean normalised positive state) is
   fitted on the other folds and scores the fold's queries: every training query gets an out-of-fold score.
3. Per pooling and layer, the threshold with the best balanced accuracy on the out-of-fold scores (the middle of
   the best interval); the pooling and layer are those with the best out-of-fold balanced accuracy, ties going to
   the widest separation (d'). Test queries are never read.
4. The final direction is fitted on every training query at that layer, with that threshold. The record (`fit`)
   keeps the out-of-fold rates and every layer's numbers for the chosen pooling.

CAST (Lee et al., ICLR 2025) picks its layer and threshold by a grid search on the same kind of labelled prompts;
m2iv scores them out of fold so that the threshold is never chosen on the scores it is judged by.

Queries are positives when `meta["condition"]` is true (a task that labels its own queries, e.g. harmful
requests in a mixed safety task); a task without labels takes negatives from another task's queries.
"""

from __future__ import annotations

import random

import torch

from m2iv.data.prompts import PromptBuilder
from m2iv.data.sample import Sample
from m2iv.errors import M2IVError
from m2iv.vectors.condition import Condition, pool

LABEL = "condition"  # Sample.meta key: True for a query the vectors should act on, False for one they should not


def split_by_label(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """(positives, negatives) of queries labelled with meta["condition"]; ([], []) when none is labelled."""
    labelled = [s for s in samples if isinstance((s.meta or {}).get(LABEL), bool)]
    return [s for s in labelled if s.meta[LABEL]], [s for s in labelled if not s.meta[LABEL]]


@torch.no_grad()
def pooled_states(lm, builder: PromptBuilder, samples: list[Sample], layers: list[int], how: str = "mean",
                  batch_size: int = 8) -> torch.Tensor:
    """(N, len(layers), D) float32: each sample's zero-shot prompt, pooled at each layer's output."""
    caught: dict[int, torch.Tensor] = {}
    mask: dict[str, torch.Tensor | None] = {"m": None}

    def hook(layer: int):
        def fn(_m, _a, out):
            caught[layer] = pool(out[0] if isinstance(out, tuple) else out, mask["m"], how).cpu()

        return fn

    handles = [lm.adapter.module(i, "layer").register_forward_hook(hook(i)) for i in layers]
    out = []
    try:
        for i in range(0, len(samples), batch_size):
            batch = builder.encode([builder.build([], q) for q in samples[i:i + batch_size]])
            batch.pop("query_start", None)
            batch = {k: v.to(lm.device) for k, v in batch.items()}
            mask["m"] = batch.get("attention_mask")
            lm.model(**batch)
            out.append(torch.stack([caught[layer] for layer in layers], dim=1))
    finally:
        for h in handles:
            h.remove()
    return torch.cat(out)


GROUP = "group"  # Sample.meta key: queries of one group (the same request worded differently) share a fold


def _folds(groups: list[str], k: int, seed: int) -> torch.Tensor:
    """(n,) fold index of each item: its group's place in a seeded deal of the groups, so every fold holds
    about 1/k of them and no group is split across folds."""
    order = sorted(set(groups))
    random.Random(seed).shuffle(order)
    fold_of = {g: i % k for i, g in enumerate(order)}
    return torch.tensor([fold_of[g] for g in groups], dtype=torch.long)


def _groups(samples: list[Sample]) -> list[str]:
    return [str((s.meta or {}).get(GROUP, s.id)) for s in samples]


def best_threshold(pos: torch.Tensor, neg: torch.Tensor, recall: float | None = None) -> tuple[float, float]:
    """(threshold, objective) of `score >= threshold` on held-out scores. Without `recall`: the best balanced
    accuracy, at the middle of the best interval. With it: the best true-negative rate among the thresholds that
    keep at least `recall` of the positives (a miss costs more than a false alarm: a harmful request answered)."""
    values = torch.cat([pos, neg]).sort().values
    cuts = torch.cat([values[:1] - 1e-3, (values[1:] + values[:-1]) / 2, values[-1:] + 1e-3])
    tpr = torch.stack([(pos >= c).float().mean() for c in cuts])
    tnr = torch.stack([(neg < c).float().mean() for c in cuts])
    if recall is not None:
        ok = torch.nonzero(tpr >= recall - 1e-9).flatten()  # never empty: the lowest cut keeps every positive
        i = int(ok[tnr[ok].argmax()])
        j = int(ok[(tnr[ok] == tnr[i]).nonzero().flatten()].max())  # ties: the highest such cut
        return float((cuts[i] + cuts[j]) / 2), float(tnr[i])
    ba = (tpr + tnr) / 2
    best = torch.nonzero(ba == ba.max()).flatten()
    return float(cuts[best[len(best) // 2]]), float(ba.max())


def _layer_condition(layer: int, fit_pos: torch.Tensor, fit_neg: torch.Tensor, kind: str, similarity: str,
                     how: str) -> Condition:
    if kind == "prototype":
        proto = torch.nn.functional.normalize(fit_pos, dim=-1).mean(0)
        return Condition(layer, proto, torch.zeros_like(proto), 0.0, kind, similarity, how)
    mp, mn = fit_pos.mean(0), fit_neg.mean(0)
    center = torch.zeros_like(mp) if similarity == "cast" else (mp + mn) / 2
    return Condition(layer, mp - mn, center, 0.0, kind, similarity, how)


def _out_of_fold(states: torch.Tensor, is_pos: torch.Tensor, fold: torch.Tensor, layer: int, kind: str,
                 similarity: str, how: str) -> torch.Tensor:
    """(N,) score of every query under the condition fitted without its fold."""
    scores = torch.empty(len(states))
    for k in fold.unique().tolist():
        out = fold == k
        cond = _layer_condition(layer, states[~out & is_pos], states[~out & ~is_pos], kind, similarity, how)
        scores[out] = cond.score(states[out])
    return scores


def _rank(scores: torch.Tensor, is_pos: torch.Tensor, recall: float | None) -> tuple[float, float, float]:
    """(threshold, objective, d') of out-of-fold scores (objective: balanced accuracy, or TNR at `recall`)."""
    sp, sn = scores[is_pos], scores[~is_pos]
    th, ba = best_threshold(sp, sn, recall)
    spread = float(((sp.var() + sn.var()) / 2).sqrt().clamp_min(1e-6))
    return th, ba, float((sp.mean() - sn.mean()) / spread)


def fit_condition(lm, builder: PromptBuilder, positives: list[Sample], negatives: list[Sample], *,
                  layers: list[int] | None = None, pool_how: str = "auto", kind: str = "direction",
                  similarity: str = "cosine", folds: int = 4, seed: int = 0, batch_size: int = 8,
                  max_per_class: int = 256, recall: float | None = None) -> Condition:
    """The condition separating `positives` (fire) from `negatives` (do not); pooling ("auto": the better of last
    and mean), layer and threshold chosen on out-of-fold scores of the training queries."""
    pos, neg = list(positives)[:max_per_class], list(negatives)[:max_per_class]
    n_groups = (len(set(_groups(pos))), len(set(_groups(neg))))
    if min(n_groups) < folds:
        raise M2IVError(f"fitting a condition needs at least {folds} positive and {folds} negative training queries "
                        f"(got {n_groups[0]} and {n_groups[1]}, counting queries of one meta['group'] once); label "
                        "queries with meta['condition'] or give --condition-negatives TASK")
    if folds < 2:
        raise M2IVError(f"the condition's threshold is cross-fitted over at least 2 folds; got {folds}")
    layers = list(range(lm.adapter.num_layers)) if layers is None else list(layers)
    if not layers or any(not 0 <= i < lm.adapter.num_layers for i in layers):
        raise M2IVError(f"condition layers {layers} must be in [0, {lm.adapter.num_layers})")
    pools = ("last", "mean") if pool_how == "auto" else (pool_how,)
    is_pos = torch.tensor([True] * len(pos) + [False] * len(neg))
    fold = torch.cat([_folds(_groups(pos), folds, seed), _folds(_groups(neg), folds, seed + 1)])
    objective = "balanced_accuracy" if recall is None else f"tnr_at_recall_{recall}"
    best: tuple | None = None
    tables: dict[str, list[dict]] = {}
    for how in pools:
        states = pooled_states(lm, builder, pos + neg, layers, how, batch_size)
        tables[how] = []
        for j, layer in enumerate(layers):
            scores = _out_of_fold(states[:, j], is_pos, fold, layer, kind, similarity, how)
            th, ba, d_prime = _rank(scores, is_pos, recall)
            tables[how].append({"layer": layer, objective: round(ba, 4), "d_prime": round(d_prime, 3)})
            if best is None or (ba, d_prime) > best[0]:
                best = ((ba, d_prime), how, j, th, scores, states)
    assert best is not None
    (ba, d_prime), how, j, th, scores, states = best
    cond = _layer_condition(layers[j], states[is_pos, j], states[~is_pos, j], kind, similarity, how)
    cond.threshold = th
    tpr = float((scores[is_pos] >= th).float().mean())
    tnr = float((scores[~is_pos] < th).float().mean())
    cond.fit = {"method": f"{kind} ({similarity}), pooling, layer and threshold on out-of-fold scores of "
                          f"training queries ({folds} folds)", "objective": objective, "n": [len(pos), len(neg)],
                "groups": list(n_groups),
                "folds": folds, "seed": seed, "heldout_tpr": round(tpr, 4), "heldout_tnr": round(tnr, 4),
                "heldout_balanced_accuracy": round((tpr + tnr) / 2, 4), "d_prime": round(d_prime, 3),
                "pools_tried": list(pools), "per_layer": tables[how]}
    return cond


def condition_for_task(lm, task, splits: dict, negatives: list[Sample] | None = None, **kw) -> Condition:
    """Fit a condition on `task`'s training queries (its train split and its demonstration pool): its labelled
    positives and negatives, or all of them as positives against `negatives` (another task's training queries,
    read in this task's prompt). The test split is never read."""
    builder = PromptBuilder(lm, task.instruction, task.answer_template)
    # every training query: the train split and the demonstration pool, each query once
    train = list({s.id: s for s in [*(splits.get("train") or []), *(splits.get("support") or [])]}.values())
    pos, neg = split_by_label(train)
    if negatives is not None:
        pos, neg = (pos or train), list(negatives)
    if not pos or not neg:
        raise M2IVError(f"task {task.name}'s training queries carry no meta['condition'] labels; give "
                        "--condition-negatives TASK (queries the vectors must leave alone)")
    return fit_condition(lm, builder, pos, neg, **kw)


__all__ = ["GROUP", "LABEL", "best_threshold", "condition_for_task", "fit_condition", "pooled_states", "split_by_label"]
