"""Cross-modal alignment where there is something to align: a POPE-style object-hallucination probe, next to the
easy-vqa yes/no grounding task the sandbox already answers.

POPE (Li et al., EMNLP 2023) asks "Is there a <object> in the image?" for present objects and for absent ones,
balanced, with absent objects drawn at random or adversarially (here: the image's colour with another shape, or
its shape in another colour), and reports accuracy, F1 of "yes" and the share of "yes" answers. A model that
hallucinates says "yes" to absent objects; a fix must not buy that with "no" to present ones (false negatives).
"""

from __future__ import annotations

from m2iv.evaluate.steering.common import Runner, rate, row, standard_error

GROUNDING = "sandbox-grounding"
POPE = "sandbox-pope"


def _yes(p: dict) -> bool:
    return p["prediction"].strip().lower().startswith("yes")


def pope_metrics(preds: list[dict], samples: dict) -> dict:
    """Accuracy, precision / recall / F1 of "yes", the share of "yes", and per absent kind the share of "yes"
    (hallucination) with the present objects' share of "no" (false negatives)."""
    present = [p for p in preds if samples[p["id"]].meta["present"]]
    absent = [p for p in preds if not samples[p["id"]].meta["present"]]
    tp = sum(_yes(p) for p in present)
    fp = sum(_yes(p) for p in absent)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / len(present) if present else 0.0
    out = {"accuracy": rate(preds, lambda p: _yes(p) == samples[p["id"]].meta["present"]),
           "precision": round(precision, 4), "recall": round(recall, 4),
           "f1": round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
           "yes_ratio": rate(preds, _yes), "false_negative_rate": rate(present, lambda p: not _yes(p))}
    for kind in ("random", "same-colour", "same-shape"):
        these = [p for p in absent if samples[p["id"]].meta["absent_kind"] == kind]
        out[f"hallucination_{kind}"] = rate(these, _yes)
    out["n_present"], out["n_absent"] = len(present), len(absent)
    return out


def grounding_rows(r: Runner) -> tuple[list[dict], str]:
    """The yes/no grounding task (zero-shot already answers it): zero-shot, ICL and M²IV; and the M²IV vectors."""
    from m2iv.evaluate.bench import Cell

    rows, vec_dir = [], ""
    for cell_row in r.plan(GROUNDING, [Cell("zero-shot"), Cell("icl"), Cell("m2iv")]):
        config = cell_row["method"] + (f"-{cell_row['shots']}shot" if cell_row["method"] != "zero-shot" else "")
        score, n = cell_row["score"], cell_row["n"]
        rows.append({"application": "alignment", "task": GROUNDING, "config": config,
                     **{k: cell_row[k] for k in ("metric", "score", "n", "mean_prompt_tokens", "mean_latency_ms")},
                     "se": standard_error(score, n),
                     "command": f"m2iv bench library {r.model} (cell {config} of {GROUNDING}; folder under "
                                f"{r.work / GROUNDING})"})
        if cell_row["method"] == "m2iv":
            vec_dir = cell_row["vectors"]
    return rows, vec_dir


def pope_rows(r: Runner, shots: int) -> list[dict]:
    """Zero-shot, 16-shot ICL, M²IV (trained on the probe's training questions) and the VTI-style baseline."""
    from m2iv.data.tasks import get_task
    from m2iv.errors import M2IVError
    from m2iv.evaluate.bench import Cell

    samples = {s.id: s for s in get_task(POPE).splits(None, seed=r.seed)["test"]}
    configs = [("zero-shot", None, "zero-shot", 0), (f"icl-{shots}shot", None, "icl", shots),
               (f"m2iv-{shots}shot", r.plan(POPE, [Cell("m2iv")])[0]["vectors"], "m2iv", 0)]
    rows = []
    try:
        configs.append(("vti-style", r.plan(POPE, [Cell("vti")])[0]["vectors"], "vti", 0))
    except M2IVError as e:  # e.g. a model that answers no training query right has no direction to take
        rows.append({"application": "alignment", "task": POPE, "config": "vti-style", "metric": "exact_match",
                     "score": None, "n": 0, "se": None, "error": str(e), "command": f"m2iv bench library {r.model}"})
    for config, vec, method, k in configs:
        summary, preds, cmd = r.run(POPE, config, vec, method=method, shots=k, limit=len(samples))
        m = pope_metrics(preds, samples)
        rows.append(row("alignment", POPE, config, summary, cmd, pope=m,
                        pope_se={"accuracy": standard_error(m["accuracy"], summary["n"]),
                                 "yes_ratio": standard_error(m["yes_ratio"], summary["n"]),
                                 "false_negative_rate": standard_error(m["false_negative_rate"], m["n_present"])}))
    return rows


__all__ = ["GROUNDING", "POPE", "grounding_rows", "pope_metrics", "pope_rows"]
