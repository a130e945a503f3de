"""`m2iv library …`: the local store of trained vectors (add, list, show, search, export, import,
push, pull, remove, compose, resolve, check, serve). The library lives in $M2IV_LIBRARY, else $M2IV_HOME/library;
--root overrides."""

from __future__ import annotations

import argparse
import json
import sys

from m2iv.cli.library_help import EXAMPLES, SUB_EXAMPLES


def _root_arg(p: argparse.ArgumentParser, default) -> None:
    p.add_argument("--root", default=default,
                   help="library folder (default: $M2IV_LIBRARY, else $M2IV_HOME/library)")


def _model_args(p: argparse.ArgumentParser, help: str = "") -> None:
    p.add_argument("model", metavar="MODEL", nargs="?", default=None, help=help)
    p.add_argument("--dtype", default="float32", help="model dtype when a model is loaded (default float32)")
    p.add_argument("--device", default="cpu", help="torch device when a model is loaded (default cpu)")


def add_parser(sub) -> None:
    p = sub.add_parser("library", help="store, search, compose, export and import trained vectors",
                       description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _root_arg(p, None)
    lsub = p.add_subparsers(dest="library_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: _usage(p))

    def sp(name: str, help: str, func):
        q = lsub.add_parser(name, help=help, epilog=SUB_EXAMPLES[name],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        _root_arg(q, argparse.SUPPRESS)  # also accepted after the subcommand
        q.set_defaults(func=func)
        return q

    q = sp("add", "add a vector directory to the library", run_add)
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

    q = sp("list", "list entries", run_list)
    q.add_argument("--model", default=None, help="base model name, model_type or architecture fingerprint")
    q.add_argument("--task", default=None, help="only entries trained on this task")
    q.add_argument("--method", default=None, help="only entries of this method")
    _tag_arg(q, "keep entries carrying this tag (repeatable: all of them)")
    q.add_argument("--json", action="store_true", help="print JSON")

    q = sp("show", "show one entry", run_show)
    q.add_argument("ref", metavar="ID_OR_NAME", help="the entry's id or name")
    q.add_argument("--json", action="store_true", help="print JSON (with the full vector config)")

    q = sp("search", "find entries for a model, by fields, text or example", run_search)
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

    q = sp("export", "write an entry as a vector directory or a .tar", run_export)
    q.add_argument("ref", metavar="ID_OR_NAME", help="the entry's id or name")
    q.add_argument("out", metavar="OUT", help="a new directory, or a file ending in .tar")
    q.add_argument("--force", action="store_true",
                   help="replace an existing OUT (a .tar file, or a vector directory; never a folder of other files)")

    q = sp("import", "add an exported directory or .tar", run_import)
    q.add_argument("path", metavar="PATH", help="a directory or .tar written by `m2iv library export`")
    q.add_argument("--name", default=None, help="store under this name instead of the exported one")

    q = sp("push", "upload an entry to a Hugging Face Hub repository (with a model card)", run_push)
    q.add_argument("ref", metavar="ID_OR_NAME", help="the entry's id or name")
    q.add_argument("repo", metavar="REPO", help="org/name on the Hub (HF_ENDPOINT and HF_TOKEN are honoured)")
    q.add_argument("--private", action="store_true", help="create the repository private")
    q.add_argument("--revision", default=None, help="branch to commit to (created if missing; default main)")
    q.add_argument("--message", default=None, help="commit message")

    q = sp("pull", "add the vectors of a Hub repository (downloaded, or from the local HF cache offline)", run_pull)
    q.add_argument("repo", metavar="REPO", help="org/name, org/name@revision or hf://org/name[@revision]")
    q.add_argument("--name", default=None, help="store under this name (default: the pushed name, else the repo's)")

    q = sp("remove", "delete an entry", run_remove)
    q.add_argument("ref", metavar="ID_OR_NAME", help="the entry's id or name")

    q = sp("compose", "add a weighted sum of entries (with negation and layer/site masks)", run_compose)
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

    q = sp("condition", "add a copy of an entry that acts only on prompts firing a condition fitted on a task",
           run_condition)
    q.add_argument("ref", metavar="ID_OR_NAME", help="the entry to copy with a condition")
    q.add_argument("--task", required=True, help="task whose training queries the condition is fitted on")
    q.add_argument("--name", required=True, help="name of the new entry")
    q.add_argument("--data-root", default=None, help="benchmark data folder (or $M2IV_DATA)")
    q.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    _tag_arg(q, "tag the new entry (default: the source's tags)")
    _model_args(q, help="model the condition reads (default: the entry's base model)")
    from m2iv.cli.train import add_condition_args

    add_condition_args(q)

    q = sp("resolve", "print the verified vector directory of library:<id-or-name>", run_resolve)
    q.add_argument("ref", metavar="SPEC", help="library:<id-or-name> or an id/name")

    q = sp("check", "check the index against the blobs and sidecars; --repair rebuilds it", run_check)
    q.add_argument("--repair", action="store_true",
                   help="rebuild the index from the sidecars (a damaged index is kept aside, nothing is deleted)")

    q = sp("serve", "the library in the browser: browse, try entries, search by example, bench results", run_serve)
    _model_args(q, help="model that answers and embeds examples (default: the base model most entries were made "
                        "for); it loads on the first answer")
    q.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    q.add_argument("--port", type=_port, default=None, help="port (default: the first free one from 7860)")
    q.add_argument("--allow-writes", action="store_true",
                   help="let the page save compositions to the library (off by default: the page only reads)")
    q.add_argument("--benchmarks", default=None, metavar="DIR",
                   help="bench tables for the Results page (default: ./benchmarks, else the checkout's)")
    q.add_argument("--data-root", default=None, help="benchmark data folder for task examples (or $M2IV_DATA)")


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port; give a whole number from 1 to 65535")
    return int(text)


def _tag_arg(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--tag", action="append", default=[], metavar="TAG", help=help)


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def _lib(args):
    from m2iv.library.store import Library

    return Library(getattr(args, "root", None))


def _load_model(spec: str, dtype: str, device: str):
    """Load a model (tests replace this to reuse a cached one)."""
    from m2iv.models.loading import load_model

    return load_model(spec, dtype=dtype, device=device)


def _tags(values: list[str]) -> list[str]:
    return sorted({t.strip() for v in values for t in v.split(",") if t.strip()})


def _short_metrics(m: dict) -> str:
    items = [(k, v) for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)][:2]
    return ",".join(f"{k}={v:.3g}" for k, v in items) or "-"


def _print_table(entries) -> None:
    if not entries:
        print("(no entries)")
        return
    rows = [("ID", "NAME", "MODEL", "TASK", "METHOD", "SHOTS", "TAGS", "METRICS", "PROTO")]
    for e in entries:
        rows.append((e.id, e.name, e.base_model, e.task or "-", e.method, "-" if e.shots is None else str(e.shots),
                     ",".join(e.tags) or "-", _short_metrics(e.metrics), "yes" if e.prototype is not None else "-"))
    widths = [min(40, max(len(r[i]) for r in rows)) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c[:w].ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def run_add(args) -> int:
    from m2iv.data.tasks import get_task

    with _lib(args) as lib:
        entry = lib.add(args.directory, name=args.name, tags=_tags(args.tag), description=args.description,
                        task=args.task)
        if args.prototype_from:
            try:
                lm = _load_model(args.model or entry.base_model, args.dtype, args.device)
                entry = lib.add_prototype_from_task(entry.id, lm, get_task(args.prototype_from),
                                                    data_root=args.data_root, n=args.prototype_n, seed=args.seed)
            except BaseException:
                lib.remove(entry.id)  # all or nothing: no entry without the prototype that was asked for
                raise
        proto = f", prototype from {args.prototype_from}" if args.prototype_from else ""
        print(f"added {entry.name} ({entry.id}) for {entry.base_model}{proto}; use it as library:{entry.name}")
    return 0


def run_list(args) -> int:
    with _lib(args) as lib:
        entries = lib.entries(model=args.model, task=args.task, method=args.method, tag=_tags(args.tag))
        for problem in lib.problems:  # damaged rows: reported, skipped, the rest listed
            print(f"warning: {problem}", file=sys.stderr)
        if args.json:
            print(json.dumps([e.to_json() for e in entries], indent=2))
        else:
            _print_table(entries)
    return 0


def run_show(args) -> int:
    with _lib(args) as lib:
        e = lib.get(args.ref)
        if args.json:
            print(json.dumps(e.to_json(full=True), indent=2))
            return 0
        info = e.to_json()
        info["sites"] = {s: sp.get("layers") for s, sp in e.config.get("sites", {}).items()}
        info["operator"] = sorted({sp.get("operator") for sp in e.config.get("sites", {}).values()})
        info["blob"] = str(lib.blob_path(e.sha256))
        width = max(len(k) for k in info)
        for k, v in info.items():
            print(f"{k:<{width}}  {json.dumps(v) if isinstance(v, (dict, list)) else v}")
    return 0


def run_search(args) -> int:
    from m2iv.errors import M2IVError
    from m2iv.library.search import example_sample

    if (args.image or args.question) and not args.model:
        raise M2IVError("search by example (--image/--question) needs the MODEL that embeds the example; "
                        "give it: m2iv library search MODEL --image ... --question ...")
    with _lib(args) as lib:
        lm = _load_model(args.model, args.dtype, args.device) if args.model else None
        example = example_sample(args.image, args.question or "") if (args.image or args.question) else None
        hits = lib.search(lm=lm, task=args.task, method=args.method, tag=_tags(args.tag), text=args.text,
                          example=example, strict=not args.no_strict, limit=args.top)
        for problem in lib.problems:
            print(f"warning: {problem}", file=sys.stderr)
        if args.json:
            print(json.dumps([h.to_json() for h in hits], indent=2))
            return 0
        if not hits:
            print("(no matching entries)")
            return 0
        for h in hits:
            score = "" if h.score is None else f"{h.score:+.3f}  "
            note = f"  [{h.note}]" if h.note else ""
            print(f"{score}{h.entry.id}  {h.entry.name}  {h.entry.base_model}  task={h.entry.task or '-'}  "
                  f"method={h.entry.method}{note}")
    return 0


def run_export(args) -> int:
    with _lib(args) as lib:
        out = lib.export(args.ref, args.out, force=args.force)
        print(f"exported {lib.get(args.ref).name} to {out}")
    return 0


def run_import(args) -> int:
    with _lib(args) as lib:
        e = lib.import_path(args.path, name=args.name)
        print(f"imported {e.name} ({e.id}) for {e.base_model}; use it as library:{e.name}")
    return 0


def run_push(args) -> int:
    from m2iv.library.remote import push

    with _lib(args) as lib:
        url = push(lib, args.ref, args.repo, private=args.private or None, revision=args.revision,
                   commit_message=args.message)
        print(f"pushed {lib.get(args.ref).name} to {args.repo}: {url}")
    return 0


def run_pull(args) -> int:
    from m2iv.library.remote import pull

    with _lib(args) as lib:
        e = pull(lib, args.repo, name=args.name)
        print(f"pulled {e.name} ({e.id}) for {e.base_model} from {args.repo}; use it as library:{e.name}")
    return 0


def run_remove(args) -> int:
    with _lib(args) as lib:
        e = lib.remove(args.ref)
        print(f"removed {e.name} ({e.id})")
    return 0


def run_compose(args) -> int:
    with _lib(args) as lib:
        e = lib.compose(args.name, " ".join(args.expression), layers=args.layers, sites=args.sites,
                        tags=_tags(args.tag), description=args.description, operator=args.operator)
        print(f"composed {e.name} ({e.id}) = {e.provenance['expression']}; use it as library:{e.name}")
    return 0


def run_condition(args) -> int:
    from m2iv.cli.train import fit_condition_from_args
    from m2iv.data.tasks import get_task

    task = get_task(args.task)
    with _lib(args) as lib:
        src = lib.get(args.ref)
        lm = _load_model(args.model or src.base_model, args.dtype, args.device)
        cond = fit_condition_from_args(args, lm, task, task.splits(args.data_root, seed=args.seed))
        e = lib.with_condition(src.id, cond, name=args.name, adapter=lm.adapter, tags=_tags(args.tag))
        print(f"added {e.name} ({e.id}): {src.name} gated at layer {cond.layer} (held-out balanced accuracy "
              f"{cond.fit['heldout_balanced_accuracy']}); use it as library:{e.name}")
    return 0


def run_resolve(args) -> int:
    with _lib(args) as lib:
        print(lib.resolve(args.ref))
    return 0


def run_check(args) -> int:
    from m2iv.library.repair import check

    report = check(getattr(args, "root", None), repair=args.repair)
    for line in report.fixed:
        print(f"fixed: {line}")
    for line in report.problems:
        print(f"problem: {line}")
    if report.ok:
        print("library OK" if not report.fixed else "library repaired")
        return 0
    if not args.repair:
        print("run `m2iv library check --repair` to rebuild what the sidecars describe (nothing is deleted)")
    return 1


def run_serve(args) -> int:
    from m2iv.app.server import serve

    serve(getattr(args, "root", None), args.model, host=args.host, port=args.port, allow_writes=args.allow_writes,
          benchmarks=args.benchmarks, data_root=args.data_root, dtype=args.dtype, device=args.device)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m m2iv.cli.library …` (the same as `m2iv library …` once registered in cli/main.py)."""
    from m2iv.errors import M2IVError

    parser = argparse.ArgumentParser(prog="m2iv")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["library", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except M2IVError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
