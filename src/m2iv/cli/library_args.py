"""The flags of `m2iv library` and of each of its subcommands, one function per subcommand; library.py builds
the parser from SUBCOMMANDS and runs the commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def root_arg(p: argparse.ArgumentParser, default) -> None:
    p.add_argument("--root", default=default,
                   help="library folder (default: $M2IV_LIBRARY, else $M2IV_HOME/library)")


def _model_args(p: argparse.ArgumentParser, help: str = "") -> None:
    p.add_argument("model", metavar="MODEL", nargs="?", default=None, help=help)
    p.add_argument("--dtype", default="float32", help="model dtype when a model is loaded (default float32)")
    p.add_argument("--device", default="cpu", help="torch device when a model is loaded (default cpu)")


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port; give a whole number from 1 to 65535")
    return int(text)


def _tag_arg(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--tag", action="append", default=[], metavar="TAG", help=help)


def _ref_arg(p: argparse.ArgumentParser, help: str = "the entry's id or name") -> None:
    p.add_argument("ref", metavar="ID_OR_NAME", help=help)


def _add_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("directory", metavar="DIR", help="vector directory (from `m2iv train` or save_vectors)")
    q.add_argument("--name", default=None, help="unique name (default: derived from DIR)")
    _tag_arg(q, "tag the entry (repeatable; commas also separate tags)")
    q.add_argument("--description", default="", help="a sentence saying what the vectors do")
    q.add_argument("--task", default=None, help="task the vectors are for (default: from their config)")
    q.add_argument("--prototype-from", default=None, metavar="TASK",
                   help="store a task prototype for search by example: the mean embedding of TASK's train queries")
    q.add_argument("--prototype-n", type=int, default=32, help="queries embedded for the prototype (default 32)")
    q.add_argument("--data-root", default=None, help="benchmark data folder for --prototype-from (or $M2IV_DATA)")
    q.add_argument("--seed", type=int, default=0, help="split seed for --prototype-from")
    _model_args(q, help="model that embeds the prototype (default: the vectors' base model)")


def _list_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("--model", default=None, help="base model name, model_type or architecture fingerprint")
    q.add_argument("--task", default=None, help="only entries trained on this task")
    q.add_argument("--method", default=None, help="only entries of this method")
    _tag_arg(q, "keep entries carrying this tag (repeatable: all of them)")
    q.add_argument("--json", action="store_true", help="print JSON")


def _show_args(q: argparse.ArgumentParser) -> None:
    _ref_arg(q)
    q.add_argument("--json", action="store_true", help="print JSON (with the full vector config)")


def _search_args(q: argparse.ArgumentParser) -> None:
    _model_args(q, help="keep only entries applicable to this model (fingerprint and sizes); needed by --image")
    q.add_argument("--task", default=None, help="only entries trained on this task")
    q.add_argument("--method", default=None, help="only entries of this method")
    _tag_arg(q, "keep entries carrying this tag (repeatable: all of them)")
    q.add_argument("--text", default=None, help="words to find in names, descriptions, tasks and tags")
    q.add_argument("--image", default=None, help="search by example: an image of the query")
    q.add_argument("--question", default=None, help="search by example: the question asked about it")
    q.add_argument("--no-strict", action="store_true", help="accept entries whose fingerprint differs (sizes equal)")
    q.add_argument("--top", type=int, default=10, metavar="N", help="show the N best hits (default 10)")
    q.add_argument("--json", action="store_true", help="print JSON")


def _export_args(q: argparse.ArgumentParser) -> None:
    _ref_arg(q)
    q.add_argument("out", metavar="OUT", help="a new directory, or a file ending in .tar")
    q.add_argument("--force", action="store_true",
                   help="replace an existing OUT (a .tar file, or a vector directory; never a folder of other files)")


def _import_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("path", metavar="PATH", help="a directory or .tar written by `m2iv library export`")
    q.add_argument("--name", default=None, help="store under this name instead of the exported one")


def _push_args(q: argparse.ArgumentParser) -> None:
    _ref_arg(q)
    q.add_argument("repo", metavar="REPO", help="org/name on the Hub (HF_ENDPOINT and HF_TOKEN are honoured)")
    q.add_argument("--private", action="store_true", help="create the repository private")
    q.add_argument("--revision", default=None, help="branch to commit to (created if missing; default main)")
    q.add_argument("--message", default=None, help="commit message")


def _pull_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("repo", metavar="REPO", help="org/name, org/name@revision or hf://org/name[@revision]")
    q.add_argument("--name", default=None, help="store under this name (default: the pushed name, else the repo's)")


def _compose_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("--name", required=True, help="name of the new entry")
    q.add_argument("expression", nargs="+", metavar="EXPR",
                   help="like 0.5*a + 1.0*b - c (quote it when a term starts with '-')")
    q.add_argument("--operator", default=None, choices=["sum", "stack", "partition"],
                   help="sum the shifts, stack the entries' maps in order, or partition the layers (terms written "
                        "name@LAYERS); default: the library's default operator")
    q.add_argument("--layers", default=None, help="keep only these layers, e.g. 0-5,7")
    q.add_argument("--sites", default=None, help="keep only these sites, e.g. attn,mlp")
    _tag_arg(q, "tag the new entry (repeatable; commas also separate tags)")
    q.add_argument("--description", default=None, help="a sentence saying what the new entry does")


def _condition_args(q: argparse.ArgumentParser) -> None:
    from m2iv.cli.train import add_condition_args

    _ref_arg(q, "the entry to copy with a condition")
    q.add_argument("--task", required=True, help="task whose training queries the condition is fitted on")
    q.add_argument("--name", required=True, help="name of the new entry")
    q.add_argument("--data-root", default=None, help="benchmark data folder (or $M2IV_DATA)")
    q.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    _tag_arg(q, "tag the new entry (default: the source's tags)")
    _model_args(q, help="model the condition reads (default: the entry's base model)")
    add_condition_args(q)


def _resolve_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("ref", metavar="SPEC", help="library:<id-or-name> or an id/name")


def _check_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("--repair", action="store_true",
                   help="rebuild the index from the sidecars (a damaged index is kept aside, nothing is deleted)")


def _serve_args(q: argparse.ArgumentParser) -> None:
    _model_args(q, help="model that answers and embeds examples (default: the base model most entries were made "
                        "for); it loads on the first answer")
    q.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    q.add_argument("--port", type=_port, default=None, help="port (default: the first free one from 7860)")
    q.add_argument("--allow-writes", action="store_true",
                   help="let the page save compositions to the library (off by default: the page only reads)")
    q.add_argument("--benchmarks", default=None, metavar="DIR",
                   help="bench tables for the Results page (default: ./benchmarks, else the checkout's)")
    q.add_argument("--data-root", default=None, help="benchmark data folder for task examples (or $M2IV_DATA)")


# subcommand -> (its one-line help, the function adding its flags), in the order `m2iv library --help` lists them
SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "add": ("add a vector directory to the library", _add_args),
    "list": ("list entries", _list_args),
    "show": ("show one entry", _show_args),
    "search": ("find entries for a model, by fields, text or example", _search_args),
    "export": ("write an entry as a vector directory or a .tar", _export_args),
    "import": ("add an exported directory or .tar", _import_args),
    "push": ("upload an entry to a Hugging Face Hub repository (with a model card)", _push_args),
    "pull": ("add the vectors of a Hub repository (downloaded, or from the local HF cache offline)", _pull_args),
    "remove": ("delete an entry", _ref_arg),
    "compose": ("add a weighted sum of entries (with negation and layer/site masks)", _compose_args),
    "condition": ("add a copy of an entry that acts only on prompts firing a condition fitted on a task",
                  _condition_args),
    "resolve": ("print the verified vector directory of library:<id-or-name>", _resolve_args),
    "check": ("check the index against the blobs and sidecars; --repair rebuilds it", _check_args),
    "serve": ("the library in the browser: browse, try entries, search by example, bench results", _serve_args),
}
