"""File names, format versions and dtype names: every on-disk contract lives here."""

from __future__ import annotations

import os
from pathlib import Path

__version__ = "0.1.0"  # the one place the version lives; m2iv.__version__ re-exports it

CONFIG_NAME = "m2iv_config.json"
VECTORS_NAME = "vectors.safetensors"
MERGE_NAME = "m2iv_merge.json"  # provenance of a merged checkpoint (m2iv merge); transformers ignores it
FORMAT_VERSION = 1

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


def m2iv_home() -> Path:
    """Root for caches (sandbox model, teacher outputs, library); `$M2IV_HOME` overrides."""
    return Path(os.environ.get("M2IV_HOME", Path.home() / ".cache" / "m2iv")).expanduser()
