"""`m2iv train MODEL --task T --method m2iv --shots 16 --out DIR`: learn in-context vectors."""

from __future__ import annotations

import argparse
import json

from m2iv.cli.common import add_model_args, load_from_args

EXAMPLES = """examples:
  m2iv train sandbox --task sandbox-colour-words --shots 16 --out out/colour      # M²IV, default recipe
  m2iv train tiny:qwen2_vl --task jsonl:data.jsonl --steps 50 --w-ce 0 --out out/kl-only
  torchrun --nproc_per_node 2 -m m2iv.cli.main train ...                          # data parallel
  m2iv eval sandbox --task sandbox-colour-words --method m2iv --vectors out/colour --out runs/m2iv
"""


def add_parser(sub) -> None:
    from m2iv.train.config import TeacherConfig, TrainConfig

    d, t = TrainConfig(), TeacherConfig()
    p = sub.add_parser("train", help="train in-context vectors (M²IV) from the N-shot ICL teacher",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--task", required=True)
    p.add_argument("--method", default="m2iv")
    p.add_argument("--out", required=True, help="vector directory to write (a sibling DIR.train keeps checkpoints)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--shots", type=int, default=t.shots, help="teacher shots")
    p.add_argument("--selection", default=t.selection, choices=["random", "fixed", "rices"])
    p.add_argument("--draws", type=int, default=t.draws, help="demonstration sets per training query")
    p.add_argument("--topk", type=int, default=t.topk, help="teacher logits kept per token (0: full distribution)")
    p.add_argument("--ensemble", type=int, default=t.ensemble, help="contexts per teacher target (many-shot)")
    g = p.add_argument_group("optimisation")
    for name in ("steps", "batch_size", "grad_accum", "val_every", "val_size", "checkpoint_every", "seed"):
        g.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    for name in ("lr_vectors", "lr_scales", "weight_decay", "warmup", "clip", "w_mimicry", "w_synergy", "w_ce",
                 "temperature"):
        g.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    g.add_argument("--synergy", default=d.synergy, choices=["decorrelation", "barlow", "none"])
    g.add_argument("--bf16", action="store_true")
    m = p.add_argument_group("vectors")
    m.add_argument("--operator", default="linear", choices=["linear", "additive", "norm_preserving"])
    m.add_argument("--sites", default="attn,mlp", help="comma-separated sites (attn, mlp, attn_head, layer)")
    m.add_argument("--token-policy", default="all", choices=["all", "text", "query", "generated", "last"])
    m.add_argument("--method-config", action="append", default=[], metavar="KEY=VALUE",
                   help="a field of the method's settings (e.g. site=layer for live, n_trials=50 for mtv); repeatable")
    p.set_defaults(func=run)


def config_from_args(args):
    from m2iv.train.config import TeacherConfig, TrainConfig

    teacher = TeacherConfig(shots=args.shots, selection=args.selection, draws=args.draws, topk=args.topk or None,
                            ensemble=args.ensemble)
    keys = ("steps", "batch_size", "grad_accum", "val_every", "val_size", "checkpoint_every", "seed", "lr_vectors",
            "lr_scales", "weight_decay", "warmup", "clip", "w_mimicry", "w_synergy", "w_ce", "temperature",
            "synergy", "bf16")
    return TrainConfig(**{k: getattr(args, k) for k in keys}, teacher=teacher)


def _method_config(method, pairs: list[str]):
    """Build the method's settings dataclass from KEY=VALUE pairs (values parsed as JSON when they can be)."""
    from dataclasses import fields, replace

    from m2iv.errors import M2IVError

    cfg = method.method_config()
    if cfg is None:
        raise M2IVError(f"method {method.name!r} has no settings to set with --method-config")
    known = {f.name for f in fields(cfg)}
    values = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key not in known:
            raise M2IVError(f"--method-config {pair!r}: use KEY=VALUE with KEY one of {', '.join(sorted(known))}")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return replace(cfg, **values)


def run(args: argparse.Namespace) -> int:
    from m2iv.errors import M2IVError
    from m2iv.evaluate.tasks import get_task
    from m2iv.methods import M2IVConfig, get_method

    task = get_task(args.task)
    cfg = config_from_args(args)
    mcfg = M2IVConfig(sites=args.sites.split(","), operator=args.operator, token_policy=args.token_policy)
    options = {"out": args.out, "train_config": cfg, "shots": args.shots, "seed": args.seed}
    if args.method == "m2iv":
        options["method_config"] = mcfg
    method = get_method(args.method, options)
    if args.method_config:
        options["method_config"] = _method_config(method, args.method_config)
        method = get_method(args.method, options)
    if not getattr(method, "trainable", False):
        from m2iv.methods import METHODS

        names = [n for n in METHODS if getattr(METHODS.get(n)({}), "trainable", False)]
        raise M2IVError(f"method {args.method!r} has nothing to train; trainable methods: {', '.join(names)}")
    lm = load_from_args(args)
    splits = task.splits(args.data_root, seed=args.seed)
    method.prepare(lm, task, splits)
    info = getattr(method, "info", {})
    print(json.dumps({"out": args.out, "best": info.get("best"), "teacher_acc_train":
                      info.get("teacher", {}).get("accuracy_train"), "train_seconds": info.get("train_seconds")},
                     indent=2))
    return 0
