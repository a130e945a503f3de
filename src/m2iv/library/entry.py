"""A library entry: what the library knows about one stored vector set, its names, and its record.

The record (`entry_record`) is the entry as JSON: it is what `library.json` carries in an export and
what the sidecar next to the entry's blob holds, so the index can be rebuilt from the blobs folder alone
(`m2iv library check --repair`).
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from m2iv.constants import m2iv_home
from m2iv.errors import M2IVError

PREFIX = "library:"
META_FORMAT = 1
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
ID_RE = re.compile(r"^[0-9a-f]{6,32}$")
RESERVED_NAMES = {"auto"}  # library:auto routes per sample (see Library.route)
MODEL_FIELDS = ("model_type", "num_layers", "hidden_size", "num_heads", "head_dim", "fingerprint")
REPAIR_HINT = "run `m2iv library check --repair` (it keeps every file)"


def default_root() -> Path:
    """`$M2IV_LIBRARY`, else `m2iv_home()/library`."""
    env = os.environ.get("M2IV_LIBRARY")
    return Path(env).expanduser() if env else m2iv_home() / "library"


def is_library_spec(spec: Any) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def dig(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


@dataclass
class Entry:
    """One stored vector set and what the library knows about it."""

    id: str
    name: str
    base_model: str
    fingerprint: str
    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    head_dim: int
    task: str | None
    method: str
    shots: int | None
    metrics: dict
    tags: list[str]
    description: str
    created_at: str
    sha256: str
    config: dict
    provenance: dict
    prototype: np.ndarray | None = field(default=None, repr=False)  # float32 (E,)
    prototype_info: dict | None = None
    config_text: str = field(default="", repr=False)

    @property
    def ref(self) -> str:
        return f"{PREFIX}{self.name}"

    def to_json(self, full: bool = False) -> dict:
        d = {k: getattr(self, k) for k in ("id", "name", "base_model", "fingerprint", "model_type", "num_layers",
                                           "hidden_size", "num_heads", "head_dim", "task", "method", "shots",
                                           "metrics", "tags", "description", "created_at", "sha256", "provenance")}
        d["prototype"] = None if self.prototype is None else {"dim": int(self.prototype.shape[0]),
                                                              **(self.prototype_info or {})}
        if full:
            d["config"] = self.config
        return d

    def meta(self) -> dict:
        """What `library.json` carries so an import restores the entry as it was."""
        return {"library_format": META_FORMAT, "id": self.id, "name": self.name, "task": self.task,
                "method": self.method, "shots": self.shots, "metrics": self.metrics, "tags": self.tags,
                "description": self.description, "created_at": self.created_at, "sha256": self.sha256,
                "provenance": self.provenance, "prototype_info": self.prototype_info}


def entry_record(entry: Entry) -> dict:
    """The sidecar: the entry's metadata, its exact config text and its prototype (base64 float32 LE)."""
    proto = None if entry.prototype is None else base64.b64encode(
        np.asarray(entry.prototype, dtype="<f4").tobytes()).decode("ascii")
    return {**entry.meta(), "config": entry.config_text, "prototype": proto}


def entry_from_record(rec: Any, where: str) -> Entry:
    """An Entry from a sidecar record (checked: a damaged sidecar is refused with where and why)."""
    import json

    try:
        if not isinstance(rec, dict) or not isinstance(rec.get("library_format"), int):
            raise ValueError("not a library entry record")
        if rec["library_format"] > META_FORMAT:
            raise M2IVError(f"{where} was written by a newer m2iv (library format {rec['library_format']}); "
                            "upgrade m2iv")
        config_text = rec["config"]
        config = json.loads(config_text)
        if not isinstance(config, dict) or not ID_RE.match(str(rec["id"])) or not NAME_RE.match(str(rec["name"])):
            raise ValueError("bad id, name or config")
        proto = None
        if rec.get("prototype"):
            proto = np.frombuffer(base64.b64decode(rec["prototype"]), dtype="<f4").copy()
        tags = rec.get("tags") or []
        return Entry(id=rec["id"], name=rec["name"], base_model=str(config.get("base_model", "")),
                     **{f: config[f] for f in MODEL_FIELDS}, task=rec.get("task"), method=str(rec["method"]),
                     shots=rec.get("shots"), metrics=dict(rec.get("metrics") or {}),
                     tags=sorted({str(t) for t in tags}), description=str(rec.get("description") or ""),
                     created_at=str(rec["created_at"]), sha256=str(rec["sha256"]), config=config,
                     provenance=dict(rec.get("provenance") or {}), prototype=proto,
                     prototype_info=rec.get("prototype_info") if isinstance(rec.get("prototype_info"), dict) else None,
                     config_text=config_text)
    except (KeyError, TypeError, ValueError) as e:
        raise M2IVError(f"{where} is not a readable library entry record ({e}); it was left as it is") from None


def prototype_bytes(proto) -> bytes | None:
    if proto is None:
        return None
    arr = np.asarray(proto.detach().cpu().numpy() if hasattr(proto, "detach") else proto, dtype=np.float32)
    if arr.ndim != 1 or not arr.size or not np.all(np.isfinite(arr)):
        raise M2IVError(f"a task prototype must be a finite 1-D vector, got shape {arr.shape}")
    return arr.astype("<f4").tobytes()


def check_name(name: str) -> None:
    if not NAME_RE.match(name or ""):
        raise M2IVError(f"library name {name!r} is not allowed; use letters, digits, '.', '_' and '-' (starting "
                        "with a letter or digit, at most 100 characters)")
    if name in RESERVED_NAMES:
        raise M2IVError(f"library name {name!r} is reserved (library:{name} routes per sample); choose another")


def derive_name(base: str, config: dict) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._")[:80]
    if not base or base in RESERVED_NAMES or not NAME_RE.match(base):
        base = f"{config.get('method', 'vectors')}-{config.get('model_type', 'model')}"
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._")[:80] or "vectors"
    return base
