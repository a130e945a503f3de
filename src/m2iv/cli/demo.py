"""`m2iv demo`: the main job. On the sandbox LVLM (real SmolLM2 weights), for three suite tasks: train
M²IV from the 16-shot ICL teacher, then compare zero-shot, 16-shot ICL and M²IV (accuracy, prompt tokens,
latency per query); vectors, tables and a PNG are written to --out."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from m2iv.cli.common import (
    add_model_args,
    check_out,
    check_tasks,
    load_from_args,
    name_list,
    non_negative_int,
    positive_int,
)

DEFAULT_TASKS = "sandbox-colour-nonce,sandbox-shape-nonce,sandbox-colour-french"
EXAMPLES = """examples:
  m2iv demo                                             # the sandbox LVLM, three suite tasks, into runs/demo
  m2iv demo sandbox --task sandbox-shape-nonce --n-test 20 --out runs/demo-small
  m2iv demo tiny:idefics3 --task sandbox-colour-nonce --shots 2 --steps 2 --out runs/demo-tiny
"""


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="train M²IV on the sandbox and compare it with zero-shot and 16-shot ICL",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, default="sandbox")
    p.add_argument("--task", type=name_list, default=DEFAULT_TASKS, metavar="TASK[,TASK...]",
                   help=f"task name or comma-separated names (default {DEFAULT_TASKS})")
    p.add_argument("--shots", type=non_negative_int, default=16, help="ICL and teacher demonstrations (default 16)")
    p.add_argument("--n-test", type=positive_int, default=100, help="test queries per task (default 100)")
    p.add_argument("--steps", type=positive_int, default=60, help="M²IV training steps per task (default 60)")
    p.add_argument("--train-queries", type=positive_int, default=96,
                   help="training queries (16-shot teacher) per task (default 96)")
    p.add_argument("--out", default="runs/demo", help="folder for demo.json, demo.md and demo.png (default runs/demo)")
    p.add_argument("--work", default=None, help="folder for the per-cell runs (default OUT/work; shareable with "
                                                   "`m2iv bench suite --work`)")
    p.set_defaults(func=run)


def plot(rows: list[dict], path: Path) -> None:
    from m2iv.evaluate import plots

    plots.save(plots.bars_figure(rows, "m2iv demo on the sandbox LVLM: zero-shot vs 16-shot ICL vs M²IV",
                                 ylabel="accuracy (exact match)"), path)


def run(args: argparse.Namespace) -> int:
    from m2iv.evaluate.bench import Cell, run_plan
    from m2iv.evaluate.tables import averages, markdown, write_table
    from m2iv.sandbox import build, is_built

    t0 = time.perf_counter()
    out = Path(args.out)
    check_tasks(args.task)
    check_out(out, folder=True)
    if args.model == "sandbox" and not is_built():
        print("building the sandbox model from the shipped weights (once)...")
        build()
    lm = load_from_args(args)
    tasks = args.task
    plan = [Cell("zero-shot"), Cell("icl"), Cell("m2iv", "all-losses")]
    train = {"steps": args.steps, "batch_size": 16}
    work = Path(args.work) if args.work else out / "work"
    rows = run_plan(lm, tasks, plan, work=work, shots=args.shots, n_test=args.n_test,
                    train_defaults=train, task_overrides={"n_train": args.train_queries},
                    log=lambda m: print("  " + m, flush=True))
    rows = [r for r in rows if r["method"] != "icl-teacher"]
    write_table(rows, out / "demo.json", {"command": "m2iv demo", "model": args.model})
    plot(rows, out / "demo.png")
    print()
    print(markdown(rows))
    avg = averages(rows)
    print(f"mean accuracy: zero-shot {avg.get('zero-shot', 0):.3f} | {args.shots}-shot ICL {avg.get('icl', 0):.3f} | "
          f"M²IV {avg.get('m2iv (all-losses)', 0):.3f}")
    print(f"outputs: {out}/demo.json, {out}/demo.md, {out}/demo.png; vectors under {work}/<task>/m2iv-*/vectors-*")
    print(f"done in {time.perf_counter() - t0:.0f}s")
    return 0
