"""`m2iv bench suite|compare`: benchmark tables written to files (JSON + Markdown)."""

from __future__ import annotations

import argparse
import json
import platform
import time

from m2iv.cli.common import add_model_args, load_from_args

EXAMPLES = """examples:
  m2iv bench suite sandbox --tasks sandbox-colour-nonce,sandbox-shape-nonce --out benchmarks/sandbox_suite.json
  m2iv bench compare sandbox --tasks sandbox-colour-nonce --methods zero-shot,icl,m2iv,tv,fv,icv,i2cl,mtv,live,mimic \\
      --out benchmarks/compare/sandbox.json
"""


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmark tables (suite with ablations, method comparison)", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    bsub = p.add_subparsers(dest="bench_command", metavar="KIND", required=True)
    for kind, helptext in (("suite", "zero-shot, N-shot ICL and M²IV with loss ablations"),
                           ("compare", "every method on the same data, shots and budget")):
        q = bsub.add_parser(kind, help=helptext, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_model_args(q)
        q.add_argument("--tasks", required=True, help="comma-separated task names")
        if kind == "compare":
            q.add_argument("--methods", default="zero-shot,icl,m2iv,tv,fv,icv,i2cl,mtv,live,mimic")
        q.add_argument("--shots", type=int, default=16)
        q.add_argument("--n-test", type=int, default=100)
        q.add_argument("--steps", type=int, default=None, help="training steps for trained methods")
        q.add_argument("--batch-size", type=int, default=8)
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--data-root", default=None)
        q.add_argument("--work", default="runs/bench", help="folder for the per-cell runs (resumable)")
        q.add_argument("--out", required=True, help="JSON file to write (a .md table is written next to it)")
        q.set_defaults(func=run, kind=kind)


def run(args: argparse.Namespace) -> int:
    from m2iv import __version__
    from m2iv.evaluate.bench import compare_plan, run_plan, suite_plan, write_table

    lm = load_from_args(args)
    tasks = [t for t in args.tasks.split(",") if t]
    plan = suite_plan(args.shots) if args.kind == "suite" else compare_plan(args.methods.split(","))
    train = {"steps": args.steps} if args.steps else {}
    t0 = time.time()
    rows = run_plan(lm, tasks, plan, work=f"{args.work}/{args.kind}", shots=args.shots, n_test=args.n_test,
                    seed=args.seed, batch_size=args.batch_size, data_root=args.data_root, train_defaults=train)
    meta = {"command": "m2iv bench " + " ".join(_argv(args)), "model": args.model, "m2iv_version": __version__,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "wall_seconds": round(time.time() - t0, 1)}
    write_table(rows, args.out, meta)
    print(json.dumps({"out": args.out, "rows": len(rows)}, indent=2))
    return 0


def _argv(args) -> list[str]:
    out = [args.kind, args.model, "--tasks", args.tasks, "--shots", str(args.shots), "--n-test", str(args.n_test)]
    if args.kind == "compare":
        out += ["--methods", args.methods]
    if args.steps:
        out += ["--steps", str(args.steps)]
    return out + ["--out", args.out]
