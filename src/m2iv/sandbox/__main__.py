"""`python -m m2iv.sandbox [--from-scratch] [--out DIR]`: build the sandbox LVLM (what `m2iv sandbox build` runs)."""

from __future__ import annotations

import argparse
import sys

from m2iv.errors import M2IVError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m m2iv.sandbox", description=__doc__)
    ap.add_argument("--from-scratch", action="store_true", help="retrain the shipped weights first (about an hour)")
    ap.add_argument("--out", default=None, help="target directory (default: $M2IV_HOME/sandbox)")
    args = ap.parse_args(argv)
    from m2iv.sandbox import build

    try:
        build(from_scratch=args.from_scratch, out=args.out)
    except M2IVError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
