"""File names, format versions and dtype names: every on-disk contract lives here."""

from __future__ import annotations

import os
from pathlib import Path

__version__ = "0.1.0"  # the one place the version lives; m2iv.__version__ re-exports it

CONFIG_NAME = "m2iv_config.json"
VECTORS_NAME = "vectors.safetensors"
TRAIN_LOG_NAME = "train_log.jsonl"  # one JSON record per optimizer step (loss, val_acc, ...), written by the trainer
TRAIN_DIR_SUFFIX = ".train"  # `m2iv train --out OUT` keeps its checkpoints and log in OUT + this suffix
FORMAT_VERSION = 2  # 2: an optional `condition` (vectors/condition.py); 1 still loads, with none

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


def m2iv_home() -> Path:
    """Root for caches (sandbox model, teacher outputs, library); `$M2IV_HOME` overrides."""
    return Path(os.environ.get("M2IV_HOME", Path.home() / ".cache" / "m2iv")).expanduser()
