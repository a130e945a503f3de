"""Tar files for `m2iv library export OUT.tar` / `import`: written atomically, read defensively.

A written archive holds regular files only, under one relative folder (the entry's name), with fixed
owner and permissions. Reading refuses the whole archive, before anything is written, when a member
has an absolute path, a `..` component, or is a link, device or FIFO; when it has more members than an
export (or a name twice, or a path deeper or longer than an export's); or when a member, or all of them,
is larger than a vector set can be.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from m2iv.errors import M2IVError
from m2iv.files import write_file_atomic

MAX_ARCHIVE_BYTES = 8 << 30  # a vector set is megabytes; refuse to unpack anything absurd
MAX_MEMBER_BYTES = 4 << 30  # the largest file: tensors of 1024 layers x 65536 wide, all sites, float32
MAX_JSON_BYTES = 64 << 20  # configs and metadata are kilobytes
MAX_MEMBERS = 16  # an export holds 4 files in one folder
MAX_DEPTH = 3
MAX_NAME = 512


def write_tar(out: str | Path, files: dict[str, bytes], folder: str, mtime: float = 0.0) -> Path:
    """Write `files` (name -> bytes) as `folder/name` members into the tar `out`: temp file, fsync, rename."""
    out = Path(out)
    if out.exists() and not out.is_file():
        raise M2IVError(f"{out} exists and is not a file; choose another .tar path")

    def write(tmp: Path) -> None:
        with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(files):
                data = files[name]
                info = tarfile.TarInfo(f"{folder}/{name}")
                info.type, info.size, info.mode, info.mtime = tarfile.REGTYPE, len(data), 0o644, int(mtime)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))

    return write_file_atomic(out, write)


def _unsafe(member: tarfile.TarInfo) -> str | None:
    name = member.name
    posix = name.replace("\\", "/")
    if posix.startswith("/") or PurePosixPath(posix).is_absolute() or PureWindowsPath(name).drive:
        return "absolute path"
    if ".." in posix.split("/"):
        return "'..' in its path"
    if not (member.isfile() or member.isdir()):
        return "not a regular file (link, device or FIFO)"
    if len(name) > MAX_NAME or len([p for p in posix.split("/") if p not in ("", ".")]) > MAX_DEPTH:
        return "a path deeper or longer than an export's"
    limit = MAX_JSON_BYTES if posix.endswith(".json") else MAX_MEMBER_BYTES
    if member.isfile() and member.size > limit:
        return f"{member.size} bytes, more than such a file can hold ({limit})"
    return None


def _members(tar: tarfile.TarFile, path: Path) -> list[tarfile.TarInfo]:
    """The members, read one header at a time so that an archive of millions is refused early."""
    members: list[tarfile.TarInfo] = []
    seen: set[str] = set()
    total = 0
    try:
        for m in tar:
            why = _unsafe(m)
            if why:
                raise M2IVError(f"{path}: refusing tar member {m.name!r} ({why}); import only archives written by "
                                "`m2iv library export`")
            key = m.name.replace("\\", "/").strip("/")
            if key in seen:
                raise M2IVError(f"{path}: refusing tar member {m.name!r} (it appears twice); import only archives "
                                "written by `m2iv library export`")
            seen.add(key)
            members.append(m)
            if len(members) > MAX_MEMBERS:
                raise M2IVError(f"{path} holds more than {MAX_MEMBERS} members, an export holds 4; refusing it")
            total += m.size if m.isfile() else 0
            if total > MAX_ARCHIVE_BYTES:
                raise M2IVError(f"{path} unpacks to more than {MAX_ARCHIVE_BYTES} bytes, more than a vector set "
                                "can hold; refusing it")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise M2IVError(f"{path} is a damaged tar archive ({e}); export it again") from None
    return members


def extract_tar(path: str | Path, dest: str | Path) -> Path:
    """Unpack the regular files of the tar `path` into `dest` after checking every member; return `dest`."""
    path, dest = Path(path), Path(dest)
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by the `with tar` below)
    except (tarfile.TarError, OSError) as e:
        raise M2IVError(f"{path} is not a readable tar archive ({e}); give a file written by "
                        "`m2iv library export ENTRY OUT.tar`") from None
    with tar:
        members = _members(tar, path)
        root = dest.resolve()
        for m in members:
            parts = [p for p in m.name.replace("\\", "/").split("/") if p not in ("", ".")]
            if not parts:
                continue
            target = root.joinpath(*parts)
            if root not in target.resolve().parents:
                raise M2IVError(f"{path}: refusing tar member {m.name!r} (it points outside the archive)")
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(m)
            if src is None:
                raise M2IVError(f"{path}: tar member {m.name!r} cannot be read; export the archive again")
            with src, open(target, "wb") as f:
                while chunk := src.read(1 << 20):
                    f.write(chunk)
    return dest
