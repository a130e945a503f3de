"""`m2iv sandbox build|info`: the embedded sandbox LVLM (real SmolLM2 weights + in-project vision)."""

from __future__ import annotations

import argparse
import json
import time

from m2iv.errors import M2IVError
from m2iv.sandbox.recipe.config import DEFAULTS, OPTIONAL_STAGES, STAGES

EXAMPLES = """examples:
  m2iv sandbox build                  # assemble from the shipped weights into $M2IV_HOME/sandbox (~1 min)
  m2iv sandbox build --from-scratch   # retrain the shipped weights first (about an hour on 2 cores)
  m2iv sandbox build --from-scratch --stages meta,export --meta-steps 100   # rerun the last stages only
  m2iv sandbox info                   # the model card: architecture, training data, steps, measured quality
"""


def add_parser(sub) -> None:
    p = sub.add_parser("sandbox", help="build or describe the sandbox LVLM", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s = p.add_subparsers(dest="sandbox_command", metavar="ACTION", required=True)
    b = s.add_parser("build", help="assemble the sandbox model into the cache", epilog=EXAMPLES,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--from-scratch", action="store_true", help="retrain the shipped weights first")
    b.add_argument("--out", default=None, help="target folder (default $M2IV_HOME/sandbox)")
    t = b.add_argument_group("--from-scratch training (defaults: the recipe of the shipped weights)")
    t.add_argument("--work", default=None, help="private scratch folder: stage states, weights/ "
                                                "(default $M2IV_HOME/sandbox-train, created mode 700)")
    t.add_argument("--stages", default=",".join(STAGES),
                   help=f"comma-separated stages to run, of {', '.join(STAGES + OPTIONAL_STAGES)}; later stages "
                        "read earlier ones' states from --work; without export nothing is assembled")
    for key, value in DEFAULTS.items():
        t.add_argument("--" + key.replace("_", "-"), type=type(value), default=None,
                       metavar=type(value).__name__.upper(), help=f"default {value}")
    b.set_defaults(func=build)
    i = s.add_parser("info", help="print the model card", epilog="example: m2iv sandbox info --json")
    i.add_argument("--json", action="store_true", help="print the model card as JSON")
    i.set_defaults(func=info)


def _training_options(args: argparse.Namespace) -> tuple[dict, list[str]]:
    """(hyperparameter overrides, stages) of `build`; refused without --from-scratch, where they do nothing."""
    config = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k, None) is not None}
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES + OPTIONAL_STAGES]
    if bad or not stages:
        raise M2IVError(f"unknown stage(s) {bad or [args.stages]} in --stages; use a comma-separated list of "
                        f"{', '.join(STAGES + OPTIONAL_STAGES)}")
    given = sorted(config) + (["stages"] if stages != list(STAGES) else []) + (["work"] if args.work else [])
    if given and not args.from_scratch:
        raise M2IVError(f"--{given[0].replace('_', '-')} only applies to training; add --from-scratch or drop it")
    return config, stages


def build(args: argparse.Namespace) -> int:
    from m2iv.sandbox import build as do_build

    config, stages = _training_options(args)
    t0 = time.perf_counter()
    path = do_build(from_scratch=args.from_scratch, out=args.out, work=args.work, config=config, stages=stages)
    if args.from_scratch and "export" not in stages:
        print(f"stages {','.join(stages)} done; states in {path} ({time.perf_counter() - t0:.0f}s)")
        return 0
    print(f"sandbox ready at {path} ({time.perf_counter() - t0:.0f}s); use the model spec `sandbox`")
    return 0


def info(args: argparse.Namespace) -> int:
    from m2iv.sandbox import assemble

    path = assemble.HERE / "model_card.json"
    if not path.is_file():
        raise M2IVError(f"no model card at {path}; the sandbox weights were not built in this checkout")
    card = json.loads(path.read_text())
    if args.json:
        print(json.dumps(card, indent=2))
        return 0
    _print(card)
    return 0


def _print(obj, indent: int = 0) -> None:
    pad = "  " * indent
    for k, v in obj.items():
        if isinstance(v, dict):
            print(f"{pad}{k}:")
            _print(v, indent + 1)
        else:
            print(f"{pad}{k}: {v}")
