"""What each page shows, as Markdown and table rows: no Gradio here, so the content is testable on its own.

    rows = browse_rows(filter_entries(catalog, text="colour"))       # the Browse table
    md = entry_summary(entry)                                       # the head of an entry's page
"""

from __future__ import annotations

import json
from typing import Any

from m2iv.app.answers import Answer
from m2iv.app.catalog import Catalog
from m2iv.app.results import Benchmarks
from m2iv.library.entry import Entry
from m2iv.library.search import SearchHit, search

BROWSE_COLUMNS = ["name", "model", "method", "task", "shots", "tags", "metrics", "parameters", "created", "id"]
BROWSE_WIDTHS: list[str | int] = ["13%", "9%", "8%", "14%", "5%", "10%", "18%", "7%", "9%", "7%"]
SCORE_COLUMNS = ["source", "method", "shots", "score", "metric", "n", "prompt tokens", "latency ms"]
HIT_COLUMNS = ["similarity", "name", "task", "method", "model", "note"]
RESULT_COLUMNS = ["task", "method", "shots", "score", "metric", "n", "prompt tokens", "latency ms", "parameters"]
ANY = "(any)"


def escape(text: Any) -> str:
    """Text shown inside Markdown: no markup from names, tags or descriptions."""
    return "".join("\\" + c if c in "\\`*_{}[]<>()#+-!|" else c for c in str(text))


def _num(v: Any, digits: int = 4) -> Any:
    return round(v, digits) if isinstance(v, float) else v


def metrics_text(metrics: dict, limit: int = 3) -> str:
    """The numeric metrics, scores (acc, score, cider, ...) first."""
    items = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    items.sort(key=lambda kv: not any(w in kv[0].lower() for w in ("acc", "score", "cider", "match", "bleu")))
    return ", ".join(f"{k}={v:.3g}" for k, v in items[:limit])


def created(entry: Entry) -> str:
    return entry.created_at.replace("T", " ")[:16]


# -- browse -------------------------------------------------------------------------------------------------
def filter_entries(catalog: Catalog, text: str = "", task: str = ANY, method: str = ANY, tag: str = ANY,
                   model: str = ANY) -> list[Entry]:
    """Entries matching the filters; with words, ranked by the share of words found (the CLI's text search)."""
    pick = lambda v: None if not v or v == ANY else v  # noqa: E731
    hits = search(catalog, task=pick(task), method=pick(method), tag=pick(tag), text=(text or "").strip() or None)
    return [h.entry for h in hits if not pick(model) or h.entry.base_model == model]


def browse_rows(entries: list[Entry]) -> list[list]:
    return [[e.name, e.base_model, e.method, e.task or "", "" if e.shots is None else e.shots, ", ".join(e.tags),
             metrics_text(e.metrics), e.config.get("num_parameters", ""), created(e), e.id] for e in entries]


def filter_choices(entries: list[Entry]) -> dict[str, list[str]]:
    """The values each Browse filter offers."""
    def values(xs) -> list[str]:
        return [ANY, *sorted({x for x in xs if x})]

    return {"task": values(e.task for e in entries), "method": values(e.method for e in entries),
            "tag": values(t for e in entries for t in e.tags), "model": values(e.base_model for e in entries)}


def entry_choices(entries: list[Entry]) -> list[tuple[str, str]]:
    """(label, id) pairs for the entry pickers."""
    return [(f"{e.name} · {e.method} · {e.task or 'no task'}", e.id) for e in entries]


# -- an entry's page ----------------------------------------------------------------------------------------
def _sites(config: dict) -> str:
    parts = []
    for site, sp in (config.get("sites") or {}).items():
        layers = sp.get("layers") or []
        span = f"{min(layers)}–{max(layers)}" if layers and layers == list(range(min(layers), max(layers) + 1)) \
            else ",".join(map(str, layers))
        parts.append(f"{site} (layers {span}, {sp.get('operator', '?')})")
    return "; ".join(parts) or "none"


def entry_summary(entry: Entry) -> str:
    cfg = entry.config
    lines = [f"### {escape(entry.name)}", "",
             f"`library:{entry.name}` · id `{entry.id}` · created {created(entry)} UTC", "",
             "| model | method | task | shots | parameters | tags |", "|---|---|---|---|---|---|",
             f"| {escape(entry.base_model)} ({escape(entry.model_type)}) | {escape(entry.method)} | "
             f"{escape(entry.task or '-')} | {'-' if entry.shots is None else entry.shots} | "
             f"{cfg.get('num_parameters', '-')} | "
             f"{escape(', '.join(entry.tags) or '-')} |", "",
             f"**Sites:** {escape(_sites(cfg))} · **token policy:** {escape(cfg.get('token_policy', '?'))} · "
             f"**prototype for search:** {'yes' if entry.prototype is not None else 'no'}"]
    if entry.description:
        lines += ["", escape(entry.description)]
    return "\n".join(lines)


def condition_md(entry: Entry) -> str:
    cond = entry.config.get("condition")
    if not isinstance(cond, dict):
        return "**Condition:** none — the vectors act on every prompt."
    side = {"above": "≥", "below": "≤"}.get(str(cond.get("side")), "?")
    lines = [f"**Condition:** acts only on prompts whose {escape(cond.get('pool', '?'))}-pooled layer-"
             f"{escape(cond.get('layer', '?'))} state has {escape(cond.get('similarity', '?'))} {side} "
             f"{escape(cond.get('threshold', '?'))} to its {escape(cond.get('kind', '?'))}."]
    fit = cond.get("fit")
    if isinstance(fit, dict) and fit:
        lines.append("Held-out fit: " + ", ".join(f"{escape(k)} {escape(_num(v))}" for k, v in fit.items()))
    return "\n\n".join(lines)


def provenance_md(entry: Entry) -> str:
    prov = entry.provenance or {}
    if prov.get("kind") == "composed":
        rows = ["**Composition:** `" + str(prov.get("expression", "?")).replace("`", "'") + "`", "",
                "| weight | entry | id |", "|---|---|---|"]
        rows += [f"| {t.get('weight')} | {escape(t.get('name'))} | `{t.get('id')}` |" for t in prov.get("terms") or []]
        masks = [f"layers {prov['layers']}" if prov.get("layers") else "", f"sites {prov['sites']}"
                 if prov.get("sites") else ""]
        if any(masks):
            rows += ["", "Masks: " + escape(", ".join(m for m in masks if m))]
        return "\n".join(rows)
    if prov.get("kind") == "trained":
        best = prov.get("best") or {}
        return (f"**Trained** on {escape(prov.get('task') or '?')} from `{prov.get('from_directory', '?')}`"
                + (f"; best validation {_num(best.get('metric'))} at step {best.get('step')}" if best else ""))
    return "**Provenance:** " + (escape(json.dumps(prov)) if prov else "not recorded")


def score_rows(entry: Entry, bench: Benchmarks) -> list[list]:
    """The entry's own metrics, then its task's zero-shot, ICL and same-method rows from the bench tables."""
    rows: list[list] = [["entry metrics", k, "", _num(v), "", "", "", ""] for k, v in entry.metrics.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for r in bench.for_task(entry.task, ("zero-shot", "icl", entry.method)):
        rows.append([r["source"], r["label"], r["shots"], _num(r["score"]), r["metric"], r["n"] or "",
                     _num(r["prompt_tokens"], 1) or "", _num(r["latency_ms"], 1) or ""])
    return rows


# -- answers, hits, results ---------------------------------------------------------------------------------
def answer_md(answer: Answer) -> str:
    head = f"**{escape(answer.way)}**"
    if answer.latency_ms is None:
        return f"{head}\n\n_{escape(answer.note or 'not run')}_"
    text = answer.text if answer.text.strip() else "(empty answer)"
    lines = [head, "", f"> {escape(text)}", "", f"{answer.latency_ms:.0f} ms · {answer.prompt_tokens} prompt tokens"]
    if answer.note:
        lines += ["", f"_{escape(answer.note)}_"]
    return "\n".join(lines)


def hit_rows(hits: list[SearchHit]) -> list[list]:
    return [["" if h.score is None else round(h.score, 4), h.entry.name, h.entry.task or "", h.entry.method,
             h.entry.base_model, h.note] for h in hits]


def result_rows(rows: list[dict]) -> list[list]:
    return [[r["task"], r["label"], r["shots"], "does not fit" if r["score"] is None and not r["fits"] else
             _num(r["score"]), r["metric"], r["n"] or "", _num(r["prompt_tokens"], 1) or "",
             _num(r["latency_ms"], 1) or "", r["parameters"] if r["parameters"] is not None else ""] for r in rows]


__all__ = ["ANY", "BROWSE_COLUMNS", "BROWSE_WIDTHS", "HIT_COLUMNS", "RESULT_COLUMNS", "SCORE_COLUMNS", "answer_md",
           "browse_rows", "condition_md", "entry_choices", "entry_summary", "escape", "filter_choices",
           "filter_entries", "hit_rows", "provenance_md", "result_rows", "score_rows"]
