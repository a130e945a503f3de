"""`m2iv bench merge` and the row labels it relies on: committed tables built from several runs are made by the
tool, a rerun replaces its cells, and a file that is not a bench table is refused in one line."""

import json

import pytest

from m2iv.cli.main import main
from m2iv.errors import M2IVError
from m2iv.evaluate.tables import label_rate, merge_tables, write_table


def _row(task, method, score, variant="", shots=16, **extra):
    return {"task": task, "method": method, "variant": variant, "shots": shots, "metric": "exact_match",
            "score": score, "n": 100, **extra}


def _table(path, rows, command, **meta):
    write_table(rows, path, {"command": command, "wall_seconds": 10.0, **meta})
    return str(path)


def test_a_row_trained_at_a_swept_or_given_rate_names_it_once():
    assert label_rate(_row("t", "live", 0.5))["variant"] == ""  # the method's own rate: no label
    swept = label_rate(_row("t", "live", 0.5, lr_sweep={"grid": [1e-3, 1e-1], "chosen": 1e-1}))
    assert swept["variant"] == "lr=0.1" and label_rate(swept)["variant"] == "lr=0.1"
    given = label_rate(_row("t", "m2iv", 0.5, "1x16", lr_sweep={"grid": [0.05], "chosen": 0.05}))
    assert given["variant"] == "1x16,lr=0.05"


def test_merge_groups_tasks_replaces_reruns_and_lists_every_command(tmp_path):
    a = _table(tmp_path / "a.json", [_row("t1", "icl", 0.8), _row("t1", "live", 0.0), _row("t2", "icl", 0.7)],
               "m2iv bench compare A", lr_grids={"m2iv": [0.01]})
    tuned = _row("t1", "live", 0.9, lr_sweep={"grid": [0.1], "chosen": 0.1})
    b = _table(tmp_path / "b.json", [tuned, _row("t1", "icl", 0.85)],
               "m2iv bench compare B", lr_grids={"m2iv": [0.1], "live": [0.1]})
    rows, meta = merge_tables([a, b])
    assert [(r["task"], r["method"], r["variant"], r["score"]) for r in rows] == [
        ("t1", "icl", "", 0.85), ("t1", "live", "", 0.0), ("t1", "live", "lr=0.1", 0.9), ("t2", "icl", "", 0.7)]
    assert meta["commands"] == ["m2iv bench compare A", "m2iv bench compare B"] and meta["wall_seconds"] == 20.0
    assert meta["lr_grids"] == {"m2iv": [0.01, 0.1], "live": [0.1]}
    # a merged table merges again with its commands kept, and may be written over one of its inputs
    assert main(["bench", "merge", str(tmp_path / "a.json"), b, "--out", a]) == 0
    merged = json.loads((tmp_path / "a.json").read_text())
    assert merged["meta"]["commands"] == ["m2iv bench compare A", "m2iv bench compare B"]
    assert merged["averages"] == {"icl": 0.775, "live": 0.0, "live (lr=0.1)": 0.9}
    assert "| t1 | live | lr=0.1 | 16 | 0.9 |" in (tmp_path / "a.md").read_text()


@pytest.mark.parametrize("content, match", [
    (None, "no such file"), ("{not json", "not a readable JSON"), ('{"rows": 3}', "no 'rows' list"),
    ('{"rows": [{"task": "t"}]}', "row 0 lacks"), ("[1, 2]", "no 'rows' list")])
def test_merge_refuses_what_is_not_a_bench_table(tmp_path, capsys, content, match):
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    good = _table(tmp_path / "good.json", [_row("t", "icl", 0.5)], "m2iv bench compare G")
    with pytest.raises(M2IVError, match=match):
        merge_tables([good, bad])
    out = tmp_path / "out.json"
    assert main(["bench", "merge", good, str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "m2iv bench" in err
    assert not out.exists()  # nothing half-written
