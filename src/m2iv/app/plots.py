"""Every figure the app shows, as a matplotlib `Figure` (no pyplot: no global state shared between requests).

A method's colour comes from `m2iv.evaluate.colours`, so it is the same in every plot here and in the reports;
legends name methods (a handful of entries), never one entry per line.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from m2iv.evaluate.colours import marker, method_colour, site_colour

LOSS_PARTS = ("mimicry", "ce", "synergy", "align")  # the loss terms the trainer logs besides their sum


def _short(task: str) -> str:
    return task.replace("sandbox-", "")


def training_curve(records: list[dict], title: str = "") -> Figure | None:
    """Loss (and its parts) against step, validation accuracy on a second axis; None without records."""
    steps = [r for r in records if isinstance(r.get("step"), (int, float)) and isinstance(r.get("loss"), (int, float))]
    if not steps:
        return None
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.subplots()
    x = [r["step"] for r in steps]
    ax.plot(x, [r["loss"] for r in steps], color="black", label="loss")
    for part in LOSS_PARTS:
        ys = [r.get(part) for r in steps]
        if any(isinstance(y, (int, float)) for y in ys) and ys != [r["loss"] for r in steps]:
            ax.plot(x, [y if isinstance(y, (int, float)) else math.nan for y in ys], linewidth=0.9, alpha=0.8,
                    label=part)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("training loss")
    handles, labels = ax.get_legend_handles_labels()
    val = [(r["step"], r["val_acc"]) for r in steps if isinstance(r.get("val_acc"), (int, float))]
    if val:
        ax2 = ax.twinx()
        ax2.plot([v[0] for v in val], [v[1] for v in val], color=method_colour("m2iv"), marker="o", markersize=4,
                 linestyle="--", label="validation accuracy")
        ax2.set_ylabel("validation accuracy (teacher-forced)")
        ax2.set_ylim(-0.02, 1.02)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc="upper right")
    ax.set_title(title, fontsize=10)
    return fig


def _layer_norms(values: np.ndarray) -> np.ndarray:
    """Per-layer L2 norm of a (layers, ...) array."""
    return np.linalg.norm(values.reshape(values.shape[0], -1), axis=1)


def vector_norms(vectors, title: str = "") -> Figure:
    """‖v‖ per layer for each branch (solid) and the shift actually added, |α|·‖v‖ (dashed), where α exists.
    HiFICL's virtual key/value sites have no shift vector: the norm of their values V = value_a @ value_b."""
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.subplots()
    params = {k: p.detach().float().cpu().numpy() for k, p in vectors.params.items()}
    for site, spec in vectors.sites.items():
        colour = site_colour(site)
        if f"{site}__vector" in params:
            norms = _layer_norms(params[f"{site}__vector"])
            ax.plot(spec.layers, norms, color=colour, marker="o", markersize=3, label=f"{site} ‖v‖")
            alpha = params.get(f"{site}__alpha")
            if alpha is not None:
                if spec.scale_activation == "sigmoid":
                    alpha = 1 / (1 + np.exp(-alpha))
                scale = np.abs(alpha.reshape(alpha.shape[0], -1)).mean(axis=1)
                ax.plot(spec.layers, scale * norms, color=colour, linestyle="--", label=f"{site} |α|·‖v‖")
        elif f"{site}__value_a" in params:
            values = np.einsum("lhvr,lhrd->lhvd", params[f"{site}__value_a"], params[f"{site}__value_b"])
            ax.plot(spec.layers, _layer_norms(values), color=colour, marker="s", markersize=3,
                    label=f"{site} ‖V‖ (virtual values)")
    ax.set_xlabel("decoder layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("L2 norm")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return fig


def _method_legend(fig: Figure, labels: list[str]) -> None:
    methods = list(dict.fromkeys(lab.split(" (", 1)[0] for lab in labels))
    handles = [Line2D([], [], color=method_colour(m), marker="o", linewidth=2, label=m) for m in methods]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, title="method")


def _variant_styles(labels: list[str]) -> dict[str, tuple[str, str]]:
    """(line style, marker) per label: a method's variants share its colour and differ by these."""
    styles: dict[str, tuple[str, str]] = {}
    seen: dict[str, int] = {}
    for lab in labels:
        k = seen.setdefault(lab.split(" (", 1)[0], 0)
        seen[lab.split(" (", 1)[0]] = k + 1
        styles[lab] = (("-", "--", ":", "-.")[k % 4], marker(k))
    return styles


def accuracy_vs_shots(rows: list[dict], title: str = "") -> Figure | None:
    """A panel per task, score against shots, a line per method (and variant)."""
    scored = [r for r in rows if r["score"] is not None]
    if not scored:
        return None
    tasks = list(dict.fromkeys(r["task"] for r in scored))
    labels = list(dict.fromkeys(r["label"] for r in scored))
    styles = _variant_styles(labels)
    ncols = min(3, len(tasks))
    nrows = -(-len(tasks) // ncols)
    fig = Figure(figsize=(3.6 * ncols + 0.6, 2.8 * nrows + 1.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    for ax, task in zip(axes, tasks, strict=False):
        for lab in labels:
            pts = sorted((r["shots"], r["score"]) for r in scored if r["task"] == task and r["label"] == lab)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=method_colour(lab), linestyle=styles[lab][0],
                        marker=styles[lab][1], markersize=4)
        ax.set_xscale("symlog", base=2)
        ax.set_title(_short(task), fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[len(tasks):]:
        ax.axis("off")
    fig.supxlabel("shots (demonstrations in the prompt, or distilled into the vectors)", fontsize=9)
    fig.supylabel("score", fontsize=9)
    fig.suptitle(title, fontsize=10)
    _method_legend(fig, labels)
    return fig


def accuracy_vs_cost(rows: list[dict], title: str = "") -> Figure | None:
    """Score against prompt tokens per query: a point per task and method, marker by task."""
    scored = [r for r in rows if r["score"] is not None and r["prompt_tokens"]]
    if not scored:
        return None
    tasks = list(dict.fromkeys(r["task"] for r in scored))
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    ax = fig.subplots()
    for r in scored:
        ax.scatter(r["prompt_tokens"], r["score"], color=method_colour(r["label"]),
                   marker=marker(tasks.index(r["task"])), s=30, edgecolors="white", linewidths=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("prompt tokens per query (cost)")
    ax.set_ylabel("score")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    task_handles = [Line2D([], [], color="grey", marker=marker(i), linestyle="", label=_short(t))
                    for i, t in enumerate(tasks)]
    fig.legend(handles=task_handles, loc="outside lower center", ncol=min(5, len(tasks)), fontsize=7, title="task")
    _method_legend(fig, [r["label"] for r in scored])
    return fig


def per_task(rows: list[dict], title: str = "") -> Figure | None:
    """Horizontal bars per task: one bar per method, variant and shot count, coloured by method."""
    scored = [r for r in rows if r["score"] is not None]
    if not scored:
        return None
    tasks = list(dict.fromkeys(r["task"] for r in scored))
    several_shots = {(r["task"], r["label"]) for r in scored
                     if len({x["shots"] for x in scored if x["task"] == r["task"] and x["label"] == r["label"]}) > 1}
    ncols = min(3, len(tasks))
    nrows = -(-len(tasks) // ncols)
    per = max(len([r for r in scored if r["task"] == t]) for t in tasks)
    fig = Figure(figsize=(4.4 * ncols + 0.6, (0.22 * per + 0.9) * nrows + 1.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, squeeze=False)).ravel()
    for ax, task in zip(axes, tasks, strict=False):
        bars = sorted((r for r in scored if r["task"] == task), key=lambda r: (r["label"], r["shots"]))
        names = [r["label"] + (f", {r['shots']}-shot" if (task, r["label"]) in several_shots else "") for r in bars]
        drawn = ax.barh(range(len(bars)), [r["score"] for r in bars], color=[method_colour(r["label"]) for r in bars])
        ax.bar_label(drawn, fmt="%.2f", fontsize=6, padding=2)  # a score of 0 is a label, not a missing bar
        ax.set_yticks(range(len(bars)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(_short(task), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[len(tasks):]:
        ax.axis("off")
    fig.supxlabel("score", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


__all__ = ["accuracy_vs_cost", "accuracy_vs_shots", "per_task", "training_curve", "vector_norms"]
