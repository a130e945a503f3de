"""The vector library: a local store of trained in-context vectors.

    lib = Library()                                   # $M2IV_LIBRARY, else $M2IV_HOME/library
    entry = lib.add("out/vqa", tags=["vqa"])          # from a vector directory
    vectors, config = lib.load("vqa", adapter=lm.adapter)   # verified; refused for an incompatible model
    path = lib.resolve("library:vqa")                 # a verified vector directory anything in m2iv accepts

Layout under the root:

    index.sqlite                         entries, tags, schema_version (WAL; concurrent writers wait)
    blobs/<sha[:2]>/<sha>.safetensors    tensor files, content-addressed: identical content stored once
    blobs/<sha[:2]>/<sha>.<id>.json      one sidecar per entry (its record), so the index can be rebuilt
    cache/<sha>/                         vector directories exported for `library:` specs

An entry's blob is hashed on every read; bytes that no longer match are reported (entry name + blob
path) and never used. The full m2iv_config.json text is kept, so an exported directory is byte-for-byte
the one that was added. The file encoding lives in codec.py, exporting and importing in transfer.py, composing
in compose.py, search and routing in search.py (all below this module), checking and repairing in repair.py.
"""

from __future__ import annotations

import builtins
import json
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from m2iv.constants import CONFIG_NAME, VECTORS_NAME
from m2iv.errors import M2IVError
from m2iv.files import fill_dir_atomic, sha256_file, write_dir_atomic
from m2iv.library import schema
from m2iv.library.blobs import Blobs
from m2iv.library.codec import entry_files, file_writer, read_vector_dir, train_log_of, vectors_from_bytes
from m2iv.library.compose import DEFAULT_OPERATOR, compose
from m2iv.library.entry import (
    PREFIX,
    REPAIR_HINT,
    Entry,
    check_name,
    default_root,
    derive_name,
    dig,
    now,
    prototype_bytes,
)
from m2iv.library.index import Index
from m2iv.library.search import route, search, task_prototype
from m2iv.library.transfer import export, import_path
from m2iv.vectors.compat import compat_reason
from m2iv.vectors.format import resave, save_vectors


def select(entries: builtins.list[Entry], *, model: str | None = None, task: str | None = None,
           method: str | None = None, tag: str | builtins.list[str] | tuple[str, ...] | None = None
           ) -> builtins.list[Entry]:
    """The entries matching every filter given (see `Library.entries`), oldest first."""
    tags = [tag] if isinstance(tag, str) else list(tag or ())
    keep = [e for e in entries
            if (not model or model in (e.base_model, e.model_type, e.fingerprint))
            and (not task or e.task == task) and (not method or e.method == method)
            and all(t in e.tags for t in tags)]
    return sorted(keep, key=lambda e: (e.created_at, e.name))


def check_entry(entry: Entry, adapter, strict: bool = True) -> None:
    """Refuse `entry` for the model `adapter` describes, naming the entry and the differing field."""
    compat_reason(entry.config, adapter, strict, what=f"the vectors of library entry {entry.name} ({entry.id})")


class Library:
    """A local store of trained in-context vectors (see the module docstring)."""

    def __init__(self, root: str | Path | None = None, *, verify_index: bool = True,
                 index_name: str = schema.INDEX_NAME) -> None:
        """`index_name` other than the default: a new index built beside the real one (repair)."""
        self.root = Path(root).expanduser() if root else default_root()
        try:
            (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise M2IVError(f"cannot create the library folder {self.root} ({e.strerror}); set M2IV_LIBRARY or "
                            "--root to a writable folder") from None
        self.blobs = Blobs(self.root)
        index = self.root / index_name
        if verify_index and (not index.is_file() or index.stat().st_size == 0) and self.blobs.has_content():
            state = "missing" if not index.exists() else "empty (0 bytes)"
            raise M2IVError(f"the library index {index} is {state} but {self.root / 'blobs'} holds stored vectors; "
                            f"rebuild it with `m2iv library check --repair` (it keeps every file)")
        self._conn = schema.connect(index)
        self.index = Index(self._conn, self.root, index)
        self.problems: list[str] = []  # damaged rows skipped by the last `entries()`, one line each

    # -- lifetime ---------------------------------------------------------------------------------
    def close(self) -> None:
        self._conn.close()

    def seal(self) -> None:
        """Make the index file whole on its own (no write-ahead log), e.g. before it is renamed into place."""
        schema.seal(self._conn, self.index.path)

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Library({str(self.root)!r})"

    # -- reading ----------------------------------------------------------------------------------
    def blob_path(self, sha: str) -> Path:
        return self.blobs.path(sha)

    def read_blob(self, entry: Entry) -> bytes:
        return self.blobs.read(entry)

    def train_log(self, ref: str) -> builtins.list[dict]:
        """The per-step records of the entry's training (loss, val_acc, ...) that `add` kept; [] when it had none."""
        return self.blobs.read_train_log(self.get(ref))

    def get(self, ref: str) -> Entry:
        """An entry by id, name, `library:<id-or-name>` or a unique id prefix (>= 4 characters)."""
        return self.index.get(ref)

    def entries(self, *, model: str | None = None, task: str | None = None, method: str | None = None,
                tag: str | builtins.list[str] | tuple[str, ...] | None = None) -> builtins.list[Entry]:
        """Entries, oldest first; `model` matches the base model name, model_type or fingerprint; `tag` (one or
        several) keeps entries carrying every tag. Damaged rows are skipped and described in `self.problems`."""
        entries, self.problems = self.index.all()
        return select(entries, model=model, task=task, method=method, tag=tag)

    list = entries  # `lib.list(task=...)` reads naturally

    def __len__(self) -> int:
        return len(self.index)

    def load(self, ref: str, adapter=None, strict: bool = True, device: str = "cpu"):
        """(InContextVectors, config) of an entry, its blob verified; with `adapter`, refused for an
        incompatible model (the reason names the differing field)."""
        entry = self.get(ref)
        if adapter is not None:
            check_entry(entry, adapter, strict)
        vectors = vectors_from_bytes(self.read_blob(entry), entry.config, where=f"library entry {entry.name}")
        return vectors.to(device), entry.config

    def resolve(self, spec: str, adapter=None, strict: bool = True) -> Path:
        """`library:<id-or-name>` (or a bare id/name) -> a verified vector directory in the library's cache."""
        key = str(spec).removeprefix(PREFIX)
        if key == "auto":
            raise M2IVError("library:auto picks an entry per query and is only accepted where vectors are routed "
                            "per sample (m2iv eval --vectors library:auto); name an entry instead")
        entry = self.get(key)
        if adapter is not None:
            check_entry(entry, adapter, strict)
        target = self.root / "cache" / entry.sha256
        data = self.read_blob(entry)  # verifies the store's copy every time

        def fresh() -> bool:
            try:
                return (sha256_file(target / VECTORS_NAME) == entry.sha256
                        and (target / CONFIG_NAME).read_text() == entry.config_text)
            except OSError:
                return False

        if not fresh():
            files = entry_files(entry, data)
            try:
                write_dir_atomic(target, {n: file_writer(b) for n, b in files.items()})
            except OSError:
                if not fresh():  # a concurrent resolve that won the rename is fine; anything else is not
                    raise
        return target

    # -- adding -----------------------------------------------------------------------------------
    def add(self, directory: str | Path, *, name: str | None = None, tags: builtins.list[str] | tuple[str, ...] = (),
            description: str = "", task: str | None = None, method: str | None = None, shots: int | None = None,
            metrics: dict | None = None, provenance: dict | None = None, prototype=None,
            prototype_info: dict | None = None) -> Entry:
        """Add the vector directory `directory` (verified first); fields not given come from its config. The
        trainer's log (`<directory>.train/train_log.jsonl`) is kept beside the blob when it is this run's."""
        directory = Path(directory)
        config, config_text, data = read_vector_dir(directory)
        task = task or dig(config, "method_config", "task")
        if shots is None:
            shots = next((s for s in (dig(config, "recipe", "teacher", "shots"),
                                      dig(config, "training", "teacher", "shots"),
                                      dig(config, "method_config", "shots")) if isinstance(s, int)), None)
        if provenance is None:
            provenance = {"kind": "trained", "from_directory": str(directory.resolve()), "task": task,
                          "base_model": config.get("base_model"), "m2iv_version": config.get("m2iv_version"),
                          "best": dig(config, "training", "best")}
        return self.insert(config, config_text, data, name=name, derived_name=directory.resolve().name,
                           tags=tags, description=description, task=task, method=method or config["method"],
                           shots=shots, metrics=config.get("metrics") or {} if metrics is None else metrics,
                           provenance=provenance, prototype=prototype, prototype_info=prototype_info,
                           train_log=train_log_of(directory, config))

    def add_vectors(self, vectors, *, adapter, base_model: str, name: str | None = None, **kw) -> Entry:
        """Save `vectors` (an InContextVectors for `adapter`'s model) and add them; `kw` as for `add`."""

        save_kw: dict[str, Any] = {k: kw.pop(k) for k in ("recipe", "method_config", "extra") if k in kw}
        if "metrics" in kw:
            save_kw["metrics"] = kw["metrics"]
        with self.scratch() as tmp:
            d = save_vectors(vectors, tmp / (name or vectors.method), adapter=adapter, base_model=base_model,
                             **save_kw)
            return self.add(d, name=name, **kw)

    def scratch(self) -> _TempDir:
        (self.root / "tmp").mkdir(exist_ok=True)
        return _TempDir(self.root / "tmp")


    def insert(self, config: dict, config_text: str, data: bytes, *, name: str | None, derived_name: str,
               tags, description: str, task: str | None, method: str, shots: int | None, metrics: dict,
               provenance: dict, prototype=None, prototype_info: dict | None = None, entry_id: str | None = None,
               created_at: str | None = None, train_log: bytes | None = None) -> Entry:
        """Store the blob, then index the entry and write its sidecar (and training log) in one transaction."""
        sha = config["sha256"]
        tags = sorted({t.strip() for t in tags if t and t.strip()})
        if name is not None:
            check_name(name)
        proto = prototype_bytes(prototype)
        self.blobs.write(data, sha)  # outside the lock: the slow part
        values = {"base_model": str(config.get("base_model", "")), "fingerprint": config["fingerprint"],
                  "model_type": config["model_type"], "num_layers": config["num_layers"],
                  "hidden_size": config["hidden_size"], "num_heads": config["num_heads"],
                  "head_dim": config["head_dim"], "task": task, "method": method, "shots": shots,
                  "metrics": json.dumps(metrics or {}, sort_keys=True), "description": description or "",
                  "created_at": created_at or now(), "sha256": sha, "config": config_text,
                  "provenance": json.dumps(provenance or {}, sort_keys=True), "prototype": proto,
                  "prototype_info": json.dumps(prototype_info, sort_keys=True) if prototype_info else None}
        sidecar: Path | None = None
        log: Path | None = None
        try:
            with self.index.write():
                # a concurrent `remove` may have deleted the blob between our write and this lock: rewrite it
                if not self.blob_path(sha).is_file():
                    self.blobs.write(data, sha)
                final = name if name is not None else self.index.free_name(derive_name(derived_name, config), sha)
                taken = self.index.name_owner(final)
                if taken is not None:
                    same = " (it holds the same vectors)" if taken["sha256"] == sha else ""
                    raise M2IVError(f"the library name {final!r} is already used by entry {taken['id']}{same}; "
                                    "choose another --name")
                eid = entry_id if entry_id and not self.index.id_taken(entry_id) else self.index.new_id()
                self.index.insert({"id": eid, "name": final, **values}, tags)
                sidecar = self.blobs.write_sidecar(self.index.entry_by_id(eid))
                if train_log:
                    log = self.blobs.write_train_log(sha, eid, train_log)
        except BaseException:
            for path in (sidecar, log):
                if path is not None:
                    path.unlink(missing_ok=True)
            raise
        return self.get(eid)


    # -- metadata updates (index and sidecar together) --------------------------------------------
    def set_prototype(self, ref: str, prototype, info: dict | None = None) -> Entry:
        entry = self.get(ref)
        with self.index.write() as c:
            c.execute("UPDATE entries SET prototype = ?, prototype_info = ? WHERE id = ?",
                      (prototype_bytes(prototype), json.dumps(info, sort_keys=True) if info else None, entry.id))
            self.blobs.write_sidecar(self.index.entry_by_id(entry.id))
        return self.get(entry.id)

    def tag(self, ref: str, add: tuple[str, ...] = (), remove: tuple[str, ...] = ()) -> Entry:
        entry = self.get(ref)
        with self.index.write() as c:
            c.executemany("INSERT OR IGNORE INTO tags (entry_id, tag) VALUES (?, ?)", [(entry.id, t) for t in add])
            c.executemany("DELETE FROM tags WHERE entry_id = ? AND tag = ?", [(entry.id, t) for t in remove])
            self.blobs.write_sidecar(self.index.entry_by_id(entry.id))
        return self.get(entry.id)

    def remove(self, ref: str) -> Entry:
        """Delete the entry and its sidecar; its blob (and cached export) goes once no other entry holds the
        same content."""
        entry = self.get(ref)
        with self.index.write():
            self.index.delete(entry.id)
            self.blobs.remove_sidecar(entry)
            if not self.index.sha_in_use(entry.sha256):
                self.blob_path(entry.sha256).unlink(missing_ok=True)
                shutil.rmtree(self.root / "cache" / entry.sha256, ignore_errors=True)
        return entry

    def publish(self, dest: str | Path) -> Path:
        """A closed copy of the whole library at `dest`: one index file (no -wal/-shm), the blobs and sidecars; for
        committing next to a benchmark or serving read-only. An earlier copy there is replaced whole."""
        def fill(tmp: Path) -> None:
            if self.blobs.dir.is_dir():
                shutil.copytree(self.blobs.dir, tmp / "blobs")
            out = sqlite3.connect(str(tmp / schema.INDEX_NAME))
            try:
                self._conn.backup(out)
                out.execute("PRAGMA journal_mode = DELETE")
            finally:
                out.close()

        fill_dir_atomic(dest, fill)
        return Path(dest)

    # -- export and import (see transfer.py) -------------------------------------------------------
    def export(self, ref: str, out: str | Path, force: bool = False) -> Path:
        """Write the entry as a vector directory at `out`, or as a tar when `out` ends with `.tar`; an existing
        `out` is replaced only with `force`."""
        return export(self, ref, out, force=force)

    def import_path(self, path: str | Path, name: str | None = None) -> Entry:
        """Add an exported directory or tar (metadata, tags and prototype restored)."""
        return import_path(self, path, name)

    # -- composition, search, routing (see compose.py and search.py) -------------------------------
    def compose(self, name: str, expression, layers=None, sites=None, tags=(), description: str | None = None,
                operator: str | None = None) -> Entry:
        return compose(self, name, expression, layers=layers, sites=sites, tags=tags, description=description,
                       operator=operator or DEFAULT_OPERATOR)

    def with_condition(self, ref: str, condition, *, name: str, adapter, tags=(), description: str | None = None
                       ) -> Entry:
        """Add a copy of entry `ref` that acts only on prompts firing `condition` (a vectors.condition.Condition
        fitted by m2iv.train.condition); the source entry stays as it is. Prototype and tags are carried over."""
        src = self.get(ref)
        vectors, config = self.load(src.id, adapter=adapter)
        provenance = {"kind": "conditioned", "source": {"id": src.id, "name": src.name, "sha256": src.sha256},
                      "condition": condition.to_json()}
        with self.scratch() as tmp:
            d = resave(tmp, vectors.with_condition(condition), config, adapter=adapter, out=tmp / "conditioned")
            return self.add(d, name=name, tags=tuple(tags) or tuple(src.tags), task=src.task, method=src.method,
                            shots=src.shots, metrics=src.metrics, provenance=provenance,
                            description=description if description is not None else
                            f"{src.name}, acting only where its condition fires (layer {condition.layer})",
                            prototype=src.prototype, prototype_info=src.prototype_info)

    def search(self, **kw):
        return search(self, **kw)

    def route(self, lm, samples, embed=None, strict: bool = True) -> builtins.list[str]:
        return route(self, lm, samples, embed=embed, strict=strict)

    def add_prototype_from_task(self, ref: str, lm, task, data_root=None, n: int = 32, seed: int = 0) -> Entry:
        entry = self.get(ref)
        check_entry(entry, lm.adapter)
        proto, info = task_prototype(lm, task, data_root=data_root, n=n, seed=seed)
        return self.set_prototype(entry.id, proto, info)


class _TempDir:
    def __init__(self, parent: Path) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="tmp-", dir=parent))

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


__all__ = ["PREFIX", "REPAIR_HINT", "Entry", "Library", "check_entry", "select"]
