"""`m2iv report`: one Markdown report with tables and plots from any mix of results files:
`summary.json` of `m2iv eval` runs, tables of `m2iv bench suite|compare` and curves of `m2iv bench many-shot`."""

from __future__ import annotations

import json
from pathlib import Path

from m2iv.errors import M2IVError


def _rows_of(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise M2IVError(f"cannot read results file {path} ({e}); give summary.json or bench JSON files") from None
    if isinstance(data, dict) and "rows" in data and isinstance(data["rows"], list):
        rows = data["rows"]
    elif isinstance(data, dict) and {"task", "method", "score"} <= set(data):
        rows = [data]
    else:
        raise M2IVError(f"{path} is not an m2iv results file (expected summary.json or a bench table)")
    out = []
    for r in rows:
        if "score" not in r or "method" not in r:
            continue
        out.append({"task": r.get("task", "?"), "method": r["method"], "variant": r.get("variant", ""),
                    "shots": r.get("shots", 0), "score": r["score"], "metric": r.get("metric", ""),
                    "prompt_tokens": r.get("mean_prompt_tokens", r.get("prompt_tokens")),
                    "latency_ms": r.get("mean_latency_ms", r.get("latency_ms")), "source": str(path)})
    return out


def _label(r: dict) -> str:
    return r["method"] + (f" ({r['variant']})" if r["variant"] else "")


def _plot(plt, series: dict[str, list[tuple[float, float]]], path: Path, xlabel: str, xscale: str, line: bool) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, pts in series.items():
        if pts:
            draw = ax.plot if line else ax.scatter
            draw([p[0] for p in pts], [p[1] for p in pts], label=label, **({"marker": "o"} if line else {}))
    if xscale == "symlog":
        ax.set_xscale("symlog", base=2)
    else:
        ax.set_xscale(xscale)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("score")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_report(paths: list[str | Path], out: str | Path, title: str = "m2iv report") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for p in paths for r in _rows_of(Path(p))]
    if not rows:
        raise M2IVError("the results files hold no rows")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    lines = [f"# {title}", "", f"Sources: {', '.join(sorted({r['source'] for r in rows}))}", ""]
    for t in tasks:
        lines += [f"## {t}", "", "| method | shots | score | metric | prompt tokens | latency ms |", "|---|---|---|---|---|---|"]
        for r in sorted((r for r in rows if r["task"] == t), key=lambda r: (_label(r), r["shots"])):
            score = "does not fit" if r["score"] is None else f"{r['score']:.4f}"
            lines.append(f"| {_label(r)} | {r['shots']} | {score} | {r['metric']} | "
                         f"{'' if r['prompt_tokens'] is None else round(r['prompt_tokens'], 1)} | "
                         f"{'' if r['latency_ms'] is None else round(r['latency_ms'], 1)} |")
        lines.append("")
    # accuracy vs shots: one line per (task, method) with more than one shot count, points otherwise
    by_shots = {}
    for t in tasks:
        for lab in dict.fromkeys(_label(r) for r in rows if r["task"] == t):
            by_shots[f"{t.replace('sandbox-', '')}: {lab}"] = sorted(
                (r["shots"], r["score"]) for r in rows
                if r["task"] == t and _label(r) == lab and r["score"] is not None)
    _plot(plt, by_shots, out / "accuracy_vs_shots.png",
          "shots (demonstrations in the prompt, or distilled into vectors)", "symlog", line=True)
    by_cost = {lab: [(r["prompt_tokens"], r["score"]) for r in rows
                     if _label(r) == lab and r["prompt_tokens"] and r["score"] is not None]
               for lab in dict.fromkeys(_label(r) for r in rows)}
    _plot(plt, by_cost, out / "accuracy_vs_cost.png", "prompt tokens per query (cost)", "log", line=False)
    lines += ["![accuracy vs shots](accuracy_vs_shots.png)", "", "![accuracy vs cost](accuracy_vs_cost.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"
