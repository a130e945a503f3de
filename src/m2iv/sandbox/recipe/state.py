"""The trainer's work directory: private to the user, holding stage states as safetensors and JSON only.

Intermediate states let one stage be rerun alone (`--stages meta,export`). They are tensors (safetensors)
and plain records (JSON), never pickles, and the directory is refused unless only its owner can write to it,
so nobody else can plant a state that the next run would train from and ship.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from m2iv.errors import M2IVError
from m2iv.files import write_json_atomic, write_safetensors_atomic

FORMAT = "m2iv-sandbox-train-1"


def private_dir(path: str | Path) -> Path:
    """Create `path` (mode 0o700) or accept an existing one only if it is the user's and not world-writable."""
    path = Path(path).expanduser()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise M2IVError(f"{path} is not a directory; give a private folder with --work")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise M2IVError(f"work folder {path} belongs to another user; give a folder of your own with --work")
    if st.st_mode & stat.S_IWOTH:
        raise M2IVError(f"work folder {path} is writable by every user; run `chmod 700 {path}` or give a private "
                        "folder with --work")
    return path


def save_state(path: Path, parts: dict[str, dict[str, torch.Tensor]]) -> Path:
    """Write named state dicts into one safetensors file (keys `<part>.<name>`), atomically."""
    tensors = {f"{part}.{k}": v.detach().clone().contiguous() for part, sd in parts.items() for k, v in sd.items()}
    return write_safetensors_atomic(path, tensors, metadata={"format": FORMAT, "parts": ",".join(parts)})


def load_state(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The state dicts `save_state` wrote, by part name."""
    if not path.is_file():
        raise M2IVError(f"{path} is missing; run the earlier stages first (e.g. --stages vision,align,meta,export)")
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(path)).items():
        part, name = key.split(".", 1)
        out.setdefault(part, {})[name] = value
    return out


def read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.is_file() else default


def write_json(path: Path, obj: Any) -> Path:
    return write_json_atomic(path, obj, indent=1)
