"""Arguments shared by every subcommand that loads a model."""

from __future__ import annotations

import argparse


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="tiny:<family>, sandbox, a local model directory, a .gguf file or a hub id")
    p.add_argument("--dtype", default="float32", help="float32 (default), bfloat16 or float16")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    p.add_argument("--layers", default=None,
                   help="override layer discovery: dotted path of the decoder layer list or a regex over "
                        "module names (for models m2iv does not know)")


def load_from_args(args: argparse.Namespace):
    from m2iv.models.loading import load_model

    return load_model(args.model, dtype=args.dtype, device=args.device, layers=args.layers)
