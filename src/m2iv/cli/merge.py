"""`m2iv merge MODEL --vectors DIR --out DIR`: a plain Hugging Face checkpoint with the vectors folded in."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from m2iv.cli.common import add_model_args, check_out, load_from_args

EXAMPLES = """examples:
  m2iv merge sandbox --vectors out/colour --out merged/colour     # fold M²IV's vectors into o_proj / down_proj
  m2iv eval merged/colour --task sandbox-colour-nonce --method zero-shot --out runs/merged   # no vectors needed
  python -c "import transformers as T; T.AutoModelForImageTextToText.from_pretrained('merged/colour')"

Folds additive and linear vectors on attn, attn_head and mlp (and additive on layer) with token policy all into
Llama-architecture text models (idefics3, smolvlm, llava/llava_next with a Llama LM, llama); anything else is
refused with the reason. See docs/export.md.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("merge", help="fold vectors into the model's weights and save a plain HF checkpoint",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--vectors", required=True, help="vector directory or library:<id-or-name>")
    p.add_argument("--no-strict", action="store_true", help="merge despite an architecture fingerprint mismatch")
    p.add_argument("--out", required=True, help="directory to write (save_pretrained layout)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from m2iv.errors import M2IVError
    from m2iv.export.fold import vector_reason
    from m2iv.export.merge import merge
    from m2iv.library.resolve import load_spec, resolve_vectors
    from m2iv.vectors.format import read_config

    strict = not args.no_strict
    path = resolve_vectors(args.vectors, strict=strict)
    assert path is not None
    reason = vector_reason(read_config(path))  # refused before minutes go into loading the model
    if reason:
        raise M2IVError(reason)
    check_out(args.out, folder=True)
    if Path(args.model).is_dir() and Path(args.model).resolve() == Path(args.out).resolve():
        raise M2IVError(f"--out {args.out} is the model's own directory; merge writes a new checkpoint beside it: "
                        "choose another --out")
    lm = load_from_args(args)
    vectors, config = load_spec(str(path), adapter=lm.adapter, strict=strict)
    info = merge(lm, vectors, args.out, vector_config=config, vectors_source=str(args.vectors))
    print(json.dumps({"out": args.out, "base_model": info["base_model"], "method": info["method"],
                      "folded": len(info["folded"])}, indent=2))
    print(f"wrote {args.out}: load it with transformers' from_pretrained, no m2iv needed")
    return 0
