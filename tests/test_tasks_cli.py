"""`m2iv tasks` reads as a table and as JSON, says which tasks need --data-root and the files they read; a zero-shot
run reads only the test split's files."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import write_vqav2
from m2iv.cli.main import main


def test_tasks_is_a_table_with_a_header_and_json_naming_each_tasks_files(capsys):
    # Was: no header, misaligned columns, no --json, nothing about --data-root or the files a task expects.
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header, rule = lines[0], lines[1]
    assert header.split() == ["TASK", "METRIC", "DATA", "DESCRIPTION"] and set(rule) <= {"-", " "}
    rows = lines[2:next(i for i, x in enumerate(lines) if x.startswith("#"))]
    columns = [header.index(c) for c in ("METRIC", "DATA", "DESCRIPTION")]
    assert all(r[c - 2:c] == "  " and r[c] != " " for r in rows for c in columns)  # every column starts aligned
    vqa = next(r for r in rows if r.startswith("vqav2 "))
    easy = next(r for r in rows if r.startswith("easy-vqa "))
    assert "--data-root" in vqa and "built in" in easy
    assert "vqav2/v2_OpenEnded_mscoco_val2014_questions.json" in out and "docs/your-own-data.md" in out
    assert main(["tasks", "--json"]) == 0
    tasks = {t["name"]: t for t in json.loads(capsys.readouterr().out)}
    assert tasks["easy-vqa"]["needs_data_root"] is False and tasks["easy-vqa"]["files"] == {}
    assert tasks["vqav2"]["needs_data_root"] is True
    assert tasks["vqav2"]["files"]["test"][0] == "vqav2/v2_OpenEnded_mscoco_val2014_questions.json"
    assert "vqav2/v2_OpenEnded_mscoco_train2014_questions.json" in tasks["vqav2"]["files"]["train"]


def test_zero_shot_on_vqav2_reads_only_the_files_tasks_lists_for_test(tmp_path, capsys):
    # Was: a zero-shot `eval --task vqav2` demanded the train2014 questions file.
    from m2iv.data.layouts import expected_files

    root = write_vqav2(tmp_path / "data", n_train=4, n_val=4)
    shutil.move(str(root / "vqav2" / "val2014"), str(root / "coco" / "val2014"))  # the shared COCO layout
    shutil.rmtree(root / "vqav2" / "train2014")
    for name in ("v2_OpenEnded_mscoco_train2014_questions.json", "v2_mscoco_train2014_annotations.json"):
        (root / "vqav2" / name).unlink()
    present = sorted(str(p.relative_to(root)) + ("/" if p.is_dir() else "") for p in root.glob("*/*"))
    assert present == sorted(expected_files("vqav2", "val"))  # exactly what `m2iv tasks` lists for test
    out = tmp_path / "run"
    assert main(["eval", "tiny:llava", "--task", "vqav2", "--data-root", str(root), "--method", "zero-shot",
                 "--n-test", "2", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["n"] == 2
    capsys.readouterr()
    assert main(["eval", "tiny:llava", "--task", "vqav2", "--data-root", str(root), "--method", "icl",
                 "--shots", "1", "--n-test", "2", "--out", str(tmp_path / "icl")]) == 2
    assert "v2_OpenEnded_mscoco_train2014_questions.json" in capsys.readouterr().err  # ICL needs demonstrations


@pytest.mark.parametrize("flag", ["--task", "--method", "--data-root"])
def test_train_help_describes_task_method_and_data_root(flag):
    # Was: these three had no help in `m2iv train --help`.
    from m2iv.cli.main import build_parser, iter_parsers

    train = dict(iter_parsers(build_parser()))[("train",)]
    assert len(train._option_string_actions[flag].help or "") > 30
    assert flag in train.format_help()


def test_every_flag_of_every_command_has_help_and_budget_describes_its_values():
    import argparse

    from m2iv.cli.main import build_parser, iter_parsers

    missing = [(" ".join(path), a.option_strings or a.dest) for path, p in iter_parsers(build_parser())
               for a in p._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
               and (not a.help or a.help == argparse.SUPPRESS)]
    assert missing == []
    compare = dict(iter_parsers(build_parser()))[("bench", "compare")]._option_string_actions
    budget, sweep = compare["--budget"].help, compare["--lr-sweep"].help
    assert "original" in budget and "cpu" in budget and "n_mean_prompts=32" in budget
    assert "CPU_BUDGET" not in budget and "LR_GRIDS" not in sweep and "1e-3" in sweep.replace("0.001", "1e-3")


def test_the_data_docs_list_every_file_each_data_root_task_reads():
    # Was: the file layouts were documented only in a module docstring.
    from pathlib import Path

    from m2iv.cli.tasks import describe
    from m2iv.data.tasks import TASKS

    doc = (Path(__file__).resolve().parents[1] / "docs" / "models-and-data.md").read_text(encoding="utf-8")
    official = [describe(n) for n in TASKS if describe(n)["needs_data_root"]]
    assert len(official) == 7
    for t in official:
        for path in t["files"]["test"]:
            assert f"`{path}`" in doc, (t["name"], path)
