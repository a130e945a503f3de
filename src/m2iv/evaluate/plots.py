"""Every figure m2iv draws (reports, bench curves, the demo), built by the same rules:

- a method has one colour in every figure (`colours.method_colour`); its variants differ by line style or marker;
- a legend has at most MAX_LEGEND entries: more series than that are labelled at their ends instead, and many
  tasks are small multiples (a panel each), never one crowded axes;
- each artist carries its series label as its `gid`, so tests (and readers of an SVG) can tell what it shows.

    fig = shots_figure(rows, tasks); save(fig, "report/accuracy_vs_shots.png")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from m2iv.evaluate.colours import base_method, method_colour

MAX_LEGEND = 8
STYLES = ("-", "--", ":", "-.")
MARKERS = "osD^v<>Pp*hX"


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path) -> None:
    """Write `fig` as a PNG (atomically) and close it."""
    from m2iv.files import write_file_atomic

    extra = tuple(getattr(fig, "_m2iv_extra", ()))
    write_file_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight",
                                                      bbox_extra_artists=extra or None))
    pyplot().close(fig)


def label(row: dict) -> str:
    return row["method"] + (f" ({row['variant']})" if row.get("variant") else "")


def styles(labels: list[str]) -> dict[str, str]:
    """A line style per label: the method's first label solid, its next variants dashed, dotted, ..."""
    seen: dict[str, int] = {}
    out = {}
    for lab in labels:
        m = base_method(lab)
        out[lab] = STYLES[seen.get(m, 0) % len(STYLES)]
        seen[m] = seen.get(m, 0) + 1
    return out


def panels(n: int, width: float = 4.0, height: float = 3.2, sharey: bool = True, columns: int = 3, space: float = 0.2):
    """A grid of n small multiples (at most `columns` a row, `space` between them, as a fraction of a panel's
    width); unused cells are switched off."""
    plt = pyplot()
    ncols = min(columns, max(1, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, sharey=sharey,
                             gridspec_kw={"wspace": space, "hspace": 0.35})
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, list(axes.flat)[:n]


def key(ax, drawn: list[tuple[Any, str, float, float]], below: bool = False) -> None:
    """A legend when the series fit in one (MAX_LEGEND; `below` the axes rather than over them), else a column of
    labels beside the axes, each joined to its series' last point (`label_column`)."""
    if not drawn:
        return
    if len(drawn) <= MAX_LEGEND:
        where = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.12), "ncol": min(4, len(drawn))} if below \
            else {"loc": "best"}
        ax.legend([a for a, *_ in drawn], [lab for _, lab, *_ in drawn], fontsize=7, **where)
        return
    label_column(ax, [(lab, x, y) for _, lab, x, y in drawn])


def label_column(ax, items: list[tuple[str, float, float]], gap: float = 0.042) -> None:
    """Labels in a column right of the axes, in the order of their points' heights and pushed apart so none
    overlaps, each with a thin line to its point: readable however many series share a spot."""
    fig = ax.figure
    fig.canvas.draw_idle()
    to_axes = ax.transAxes.inverted()
    ys = [float(to_axes.transform(ax.transData.transform((x, y)))[1]) for _, x, y in items]
    order = sorted(range(len(items)), key=lambda i: ys[i])
    placed = [0.0] * len(items)
    previous: float | None = None
    for i in order:  # bottom up, each at least `gap` above the one below it
        placed[i] = ys[i] if previous is None else max(ys[i], previous + gap)
        previous = placed[i]
    top = max(placed) if placed else 0.0
    if top > 1.05:  # shift the column down so it fits, keeping the order and the gaps
        for i in order:
            placed[i] -= top - 1.05
    for (lab, x, y), yy in zip(items, placed, strict=True):
        ax.annotate(lab, xy=(x, y), xycoords="data", xytext=(1.03, yy), textcoords="axes fraction", fontsize=6,
                    va="center", color=colour_of(lab), gid=lab, annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "color": colour_of(lab), "lw": 0.4, "alpha": 0.6})


def plain_numbers(axis) -> None:
    """Tick labels of a log axis as plain numbers (40, 100, 400), not powers of ten."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())


def colour_of(lab: str) -> str:
    """The colour of a series label: its method's ("m2iv (kl-only) [vectors-1]" is m2iv's)."""
    return method_colour(lab.split(" [", 1)[0])


def _short(task: str) -> str:
    return task.replace("sandbox-", "")


def axis_labels(fig, axes: list, x: str, y: str) -> None:
    """One panel: its own axis labels; several: one label per figure side."""
    if len(axes) == 1:
        axes[0].set_xlabel(x)
        axes[0].set_ylabel(y)
    else:
        fig.supxlabel(x)
        fig.supylabel(y)


def grid(rows: list[dict], tasks: list[str], name=None):
    """Small multiples for `tasks`: three a row, or two a row with room for a label column when some task has more
    series than a legend holds."""
    name = name or label
    most = max((len({name(r) for r in rows if r["task"] == t}) for t in tasks), default=0)
    if most > MAX_LEGEND:
        return panels(len(tasks), width=4.2, height=4.2, columns=2, space=0.75)
    return panels(len(tasks), width=6.0 if len(tasks) == 1 else 4.0, height=4.0 if len(tasks) == 1 else 3.2)


def _shot_lines(ax, rows: list[dict], labels: list[str], label_of, style: dict[str, str]) -> list[tuple]:
    """One line of score against shots per label (one task's rows); what `key` needs to label them."""
    drawn = []
    for lab in labels:
        pts = sorted((r["shots"], r["score"]) for r in rows if label_of(r) == lab and r.get("score") is not None)
        if pts:
            (line,) = ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", color=method_colour(lab),
                              linestyle=style[lab], gid=lab)
            drawn.append((line, lab, *pts[-1]))
    return drawn


def shots_figure(rows: list[dict], tasks: list[str]):
    """Score against shots, a panel per task, a line per method (and variant)."""
    labels = list(dict.fromkeys(label(r) for r in rows))
    style = styles(labels)
    fig, axes = grid(rows, tasks)
    for ax, t in zip(axes, tasks, strict=True):
        key(ax, _shot_lines(ax, [r for r in rows if r["task"] == t], labels, label, style))
        ax.set_xscale("symlog", base=2)
        ax.set_xlim(-0.5, max(r["shots"] for r in rows) * 1.4 + 1)
        ax.set_title(_short(t), fontsize=9)
    axis_labels(fig, axes, "shots (demonstrations in the prompt, or distilled into vectors)", "score")
    return fig


def cost_figure(rows: list[dict], tasks: list[str]):
    """Score against prompt tokens per query (the cost), a panel per task, a point per method (and variant)."""
    labels = list(dict.fromkeys(label(r) for r in rows))
    fig, axes = grid(rows, tasks)
    for ax, t in zip(axes, tasks, strict=True):
        drawn = []
        for i, lab in enumerate(labels):
            pts = [(r["prompt_tokens"], r["score"]) for r in rows if r["task"] == t and label(r) == lab
                   and r.get("score") is not None and r.get("prompt_tokens")]
            if pts:
                art = ax.scatter([x for x, _ in pts], [y for _, y in pts], color=method_colour(lab),
                                 marker=MARKERS[i % len(MARKERS)], s=28, gid=lab)
                drawn.append((art, lab, *pts[-1]))
        key(ax, drawn)
        ax.set_xscale("log")
        plain_numbers(ax.xaxis)
        ax.set_title(_short(t), fontsize=9)
    axis_labels(fig, axes, "prompt tokens per query (cost)", "score")
    return fig


def curves_figure(rows: list[dict], title: str):
    """Bench curves (ICL against shots, M²IV from more demonstrations): a panel per task, a line per method; ICL
    prompts that exceed the context window are red crosses at 0."""
    def method(r: dict) -> str:  # 0 shots is ICL's start; a mixture teacher's students are a line of their own
        m = "icl" if r["method"] == "zero-shot" else r["method"]
        return m + (f" ({r['ensemble_mode']})" if r.get("ensemble_mode", "product") != "product" else "")

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    labels = list(dict.fromkeys(method(r) for r in rows))
    style = styles(labels)
    fig, axes = grid(rows, tasks, method)
    for ax, t in zip(axes, tasks, strict=True):
        drawn = _shot_lines(ax, [r for r in rows if r["task"] == t], labels, method, style)
        beyond = sorted({r["shots"] for r in rows if r["task"] == t and r.get("fits") is False
                         and r.get("score") is None})
        if beyond:
            art = ax.scatter(beyond, [0.0] * len(beyond), marker="x", color="red", zorder=3, gid="does not fit")
            drawn.append((art, "ICL does not fit the window", beyond[-1], 0.0))
        key(ax, drawn)
        ax.set_xscale("symlog", base=2)
        ax.set_ylim(0, 1)
        ax.set_title(_short(t), fontsize=9)
    axis_labels(fig, axes, "shots", "accuracy")
    fig.suptitle(title, y=1.02)
    return fig


def loss_figure(logs: dict[str, list[dict]]):
    """Training loss (left) and validation accuracy (right) against the step, a line per run (labelled by its
    vector folder and method), from each run's train_log.jsonl."""
    fig, (left, right) = panels(2, width=5.0, sharey=False)
    drawn_l, drawn_r = [], []
    for i, (lab, recs) in enumerate(logs.items()):
        colour, style = colour_of(lab), STYLES[i % len(STYLES)]
        steps = [r["step"] for r in recs]
        (line,) = left.plot(steps, [r["loss"] for r in recs], color=colour, linestyle=style, gid=lab)
        drawn_l.append((line, lab, steps[-1], recs[-1]["loss"]))
        val = [(r["step"], r["val_acc"]) for r in recs if "val_acc" in r]
        if val:
            (line,) = right.plot(*zip(*val, strict=True), color=colour, linestyle=style, marker="o", gid=lab)
            drawn_r.append((line, lab, *val[-1]))
    key(left, drawn_l)
    key(right, drawn_r)
    left.set(xlabel="step", ylabel="training loss", title="loss")
    left.set_yscale("log")
    right.set(xlabel="step", ylabel="teacher-forced accuracy", title="validation", ylim=(-0.05, 1.05))
    if not drawn_r:
        right.text(0.5, 0.5, "no validation in these runs", ha="center", va="center", transform=right.transAxes)
    return fig


def efficiency_figure(rows: list[dict]):
    """Cost per method: prompt tokens per query, and latency per query for each measuring setting (`setting`: an
    efficiency run's batch and tokens; the eval runs' rows are one setting, averaged over tasks). Bars in each
    method's colour, the method named on the axis: no legend."""
    labels = list(dict.fromkeys(label(r) for r in rows))
    settings = list(dict.fromkeys(r.get("setting", "") for r in rows))

    def mean(lab: str, k: str, setting: str | None = None) -> float:
        vals = [r[k] for r in rows if label(r) == lab and r.get(k) is not None
                and (setting is None or r.get("setting", "") == setting)]
        return sum(vals) / len(vals) if vals else 0.0

    fig, axes = panels(1 + len(settings), width=max(4.0, 0.45 * len(labels) + 1.5), sharey=False)
    charts = [(axes[0], "prompt_tokens", None, "prompt tokens per query")]
    charts += [(ax, "latency_ms", st, f"latency per query (ms){', ' + st if st else ''}")
               for ax, st in zip(axes[1:], settings, strict=True)]
    for ax, k, setting, name in charts:
        for i, lab in enumerate(labels):
            ax.bar(i, mean(lab, k, setting), color=method_colour(lab), gid=lab)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
        ax.set_title(name, fontsize=9)
    return fig


def bars_figure(rows: list[dict], title: str, ylabel: str = "score"):
    """Score per task, a bar per method (the demo's left panel) and latency against prompt tokens (right)."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    labels = list(dict.fromkeys(label(r) for r in rows))
    fig, (ax, cost) = panels(2, width=5.5, sharey=False)
    width = 0.8 / max(1, len(labels))
    drawn = []
    for j, lab in enumerate(labels):
        score = [next((r["score"] for r in rows if r["task"] == t and label(r) == lab), 0) for t in tasks]
        bars = ax.bar([i + j * width for i in range(len(tasks))], score, width, color=method_colour(lab), gid=lab)
        drawn.append((bars, lab, len(tasks) - 1 + j * width, score[-1]))
        pts = [(r["mean_prompt_tokens"], r["mean_latency_ms"]) for r in rows if label(r) == lab]
        cost.scatter([x for x, _ in pts], [y for _, y in pts], color=method_colour(lab), gid=lab,
                     marker=MARKERS[j % len(MARKERS)], s=36 - 8 * j, zorder=3 + j)
    key(ax, drawn, below=True)
    ax.set_xticks([i + width * (len(labels) - 1) / 2 for i in range(len(tasks))])
    ax.set_xticklabels([_short(t) for t in tasks], fontsize=8)
    ax.set(ylabel=ylabel, ylim=(0, 1))
    cost.set(xlabel="prompt tokens per query", ylabel="latency per query (ms)", xscale="log")
    plain_numbers(cost.xaxis)
    fig.suptitle(title)
    return fig
