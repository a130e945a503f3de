"""The VLibrary applications, measured: steering a model with stored, composed and negated vectors.

    m2iv bench library sandbox --work runs/bench/shared --out benchmarks/library/sandbox.json

1. Cross-modal alignment: M²IV vectors for yes/no questions about an image's colour and shape
   (sandbox-grounding), against zero-shot and 16-shot ICL.
2. Customized generation: style vectors (capitals, French) trained on "Describe the image.", each alone
   and their library compositions `caps + french` and `0.5*caps + 0.5*french`, scored on the same test
   images by automatic checks: capitals (`all_caps`), the right words in French (`words_match` against
   the French description), the right words in English, and both styles at once (`words_match_cased`
   against "UN TRIANGLE ROUGE.").
3. Safety: a vector distilled from demonstrations that refuse weapons/violence/crime requests and help
   with ordinary ones; refusal rate on held-out harmful requests and over-refusal on held-out ordinary
   ones, without the vector, with it, and with its negation (a library composition `-safety`).
4. Search by example and routing: a library of one entry per query distribution (grounding, a suite
   task, a style, safety) with task prototypes; for held-out test queries of each task, the share whose
   nearest entry is their own task's (search-by-example top-1), and the end score of `library:auto`
   against using the right vector by hand. Entries whose tasks share the very same queries (the two
   styles answer "Describe the image."; the suite tasks all ask "Which word goes with this picture?")
   cannot be told apart by any example, so the routing library holds one of each.

Every number comes from ordinary `m2iv eval`-style run folders under `work/` (resumable).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

GROUNDING = "sandbox-grounding"
STYLES = {"caps": "sandbox-style-caps", "french": "sandbox-style-french"}
STYLE_TEST = "sandbox-style-caps-french"
SAFETY, HARMFUL, BENIGN = "sandbox-safety", "sandbox-safety-harmful", "sandbox-safety-benign"
ROUTED = [GROUNDING, "sandbox-colour-nonce", STYLES["caps"], SAFETY]


def _styled_checks(rows: list[dict], samples: dict) -> dict[str, float]:
    """Share of answers that are in capitals, that name the image's colour and shape in French / in English,
    and that do both styles at once."""
    from m2iv.evaluate.text_metrics import all_caps, words_match, words_match_cased
    from m2iv.sandbox.applications import styled

    n = len(rows) or 1
    out = {"capitals": 0.0, "french_content": 0.0, "english_content": 0.0, "caps_and_french": 0.0}
    for r in rows:
        meta = samples[r["id"]].meta
        c, s, pred = meta["colour"], meta["shape"], r["prediction"]
        out["capitals"] += all_caps(pred, [])
        out["french_content"] += words_match(pred, [styled(c, s, "french")])
        out["english_content"] += words_match(pred, [styled(c, s, "plain")])
        out["caps_and_french"] += words_match_cased(pred, [styled(c, s, "caps-french")])
    return {k: round(v / n, 4) for k, v in out.items()}


class _Runner:
    def __init__(self, lm, work: Path, shots: int, n_test: int, seed: int, batch_size: int, train_defaults: dict,
                 task_overrides: dict | None, log) -> None:
        self.lm, self.work, self.shots, self.n_test, self.seed = lm, work, shots, n_test, seed
        self.batch_size, self.train_defaults, self.task_overrides, self.log = (batch_size, train_defaults,
                                                                               task_overrides, log)

    def plan(self, task: str, cells) -> list[dict]:
        from m2iv.evaluate.bench import run_plan

        return run_plan(self.lm, [task], cells, self.work, shots=self.shots, n_test=self.n_test, seed=self.seed,
                        batch_size=self.batch_size, train_defaults=self.train_defaults,
                        task_overrides=self.task_overrides, log=self.log)

    def trained(self, task: str) -> tuple[dict, str]:
        """Train (or reuse) M²IV on `task` and evaluate it there; the row and its vector directory."""
        from m2iv.evaluate.bench import Cell

        row = self.plan(task, [Cell("m2iv")])[0]
        return row, row["vectors"]

    def run(self, task_name: str, label: str, vectors: str | None = None, method: str = "zero-shot",
            shots: int = 0, library_root: Path | None = None) -> tuple[dict, list[dict]]:
        """Evaluate `vectors` (a directory, or "library:auto" routed over `library_root`; else a plain method)
        on a task's test queries; summary and prediction rows."""
        from m2iv.evaluate.runner import EvalConfig, evaluate
        from m2iv.evaluate.tasks import get_task
        from m2iv.methods import get_method

        task = get_task(task_name)
        splits = task.splits(None, seed=self.seed)
        options = {"vectors": vectors} if vectors else {}
        if library_root is not None:
            options["library_root"] = str(library_root)
        m = get_method("vectors" if vectors else method, options)  # any method's or a composed entry's vectors
        out = self.work / "library-apps" / task_name / label
        self.log(f"[{task_name}] {label}: evaluating")
        summary = evaluate(self.lm, task, m, EvalConfig(shots=shots, limit=self.n_test, batch_size=self.batch_size,
                                                        seed=self.seed), out, splits=splits)
        rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines() if line.strip()]
        self.log(f"[{task_name}] {label}: {summary['metric']} = {summary['score']:.4f}")
        return summary, rows


def _row(app: str, task: str, config: str, summary: dict, **extra) -> dict:
    return {"application": app, "task": task, "config": config, "metric": summary["metric"],
            "score": round(summary["score"], 4), "n": summary["n"],
            "mean_prompt_tokens": round(summary["mean_prompt_tokens"], 1),
            "mean_latency_ms": round(summary["mean_latency_ms"], 1), **extra}


def library_applications(lm, work: str | Path, library_root: str | Path | None = None, shots: int = 16,
                         n_test: int = 100, seed: int = 0, batch_size: int = 8, train_defaults: dict | None = None,
                         task_overrides: dict | None = None, search_n: int = 50, log=print) -> dict:
    from m2iv.evaluate.tasks import get_task
    from m2iv.library.store import Library

    work = Path(work)
    t0 = time.time()
    r = _Runner(lm, work, shots, n_test, seed, batch_size, train_defaults or {}, task_overrides, log)
    lib = Library(library_root or work / "library-apps" / "library")
    rows: list[dict] = []
    entries: dict[str, str] = {}

    def add(task: str, vec_dir: str, name: str, tags: tuple[str, ...]) -> None:
        existing = [e for e in lib.entries() if e.name == name]
        entry = existing[0] if existing else lib.add(vec_dir, name=name, tags=tags, task=task)
        if entry.prototype is None:
            entry = lib.add_prototype_from_task(entry.id, lm, get_task(task), seed=seed)
        entries[name] = entry.id

    exported: dict[str, str] = {}

    def export(entry_id: str, name: str) -> str:
        """The entry as a plain vector directory (what --vectors takes), written once per run."""
        if name not in exported:
            exported[name] = str(lib.export(entry_id, work / "library-apps" / "exported" / name, force=True))
        return exported[name]

    def composed(name: str, expression: str, tags: tuple[str, ...]) -> str:
        existing = [e for e in lib.entries() if e.name == name]
        return export((existing[0] if existing else lib.compose(name, expression, tags=tags)).id, name)

    # 1. cross-modal alignment
    from m2iv.evaluate.bench import Cell

    for cell_row in r.plan(GROUNDING, [Cell("zero-shot"), Cell("icl"), Cell("m2iv")]):
        config = cell_row["method"] + (f"-{cell_row['shots']}shot" if cell_row["method"] != "zero-shot" else "")
        rows.append({"application": "alignment", "task": GROUNDING, "config": config,
                     **{k: cell_row[k] for k in ("metric", "score", "n", "mean_prompt_tokens", "mean_latency_ms")}})
        if cell_row["method"] == "m2iv":
            add(GROUNDING, cell_row["vectors"], "grounding", ("alignment", "sandbox"))

    # 2. customized generation: two styles and their composition, all on the same test images
    style_samples = {s.id: s for s in get_task(STYLE_TEST).splits(None, seed=seed)["test"]}
    for style, task in STYLES.items():
        _, vec_dir = r.trained(task)
        add(task, vec_dir, f"style-{style}", ("style", "sandbox"))
    # config -> (library entry to export, composition expression or None)
    configs = {"zero-shot": (None, None), "caps": ("style-caps", None), "french": ("style-french", None),
               "caps + french": ("style-caps-french", "style-caps + style-french"),
               "0.5 caps + 0.5 french": ("style-caps-french-half", "0.5*style-caps + 0.5*style-french")}
    for config, (name, expression) in configs.items():
        if name is None:
            vec = None
        elif expression is not None:
            vec = composed(name, expression, ("style", "composed"))
        else:
            vec = export(entries[name], name)
        summary, preds = r.run(STYLE_TEST, config.replace(" + ", "+").replace(" ", ""), vec)
        scored = [p for p in preds if not p.get("skipped")]
        rows.append(_row("style", STYLE_TEST, config, summary, checks=_styled_checks(scored, style_samples)))

    # 3. safety: refusal on held-out harmful requests, over-refusal on held-out ordinary ones
    _, safety_dir = r.trained(SAFETY)
    add(SAFETY, safety_dir, "safety", ("safety", "sandbox"))
    negated = composed("safety-negated", "-1.0*safety", ("safety", "negated"))
    for config, vec, method, k in (("zero-shot", None, "zero-shot", 0), (f"icl-{shots}shot", None, "icl", shots),
                                   ("m2iv", safety_dir, "m2iv", 0), ("m2iv negated", negated, "m2iv", 0)):
        for task in (HARMFUL, BENIGN):
            summary, _ = r.run(task, config.replace(" ", "-"), vec, method=method, shots=k)
            rows.append(_row("safety", task, config, summary))

    # 4. search by example and routing over one entry per query distribution
    _, suite_dir = r.trained("sandbox-colour-nonce")
    add("sandbox-colour-nonce", suite_dir, "colour-nonce", ("suite", "sandbox"))
    route_root = work / "library-apps" / "routing-library"
    route_lib = Library(route_root)
    names = {GROUNDING: "grounding", "sandbox-colour-nonce": "colour-nonce", STYLES["caps"]: "style-caps",
             SAFETY: "safety"}
    for task, name in names.items():
        if not [e for e in route_lib.entries() if e.name == name]:
            src = lib.get(entries[name])
            e = route_lib.add(export(src.id, name), name=name, task=task, tags=tuple(src.tags))
            route_lib.set_prototype(e.id, src.prototype, src.prototype_info)
    want = {e.name: e.id for e in route_lib.entries()}
    search_rows: list[dict] = []
    for task, name in names.items():
        test = get_task(task).splits(None, seed=seed)["test"][:search_n]
        got = route_lib.route(lm, test)
        hits = sum(g == want[name] for g in got)
        search_rows.append({"task": task, "entry": name, "n": len(test), "top1": round(hits / len(test), 4)})
        log(f"[search] {task}: {hits}/{len(test)} routed to {name}")
    total = sum(s["n"] for s in search_rows)
    search = {"per_task": search_rows, "top1": round(sum(s["top1"] * s["n"] for s in search_rows) / total, 4),
              "n": total, "library": [{"name": e.name, "task": e.task} for e in route_lib.entries()]}
    routing = []
    for task, name in names.items():
        hand_dir = export(entries[name], name)
        hand, _ = r.run(task, "hand", hand_dir)
        auto, preds = r.run(task, "library-auto", "library:auto", library_root=route_root)
        routed_right = sum(p.get("route") == want[name] for p in preds) / max(len(preds), 1)
        routing.append({"task": task, "metric": auto["metric"], "hand_vector": round(hand["score"], 4),
                        "library_auto": round(auto["score"], 4), "routed_to_own_entry": round(routed_right, 4),
                        "n": auto["n"]})
    lib.close()
    route_lib.close()
    return {"rows": rows, "search_by_example": search, "routing": routing,
            "wall_seconds": round(time.time() - t0, 1)}


def markdown(result: dict) -> str:
    lines = ["| application | task | config | metric | score | n | prompt tokens | latency ms | checks |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        checks = ", ".join(f"{k} {v}" for k, v in (r.get("checks") or {}).items())
        lines.append(f"| {r['application']} | {r['task']} | {r['config']} | {r['metric']} | {r['score']} | {r['n']} | "
                     f"{r['mean_prompt_tokens']} | {r['mean_latency_ms']} | {checks} |")
    s = result["search_by_example"]
    lines += ["", f"Search by example, top-1 = own task's entry: **{s['top1']}** (n = {s['n']})", "",
              "| task | entry | n | top-1 |", "|---|---|---|---|"]
    lines += [f"| {x['task']} | {x['entry']} | {x['n']} | {x['top1']} |" for x in s["per_task"]]
    lines += ["", "Routing (`--vectors library:auto`) against the right vector by hand:", "",
              "| task | metric | hand vector | library:auto | routed to own entry | n |", "|---|---|---|---|---|---|"]
    lines += [f"| {x['task']} | {x['metric']} | {x['hand_vector']} | {x['library_auto']} | {x['routed_to_own_entry']} "
              f"| {x['n']} |" for x in result["routing"]]
    return "\n".join(lines) + "\n"


__all__ = ["library_applications", "markdown"]
