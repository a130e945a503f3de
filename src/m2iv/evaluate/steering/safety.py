"""Safety that does not over-refuse: a refusal vector that acts only where a condition says the request is harmful,
next to the training-side alternatives (longer training, contrastive training) and 16-shot ICL on the same mixed
demonstrations. Three held-out test sets: harmful requests (refusal), ordinary ones (over-refusal) and ordinary
ones worded like harmful ones (near-miss over-refusal)."""

from __future__ import annotations

from m2iv.evaluate.steering.common import Runner, rate, row

SAFETY = "sandbox-safety"
# The default condition's threshold has the best balanced accuracy out of fold. The second keeps at least RECALL
# of the harmful training queries out of fold (a missed harmful request costing more than a refused ordinary one);
# both are reported.
RECALL = 0.975
TESTS = {"sandbox-safety-harmful": "refusal", "sandbox-safety-benign": "over-refusal",
         "sandbox-safety-nearmiss": "near-miss over-refusal"}


def fit_safety_condition(r: Runner, recall: float | None = None):
    """The condition on the safety task's own training queries (harmful: fire; ordinary: do not), cross-fitted
    over folds of whole requests (meta["group"]: one action, four wordings), as the test requests are unseen
    actions."""
    from m2iv.data.tasks import get_task
    from m2iv.train.condition import condition_for_task

    task = get_task(SAFETY)
    return condition_for_task(r.lm, task, task.splits(None, seed=r.seed), seed=r.seed, recall=recall)


def vectors_plan(r: Runner) -> dict[str, str]:
    """Vector directories of the training-side alternatives: the plain vector (the library's), 3x the steps, and
    contrastive training (ordinary requests kept at the plain model's answer)."""
    return {"m2iv": r.trained(SAFETY)[1],
            "m2iv 180 steps": r.trained(SAFETY, "180-steps", {"steps": 180})[1],
            "m2iv contrastive": r.trained(SAFETY, "contrastive", {"teacher": {"negatives": "zero-shot"}})[1]}


def safety_rows(r: Runner, lib, shots: int) -> tuple[list[dict], dict]:
    """Rows for every configuration on the three test sets, and the condition's fitting record."""
    from m2iv.library.compose import DEFAULT_OPERATOR

    dirs = vectors_plan(r)
    conds = {"balanced": fit_safety_condition(r), "recall": fit_safety_condition(r, RECALL)}
    names = {e.name for e in lib.entries()}
    entries = {}
    for config, name in (("m2iv", "safety"), ("m2iv contrastive", "safety-contrastive")):
        entries[config] = lib.get(name).id if name in names else lib.add(
            dirs[config], name=name, tags=("safety", "sandbox"), task=SAFETY).id
    for config, name, base, which in (("m2iv + condition", "safety-gated", "m2iv", "balanced"),
                                      (f"m2iv + condition (recall {RECALL})", "safety-gated-recall", "m2iv", "recall"),
                                      ("m2iv contrastive + condition", "safety-contrastive-gated", "m2iv contrastive",
                                       "balanced")):
        if name not in names:
            lib.with_condition(entries[base], conds[which], name=name, adapter=r.lm.adapter,
                               tags=("safety", "conditioned"))
        dirs[config] = str(r.export(lib, name))
    if "safety-negated" not in names:
        lib.compose("safety-negated", "-1.0*safety", tags=("safety", "negated"), operator=DEFAULT_OPERATOR)
    dirs["m2iv negated"] = str(r.export(lib, "safety-negated"))
    configs = [("zero-shot", None, "zero-shot", 0), (f"icl-{shots}shot", None, "icl", shots),
               *((c, d, "m2iv", 0) for c, d in dirs.items())]
    rows = []
    for config, vec, method, k in configs:
        for test, what in TESTS.items():
            label = config.replace(" + ", "+").replace(" ", "-").replace("(", "").replace(")", "")
            summary, preds, cmd = r.run(test, label, vec, method=method, shots=k)
            extra: dict = {"measures": what}
            if any("condition_fired" in p for p in preds):
                extra["condition_fired"] = rate(preds, lambda p: p.get("condition_fired"))
            rows.append(row("safety", test, config, summary, cmd, **extra))
    records = {}
    for which, cond in conds.items():
        fit = {k: v for k, v in cond.fit.items() if k != "method"}
        records[which] = {"layer": cond.layer, "kind": cond.kind, "pool": cond.pool,
                          "threshold": round(cond.threshold, 4), **fit,
                          "fitted_on": f"{SAFETY} training queries (train split and demonstration pool)"}
    record = {**records["balanced"], "recall_variant": records["recall"]}
    return rows, record


__all__ = ["SAFETY", "TESTS", "fit_safety_condition", "safety_rows"]
