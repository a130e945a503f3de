"""The library's files: content-addressed tensor blobs and, beside each, one JSON sidecar per entry.

    blobs/<sha[:2]>/<sha>.safetensors      tensor file (read-only), identical content stored once
    blobs/<sha[:2]>/<sha>.<id>.json        entry <id>'s record (config, names, tags, prototype)
    blobs/<sha[:2]>/<sha>.<id>.train_log.jsonl   the trainer's per-step log, when `library add` found one

The SQLite index is fast to query but one damaged file; the sidecars make it rebuildable
(`m2iv library check --repair`). A blob is hashed on every read and never used when it changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from m2iv.errors import M2IVError
from m2iv.files import write_file_atomic, write_json_atomic
from m2iv.library.entry import Entry, entry_record

MAX_SIDECAR_BYTES = 256 << 20
MAX_TRAIN_LOG_BYTES = 64 << 20  # about 300k steps of records; a larger log is not kept (see codec.train_log_of)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_train_log(data: bytes) -> list[dict]:
    """The JSON-object lines of a training log, in order; anything else (a line torn by a kill) is dropped."""
    records = []
    for line in data.splitlines():
        try:
            rec = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


class Blobs:
    """The `blobs/` folder of a library root."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "blobs"

    def path(self, sha: str) -> Path:
        return self.dir / sha[:2] / f"{sha}.safetensors"

    def sidecar(self, sha: str, entry_id: str) -> Path:
        return self.dir / sha[:2] / f"{sha}.{entry_id}.json"

    def write(self, data: bytes, sha: str) -> Path:
        """Store `data` under its hash (temp file + fsync + os.replace); a good existing copy is kept."""
        path = self.path(sha)
        try:
            if path.is_file() and sha256_bytes(path.read_bytes()) == sha:
                return path
        except OSError:
            pass

        def write(tmp: Path) -> None:
            tmp.write_bytes(data)
            os.chmod(tmp, 0o444)

        return write_file_atomic(path, write)

    def read(self, entry: Entry) -> bytes:
        """The entry's tensor file, verified against its sha256 (never returned when it changed)."""
        path = self.path(entry.sha256)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise M2IVError(f"library entry {entry.name} ({entry.id}): blob {path} cannot be read ({e.strerror}); "
                            "re-import the entry or remove it") from None
        if sha256_bytes(data) != entry.sha256:
            raise M2IVError(f"library entry {entry.name} ({entry.id}): blob {path} does not match its sha256 "
                            f"{entry.sha256[:16]} (modified or truncated), so it was not used; re-import the entry "
                            "or remove it")
        return data

    def write_sidecar(self, entry: Entry) -> Path:
        return write_json_atomic(self.sidecar(entry.sha256, entry.id), entry_record(entry))

    def remove_sidecar(self, entry: Entry) -> None:
        self.sidecar(entry.sha256, entry.id).unlink(missing_ok=True)
        self.train_log(entry.sha256, entry.id).unlink(missing_ok=True)

    def train_log(self, sha: str, entry_id: str) -> Path:
        return self.dir / sha[:2] / f"{sha}.{entry_id}.train_log.jsonl"

    def write_train_log(self, sha: str, entry_id: str, data: bytes) -> Path:
        return write_file_atomic(self.train_log(sha, entry_id), lambda tmp: tmp.write_bytes(data))

    def read_train_log(self, entry: Entry) -> list[dict]:
        """The entry's training records, oldest first ([] when `library add` found no log beside its vectors)."""
        path = self.train_log(entry.sha256, entry.id)
        try:
            if path.stat().st_size > MAX_TRAIN_LOG_BYTES:
                raise M2IVError(f"the training log {path} of library entry {entry.name} is over "
                                f"{MAX_TRAIN_LOG_BYTES >> 20} MB; it was not read")
            return parse_train_log(path.read_bytes())
        except FileNotFoundError:
            return []
        except OSError as e:
            raise M2IVError(f"the training log {path} of library entry {entry.name} cannot be read ({e.strerror})"
                            ) from None

    def sidecars(self) -> Iterator[tuple[Path, dict | str]]:
        """Every sidecar file: (path, its JSON) or (path, why it cannot be read)."""
        for path in sorted(self.dir.glob("??/*.*.json")):
            try:
                if path.stat().st_size > MAX_SIDECAR_BYTES:
                    raise ValueError(f"{path.stat().st_size} bytes")
                yield path, json.loads(path.read_text())
            except (OSError, ValueError, UnicodeDecodeError) as e:
                yield path, f"{type(e).__name__}: {e}"

    def shas(self) -> list[str]:
        """The hashes of every stored blob file."""
        return sorted(p.name.split(".")[0] for p in self.dir.glob("??/*.safetensors"))

    def has_content(self) -> bool:
        return any(self.dir.glob("??/*.safetensors")) or any(self.dir.glob("??/*.json"))
