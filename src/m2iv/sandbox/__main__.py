"""`python -m m2iv.sandbox [ARGS]` is `m2iv sandbox build [ARGS]` (kept for old instructions; the m2iv CLI
owns the options)."""

from __future__ import annotations

import sys

from m2iv.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["sandbox", "build", *sys.argv[1:]]))
