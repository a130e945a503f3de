"""Run identities: what a training checkpoint or a predictions file is a result of.

A resumable result (checkpoint, predictions.jsonl) stores the identity of the run that wrote it, and a
run resumes it only when its own identity is exactly equal; otherwise it is refused, never adopted and
never deleted, so retrained vectors, another model or other data can never inherit stale results.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch


def jsonable(obj: Any) -> Any:
    """`obj` as JSON reads it back (tuples become lists, odd objects their str): comparable with a stored copy."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def identity_diff(stored: Any, current: dict, skip: tuple[str, ...] = ()) -> list[str]:
    """Dotted names of the fields in which `stored` differs from `current` (["identity"] if none is stored)."""
    if not isinstance(stored, dict):
        return ["identity (none recorded)"]
    out = []
    for k in sorted(set(stored) | set(current)):
        a, b = stored.get(k), current.get(k)
        if k in skip or a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{k}.{d}" for d in identity_diff(a, b)]
        else:
            out.append(k)
    return out


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Hash of tensor names, dtypes, shapes and values (in name order)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{list(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
