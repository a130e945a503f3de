"""`m2iv inspect MODEL`: what m2iv discovered about a model, as text or JSON."""

from __future__ import annotations

import argparse
import json

from m2iv.cli.common import add_model_args, load_from_args


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="show decoder layers, sizes, image tokens and injection sites",
                       epilog="example: m2iv inspect tiny:qwen2_vl --json",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    lm = load_from_args(args)
    info = {"model": args.model, **lm.adapter.describe(),
            "num_parameters": sum(p.numel() for p in lm.model.parameters()),
            "model_class": type(lm.model).__name__}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        if isinstance(value, dict):
            print(f"{key:<{width}}")
            for k, v in value.items():
                print(f"  {k:<{width - 2}}  {v}")
        else:
            print(f"{key:<{width}}  {value}")
    return 0
