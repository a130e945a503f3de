"""Moving entries in and out of a library: `m2iv library export ENTRY OUT[.tar]` and `import PATH`.

An export is a vector directory (the two files exactly as added) plus `library.json` (the entry's
metadata) and, when the entry has them, `prototype.safetensors` and `train_log.jsonl`; as a tar, under one
folder (the encoding is codec.py). Importing checks the archive (archive.py) and the config (vectors/validate.py)
before anything is built. These functions take any `Store` (store.Library is one), so this module sits below
store.py, which offers them as `Library.export` / `Library.import_path`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from m2iv.constants import CONFIG_NAME
from m2iv.errors import M2IVError
from m2iv.files import write_dir_atomic
from m2iv.library.archive import extract_tar, write_tar
from m2iv.library.blobs import Blobs
from m2iv.library.codec import entry_files, file_writer, read_meta, read_prototype, read_vector_dir, train_log_of
from m2iv.library.entry import ID_RE, Entry, dig
from m2iv.library.index import Index


class Store(Protocol):
    """What export and import need of a library."""

    blobs: Blobs
    index: Index

    def get(self, ref: str) -> Entry: ...

    def read_blob(self, entry: Entry) -> bytes: ...

    def scratch(self) -> AbstractContextManager[Path]: ...

    def insert(self, *args: Any, **kwargs: Any) -> Entry: ...


def export(lib: Store, ref: str, out: str | Path, force: bool = False) -> Path:
    """Write the entry as a vector directory at `out`, or as a tar when `out` ends with `.tar`. An existing `out`
    (a file, or a folder with anything in it) is refused unless `force`; even then a folder is replaced only when
    it is a vector directory, never over a user's files."""

    entry = lib.get(ref)
    files = entry_files(entry, lib.read_blob(entry), lib.blobs.read_train_log(entry))
    out = Path(out).expanduser()
    exists = out.is_file() or out.is_symlink() or out.is_dir() and any(out.iterdir())
    if exists and not force:
        raise M2IVError(f"{out} already exists; pass --force to replace it (force=True), or export to a new path")
    if out.suffix == ".tar":
        try:
            mtime = datetime.fromisoformat(entry.created_at).timestamp()
        except ValueError:
            mtime = 0.0
        return write_tar(out, files, folder=entry.name, mtime=mtime)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / CONFIG_NAME).is_file())):
        raise M2IVError(f"{out} exists and is not a vector directory; export to a new path")
    write_dir_atomic(out, {n: file_writer(b) for n, b in files.items()})
    return out


def import_path(lib: Store, path: str | Path, name: str | None = None) -> Entry:
    """Add an exported directory or tar (metadata, tags and prototype restored); an entry already here
    with the same id and content is returned as it is."""
    path = Path(path).expanduser()
    if path.is_file():
        with lib.scratch() as tmp:
            extract_tar(path, tmp)
            try:
                return import_dir(lib, _find_vector_dir(tmp, path), name, source=path)
            except M2IVError as e:  # name the archive, not the scratch folder it was unpacked into
                raise M2IVError(str(e).replace(str(tmp), str(path))) from None
    if not path.exists():
        raise M2IVError(f"nothing to import at {path}; give a vector directory or a .tar from "
                        "`m2iv library export`")
    return import_dir(lib, path, name, source=path)


def import_dir(lib: Store, directory: Path, name: str | None, source: Path, origin: str | None = None,
               derived_name: str | None = None) -> Entry:
    """`origin` (e.g. hf://org/name@commit) and `derived_name` replace the folder's path and name where the folder
    is a download's snapshot, named by a commit hash."""
    config, config_text, data = read_vector_dir(directory)
    meta = read_meta(directory, source, config["sha256"])
    eid = meta.get("id") if isinstance(meta.get("id"), str) and ID_RE.match(meta["id"]) else None
    if eid and lib.index.id_taken(eid):
        same = lib.index.entry_by_id(eid)
        if same.sha256 == config["sha256"] and name in (None, same.name):
            return same
    proto = read_prototype(directory)
    pinfo = meta.get("prototype_info") if isinstance(meta.get("prototype_info"), dict) else None
    fields = {k: meta.get(k) for k in ("task", "method", "shots", "metrics", "tags", "description", "provenance",
                                       "created_at")}
    if not isinstance(fields["tags"], list):
        fields["tags"] = []
    src_name = name or (meta.get("name") if isinstance(meta.get("name"), str) else None)
    return lib.insert(
        config, config_text, data, name=src_name, derived_name=derived_name or directory.resolve().name,
        tags=[str(t) for t in fields["tags"] or []], description=str(fields["description"] or ""),
        task=fields["task"] if isinstance(fields["task"], str) else dig(config, "method_config", "task"),
        method=fields["method"] if isinstance(fields["method"], str) else config["method"],
        shots=fields["shots"] if isinstance(fields["shots"], int) else None,
        metrics=fields["metrics"] if isinstance(fields["metrics"], dict) else config.get("metrics") or {},
        provenance=fields["provenance"] if isinstance(fields["provenance"], dict) else
        {"kind": "imported", "from": origin or str(source)},
        prototype=proto, prototype_info=pinfo, entry_id=eid,
        created_at=fields["created_at"] if isinstance(fields["created_at"], str) else None,
        train_log=train_log_of(directory, config))


def _find_vector_dir(root: Path, source: Path) -> Path:
    if (root / CONFIG_NAME).is_file():
        return root
    found = [p for p in root.iterdir() if p.is_dir() and (p / CONFIG_NAME).is_file()]
    if len(found) != 1:
        raise M2IVError(f"{source} holds {'no' if not found else 'several'} vector directories; give a tar written "
                        "by `m2iv library export ENTRY OUT.tar`")
    return found[0]
