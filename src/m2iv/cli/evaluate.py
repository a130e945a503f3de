"""`m2iv eval MODEL --task T --method M`: the harness every method is measured with."""

from __future__ import annotations

import argparse
import json

from m2iv.cli.common import add_model_args, check_out, load_from_args, non_negative_int, positive_int

EXAMPLES = """examples:
  m2iv eval tiny:llava --task easy-vqa --method zero-shot --n-test 20 --out runs/llava-zs
  m2iv eval tiny:idefics2 --task vqav2 --data-root ~/data --method icl --shots 4 --out runs/icl4
  m2iv eval sandbox --task easy-vqa --method m2iv --vectors out/easy-vqa --out runs/m2iv
  m2iv eval sandbox --task easy-vqa --method parallel-icl --shots 16 --method-config chunking=random --out runs/par
  accelerate launch -m m2iv.cli.main eval ...      # examples sharded across processes
"""


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a method on a task", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--task", required=True, help="task name (see `m2iv tasks`), jsonl:<file> or a task .json")
    p.add_argument("--method", default="zero-shot", help="zero-shot, icl, or a vector method with --vectors")
    p.add_argument("--shots", type=non_negative_int, default=None,
                   help="demonstrations per query (icl; default 0), or the shots of a method fitted here")
    p.add_argument("--selection", default="random", choices=["random", "fixed", "rices"],
                   help="how demonstrations are chosen: random per query (seeded; default), one fixed set, or "
                        "RICES (the most similar support examples by the model's own embeddings)")
    p.add_argument("--vectors", default=None,
                   help="vector directory, library:<id-or-name>, or library:auto (route each query)")
    p.add_argument("--no-strict", action="store_true", help="apply vectors despite a fingerprint mismatch")
    p.add_argument("--method-config", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of an inference method (e.g. chunks=4 for parallel-icl); repeatable")
    p.add_argument("--ignore-condition", action="store_true",
                   help="apply vectors that carry a condition to every query (what the condition adds, measured)")
    p.add_argument("--n-test", type=positive_int, default=None, help="evaluate the first N test queries (default all)")
    p.add_argument("--batch-size", type=positive_int, default=4, help="queries per forward pass (default 4)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="split and demonstration seed (default 0)")
    p.add_argument("--data-root", default=None, help="folder of the official benchmark files (or $M2IV_DATA)")
    p.add_argument("--on-bad-image", default="skip", choices=["skip", "stop"],
                   help="skip (and record) examples with unreadable images, or stop")
    p.add_argument("--out", required=True, help="output folder (rerun into it to resume)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from m2iv.cli.train import method_config_from_args
    from m2iv.data.tasks import get_task
    from m2iv.evaluate.runner import EvalConfig, evaluate
    from m2iv.methods import METHODS, get_method
    from m2iv.methods.base import LoadedVectors

    task = get_task(args.task)
    options = {"vectors": args.vectors, "strict": not args.no_strict}
    if args.method_config:
        options["method_config"] = method_config_from_args(args.method, getattr(METHODS.get(args.method),
                                                                               "config_cls", None), args)
    if args.ignore_condition:  # absent otherwise, so runs without the flag keep their identity
        options["condition"] = False
    if args.shots is not None:  # explicit shots reach the method; absent, it keeps its own default
        options["shots"] = args.shots
    method = get_method(args.method, options)
    if isinstance(method, LoadedVectors):
        method.require_vectors()  # before the model loads
    check_out(args.out, folder=True)
    # bad data costs no model load; only the splits the method reads (zero-shot: the test split's files)
    splits = task.splits(args.data_root, seed=args.seed, parts=method.splits_needed())
    lm = load_from_args(args)
    cfg = EvalConfig(shots=args.shots or 0, selection=args.selection, limit=args.n_test, batch_size=args.batch_size,
                     seed=args.seed, on_bad_image=args.on_bad_image, data_root=args.data_root)
    summary = evaluate(lm, task, method, cfg, args.out, splits=splits)
    if summary:
        keys = ("task", "method", "shots", "n", "metric", "score", "mean_prompt_tokens", "mean_latency_ms",
                "peak_memory_mb")
        print(json.dumps({k: summary[k] for k in keys}, indent=2))
        if summary["skipped"]:
            print(f"skipped {len(summary['skipped'])} example(s) with unreadable images; see {args.out}/summary.json")
        print(f"wrote {args.out}/predictions.jsonl and {args.out}/summary.json")
    return 0


def add_tasks_parser(sub) -> None:
    p = sub.add_parser("tasks", help="list the registered tasks, the data they read and how to add your own",
                       epilog="examples:\n  m2iv tasks\n  m2iv tasks --json",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the tasks as JSON (with each one's expected files)")
    p.set_defaults(func=list_tasks)


def list_tasks(args: argparse.Namespace) -> int:
    from m2iv.cli.tasks import run

    return run(args)
