"""`m2iv bench suite|compare|icl-curve|many-shot|merge|library|efficiency`: benchmarks whose results are written to
files (JSON, plus Markdown or PNG where a table or curve reads better)."""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from m2iv.cli.common import (
    add_model_args,
    check_methods,
    check_out,
    check_tasks,
    load_from_args,
    name_list,
    non_negative_int,
    positive_int,
    shots_list,
)

ALL_METHODS = "zero-shot,icl,m2iv,tv,fv,icv,i2cl,mtv,live,mimic,hificl,lora,cartridge,parallel-icl"
EXAMPLES = """examples:
  m2iv bench suite sandbox --task sandbox-colour-nonce,sandbox-shape-nonce --out benchmarks/sandbox_suite.json
  m2iv bench compare sandbox --task sandbox-colour-nonce \\
      --method zero-shot,icl,m2iv,tv,fv,icv,i2cl,mtv,live,mimic,hificl --out benchmarks/compare/sandbox.json
"""


def _tasks(q: argparse.ArgumentParser) -> None:
    q.add_argument("--task", type=name_list, required=True, metavar="TASK[,TASK...]",
                   help="task name or comma-separated names")


def _common(q: argparse.ArgumentParser, work: str) -> None:
    """The flags every benchmark spells and means the same way."""
    q.add_argument("--config", default=None, metavar="FILE.yaml",
                   help="flag values from a YAML file (keys are flag names: task, n-test, ...); a flag on the "
                        "command line wins")
    q.add_argument("--n-test", type=positive_int, default=100, help="test queries per task (default 100)")
    q.add_argument("--seed", type=non_negative_int, default=0, help="split and demonstration seed (default 0)")
    q.add_argument("--batch-size", type=positive_int, default=8, help="queries per forward pass (default 8)")
    q.add_argument("--work", default=work, help=f"folder for the per-cell runs (resumable; default {work})")


def _budget_text() -> str:
    from m2iv.evaluate.bench import cpu_budgets

    return "; ".join(f"{m.upper()} " + ", ".join(f"{k}={v}" for k, v in c.items()) for m, c in cpu_budgets().items())


def _grids_text() -> str:
    from m2iv.evaluate.bench import default_grids

    return "; ".join(f"{m} {'/'.join(f'{v:g}' for v in g)}" for m, g in default_grids().items())


def _training(q: argparse.ArgumentParser, steps: int | None, queries: int | None, batch: int | None) -> None:
    """Budget of the trained methods (M²IV and the trained baselines)."""
    q.add_argument("--steps", type=positive_int, default=steps, help="training steps for trained methods")
    q.add_argument("--train-queries", type=positive_int, default=queries, help="cap on each task's training queries")
    q.add_argument("--train-batch-size", type=positive_int, default=batch, help="training batch size")


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmark tables (suite with ablations, method comparison)", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    bsub = p.add_subparsers(dest="bench_command", metavar="KIND", required=True)
    for kind, helptext in (("suite", "zero-shot, N-shot ICL and M²IV with loss ablations"),
                           ("compare", "every method on the same data, shots and budget")):
        _add_table(bsub, kind, helptext)
    for add in (_add_icl_curve, _add_many_shot, _add_merge, _add_library, _add_efficiency):
        add(bsub)


def _add_table(bsub, kind: str, helptext: str) -> None:
    """`bench suite` and `bench compare`: one table of methods by tasks."""
    q = bsub.add_parser(kind, help=helptext, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(q)
    _tasks(q)
    if kind == "compare":
        _compare_args(q)
    q.add_argument("--shots", type=non_negative_int, default=16, help="demonstrations per prompt (default 16)")
    _training(q, None, None, None)
    _common(q, f"runs/bench/{kind}")
    q.add_argument("--data-root", default=None, help="folder of the official benchmark files (or $M2IV_DATA)")
    q.add_argument("--out", required=True, help="JSON file to write (a .md table is written next to it)")
    q.set_defaults(func=run, kind=kind)


def _compare_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("--method", type=name_list, default=ALL_METHODS, metavar="METHOD[,METHOD...]",
                   help=f"comma-separated method names (default {ALL_METHODS})")
    q.add_argument("--budget", default="original", choices=["original", "cpu"],
                   help="original (default): every method's own extraction, search and training budget; "
                        f"cpu: smaller ones for a small CPU ({_budget_text()}), the rest unchanged")
    q.add_argument("--lr-sweep", default=None, metavar="default|LR,LR,...|M=LR,..;M=..",
                   help="train each trained method at several learning rates, keep the best on each task's "
                        "held-out train queries, test it once: 'default' (a decade around each original: "
                        f"{_grids_text()}), one grid for all (1e-3,1e-2,1e-1), or a grid per method "
                        "(live=0.03,0.1,0.3;mimic=0.05,0.5)")
    q.add_argument("--val-queries", type=positive_int, default=24,
                   help="train queries held out to score the --lr-sweep rates (default 24)")


def _add_icl_curve(bsub) -> None:
    cu = bsub.add_parser("icl-curve", help="accuracy against shots for each task (JSON + PNG)",
                         epilog="example: m2iv bench icl-curve sandbox --task sandbox-colour-nonce "
                                "--shots 0,1,2,4,8,16,32 --out benchmarks/sandbox_icl/curves.json")
    add_model_args(cu)
    _tasks(cu)
    cu.add_argument("--shots", type=shots_list, default="0,1,2,4,8,16,32",
                    help="comma-separated shot counts (0: zero-shot; default 0,1,2,4,8,16,32)")
    _common(cu, "runs/bench/icl-curve")
    cu.add_argument("--out", required=True, help="JSON file to write (a .md table and a .png next to it)")
    cu.set_defaults(func=curve_cmd)


def _add_many_shot(bsub) -> None:
    ms = bsub.add_parser("many-shot", help="ICL limited by a context window vs M²IV from more demonstrations",
                         epilog="example: m2iv bench many-shot sandbox --task sandbox-colour-nonce,sandbox-shape-nonce "
                                "--window 512 --out benchmarks/many_shot/sandbox.json")
    add_model_args(ms)
    _tasks(ms)
    ms.add_argument("--window", type=positive_int, default=512, help="context window set for the experiment (tokens)")
    ms.add_argument("--icl-shots", type=shots_list, default="0,1,2,4,8,16,32,64",
                    help="ICL shot counts, each cut to what the window holds (default 0,1,2,4,8,16,32,64)")
    ms.add_argument("--m2iv-shots", type=shots_list, default="16,32,64,128",
                    help="demonstrations M²IV is distilled from, in contexts the window holds (default 16,32,64,128)")
    ms.add_argument("--steps", type=positive_int, default=60, help="M²IV training steps (default 60)")
    ms.add_argument("--train-queries", type=positive_int, default=96, help="cap on each task's training queries")
    ms.add_argument("--ensemble", choices=("product", "mixture"), default="product",
                    help="how the teacher combines its contexts: mean log-probability (product of experts, default) "
                         "or mean probability (mixture)")
    _common(ms, "runs/bench/many-shot")
    ms.add_argument("--out", required=True, help="JSON file to write (a .md table and a .png next to it)")
    ms.set_defaults(func=many_shot_cmd)


def _add_merge(bsub) -> None:
    mg = bsub.add_parser("merge", help="several bench tables in one (a rerun's rows replace the same cells)",
                         epilog="example: m2iv bench merge benchmarks/compare/sandbox.json runs/live-tuned.json "
                                "--out benchmarks/compare/sandbox.json")
    mg.add_argument("tables", nargs="+", metavar="TABLE.json", help="JSON files written by `m2iv bench`, in order")
    mg.add_argument("--out", required=True, help="JSON file to write (a .md table is written next to it; it may be "
                                                 "one of the inputs)")
    mg.add_argument("--plot", default=None, metavar="TITLE", help="also draw score against shots to a .png")
    mg.set_defaults(func=merge_cmd)


def _add_library(bsub) -> None:
    lb = bsub.add_parser("library", help="VLibrary applications: alignment, style vectors and their composition, "
                         "safety with negation, search by example and routing",
                         epilog="example: m2iv bench library sandbox --work runs/bench/shared "
                                "--out benchmarks/library/sandbox.json")
    add_model_args(lb)
    lb.add_argument("--shots", type=non_negative_int, default=16, help="demonstrations per prompt (default 16)")
    _training(lb, 60, 96, 16)
    lb.add_argument("--search-n", type=positive_int, default=50, help="held-out queries per task for search by example")
    lb.add_argument("--section", type=name_list, default=["alignment", "styles", "safety", "routing"],
                    metavar="NAME[,NAME...]", help="which applications to run: alignment, styles, safety, routing "
                                                   "(default all)")
    lb.add_argument("--publish", default=None, metavar="DIR",
                    help="also write a closed copy of the library the run built to DIR (for `m2iv library serve "
                         "--root DIR`; benchmarks/library/vlibrary is the committed one)")
    _common(lb, "runs/bench/shared")
    lb.add_argument("--out", required=True, help="JSON file to write (a .md table is written next to it)")
    lb.set_defaults(func=library_cmd)


def _add_efficiency(bsub) -> None:
    e = bsub.add_parser("efficiency", help="inference cost of every method as ratios to zero-shot",
                        epilog="example: m2iv bench efficiency sandbox --task sandbox-colour-nonce "
                               "--vectors-from runs/bench/compare --out benchmarks/efficiency.json")
    e.add_argument("model", metavar="MODEL", help="model spec, as in the `bench compare` run whose vectors are timed")
    e.add_argument("--task", required=True, help="task name")
    e.add_argument("--method", type=name_list, default=ALL_METHODS, metavar="METHOD[,METHOD...]",
                   help=f"comma-separated method names (default {ALL_METHODS})")
    e.add_argument("--vectors-from", default="runs/bench/compare", help="work folder of a `bench compare` run")
    e.add_argument("--shots", type=non_negative_int, default=16, help="ICL demonstrations per prompt (default 16)")
    e.add_argument("--n-test", type=positive_int, default=30, help="timed test queries per method (after one warm-up)")
    e.add_argument("--new-tokens", type=positive_int, default=4, help="tokens generated per query (min = max); "
                   "1 times the prompt's prefill and the first answer token")
    e.add_argument("--batch-size", type=positive_int, default=1,
                   help="queries per generate() call (latency is per query)")
    e.add_argument("--icl-shots", type=icl_shots, default="4,max", metavar="N[,N|max...]",
                   help="ICL also timed at these shots (max: the most the context window holds); the break-even "
                        "query counts are against each ICL row (default 4,max, besides --shots)")
    e.add_argument("--training-step", action="store_true",
                   help="also time one training step of each trained method against a plain forward+backward, and "
                        "its peak memory against a plain fine-tune step (evaluate/train_cost.py)")
    e.add_argument("--train-batch-size", type=positive_int, default=16, help="training queries of that step")
    e.add_argument("--seed", type=non_negative_int, default=0, help="split seed (default 0)")
    e.add_argument("--data-root", default=None, help="folder of the official benchmark files (or $M2IV_DATA)")
    e.add_argument("--out", required=True, help="JSON file to write")
    e.add_argument("--config", default=None, metavar="FILE.yaml",
                   help="flag values from a YAML file; a flag on the command line wins")
    e.set_defaults(func=efficiency)


def icl_shots(text: str) -> list[int | str]:
    """`--icl-shots 4,16,max`: positive shot counts, or max."""
    out: list[int | str] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part == "max":
            out.append(part)
        elif part.isdigit() and int(part) > 0:
            out.append(int(part))
        else:
            raise argparse.ArgumentTypeError(f"{part!r} is not a positive shot count or max")
    return out


def _before_loading(args: argparse.Namespace, tasks: list[str], methods: list[str] | None = None) -> None:
    """Refuse a typo in a name or an unwritable --out before the model loads."""
    check_tasks(tasks)
    check_methods(methods or [])
    check_out(args.out, folder=False)


def run(args: argparse.Namespace) -> int:
    from m2iv.constants import __version__
    from m2iv.evaluate.bench import compare_plan, lr_grids, run_plan, suite_plan
    from m2iv.evaluate.tables import write_table

    _before_loading(args, args.task, args.method if args.kind == "compare" else None)
    plan = suite_plan(args.shots) if args.kind == "suite" else compare_plan(args.method, args.budget)
    sweep = lr_grids(getattr(args, "lr_sweep", None), [c.method for c in plan])  # a bad grid fails before loading
    lm = load_from_args(args)
    train = {k: v for k, v in (("steps", args.steps), ("batch_size", args.train_batch_size)) if v}
    t0 = time.time()
    overrides = {"n_train": args.train_queries} if args.train_queries else None
    rows = run_plan(lm, args.task, plan, work=args.work, shots=args.shots, n_test=args.n_test, seed=args.seed,
                    batch_size=args.batch_size, data_root=args.data_root, train_defaults=train,
                    task_overrides=overrides, lr_sweep=sweep, n_val=getattr(args, "val_queries", 24))
    meta = {"command": "m2iv bench " + " ".join(_argv(args)), "model": args.model, "m2iv_version": __version__,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "wall_seconds": round(time.time() - t0, 1), **({"lr_grids": sweep} if sweep else {})}
    write_table(rows, args.out, meta)
    print(json.dumps({"out": args.out, "rows": len(rows)}, indent=2))
    return 0


def _ints(values: list[int]) -> str:
    return ",".join(map(str, values))


def curve_cmd(args: argparse.Namespace) -> int:
    from m2iv.constants import __version__
    from m2iv.evaluate.bench import icl_curve
    from m2iv.evaluate.tables import plot_curves, write_table

    _before_loading(args, args.task)
    lm = load_from_args(args)
    t0 = time.time()
    rows = icl_curve(lm, args.task, args.shots, args.work, n_test=args.n_test, seed=args.seed,
                     batch_size=args.batch_size)
    meta = {"command": f"m2iv bench icl-curve {args.model} --task {','.join(args.task)} --shots {_ints(args.shots)} "
                       f"--n-test {args.n_test} --out {args.out}", "m2iv_version": __version__,
            "wall_seconds": round(time.time() - t0, 1)}
    write_table(rows, args.out, meta)
    plot_curves(rows, Path(args.out).with_suffix(".png"), f"ICL on {args.model}: accuracy against shots")
    print(json.dumps({"out": args.out, "rows": len(rows)}, indent=2))
    return 0


def many_shot_cmd(args: argparse.Namespace) -> int:
    from m2iv.constants import __version__
    from m2iv.evaluate.bench import many_shot
    from m2iv.evaluate.tables import plot_curves, write_table

    _before_loading(args, args.task)
    lm = load_from_args(args)
    t0 = time.time()
    rows = many_shot(lm, args.task, args.window, args.icl_shots, args.m2iv_shots, work=args.work, n_test=args.n_test,
                     seed=args.seed, batch_size=args.batch_size,
                     train_defaults={"steps": args.steps, "batch_size": 16, "val_every": 20, "val_size": 32},
                     task_overrides={"n_train": args.train_queries}, ensemble_mode=args.ensemble)
    meta = {"command": f"m2iv bench many-shot {args.model} --task {','.join(args.task)} --window {args.window} "
                       f"--icl-shots {_ints(args.icl_shots)} --m2iv-shots {_ints(args.m2iv_shots)} "
                       f"--n-test {args.n_test} --steps {args.steps} --train-queries {args.train_queries} "
                       f"--ensemble {args.ensemble} "
                       f"--out {args.out}",
            "m2iv_version": __version__, "wall_seconds": round(time.time() - t0, 1)}
    write_table(rows, args.out, meta)
    plot_curves(rows, Path(args.out).with_suffix(".png"),
                f"{args.model}: ICL within a {args.window}-token window vs M²IV from more demonstrations")
    print(json.dumps({"out": args.out, "rows": len(rows)}, indent=2))
    return 0


def merge_cmd(args: argparse.Namespace) -> int:
    from m2iv.evaluate.tables import merge_tables, plot_curves, write_table

    check_out(args.out, folder=False)
    rows, meta = merge_tables(args.tables)
    meta["command"] = f"m2iv bench merge {' '.join(args.tables)} --out {args.out}"
    write_table(rows, args.out, meta)
    if args.plot:
        plot_curves(rows, Path(args.out).with_suffix(".png"), args.plot)
    print(json.dumps({"out": args.out, "rows": len(rows), "commands": len(meta["commands"])}, indent=2))
    return 0


def library_cmd(args: argparse.Namespace) -> int:
    from m2iv.constants import __version__
    from m2iv.errors import M2IVError
    from m2iv.evaluate.steering import SECTIONS, library_applications, markdown
    from m2iv.files import write_text_atomic

    unknown = sorted(set(args.section) - set(SECTIONS))
    if unknown:
        raise M2IVError(f"unknown --section {', '.join(unknown)}; sections are {', '.join(SECTIONS)}")
    check_out(args.out, folder=False)
    lm = load_from_args(args)
    result = library_applications(lm, args.work, shots=args.shots, n_test=args.n_test, seed=args.seed,
                                  batch_size=args.batch_size, search_n=args.search_n,
                                  train_defaults={"steps": args.steps, "batch_size": args.train_batch_size},
                                  task_overrides={"n_train": args.train_queries}, model=args.model,
                                  sections=tuple(args.section))
    section = "" if set(args.section) == set(SECTIONS) else f" --section {','.join(args.section)}"
    result["meta"] = {"command": f"m2iv bench library {args.model} --shots {args.shots} --n-test {args.n_test} "
                                 f"--steps {args.steps} --train-queries {args.train_queries} --train-batch-size "
                                 f"{args.train_batch_size} --search-n {args.search_n} --work {args.work}{section} "
                                 f"--out {args.out}" + (f" --publish {args.publish}" if args.publish else ""),
                      "m2iv_version": __version__, "machine": platform.machine()}
    write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    write_text_atomic(Path(args.out).with_suffix(".md"), markdown(result))
    if args.publish:
        from m2iv.library import Library

        with Library(Path(args.work) / "library-apps" / "library") as lib:
            lib.publish(args.publish)
    print(markdown(result))
    return 0


def efficiency(args: argparse.Namespace) -> int:
    import os

    from m2iv.constants import __version__
    from m2iv.evaluate.efficiency import measure
    from m2iv.files import write_text_atomic

    _before_loading(args, [args.task], args.method)
    t0 = time.time()
    result = measure(args.model, args.task, args.method, args.vectors_from, shots=args.shots, n=args.n_test,
                     new_tokens=args.new_tokens, seed=args.seed, data_root=args.data_root, batch_size=args.batch_size,
                     icl_shots=args.icl_shots, training=args.training_step, train_batch=args.train_batch_size)
    extra = (f"--icl-shots {','.join(map(str, args.icl_shots))} "
             + (f"--training-step --train-batch-size {args.train_batch_size} " if args.training_step else ""))
    result["meta"] = {"command": f"m2iv bench efficiency {args.model} --task {args.task} "
                                 f"--method {','.join(args.method)} --vectors-from {args.vectors_from} "
                                 f"--shots {args.shots} --n-test {args.n_test} --new-tokens {args.new_tokens} "
                                 f"--batch-size {args.batch_size} {extra}--out {args.out}",
                      "m2iv_version": __version__, "machine": platform.machine(), "cpus": os.cpu_count(),
                      "wall_seconds": round(time.time() - t0, 1)}
    write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    cols = ["method", "shots", "prompt_tokens", "latency_ms", "latency_vs_zero_shot", "ttft_ms", "tpot_ms", "e2e_ms",
            "peak_tensor_mb", "parameters", "train_seconds", "break_even_queries", "train_step_ratio",
            "train_peak_vs_finetune"]
    print(" | ".join(cols))
    for r in result["rows"]:
        print(" | ".join(str(r.get(c)) for c in cols))
    print("hook overhead:", json.dumps(result["hook_overhead"]))
    return 0


def _argv(args) -> list[str]:
    out = [args.kind, args.model, "--task", ",".join(args.task), "--shots", str(args.shots), "--n-test",
           str(args.n_test)]
    if args.kind == "compare":
        out += ["--method", ",".join(args.method), "--budget", args.budget]
        if args.lr_sweep:
            out += ["--lr-sweep", args.lr_sweep, "--val-queries", str(args.val_queries)]
    if args.steps:
        out += ["--steps", str(args.steps)]
    if args.train_queries:
        out += ["--train-queries", str(args.train_queries)]
    if args.train_batch_size:
        out += ["--train-batch-size", str(args.train_batch_size)]
    return out + ["--out", args.out]
