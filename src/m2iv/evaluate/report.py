"""`m2iv report`: one Markdown report with tables and plots from any mix of results files:
`summary.json` of `m2iv eval` runs, tables of `m2iv bench suite|compare`, curves of `m2iv bench many-shot`
and cost tables of `m2iv bench efficiency`."""

from __future__ import annotations

import json
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


def _plots(plt, rows: list[dict], tasks: list[str], out: Path) -> None:
    """accuracy_vs_shots.png (a panel per task, a line per method) and accuracy_vs_cost.png (a point per task
    and method at its prompt length); one colour per method in both, legends outside the axes."""
    from matplotlib.lines import Line2D

    labels = list(dict.fromkeys(_label(r) for r in rows))
    cmap = plt.get_cmap("tab20")
    colour = {lab: cmap(i % 20) for i, lab in enumerate(labels)}
    marker = {t: "osD^v<>Pp*hX"[i % 12] for i, t in enumerate(tasks)}
    scored = [r for r in rows if r["score"] is not None]
    methods = [Line2D([], [], color=colour[lab], marker="o", label=lab) for lab in labels]

    ncols = min(3, len(tasks))
    nrows = -(-len(tasks) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.2 * nrows), squeeze=False, sharey=True)
    for ax, t in zip(axes.flat, tasks, strict=False):
        for lab in labels:
            pts = sorted((r["shots"], r["score"]) for r in scored if r["task"] == t and _label(r) == lab)
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", color=colour[lab])
        ax.set_xscale("symlog", base=2)
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(t.replace("sandbox-", ""), fontsize=9)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.supxlabel("shots (demonstrations in the prompt, or distilled into vectors)")
    fig.supylabel("score")
    fig.legend(handles=methods, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    fig.savefig(out / "accuracy_vs_shots.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in scored:
        if r["prompt_tokens"]:
            ax.scatter(r["prompt_tokens"], r["score"], color=colour[_label(r)], marker=marker[r["task"]], s=28)
    ax.set_xscale("log")
    ax.set_xlabel("prompt tokens per query (cost)")
    ax.set_ylabel("score")
    first = ax.legend(handles=methods, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, title="method")
    ax.add_artist(first)
    second = ax.legend(handles=[Line2D([], [], color="grey", marker=marker[t], linestyle="",
                                       label=t.replace("sandbox-", ""))
                       for t in tasks], loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=min(len(tasks), 5),
              fontsize=7, title="task")
    fig.savefig(out / "accuracy_vs_cost.png", dpi=110, bbox_inches="tight", bbox_extra_artists=(first, second))
    plt.close(fig)


def build_report(paths: list[str | Path], out: str | Path, title: str = "m2iv report") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from m2iv.files import write_text_atomic

    loaded = [(Path(p), _read(Path(p))) for p in paths]
    costs = [(p, d) for p, d in loaded if isinstance(d, dict) and _is_efficiency(d)]
    rows = [r for p, d in loaded if not _is_efficiency(d) for r in _rows_of(p, d)]
    if not rows and not costs:
        raise M2IVError("the results files hold no rows")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    lines = [f"# {title}", "", f"Sources: {', '.join(sorted(str(p) for p, _ in loaded))}", ""]
    for t in tasks:
        lines += [f"## {t}", "", "| method | shots | score | metric | prompt tokens | latency ms |",
                  "|---|---|---|---|---|---|"]
        for r in sorted((r for r in rows if r["task"] == t), key=lambda r: (_label(r), r["shots"])):
            score = "does not fit" if r["score"] is None else f"{r['score']:.4f}"
            lines.append(f"| {_label(r)} | {r['shots']} | {score} | {r['metric']} | "
                         f"{'' if r['prompt_tokens'] is None else round(r['prompt_tokens'], 1)} | "
                         f"{'' if r['latency_ms'] is None else round(r['latency_ms'], 1)} |")
        lines.append("")
    if costs:
        lines += ["## Inference cost", ""]
        for p, d in costs:
            lines += _efficiency_lines(p, d)
    if rows:
        _plots(plt, rows, tasks, out)
        lines += ["![accuracy vs shots](accuracy_vs_shots.png)", "", "![accuracy vs cost](accuracy_vs_cost.png)", ""]
    write_text_atomic(out / "report.md", "\n".join(lines))
    return out / "report.md"
