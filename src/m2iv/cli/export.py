"""`m2iv export --vectors DIR --format gguf-control-vector --out FILE.gguf` and its inverse
`m2iv import MODEL FILE.gguf --out DIR`: vectors as llama.cpp control vectors (repeng's GGUF layout)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from m2iv.cli.common import add_model_args, check_out, load_from_args

FORMATS = ("gguf-control-vector",)
EXPORT_EXAMPLES = """examples:
  m2iv export --vectors out/steer --format gguf-control-vector --out steer.gguf        # additive layer vectors: exact
  m2iv export --vectors out/colour --format gguf-control-vector --approximate --out colour.gguf   # M²IV (attn + mlp)
  llama-cli -m SmolLM2-135M-Instruct.Q4_1.gguf --control-vector steer.gguf -p "..."      # in llama.cpp

llama.cpp adds direction.k to the output of layer k at every position. Additive `layer` vectors with token policy
all are exact (except at layer 0, which llama.cpp never steers); M²IV's two branches need --approximate, which adds
each layer's summed shift a*v to its output and drops the scale beta (docs/export.md, benchmarks/export/).
"""
IMPORT_EXAMPLES = """examples:
  m2iv import SmolLM2-135M-Instruct.Q4_1.gguf happy.gguf --out out/happy       # a repeng / llama.cpp control vector
  m2iv import sandbox steer.gguf --strength 0.5 --out out/steer-half
  m2iv eval sandbox --task sandbox-colour-nonce --method vectors --vectors out/steer-half --out runs/steer
"""


def _format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default=FORMATS[0], choices=FORMATS, help=f"file format (default {FORMATS[0]})")


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write vectors as a llama.cpp control vector (GGUF)", epilog=EXPORT_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vectors", required=True, help="vector directory or library:<id-or-name>")
    _format(p)
    p.add_argument("--approximate", action="store_true",
                   help="export vectors llama.cpp cannot apply exactly (M²IV's attn + mlp, linear) as each layer's "
                        "summed shift a*v (drops beta; see docs/export.md)")
    p.add_argument("--model-hint", default=None,
                   help="controlvector.model_hint to write (default: the vectors' model_type)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument("--out", required=True, help="the .gguf file to write")
    p.set_defaults(func=run_export)
    add_import_parser(sub)


def add_import_parser(sub) -> None:
    p = sub.add_parser("import", help="read a llama.cpp / repeng control vector (GGUF) into a vector directory",
                       epilog=IMPORT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("file", metavar="FILE", help="the control vector (.gguf)")
    _format(p)
    p.add_argument("--strength", type=float, default=1.0,
                   help="scale of every direction, as llama.cpp's --control-vector-scaled (default 1.0)")
    p.add_argument("--out", required=True, help="vector directory to write")
    p.set_defaults(func=run_import)


def run_export(args: argparse.Namespace) -> int:
    from m2iv.errors import M2IVError
    from m2iv.export.control_vector import to_control_vector
    from m2iv.export.gguf_file import write_control_vector
    from m2iv.library.resolve import load_spec

    out = Path(args.out).expanduser()
    if out.exists() and not args.force:
        raise M2IVError(f"--out {args.out} exists; pass --force to replace it, or choose another file")
    check_out(out, folder=False)
    vectors, config = load_spec(args.vectors)
    cv = to_control_vector(vectors, config, approximate=args.approximate, model_hint=args.model_hint)
    write_control_vector(out, cv)
    print(json.dumps({"out": str(out), "fidelity": cv.metadata["fidelity"], "model_hint": cv.model_hint,
                      "layers": [min(cv.directions), max(cv.directions)],
                      "nonzero_layers": sum(bool(d.any()) for d in cv.directions.values())}, indent=2))
    if cv.metadata["fidelity"] != "exact":
        print(f"approximate: {cv.metadata['approximation']}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    import sys

    from m2iv.export.control_vector import from_control_vector
    from m2iv.export.gguf_file import read_control_vector
    from m2iv.files import sha256_file
    from m2iv.vectors.format import save_vectors

    cv = read_control_vector(args.file)  # checked before the model loads
    check_out(args.out, folder=True)
    lm = load_from_args(args)
    hint = cv.model_hint
    text_type = getattr(lm.model.config.get_text_config(), "model_type", "")
    if hint and hint not in (lm.family, text_type):
        print(f"warning: the control vector's model hint is {hint!r}, this model is {lm.family} ({text_type})",
              file=sys.stderr)
    vectors = from_control_vector(cv, lm.adapter, strength=args.strength)
    source = {"file": str(args.file), "sha256": sha256_file(args.file), "model_hint": hint,
              "strength": args.strength, "metadata": cv.metadata}
    save_vectors(vectors, args.out, adapter=lm.adapter, base_model=lm.spec, extra={"imported_from": source})
    print(json.dumps({"out": args.out, "layers": vectors.sites["layer"].layers, "model_hint": hint}))
    return 0
