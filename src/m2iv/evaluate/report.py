"""`m2iv report`: one Markdown report with tables and plots from any mix of results files:
`summary.json` of `m2iv eval` runs, tables of `m2iv bench suite|compare`, curves of `m2iv bench many-shot`,
cost tables of `m2iv bench efficiency`, and training logs (train_log.jsonl, a vector directory, or found beside
the vectors a row names). A row appears once (a later file's replaces an earlier one's) with its source file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from m2iv.errors import M2IVError


def _read(path: Path) -> dict | list:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise M2IVError(f"cannot read results file {path} ({e}); give summary.json or bench JSON files") from None


def _is_efficiency(data) -> bool:
    return isinstance(data, dict) and "hook_overhead" in data and isinstance(data.get("rows"), list)


def _efficiency_lines(path: Path, data: dict) -> list[str]:
    s = data.get("settings", {})
    lines = [f"### {path.name}: {s.get('task', '?')}, batch {s.get('batch_size', '?')}, "
             f"{s.get('new_tokens', '?')} new tokens, {s.get('n', '?')} queries", "",
             "| method | prompt tokens | latency ms | x zero-shot | peak tensor MB | x zero-shot | peak RSS MB "
             "| parameters | train s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        cells = [r.get(k) for k in ("latency_vs_zero_shot", "peak_tensor_mb", "peak_tensor_vs_zero_shot",
                                        "peak_rss_mb")]
        name = r["method"] + (f" ({r['shots']}-shot)" if r["method"] == "icl" and r.get("shots") else "")
        lines.append(f"| {name} | {r['prompt_tokens']:.0f} | {r['latency_ms']:.1f} | "
                     + " | ".join("" if c is None else str(c) for c in cells)
                     + f" | {r.get('parameters', 0):,} | {r.get('train_seconds', '')} |")
    if any("ttft_ms" in r for r in data["rows"]):
        lines += _serving_lines(data["rows"])
    h = data.get("hook_overhead") or {}
    if h:
        lines += ["", "Hook overhead (all-zero vectors injected vs plain zero-shot): "
                  f"latency x{h.get('latency_ratio')}, "
                      f"peak tensor memory x{h.get('peak_tensor_ratio', 'n/a')}, peak RSS x{h.get('peak_rss_ratio')}."]
    return lines + [""]


def _setting(data: dict) -> str:
    s = data.get("settings", {})
    return f"batch {s.get('batch_size', '?')}, {s.get('new_tokens', '?')} new token(s)"


def _serving_lines(rows: list[dict]) -> list[str]:
    """Per-request serving metrics, break-even query counts against each ICL row, and the training-step costs."""
    icl = [f"icl-{r['shots']}" for r in rows if r["method"] == "icl"]
    head = ["method", "TTFT ms", "TPOT ms", "e2e ms", *(f"break-even vs {k}" for k in icl), "train step x fwd+bwd",
            "train peak x fine-tune"]
    out = ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        name = r["method"] + (f" ({r['shots']}-shot)" if r["method"] == "icl" else "")
        be = r.get("break_even_queries") or {}
        cells = [r.get("ttft_ms"), r.get("tpot_ms"), r.get("e2e_ms"), *(be.get(k, "") for k in icl),
                 r.get("train_step_ratio"), r.get("train_peak_vs_finetune")]
        out.append(f"| {name} | " + " | ".join("" if c is None else str(c) for c in cells) + " |")
    return out


def _rows_of(path: Path, data) -> list[dict]:
    if isinstance(data, dict) and "rows" in data and isinstance(data["rows"], list):
        rows = data["rows"]
    elif isinstance(data, dict) and {"task", "method", "score"} <= set(data):
        rows = [{**data, "vectors": ((data.get("method_options") or {}).get("options") or {}).get("vectors")}]
    else:
        raise M2IVError(f"{path} is not an m2iv results file (expected summary.json, a bench table, a "
                        "train_log.jsonl or a vector directory)")
    out = []
    for r in rows:
        if "score" not in r or "method" not in r:
            continue
        out.append({"task": r.get("task", "?"), "method": r["method"], "variant": r.get("variant", ""),
                    "shots": r.get("shots", 0), "score": r["score"], "metric": r.get("metric", ""),
                    "stderr": r.get("score_stderr"),
                    "prompt_tokens": r.get("mean_prompt_tokens", r.get("prompt_tokens")),
                    "latency_ms": r.get("mean_latency_ms", r.get("latency_ms")), "source": path,
                    "vectors": r.get("vectors")})
    return out


def _dedupe(rows: list[dict]) -> list[dict]:
    """One row per (task, method, variant, shots): a later file's row replaces an earlier one's (as `bench merge`
    does), keeping the first one's place."""
    kept: dict[tuple, dict] = {}
    for r in rows:
        kept[(r["task"], r["method"], r["variant"] or "", r["shots"])] = r
    return list(kept.values())


def _train_logs(inputs: list[Path], rows: list[dict]) -> dict[str, list[dict]]:
    """Training logs to plot: train_log.jsonl files and vector directories given, and those of the rows' vectors
    (a vector directory's log is in its sibling `<dir>.train/`); labelled by method and folder."""
    found: dict[Path, str] = {}
    for p in inputs:
        log = p if p.name == "train_log.jsonl" else p / "train_log.jsonl" if p.name.endswith(".train") else \
            p.parent / f"{p.name}.train" / "train_log.jsonl"
        found.setdefault(log, "")
    for r in rows:
        if r.get("vectors"):
            v = Path(r["vectors"])
            found.setdefault(v.parent / f"{v.name}.train" / "train_log.jsonl", _label(r))
    logs = {}
    for log, lab in found.items():
        if not log.is_file():
            continue
        recs = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
        recs = [x for x in recs if isinstance(x, dict) and "step" in x and "loss" in x]
        if recs:
            folder = log.parent.name.removesuffix(".train")
            logs[f"{lab or _method_of(log)} [{folder}]"] = recs
    return logs


def _method_of(log: Path) -> str:
    """The method of the vectors next to a training log (their m2iv_config.json), else "vectors"."""
    config = log.parent.parent / log.parent.name.removesuffix(".train") / "m2iv_config.json"
    try:
        return str(json.loads(config.read_text()).get("method", "vectors"))
    except (OSError, ValueError, AttributeError):
        return "vectors"


def _label(r: dict) -> str:
    return r["method"] + (f" ({r['variant']})" if r["variant"] else "")


def _table(rows: list[dict], tasks: list[str], out: Path) -> list[str]:
    lines = []
    for t in tasks:
        lines += [f"## {t}", "", "| method | shots | score | ± SE | metric | prompt tokens | latency ms | source |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in sorted((r for r in rows if r["task"] == t), key=lambda r: (_label(r), r["shots"])):
            score = "does not fit" if r["score"] is None else f"{r['score']:.4f}"
            se = "" if r["stderr"] is None else f"{r['stderr']:.4f}"
            src = os.path.relpath(r["source"], out)
            lines.append(f"| {_label(r)} | {r['shots']} | {score} | {se} | {r['metric']} | "
                         f"{'' if r['prompt_tokens'] is None else round(r['prompt_tokens'], 1)} | "
                         f"{'' if r['latency_ms'] is None else round(r['latency_ms'], 1)} | {src} |")
        lines.append("")
    return lines


def build_report(paths: list[str | Path], out: str | Path, title: str = "m2iv report") -> Path:
    """report.md (a table per task, sources relative to the report) with accuracy_vs_shots.png,
    accuracy_vs_cost.png, efficiency.png and, when training logs are found, loss_curves.png."""
    from m2iv.evaluate import plots
    from m2iv.files import write_text_atomic

    inputs = [Path(p) for p in paths]
    logs_given = [p for p in inputs if p.name == "train_log.jsonl" or p.is_dir()]
    loaded = [(p, _read(p)) for p in inputs if p not in logs_given]
    costs = [(p, d) for p, d in loaded if isinstance(d, dict) and _is_efficiency(d)]
    rows = _dedupe([r for p, d in loaded if not _is_efficiency(d) for r in _rows_of(p, d)])
    logs = _train_logs(logs_given, rows)
    if not rows and not costs and not logs:
        raise M2IVError("the results files hold no rows")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    sources = sorted(os.path.relpath(p, out) for p in inputs)
    lines = [f"# {title}", "", f"Sources (relative to this report): {', '.join(sources)}", ""]
    lines += _table(rows, tasks, out)
    if costs:
        lines += ["## Inference cost", ""]
        for p, d in costs:
            lines += _efficiency_lines(p, d)
    figures = []
    if rows:
        figures += [(plots.shots_figure(rows, tasks), "accuracy_vs_shots.png", "accuracy vs shots"),
                    (plots.cost_figure(rows, tasks), "accuracy_vs_cost.png", "accuracy vs cost")]
    cost_rows = [{**r, "task": d.get("settings", {}).get("task", "?"), "variant": "", "setting": _setting(d)}
                 for _, d in costs for r in d["rows"]] or [r for r in rows if r.get("latency_ms") is not None]
    if cost_rows:
        figures.append((plots.efficiency_figure(cost_rows), "efficiency.png", "efficiency"))
    if logs:
        figures.append((plots.loss_figure(logs), "loss_curves.png", "loss and validation curves"))
    for fig, name, alt in figures:
        plots.save(fig, out / name)
        lines += [f"![{alt}]({name})", ""]
    write_text_atomic(out / "report.md", "\n".join(lines))
    return out / "report.md"
