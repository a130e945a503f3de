"""The one place files are written: every result, table, tensor file, checkpoint and vector directory is
replaced whole or not at all (temp file + fsync + rename), so a killed run never leaves half a file where a
finished one was, and a directory holding a user's files is never written over.

A write that fails because of where it goes (disk full, read-only, no permission, a file where a folder should
be) is one line naming the path and the fix (`FileWriteError`), never a bare `OSError`. Tensor files get a
canonical header (`save_safetensors`), so the same tensors always give the same bytes and sha256.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from m2iv.errors import M2IVError

# errno -> (cause, fix); {where} is the folder the write went to
_CAUSES = {
    errno.ENOSPC: ("the disk is full", "free space on that disk or write somewhere else"),
    errno.EDQUOT: ("the disk quota is used up", "free space on that disk or write somewhere else"),
    errno.EFBIG: ("the file is larger than this file system or `ulimit -f` allows", "write somewhere else"),
    errno.EROFS: ("the file system is read-only", "write somewhere else"),
    errno.EACCES: ("permission denied", "make {where} writable or write somewhere else"),
    errno.EPERM: ("operation not permitted", "make {where} writable or write somewhere else"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose a path through folders only"),
    errno.EISDIR: ("it is a folder, not a file", "choose a file path"),
    errno.EEXIST: ("a file stands where a folder is needed", "move it away or choose another path"),
    errno.ENAMETOOLONG: ("the name is too long", "choose a shorter path"),
}


class FileWriteError(M2IVError, OSError):
    """A write refused by the file system, as one line naming the path and the fix; still an OSError (with the
    original errno) for code that handles those."""

    def __init__(self, path: str | Path, error: OSError) -> None:
        detail = error.strerror or str(error)
        cause, fix = _CAUSES.get(error.errno or 0, (detail, "check the path and the disk"))
        super().__init__(f"cannot write {path}: {cause} ({detail}); {fix.format(where=Path(path).parent)}")
        self.errno, self.filename = error.errno, str(path)

    def __str__(self) -> str:  # the message, not OSError's "[Errno n] strerror: filename"
        return str(self.args[0])


def is_write_refusal(error: BaseException) -> bool:
    """An OSError caused by where the file goes (full, read-only, no permission, not a folder), not by m2iv."""
    return isinstance(error, OSError) and not isinstance(error, FileWriteError) and error.errno in _CAUSES


WRITE_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)  # causes no read can have


def describe_os_error(error: OSError) -> str:
    """One line for a file-system error that escaped the places m2iv knows it is writing (read or write)."""
    where = error.filename or "a file"
    if error.errno in WRITE_ONLY:
        return str(FileWriteError(where, error))
    return (f"{where}: {error.strerror or error}; check that the path exists, that folders are folders and files "
            "are files, and that you may read and write there")


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn a write refusal inside the block into one FileWriteError naming `path`; other errors pass."""
    try:
        yield
    except OSError as e:
        if is_write_refusal(e):
            raise FileWriteError(path, e) from None
        raise


def read_json_object(path: str | Path, corrupt: str, fix: str, not_object: str) -> dict:
    """A JSON file that must hold one object; a bad one is refused in one line: "`corrupt` (the parse error);
    `fix`", or `not_object` when it holds something else."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise M2IVError(f"{corrupt} ({e}); {fix}") from None
    if not isinstance(obj, dict):
        raise M2IVError(not_object)
    return obj


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
    tmp = _tmp_name(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
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


def append_lines(path: str | Path, lines: Iterable[str]) -> None:
    """Append lines durably (a resumable log, rewritten whole when the run finishes)."""
    with writing(path), open(path, "a", encoding="utf-8") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())


def save_safetensors(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors' save_file with the header's metadata in sorted order. safetensors keeps metadata in a Rust
    HashMap and writes it in a random order per map (safetensors issue #584), so saving the same tensors twice
    gave different bytes whenever the metadata had two keys or more; sorting makes the file a pure function of
    its content. The header keeps its length (same keys and values), so every data offset stays valid."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    if metadata and len(metadata) > 1:
        with open(path, "r+b") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
            header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
            canonical = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
            if len(canonical) > n:  # cannot happen for str -> str metadata; never write a broken header
                raise RuntimeError(f"canonical safetensors header of {path} is longer than the original")
            f.seek(8)
            f.write(canonical.ljust(n, b" "))


def write_safetensors_atomic(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    return write_file_atomic(path, lambda tmp: save_safetensors(tensors, tmp, metadata))


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
    with writing(directory):
        _fill_dir(directory, fill)


def _fill_dir(directory: Path, fill: Callable[[Path], object]) -> None:
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
