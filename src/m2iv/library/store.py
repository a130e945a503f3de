"""The vector library: a local store of trained in-context vectors.

    lib = Library()                                   # $M2IV_LIBRARY, else $M2IV_HOME/library
    entry = lib.add("out/vqa", tags=["vqa"])          # from a vector directory
    vectors, config = lib.load("vqa", adapter=lm.adapter)   # verified; refused for an incompatible model
    path = lib.resolve("library:vqa")                 # a verified vector directory anything in m2iv accepts

Layout under the root:

    index.sqlite                         entries, tags, schema_version (WAL; concurrent writers wait)
    blobs/<sha[:2]>/<sha>.safetensors    tensor files, content-addressed: identical content stored once
    cache/<sha>/                         vector directories exported for `library:` specs

An entry's blob is hashed on every read; bytes that no longer match are reported (entry name + blob
path) and never used. The full m2iv_config.json text is kept in the index, so an exported directory
is byte-for-byte the one that was added.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from m2iv.constants import CONFIG_NAME, VECTORS_NAME, m2iv_home
from m2iv.errors import M2IVError
from m2iv.library import schema
from m2iv.library.archive import extract_tar, fsync_dir, write_tar

PREFIX = "library:"
META_NAME = "library.json"  # entry metadata next to an exported vector directory's two files
PROTOTYPE_NAME = "prototype.safetensors"
META_FORMAT = 1
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
RESERVED_NAMES = {"auto"}  # library:auto routes per sample (see Library.route)
COMPAT_FIELDS = ("model_type", "num_layers", "hidden_size", "num_heads", "head_dim", "fingerprint")


def default_root() -> Path:
    """`$M2IV_LIBRARY`, else `m2iv_home()/library`."""
    env = os.environ.get("M2IV_LIBRARY")
    return Path(env).expanduser() if env else m2iv_home() / "library"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_library_spec(spec: Any) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _dig(d: Any, *keys: str) -> Any:
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


def compat_reason(entry: Entry, adapter, strict: bool = True) -> str | None:
    """Why `entry` cannot be applied to the model `adapter` describes, or None when it can."""
    from m2iv.vectors.format import check_config_against

    try:
        check_config_against(entry.config, adapter, strict=strict)
    except M2IVError as e:
        return str(e)
    return None


def check_entry(entry: Entry, adapter, strict: bool = True) -> None:
    why = compat_reason(entry, adapter, strict)
    if why:
        raise M2IVError(f"library entry {entry.name} ({entry.id}) cannot be used with this model: {why}")


def _prototype_bytes(proto) -> bytes | None:
    if proto is None:
        return None
    arr = np.asarray(proto.detach().cpu().numpy() if hasattr(proto, "detach") else proto, dtype=np.float32)
    if arr.ndim != 1 or not arr.size or not np.all(np.isfinite(arr)):
        raise M2IVError(f"a task prototype must be a finite 1-D vector, got shape {arr.shape}")
    return arr.astype("<f4").tobytes()


class Library:
    """A local store of trained in-context vectors (see the module docstring)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root else default_root()
        try:
            (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise M2IVError(f"cannot create the library folder {self.root} ({e.strerror}); set M2IV_LIBRARY or "
                            "--root to a writable folder") from None
        self._conn = schema.connect(self.root / schema.INDEX_NAME)

    # -- lifetime ---------------------------------------------------------------------------------
    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Library({str(self.root)!r})"

    # -- blobs ------------------------------------------------------------------------------------
    def blob_path(self, sha: str) -> Path:
        return self.root / "blobs" / sha[:2] / f"{sha}.safetensors"

    def _write_blob(self, data: bytes, sha: str) -> Path:
        """Store `data` under its hash (temp file + fsync + os.replace); a good existing copy is kept."""
        path = self.blob_path(sha)
        try:
            if path.is_file() and sha256_bytes(path.read_bytes()) == sha:
                return path
        except OSError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{sha}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o444)
            os.replace(tmp, path)
            fsync_dir(path.parent)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def read_blob(self, entry: Entry) -> bytes:
        """The entry's tensor file, verified against its sha256 (never returned when it changed)."""
        path = self.blob_path(entry.sha256)
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

    # -- rows -------------------------------------------------------------------------------------
    def _entry(self, row: sqlite3.Row) -> Entry:
        tags = [r[0] for r in self._conn.execute("SELECT tag FROM tags WHERE entry_id = ? ORDER BY tag", (row["id"],))]
        proto = None if row["prototype"] is None else np.frombuffer(row["prototype"], dtype="<f4").copy()
        return Entry(id=row["id"], name=row["name"], base_model=row["base_model"], fingerprint=row["fingerprint"],
                     model_type=row["model_type"], num_layers=row["num_layers"], hidden_size=row["hidden_size"],
                     num_heads=row["num_heads"], head_dim=row["head_dim"], task=row["task"], method=row["method"],
                     shots=row["shots"], metrics=json.loads(row["metrics"]), tags=tags,
                     description=row["description"], created_at=row["created_at"], sha256=row["sha256"],
                     config=json.loads(row["config"]), provenance=json.loads(row["provenance"]), prototype=proto,
                     prototype_info=json.loads(row["prototype_info"]) if row["prototype_info"] else None,
                     config_text=row["config"])

    def get(self, ref: str) -> Entry:
        """An entry by id, name, `library:<id-or-name>` or a unique id prefix (>= 4 characters)."""
        ref = str(ref)
        key = ref.removeprefix(PREFIX)
        row = self._conn.execute("SELECT * FROM entries WHERE id = ? OR name = ? ORDER BY id = ? DESC",
                                 (key, key, key)).fetchone()
        if row is None and len(key) >= 4 and re.fullmatch(r"[0-9a-f]+", key):
            rows = self._conn.execute("SELECT * FROM entries WHERE id LIKE ?", (key + "%",)).fetchmany(2)
            if len(rows) > 1:
                raise M2IVError(f"{ref!r} matches several library entry ids; give more of the id or the name")
            row = rows[0] if rows else None
        if row is None:
            import difflib

            names = [r[0] for r in self._conn.execute("SELECT name FROM entries")]
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise M2IVError(f"no library entry {key!r} in {self.root}{hint}; see `m2iv library list`")
        return self._entry(row)

    def entries(self, *, model: str | None = None, task: str | None = None, method: str | None = None,
                tag: str | None = None) -> list[Entry]:
        """Entries, oldest first; `model` matches the base model name, model_type or fingerprint."""
        sql, args = "SELECT * FROM entries WHERE 1=1", []
        if model:
            sql += " AND (base_model = ? OR model_type = ? OR fingerprint = ?)"
            args += [model, model, model]
        if task:
            sql += " AND task = ?"
            args.append(task)
        if method:
            sql += " AND method = ?"
            args.append(method)
        if tag:
            sql += " AND id IN (SELECT entry_id FROM tags WHERE tag = ?)"
            args.append(tag)
        return [self._entry(r) for r in self._conn.execute(sql + " ORDER BY created_at, name", args).fetchall()]

    list = entries  # `lib.list(task=...)` reads naturally

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    # -- adding -----------------------------------------------------------------------------------
    @staticmethod
    def _read_vector_dir(directory: Path) -> tuple[dict, str, bytes]:
        from m2iv.vectors.format import read_config

        config = read_config(directory)
        config_text = (directory / CONFIG_NAME).read_text()
        tpath = directory / VECTORS_NAME
        if not tpath.is_file():
            raise M2IVError(f"{directory} has no {VECTORS_NAME}; the vector directory is incomplete")
        data = tpath.read_bytes()
        if sha256_bytes(data) != config["sha256"]:
            raise M2IVError(f"{tpath} does not match the sha256 in {CONFIG_NAME} (truncated or modified); "
                            "re-export or retrain the vectors")
        _vectors_from_bytes(data, config, where=str(tpath))  # the tensors must match the config's layout
        return config, config_text, data

    def add(self, directory: str | Path, *, name: str | None = None, tags: list[str] | tuple[str, ...] = (),
            description: str = "", task: str | None = None, method: str | None = None, shots: int | None = None,
            metrics: dict | None = None, provenance: dict | None = None, prototype=None,
            prototype_info: dict | None = None) -> Entry:
        """Add the vector directory `directory` (verified first); fields not given come from its config."""
        directory = Path(directory)
        config, config_text, data = self._read_vector_dir(directory)
        task = task or _dig(config, "method_config", "task")
        if shots is None:
            shots = next((s for s in (_dig(config, "recipe", "teacher", "shots"),
                                      _dig(config, "training", "teacher", "shots"),
                                      _dig(config, "method_config", "shots")) if isinstance(s, int)), None)
        if provenance is None:
            provenance = {"kind": "trained", "from_directory": str(directory.resolve()), "task": task,
                          "base_model": config.get("base_model"), "m2iv_version": config.get("m2iv_version"),
                          "best": _dig(config, "training", "best")}
        return self._insert(config, config_text, data, name=name, derived_name=directory.resolve().name,
                            tags=tags, description=description, task=task, method=method or config["method"],
                            shots=shots, metrics=config.get("metrics") or {} if metrics is None else metrics,
                            provenance=provenance, prototype=prototype, prototype_info=prototype_info)

    def add_vectors(self, vectors, *, adapter, base_model: str, name: str | None = None, **kw) -> Entry:
        """Save `vectors` (an InContextVectors for `adapter`'s model) and add them; `kw` as for `add`."""
        from m2iv.vectors.format import save_vectors

        save_kw = {k: kw.pop(k) for k in ("recipe", "method_config", "extra") if k in kw}
        if "metrics" in kw:
            save_kw["metrics"] = kw["metrics"]
        with self._scratch() as tmp:
            d = save_vectors(vectors, tmp / (name or vectors.method), adapter=adapter, base_model=base_model,
                             **save_kw)
            return self.add(d, name=name, **kw)

    def _scratch(self):
        (self.root / "tmp").mkdir(exist_ok=True)
        return _TempDir(self.root / "tmp")

    def _insert(self, config: dict, config_text: str, data: bytes, *, name: str | None, derived_name: str,
                tags, description: str, task: str | None, method: str, shots: int | None, metrics: dict,
                provenance: dict, prototype=None, prototype_info: dict | None = None, entry_id: str | None = None,
                created_at: str | None = None) -> Entry:
        sha = config["sha256"]
        tags = sorted({t.strip() for t in tags if t and t.strip()})
        if name is not None:
            _check_name(name)
        proto = _prototype_bytes(prototype)
        self._write_blob(data, sha)  # outside the lock: the slow part
        values = {"base_model": str(config.get("base_model", "")), "fingerprint": config["fingerprint"],
                  "model_type": config["model_type"], "num_layers": config["num_layers"],
                  "hidden_size": config["hidden_size"], "num_heads": config["num_heads"],
                  "head_dim": config["head_dim"], "task": task, "method": method, "shots": shots,
                  "metrics": json.dumps(metrics or {}, sort_keys=True), "description": description or "",
                  "created_at": created_at or _now(), "sha256": sha, "config": config_text,
                  "provenance": json.dumps(provenance or {}, sort_keys=True), "prototype": proto,
                  "prototype_info": json.dumps(prototype_info, sort_keys=True) if prototype_info else None}
        with schema.write(self._conn) as c:
            # a concurrent `remove` may have deleted the blob between our write and this lock: rewrite it
            if not self.blob_path(sha).is_file():
                self._write_blob(data, sha)
            final = name if name is not None else self._free_name(_derive_name(derived_name, config), sha)
            taken = c.execute("SELECT id, sha256 FROM entries WHERE name = ?", (final,)).fetchone()
            if taken is not None:
                same = " (it holds the same vectors)" if taken["sha256"] == sha else ""
                raise M2IVError(f"the library name {final!r} is already used by entry {taken['id']}{same}; "
                                "choose another --name")
            eid = entry_id if entry_id and not self._id_taken(entry_id) else self._new_id()
            cols = {"id": eid, "name": final, **values}
            c.execute(f"INSERT INTO entries ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                      tuple(cols.values()))
            c.executemany("INSERT INTO tags (entry_id, tag) VALUES (?, ?)", [(eid, t) for t in tags])
        return self.get(eid)

    def _id_taken(self, eid: str) -> bool:
        return self._conn.execute("SELECT 1 FROM entries WHERE id = ?", (eid,)).fetchone() is not None

    def _new_id(self) -> str:
        while True:
            eid = uuid.uuid4().hex[:12]
            if not self._id_taken(eid):
                return eid

    def _free_name(self, base: str, sha: str) -> str:
        for cand in (base, f"{base}-{sha[:8]}", *(f"{base}-{sha[:8]}-{i}" for i in range(2, 1000))):
            if self._conn.execute("SELECT 1 FROM entries WHERE name = ?", (cand,)).fetchone() is None:
                return cand
        raise M2IVError(f"could not derive a free name from {base!r}; pass --name")

    # -- metadata updates ---------------------------------------------------------------------------
    def set_prototype(self, ref: str, prototype, info: dict | None = None) -> Entry:
        entry = self.get(ref)
        with schema.write(self._conn) as c:
            c.execute("UPDATE entries SET prototype = ?, prototype_info = ? WHERE id = ?",
                      (_prototype_bytes(prototype), json.dumps(info, sort_keys=True) if info else None, entry.id))
        return self.get(entry.id)

    def tag(self, ref: str, add: tuple[str, ...] = (), remove: tuple[str, ...] = ()) -> Entry:
        entry = self.get(ref)
        with schema.write(self._conn) as c:
            c.executemany("INSERT OR IGNORE INTO tags (entry_id, tag) VALUES (?, ?)", [(entry.id, t) for t in add])
            c.executemany("DELETE FROM tags WHERE entry_id = ? AND tag = ?", [(entry.id, t) for t in remove])
        return self.get(entry.id)

    # -- removing ---------------------------------------------------------------------------------
    def remove(self, ref: str) -> Entry:
        """Delete the entry; its blob (and cached export) goes once no other entry holds the same content."""
        entry = self.get(ref)
        with schema.write(self._conn) as c:
            c.execute("DELETE FROM entries WHERE id = ?", (entry.id,))
            if c.execute("SELECT 1 FROM entries WHERE sha256 = ?", (entry.sha256,)).fetchone() is None:
                self.blob_path(entry.sha256).unlink(missing_ok=True)
                shutil.rmtree(self.root / "cache" / entry.sha256, ignore_errors=True)
        return entry

    # -- reading ----------------------------------------------------------------------------------
    def load(self, ref: str, adapter=None, strict: bool = True, device: str = "cpu"):
        """(InContextVectors, config) of an entry, its blob verified; with `adapter`, refused for an
        incompatible model (the reason names the differing field)."""
        entry = self.get(ref)
        if adapter is not None:
            check_entry(entry, adapter, strict)
        vectors = _vectors_from_bytes(self.read_blob(entry), entry.config, where=f"library entry {entry.name}")
        return vectors.to(device), entry.config

    def _files(self, entry: Entry) -> dict[str, bytes]:
        files = {VECTORS_NAME: self.read_blob(entry), CONFIG_NAME: entry.config_text.encode(),
                 META_NAME: (json.dumps(entry.meta(), indent=2, sort_keys=True) + "\n").encode()}
        if entry.prototype is not None:
            from safetensors.numpy import save

            files[PROTOTYPE_NAME] = save({"prototype": entry.prototype.astype(np.float32)},
                                        metadata={"format": "m2iv-library-prototype"})
        return files

    def export(self, ref: str, out: str | Path) -> Path:
        """Write the entry as a vector directory at `out`, or as a tar when `out` ends with `.tar`."""
        from m2iv.files import write_dir_atomic

        entry = self.get(ref)
        files = self._files(entry)
        out = Path(out).expanduser()
        if out.suffix == ".tar":
            try:
                mtime = datetime.fromisoformat(entry.created_at).timestamp()
            except ValueError:
                mtime = 0.0
            return write_tar(out, files, folder=entry.name, mtime=mtime)
        if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / CONFIG_NAME).is_file())):
            raise M2IVError(f"{out} exists and is not a vector directory; export to a new path")
        write_dir_atomic(out, {n: _writer(b) for n, b in files.items()})
        return out

    def resolve(self, spec: str, adapter=None, strict: bool = True) -> Path:
        """`library:<id-or-name>` (or a bare id/name) -> a verified vector directory in the library's cache."""
        from m2iv.files import sha256_file, write_dir_atomic

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
            files = self._files(entry)
            files[VECTORS_NAME] = data
            try:
                write_dir_atomic(target, {n: _writer(b) for n, b in files.items()})
            except OSError:
                if not fresh():  # a concurrent resolve that won the rename is fine; anything else is not
                    raise
        return target

    # -- import -----------------------------------------------------------------------------------
    def import_path(self, path: str | Path, name: str | None = None) -> Entry:
        """Add an exported directory or tar (metadata, tags and prototype restored); an entry already here
        with the same id and content is returned as it is."""
        path = Path(path).expanduser()
        if path.is_file():
            with self._scratch() as tmp:
                extract_tar(path, tmp)
                return self._import_dir(_find_vector_dir(tmp, path), name, source=path)
        if not path.exists():
            raise M2IVError(f"nothing to import at {path}; give a vector directory or a .tar from "
                            "`m2iv library export`")
        return self._import_dir(path, name, source=path)

    def _import_dir(self, directory: Path, name: str | None, source: Path) -> Entry:
        config, config_text, data = self._read_vector_dir(directory)
        meta: dict = {}
        if (directory / META_NAME).is_file():
            try:
                meta = json.loads((directory / META_NAME).read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise M2IVError(f"{directory / META_NAME} is not valid JSON ({e}); the export is damaged") from None
            if not isinstance(meta, dict) or not isinstance(meta.get("library_format"), int):
                raise M2IVError(f"{directory / META_NAME} is not library metadata; the export is damaged")
            if meta["library_format"] > META_FORMAT:
                raise M2IVError(f"{source} was exported by a newer m2iv (library format {meta['library_format']}); "
                                "upgrade m2iv")
            if meta.get("sha256") not in (None, config["sha256"]):
                raise M2IVError(f"{directory / META_NAME} describes other vectors (sha256 differs); the export "
                                "is damaged")
        eid = meta.get("id") if isinstance(meta.get("id"), str) and re.fullmatch(r"[0-9a-f]{6,32}", meta["id"]) \
            else None
        if eid:
            row = self._conn.execute("SELECT sha256 FROM entries WHERE id = ?", (eid,)).fetchone()
            if row is not None and row["sha256"] == config["sha256"] and name in (None, self.get(eid).name):
                return self.get(eid)
        proto, pinfo = None, meta.get("prototype_info") if isinstance(meta.get("prototype_info"), dict) else None
        if (directory / PROTOTYPE_NAME).is_file():
            from safetensors import SafetensorError
            from safetensors.numpy import load_file

            try:
                proto = load_file(str(directory / PROTOTYPE_NAME))["prototype"]
            except (SafetensorError, OSError, KeyError, ValueError) as e:
                raise M2IVError(f"{directory / PROTOTYPE_NAME} is not a readable prototype ({e})") from None
        fields = {k: meta.get(k) for k in ("task", "method", "shots", "metrics", "tags", "description",
                                           "provenance", "created_at")}
        if not isinstance(fields["tags"], list):
            fields["tags"] = []
        src_name = name or (meta.get("name") if isinstance(meta.get("name"), str) else None)
        return self._insert(
            config, config_text, data, name=src_name, derived_name=directory.resolve().name,
            tags=[str(t) for t in fields["tags"]], description=str(fields["description"] or ""),
            task=fields["task"] if isinstance(fields["task"], str) else _dig(config, "method_config", "task"),
            method=fields["method"] if isinstance(fields["method"], str) else config["method"],
            shots=fields["shots"] if isinstance(fields["shots"], int) else None,
            metrics=fields["metrics"] if isinstance(fields["metrics"], dict) else config.get("metrics") or {},
            provenance=fields["provenance"] if isinstance(fields["provenance"], dict) else
            {"kind": "imported", "from": str(source)},
            prototype=proto, prototype_info=pinfo, entry_id=eid,
            created_at=fields["created_at"] if isinstance(fields["created_at"], str) else None)

    # -- composition, search, routing (see compose.py and search.py) -------------------------------
    def compose(self, name: str, expression, layers=None, sites=None, tags=(), description: str | None = None
                ) -> Entry:
        from m2iv.library.compose import compose

        return compose(self, name, expression, layers=layers, sites=sites, tags=tags, description=description)

    def search(self, **kw):
        from m2iv.library.search import search

        return search(self, **kw)

    def route(self, lm, samples, embed=None, strict: bool = True) -> list[str]:
        from m2iv.library.search import route

        return route(self, lm, samples, embed=embed, strict=strict)

    def add_prototype_from_task(self, ref: str, lm, task, data_root=None, n: int = 32, seed: int = 0) -> Entry:
        from m2iv.library.search import task_prototype

        entry = self.get(ref)
        check_entry(entry, lm.adapter)
        proto, info = task_prototype(lm, task, data_root=data_root, n=n, seed=seed)
        return self.set_prototype(entry.id, proto, info)


# -- helpers ----------------------------------------------------------------------------------------
class _TempDir:
    def __init__(self, parent: Path) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="tmp-", dir=parent))

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _writer(data: bytes):
    def write(path: Path) -> None:
        path.write_bytes(data)

    return write


def _check_name(name: str) -> None:
    if not NAME_RE.match(name or ""):
        raise M2IVError(f"library name {name!r} is not allowed; use letters, digits, '.', '_' and '-' (starting "
                        "with a letter or digit, at most 100 characters)")
    if name in RESERVED_NAMES:
        raise M2IVError(f"library name {name!r} is reserved (library:{name} routes per sample); choose another")


def _derive_name(base: str, config: dict) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._")[:80]
    if not base or base in RESERVED_NAMES or not NAME_RE.match(base):
        base = f"{config.get('method', 'vectors')}-{config.get('model_type', 'model')}"
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._")[:80] or "vectors"
    return base


def _vectors_from_bytes(data: bytes, config: dict, where: str):
    from safetensors import SafetensorError
    from safetensors.torch import load

    from m2iv.vectors.format import vectors_from_tensors

    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as e:
        raise M2IVError(f"{where}: tensors are not a readable safetensors file ({e})") from None
    return vectors_from_tensors(tensors, config, where)


def _find_vector_dir(root: Path, source: Path) -> Path:
    if (root / CONFIG_NAME).is_file():
        return root
    found = [p for p in root.iterdir() if p.is_dir() and (p / CONFIG_NAME).is_file()]
    if len(found) != 1:
        raise M2IVError(f"{source} holds {'no' if not found else 'several'} vector directories; give a tar written "
                        "by `m2iv library export ENTRY OUT.tar`")
    return found[0]


def resolve_vectors(spec, root: str | Path | None = None, adapter=None, strict: bool = True):
    """`library:<id-or-name>` -> a verified vector directory; anything else is returned as a Path unchanged.
    This is the one call the rest of m2iv needs to accept library specs wherever a vector directory goes."""
    if spec is None or not is_library_spec(str(spec)):
        return None if spec is None else Path(spec)
    with Library(root) as lib:
        return lib.resolve(str(spec), adapter=adapter, strict=strict)
