"""`m2iv library …`: the local store of trained vectors (add, list, show, search, export, import,
push, pull, remove, compose, resolve, check, serve). The library lives in $M2IV_LIBRARY, else $M2IV_HOME/library;
--root overrides."""

from __future__ import annotations

import argparse
import json
import sys

from m2iv.cli.library_args import SUBCOMMANDS, root_arg
from m2iv.cli.library_help import EXAMPLES, SUB_EXAMPLES


def add_parser(sub) -> None:
    p = sub.add_parser("library", help="store, search, compose, export and import trained vectors",
                       description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    root_arg(p, None)
    lsub = p.add_subparsers(dest="library_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: _usage(p))
    for name, (help, add_args) in SUBCOMMANDS.items():
        q = lsub.add_parser(name, help=help, epilog=SUB_EXAMPLES[name],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        root_arg(q, argparse.SUPPRESS)  # also accepted after the subcommand
        add_args(q)
        q.set_defaults(func=RUNS[name])


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


RUNS = {"add": run_add, "list": run_list, "show": run_show, "search": run_search, "export": run_export,
        "import": run_import, "push": run_push, "pull": run_pull, "remove": run_remove, "compose": run_compose,
        "condition": run_condition, "resolve": run_resolve, "check": run_check, "serve": run_serve}


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
