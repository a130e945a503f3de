"""The one place files are written: every result, table, tensor file, checkpoint and vector directory is
replaced whole or not at all (temp file + fsync + rename), so a killed run never leaves half a file where a
finished one was, and a directory holding a user's files is never written over."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from m2iv.errors import M2IVError


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: str | Path) -> None:
    """Make a rename durable (best effort: some filesystems refuse fsync on directories)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def write_file_atomic(path: str | Path, writer: Callable[[Path], object]) -> Path:
    """Let `writer(tmp)` produce the file next to `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        writer(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return write_file_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_file_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=indent, default=str) + "\n")


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict]) -> Path:
    return write_text_atomic(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def write_dir_atomic(directory: str | Path, files: dict[str, Callable[[Path], object]]) -> None:
    """Write files (name -> callable(path)) as one directory, atomically (see fill_dir_atomic)."""

    def fill(tmp: Path) -> None:
        for name, writer in files.items():
            writer(tmp / name)

    fill_dir_atomic(directory, fill)


def fill_dir_atomic(directory: str | Path, fill: Callable[[Path], object]) -> None:
    """Let `fill(tmp)` populate a temp dir next to `directory`, fsync it, then rename it into place; readers see
    the old directory or the new one, never a half-written mix. An existing directory holding names the new one
    does not (a user's files) is refused and kept."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        fill(tmp)
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        fsync_dir(tmp)
        old = None
        if directory.exists():
            if not directory.is_dir():
                raise M2IVError(f"{directory} exists and is not a directory; choose another output path")
            written = {p.name for p in tmp.iterdir()}
            foreign = sorted(p.name for p in directory.iterdir() if p.name not in written)
            if foreign:  # replacing would delete a user's files along with the old output
                raise M2IVError(f"{directory} holds files m2iv did not write ({', '.join(foreign[:3])}"
                                f"{', ...' if len(foreign) > 3 else ''}); choose an empty or new directory")
            old = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(directory, old)
        os.rename(tmp, directory)
        fsync_dir(directory.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
