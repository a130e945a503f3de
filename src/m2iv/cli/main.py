"""`m2iv` command line: a thin argparse root, one module per subcommand."""

from __future__ import annotations

import argparse
import sys

from m2iv.errors import M2IVError

EPILOG = """examples:
  m2iv inspect tiny:qwen2_vl --json        # decoder layers, sizes, image tokens, injection sites
  m2iv inspect /path/to/hf/model            # any local Idefics2/3, SmolVLM, Qwen2(.5)-VL, LLaVA(-NeXT/-OV), Llama...
  m2iv eval tiny:llava --task easy-vqa --method zero-shot --limit 20 --out runs/zs
  m2iv tasks                                # registered tasks
  m2iv library list                         # stored vectors; use --vectors library:NAME anywhere
  m2iv demo                                 # the main job on the sandbox model
"""


def build_parser() -> argparse.ArgumentParser:
    from m2iv.cli import bench, demo, evaluate, inspect, library, report, sandbox, train
    from m2iv.constants import __version__

    parser = argparse.ArgumentParser(prog="m2iv", description="Vectorized multimodal in-context learning.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"m2iv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (inspect, train, evaluate, bench, report, library, sandbox, demo):
        module.add_parser(sub)
    evaluate.add_tasks_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except M2IVError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
