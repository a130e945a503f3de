"""`m2iv` command line: a thin argparse root, one module per subcommand.

Every failure ends as one line on stderr: `error: <cause; fix>` and exit 2 for a user error (M2IVError or a
bad command line), `error: <Type>: <message> (run with --debug for the traceback)` and exit 1 for anything
unexpected, `interrupted` and exit 130 for Ctrl-C. `--debug` (before or after the subcommand) adds the traceback.
A write the file system refuses (disk full, read-only, ...) is a user error naming the path. Output piped into a
reader that stops early (`m2iv library show X --json | head -c 100`) ends quietly with exit 141, as a Unix tool
killed by SIGPIPE does.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Iterator
from typing import NoReturn

from m2iv.errors import M2IVError

EPILOG = """examples:
  m2iv inspect tiny:qwen2_vl --json        # decoder layers, sizes, image tokens, injection sites
  m2iv inspect /path/to/hf/model            # any local Idefics2/3, SmolVLM, Qwen2(.5)-VL, LLaVA(-NeXT/-OV), Llama...
  m2iv eval tiny:llava --task easy-vqa --method zero-shot --n-test 20 --out runs/zs
  m2iv tasks                                # registered tasks
  m2iv library list                         # stored vectors; use --vectors library:NAME anywhere
  m2iv demo                                 # the main job on the sandbox model
  m2iv merge sandbox --vectors out/v --out merged/   # a plain HF checkpoint with the vectors folded in
  m2iv export --vectors out/v --format gguf-control-vector --out v.gguf   # a llama.cpp control vector
  m2iv --debug eval ...                     # the full traceback of an unexpected error

The same flag means the same thing everywhere: MODEL is positional; --task and --method take one name or a
comma-separated list where a command runs several; --n-test is the number of test queries; --out is where the
command writes; --work is the resumable folder of per-cell runs; --batch-size is queries per forward pass
(--train-batch-size the training batch); --shots is demonstrations per prompt.
"""


# Spellings retired by the one-vocabulary change (issue 16), named in the error when typed.
RENAMED = {"--tasks": "--task NAME[,NAME...]", "--methods": "--method NAME[,NAME...]", "--limit": "--n-test N",
           "--n": "--n-test N", "--model": "the positional MODEL"}


class Parser(argparse.ArgumentParser):
    """argparse reporting a bad command line in one line (cause, then where the fix is) with exit code 2;
    sub-parsers inherit the class, so every subcommand reports the same way. No abbreviations: each flag has
    one spelling. A subcommand reports its own unknown flags, so the hint names its --help."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.subcommand = False  # set by build_parser; the root leaves unknown flags to the subcommand
        self.seen: list[str] = []

    def parse_known_args(self, args=None, namespace=None):
        self.seen = list(sys.argv[1:] if args is None else args)
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and self.subcommand:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras

    def error(self, message: str) -> NoReturn:
        renamed = [f"{old} is now {new}" for old, new in RENAMED.items()
                   if old in self.seen and old not in self._option_string_actions]
        hint = f"; {', '.join(renamed)}" if renamed else ""
        self.exit(2, f"error: {message}{hint} (see `{self.prog} --help`)\n")


def iter_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
                 ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(command path, parser) for the root and every subcommand, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from iter_parsers(child, (*path, name))


def build_parser() -> argparse.ArgumentParser:
    from m2iv.cli import bench, demo, evaluate, export, inspect, library, merge, report, sandbox, train
    from m2iv.constants import __version__

    parser = Parser(prog="m2iv", description="Vectorized multimodal in-context learning.",
                    epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"m2iv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (inspect, train, evaluate, bench, report, library, sandbox, demo, merge, export):
        module.add_parser(sub)
    evaluate.add_tasks_parser(sub)
    for path, p in iter_parsers(parser):
        if isinstance(p, Parser):
            p.subcommand = bool(path)
        # accepted before or after the subcommand
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS if path else False,
                       help="show the full traceback of an error")
    return parser


EXIT_PIPE = 128 + 13  # what a shell reports for a process ended by SIGPIPE


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush into the closed pipe cannot fail loudly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a bad command line already reported in one line
        return e.code if isinstance(e.code, int) else int(e.code is not None)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    debug = bool(getattr(args, "debug", False))
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe surfaces here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_PIPE
    except M2IVError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (eval, train and bench resume when the same command is run again)", file=sys.stderr)
        return 130
    except Exception as e:
        from m2iv.files import describe_os_error, is_write_refusal

        if is_write_refusal(e):  # an OSError outside m2iv.files (a library, torch): still the path and the fix
            assert isinstance(e, OSError)
            print(f"error: {describe_os_error(e)}", file=sys.stderr)
            return 2
        if debug:
            traceback.print_exc()
        message = " ".join(str(e).split())
        hint = "" if debug else " (run with --debug for the traceback)"
        print(f"error: {type(e).__name__}{': ' + message if message else ''}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
