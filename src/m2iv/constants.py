"""File names, format versions and dtype names: every on-disk contract lives here."""

from __future__ import annotations

import os
from pathlib import Path

from m2iv.errors import M2IVError

__version__ = "0.1.0"  # the one place the version lives; m2iv.__version__ re-exports it

CONFIG_NAME = "m2iv_config.json"
VECTORS_NAME = "vectors.safetensors"
MERGE_NAME = "m2iv_merge.json"  # provenance of a merged checkpoint (m2iv merge); transformers ignores it
TRAIN_LOG_NAME = "train_log.jsonl"  # one JSON record per optimizer step (loss, val_acc, ...), written by the trainer
TRAIN_DIR_SUFFIX = ".train"  # `m2iv train --out OUT` keeps its checkpoints and log in OUT + this suffix
FORMAT_VERSION = 2  # 2: an optional `condition` (vectors/condition.py); 1 still loads, with none

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


def m2iv_home() -> Path:
    """Root for caches (sandbox model, teacher outputs, library); `$M2IV_HOME` overrides. A home that is (or goes
    through) a file is refused here, in one line, rather than where the first cache file is written."""
    path = Path(os.environ.get("M2IV_HOME") or Path.home() / ".cache" / "m2iv").expanduser()
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        where = "is a file" if ancestor == path else f"goes through the file {ancestor}"
        raise M2IVError(f"M2IV_HOME {path} {where}, not a folder; point M2IV_HOME at a folder (or unset it to use "
                        "~/.cache/m2iv)")
    return path
