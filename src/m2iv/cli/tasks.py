"""`m2iv tasks [--json]`: the task registry as a table (name, metric, data, description), which tasks read
`--data-root` and the files they expect there, and how to add your own."""

from __future__ import annotations

import argparse
import json

# After the table, as comment lines (a script reading the table skips lines starting with '#').
OWN_DATA = """\
# your own data: --task jsonl:FILE.jsonl | jsonl:FOLDER (train.jsonl, test.jsonl, optional support.jsonl)
#   | jsonl:train=A.jsonl,test=B.jsonl[,support=C.jsonl], scored by VQA accuracy with the prompt
#   {prompt}
# Another prompt, metric or answer length: a task .json (fields: name, dataset, data_path, metric, test_split,
#   support_split, train_split, instruction, ...) passed as --task FILE.json; in Python m2iv.Task.from_samples
#   or m2iv.Task.from_dataset. See docs/your-own-data.md."""


def describe(name: str) -> dict:
    """One task as `m2iv tasks --json` prints it."""
    from m2iv.data.datasets import DATASETS
    from m2iv.data.layouts import SOURCES, expected_files
    from m2iv.data.tasks import TASKS

    t = TASKS.get(name)
    needs_root = bool(getattr(DATASETS.get(t.dataset), "needs_root", True))
    files = {"test": expected_files(t.dataset, t.test_split)}
    if t.support_split != t.test_split:
        files["train"] = expected_files(t.dataset, t.support_split)
    return {"name": name, "metric": t.metric, "description": t.description, "dataset": t.dataset,
            "test_split": t.test_split, "support_split": t.support_split, "version": t.version,
            "needs_data_root": needs_root, "files": files if needs_root else {},
            "source": SOURCES.get(t.dataset) if needs_root else None}


def table(rows: list[list[str]]) -> list[str]:
    """Aligned columns under a header and a rule; the last column is not padded."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]).rstrip() for r in rows]
    return [lines[0], "  ".join("-" * w for w in [*widths, len(rows[0][-1])]), *lines[1:]]


def run(args: argparse.Namespace) -> int:
    from m2iv.data.tasks import TASKS, VQA_INSTRUCTION

    tasks = [describe(n) for n in TASKS]
    if getattr(args, "json", False):
        print(json.dumps(tasks, indent=2))
        return 0
    rows = [["TASK", "METRIC", "DATA", "DESCRIPTION"]]
    rows += [[t["name"], t["metric"], "--data-root" if t["needs_data_root"] else "built in", t["description"]]
             for t in tasks]
    lines = table(rows)
    official = [t for t in tasks if t["needs_data_root"]]
    if official:
        lines.append("# Files each --data-root task reads (zero-shot and saved vectors read only the test files; ICL "
                     "and training also read the train files):")
        for t in official:
            lines.append(f"#   {t['name']} ({t['source']})")
            for split, paths in t["files"].items():
                lines.append(f"#     {split:<5} {', '.join(paths)}")
        lines.append("# Layouts and downloads: docs/models-and-data.md.")
    print("\n".join([*lines, OWN_DATA.format(prompt=repr(VQA_INSTRUCTION))]))
    return 0
