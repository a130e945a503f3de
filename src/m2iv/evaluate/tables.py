"""Bench results as data: rows (one per task x method cell) to JSON + Markdown tables, averages, curves, and one
table merged from several runs.

    write_table(rows, "benchmarks/compare/sandbox.json", meta)   # + sandbox.md next to it
    rows, meta = merge_tables(["old.json", "rerun.json"])        # a rerun's rows replace the same cells
"""

from __future__ import annotations

import json
from pathlib import Path


def averages(rows: list[dict]) -> dict[str, float]:
    out: dict[str, list[float]] = {}
    for r in rows:
        if r["method"] == "icl-teacher":
            continue
        key = r["method"] + (f" ({r['variant']})" if r["variant"] else "")
        if r.get("score") is not None:
            out.setdefault(key, []).append(r["score"])
    return {k: round(sum(v) / len(v), 4) for k, v in out.items()}


def markdown(rows: list[dict]) -> str:
    cols = ["task", "method", "variant", "shots", "score", "n", "mean_prompt_tokens", "mean_latency_ms", "parameters",
            "train_seconds"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(("does not fit" if c == "score" and r.get("fits") is False else "")
                                if r.get(c) is None else str(r.get(c)) for c in cols) + " |" for r in rows]
    lines += ["", "| method | mean score over tasks |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in averages(rows).items()]
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict], path: str | Path, meta: dict | None = None) -> None:
    from m2iv.files import write_text_atomic

    path = Path(path)
    payload = {"meta": meta or {}, "averages": averages(rows), "rows": rows}
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")
    write_text_atomic(path.with_suffix(".md"), markdown(rows))


def label_rate(row: dict) -> dict:
    """A row whose rate `--lr-sweep` set (chosen from a grid, or one rate given in advance) names it in its variant
    ("lr=0.1"), so a table that also holds the method at its original rate keeps both rows apart, and the averages
    never mix the two."""
    chosen = (row.get("lr_sweep") or {}).get("chosen")
    if chosen is not None and f"lr={chosen:g}" not in (row.get("variant") or ""):
        row = {**row, "variant": ",".join(filter(None, [row.get("variant"), f"lr={chosen:g}"]))}
    return row


def row_key(row: dict) -> tuple:
    """What a row measures: the same key in two tables is the same cell (a rerun replaces it)."""
    return row["task"], row["method"], row.get("variant") or "", row.get("shots")


def merge_tables(paths: list[str | Path]) -> tuple[list[dict], dict]:
    """Rows of several bench tables in one, and a meta that lists every command that made them.

    A row whose key (`row_key`) an earlier table already holds replaces that row in place, so merging a rerun
    over a committed table updates its cells and repeated rows (the ICL baseline of every many-shot run) appear
    once; new rows join their task's rows, tasks in the order they first appear. Tables made before rows named
    their rate are labelled here as `run_plan` labels them now."""
    from m2iv.errors import M2IVError

    rows: dict[tuple, dict] = {}
    meta: dict = {"commands": [], "wall_seconds": 0.0}
    for path in map(Path, paths):
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise M2IVError(f"{path}: no such file; give the JSON tables written by `m2iv bench`") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise M2IVError(f"{path}: not a readable JSON bench table ({e}); give a file written by `m2iv bench`") \
                from None
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
            raise M2IVError(f"{path}: not a bench table (no 'rows' list); give a file written by `m2iv bench "
                            "suite|compare|icl-curve|many-shot`")
        for i, r in enumerate(data["rows"]):
            if not isinstance(r, dict) or not all(k in r for k in ("task", "method", "score")):
                raise M2IVError(f"{path}: row {i} lacks task, method or score; the file is not a bench table or "
                                "was edited by hand; regenerate it with `m2iv bench`")
            r = label_rate(r)
            rows[row_key(r)] = r  # a dict keeps the first position of a key and the last value
        m = data.get("meta") or {}
        meta["commands"] += m.get("commands") or ([m["command"]] if m.get("command") else [])
        meta["wall_seconds"] += float(m.get("wall_seconds") or 0.0)
        for k, v in m.items():
            if k == "lr_grids":
                grids = meta.setdefault("lr_grids", {})
                for method, grid in v.items():
                    grids[method] = sorted({*grids.get(method, []), *grid})
            elif k not in ("command", "commands", "wall_seconds"):
                meta.setdefault(k, v)
    meta["wall_seconds"] = round(meta["wall_seconds"], 1)
    order = {t: i for i, t in enumerate(dict.fromkeys(r["task"] for r in rows.values()))}
    return sorted(rows.values(), key=lambda r: order[r["task"]]), meta  # stable: each task's rows together


def plot_curves(rows: list[dict], path: str | Path, title: str) -> None:
    """Score against shots as small multiples, a panel per task (`plots.curves_figure`)."""
    from m2iv.evaluate import plots

    plots.save(plots.curves_figure(rows, title), path)


__all__ = ["averages", "label_rate", "markdown", "merge_tables", "plot_curves", "row_key", "write_table"]
