"""`benchmarks/library/sandbox.md`: the application tables of `m2iv bench library`, from its JSON."""

from __future__ import annotations


def _pm(score, se) -> str:
    return f"{score} ± {se}" if se is not None else f"{score}"


def _safety(rows: list[dict], record: dict | None) -> list[str]:
    configs = list(dict.fromkeys(r["config"] for r in rows))
    by = {(r["config"], r["task"]): r for r in rows}
    lines = ["## Safety (refusal on harmful, over-refusal on ordinary and near-miss requests; n per cell)", "",
             "| config | refusal (harmful) | over-refusal (ordinary) | over-refusal (near-miss) | condition fired "
             "(harmful / ordinary / near-miss) | prompt tokens |", "|---|---|---|---|---|---|"]
    tests = ("sandbox-safety-harmful", "sandbox-safety-benign", "sandbox-safety-nearmiss")
    for c in configs:
        cells = [by.get((c, t)) for t in tests]
        fired = " / ".join(str(x.get("condition_fired", "")) if x else "" for x in cells)
        lines.append(f"| {c} | " + " | ".join(f"{_pm(x['score'], x['se'])} (n={x['n']})" if x else "" for x in cells)
                     + f" | {fired.strip(' /')} | {cells[0]['mean_prompt_tokens'] if cells[0] else ''} |")
    if record:
        lines += ["", f"Condition: layer {record['layer']} ({record['kind']}, {record['pool']} pool, threshold "
                      f"{record['threshold']}), fitted on {record['fitted_on']}: TPR {record['heldout_tpr']}, "
                      f"TNR {record['heldout_tnr']} out of fold (n = {record['n'][0]} harmful, "
                      f"{record['n'][1]} ordinary; folds of whole requests)."]
        rv = record.get("recall_variant")
        if rv:
            lines += ["", f"Condition (recall variant): layer {rv['layer']}, threshold {rv['threshold']} "
                          f"({rv['objective']}): TPR {rv['heldout_tpr']}, TNR {rv['heldout_tnr']} out of fold."]
    return lines


def _styles(rows: list[dict]) -> list[str]:
    lines = ["## Composition (French words in capitals; n per row)", "",
             "| config | operator | French capitals | capitals | French words | English words | n |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        c, s = r["checks"], r["checks_se"]
        lines.append(f"| {r['config']} | {r.get('operator') or ''} | {_pm(c['caps_and_french'], s['caps_and_french'])} "
                     f"| {c['capitals']} | {c['french_content']} | {c['english_content']} | {r['n']} |")
    return lines


def _alignment(rows: list[dict]) -> list[str]:
    lines = ["## Alignment", "", "| task | config | score | n | prompt tokens |", "|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['config']} | {_pm(r['score'], r['se'])} | {r['n']} | {r['mean_prompt_tokens']} |"
              for r in rows if "pope" not in r and "error" not in r]
    lines += [f"| {r['task']} | {r['config']} | not fitted: {r['error']} | | |" for r in rows if "error" in r]
    pope = [r for r in rows if "pope" in r]
    if pope:
        lines += ["", "POPE-style probe (n = 200: 100 present, 100 absent objects):", "",
                  "| config | accuracy | F1 | yes ratio | false negatives | hallucination: random / same colour / "
                  "same shape |", "|---|---|---|---|---|---|"]
        for r in pope:
            m, s = r["pope"], r["pope_se"]
            lines.append(f"| {r['config']} | {_pm(m['accuracy'], s['accuracy'])} | {m['f1']} | "
                         f"{_pm(m['yes_ratio'], s['yes_ratio'])} | {m['false_negative_rate']} | "
                         f"{m['hallucination_random']} / {m['hallucination_same-colour']} / "
                         f"{m['hallucination_same-shape']} |")
    return lines


def _routing(result: dict) -> list[str]:
    s = result["search_by_example"]
    lines = ["## Search by example and routing", "",
             f"Search by example, top-1 = own task's entry: **{s['top1']}** (n = {s['n']})", "",
             "| task | entry | n | top-1 |", "|---|---|---|---|"]
    lines += [f"| {x['task']} | {x['entry']} | {x['n']} | {x['top1']} |" for x in s["per_task"]]
    lines += ["", "| task | metric | hand vector | library:auto | routed to own entry | n |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {x['task']} | {x['metric']} | {x['hand_vector']} | {x['library_auto']} | "
              f"{x['routed_to_own_entry']} | {x['n']} |" for x in result["routing"]]
    return lines


def markdown(result: dict) -> str:
    rows = result.get("rows", [])
    lines = [f"Made by `{result.get('meta', {}).get('command', 'm2iv bench library')}`; ± is one standard error.", ""]
    parts = [_alignment([r for r in rows if r["application"] == "alignment"]),
             _styles([r for r in rows if r["application"] == "style"]),
             _safety([r for r in rows if r["application"] == "safety"], result.get("safety_condition"))]
    for part in parts:
        if len(part) > 4:
            lines += part + [""]
    if "search_by_example" in result:
        lines += _routing(result) + [""]
    lines += ["## Commands (one `m2iv eval` folder per row)", ""]
    lines += [f"- {r['application']} / {r['task']} / {r['config']}: `{r['command']}`" for r in rows]
    return "\n".join(lines) + "\n"


__all__ = ["markdown"]
