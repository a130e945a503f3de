"""Figures keep one colour per method everywhere, never crowd an axes with more than 8 legend entries (small
multiples per task instead), and `m2iv report` adds loss/validation curves and an efficiency chart, with a table
that names each row's source relative to the report and holds each row once."""

from __future__ import annotations

import json

import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from m2iv.evaluate.report import build_report
from m2iv.evaluate.tables import plot_curves

METHODS = ["zero-shot", "icl", "m2iv", "tv", "fv", "icv", "i2cl", "mtv", "live", "mimic", "hificl"]
TASKS = [f"sandbox-task-{i}" for i in range(5)]


@pytest.fixture
def figures(monkeypatch):
    """Every figure saved during the test (the plotting code's own savefig is kept)."""
    saved: list[Figure] = []
    original = Figure.savefig

    def savefig(self, *args, **kwargs):
        saved.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved


def _rows(methods=METHODS, tasks=TASKS, variant=""):
    rows = []
    for t in tasks:
        for i, m in enumerate(methods):
            for shots in (4, 16):
                rows.append({"task": t, "method": m, "variant": variant, "shots": shots, "metric": "exact_match",
                             "score": round((i + shots / 16) / 12, 3), "n": 10, "mean_prompt_tokens": 40 + 10 * i,
                             "mean_latency_ms": 5.0 + i})
    return rows


def _legend_sizes(fig: Figure) -> list[int]:
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    return [len(leg.get_texts()) for leg in legends]


def _colours(fig: Figure) -> dict[str, set[str]]:
    """Series label -> the colours of the lines, points and bars drawn for it (each artist's gid is its label)."""
    out: dict[str, set[str]] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_gid():
                out.setdefault(line.get_gid().split(" (")[0], set()).add(to_hex(line.get_color()))
        for coll in ax.collections:
            if coll.get_gid() and len(coll.get_facecolor()):
                out.setdefault(coll.get_gid().split(" (")[0], set()).add(to_hex(coll.get_facecolor()[0]))
    return out


def test_bench_merge_plot_is_small_multiples_with_short_legends(tmp_path, figures):
    # Was: `bench merge --plot` drew ~40 legend entries over one axes, colours repeating.
    rows = _rows(["zero-shot", "icl", "m2iv"], tasks=TASKS) + _rows(["live", "mimic"], tasks=TASKS)
    plot_curves(rows, tmp_path / "curves.png", "title")
    (fig,) = figures
    assert len([ax for ax in fig.axes if ax.has_data()]) == len(TASKS)  # a panel per task
    assert max(_legend_sizes(fig)) <= 8
    colours = _colours(fig)
    assert all(len(c) == 1 for c in colours.values())  # one colour per method, in every panel
    assert len({next(iter(c)) for c in colours.values()}) == len(colours)  # and no two methods share one


def test_a_method_keeps_its_colour_in_every_figure_and_report_adds_loss_and_efficiency(tmp_path, figures):
    # Was: in `m2iv report` ICL and "m2iv (4x16)" shared a colour, no loss curves, no efficiency chart, duplicate
    # rows without a source column, sources as absolute paths.
    rows = _rows() + _rows(["m2iv"], variant="4x16")
    table = tmp_path / "results" / "compare.json"
    table.parent.mkdir()
    table.write_text(json.dumps({"meta": {}, "rows": rows}))
    rerun = tmp_path / "results" / "rerun.json"  # the same cells again: each must appear once
    rerun.write_text(json.dumps({"meta": {}, "rows": [r for r in rows if r["method"] == "icl"]}))
    logs = []
    for name, method in (("colour", "m2iv"), ("live-run", "live")):
        vec = tmp_path / "results" / name
        vec.mkdir()
        (vec / "m2iv_config.json").write_text(json.dumps({"method": method}))
        (tmp_path / "results" / f"{name}.train").mkdir()
        log = tmp_path / "results" / f"{name}.train" / "train_log.jsonl"
        log.write_text("".join(json.dumps({"step": s, "loss": 2.0 / s, **({"val_acc": s / 10} if s % 2 == 0 else {})})
                               + "\n" for s in range(1, 9)))
        logs.append(vec)
    out = tmp_path / "report"
    md = build_report([table, rerun, *logs], out).read_text()
    for png in ("accuracy_vs_shots.png", "accuracy_vs_cost.png", "efficiency.png", "loss_curves.png"):
        assert (out / png).is_file() and f"]({png})" in md
    assert str(tmp_path) not in md  # sources relative to the report
    icl_rows = [x for x in md.splitlines() if x.startswith("| icl | 16 |")]
    assert len(icl_rows) == len(TASKS) and all(x.endswith("| ../results/rerun.json |") for x in icl_rows)
    assert "| source |" in md
    colours: dict[str, set[str]] = {}
    for fig in figures:
        assert max(_legend_sizes(fig), default=0) <= 8
        for m, c in _colours(fig).items():
            colours.setdefault(m.split(" [")[0], set()).update(c)
    assert {"icl", "m2iv", "live"} <= set(colours)
    assert all(len(c) == 1 for c in colours.values()), colours  # the same colour in every figure
    assert colours["icl"] != colours["m2iv"]
