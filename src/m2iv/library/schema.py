"""The library's SQLite index: tables, schema version and connection settings.

One database file (`index.sqlite` under the library root) in WAL mode, so readers never block the
writer and several processes can add entries at once: every write runs in `BEGIN IMMEDIATE` and a
busy timeout makes a second writer wait for the first instead of failing with "database is locked".

    entries    one row per stored vector set (model identity, task, metrics, config, provenance, prototype)
    tags       (entry_id, tag) pairs, deleted with their entry
    schema_version   a single row; a library written by a newer m2iv is refused, never half-read
"""

from __future__ import annotations

import errno
import sqlite3
from contextlib import contextmanager
from pathlib import Path

from m2iv.errors import M2IVError
from m2iv.files import FileWriteError

SCHEMA_VERSION = 1
INDEX_NAME = "index.sqlite"
BUSY_TIMEOUT_S = 60.0

DDL = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    base_model      TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    model_type      TEXT NOT NULL,
    num_layers      INTEGER NOT NULL,
    hidden_size     INTEGER NOT NULL,
    num_heads       INTEGER NOT NULL,
    head_dim        INTEGER NOT NULL,
    task            TEXT,
    method          TEXT NOT NULL,
    shots           INTEGER,
    metrics         TEXT NOT NULL DEFAULT '{}',
    description     TEXT NOT NULL DEFAULT '',
    created_at      TEXT NOT NULL,
    sha256          TEXT NOT NULL,
    config          TEXT NOT NULL,
    provenance      TEXT NOT NULL DEFAULT '{}',
    prototype       BLOB,
    prototype_info  TEXT
);
CREATE TABLE IF NOT EXISTS tags (
    entry_id TEXT NOT NULL REFERENCES entries(id) ON DELETE CASCADE,
    tag      TEXT NOT NULL,
    PRIMARY KEY (entry_id, tag)
);
CREATE INDEX IF NOT EXISTS entries_fingerprint ON entries(fingerprint);
CREATE INDEX IF NOT EXISTS entries_task ON entries(task);
CREATE INDEX IF NOT EXISTS entries_sha256 ON entries(sha256);
CREATE INDEX IF NOT EXISTS tags_tag ON tags(tag);
"""

ENTRY_COLUMNS = ("id", "name", "base_model", "fingerprint", "model_type", "num_layers", "hidden_size", "num_heads",
                 "head_dim", "task", "method", "shots", "metrics", "description", "created_at", "sha256", "config",
                 "provenance", "prototype", "prototype_info")


# SQLite primary result codes that come from the disk or the folder, not from a damaged index: rebuilding the
# index cannot fix them, so they are named as what they are (sqlite3.Error.sqlite_errorcode, low byte).
_DISK_CODES = {13: errno.ENOSPC, 8: errno.EROFS, 3: errno.EACCES, 14: errno.EACCES, 10: errno.EIO}


def disk_error(path: Path, error: sqlite3.Error) -> FileWriteError | None:
    """The error as a one-line FileWriteError when the disk or folder caused it (full, read-only, no permission,
    I/O); None when the index itself is at fault."""
    code = getattr(error, "sqlite_errorcode", None)
    err = _DISK_CODES.get(code & 0xFF) if isinstance(code, int) else None
    return None if err is None else FileWriteError(path, OSError(err, str(error)))


def connect(path: Path) -> sqlite3.Connection:
    """Open (and on first use create) the index at `path`; refuse one from a newer m2iv."""
    path = Path(path)
    try:
        # isolation_level=None: transactions are explicit (`write()` below), so a writer takes the lock
        # up front with BEGIN IMMEDIATE and the busy timeout applies (no deferred-upgrade deadlock).
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as e:
        raise disk_error(path, e) or M2IVError(f"cannot open the library index {path} ({e}); check the folder's "
                                               "permissions") from None
    conn.row_factory = sqlite3.Row
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise M2IVError(f"the library index {path} could not switch to WAL mode (got {mode}); put the library "
                            "on a local file system (M2IV_LIBRARY)")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        _ensure_schema(conn, path)
    except sqlite3.DatabaseError as e:
        conn.close()
        raise disk_error(path, e) or M2IVError(
            f"the library index {path} is not a readable SQLite database ({e}); rebuild it with "
            "`m2iv library check --repair` (it keeps the old file)") from None
    except BaseException:
        conn.close()
        raise
    return conn


def connect_readonly(path: Path) -> sqlite3.Connection:
    """Open the index for reading only, creating nothing beside it (no -wal/-shm files: a library in a
    read-only folder or a git checkout stays as it is). While a writer has the index open (its -wal file
    exists) the connection reads through the WAL, so new entries show at once; at rest the file is opened as
    immutable. Callers open one connection per look, so none holds a stale snapshot for long."""
    path = Path(path)
    through_wal = path.with_name(path.name + "-wal").exists()
    try:
        try:
            conn = _open_ro(path, "mode=ro" if through_wal else "mode=ro&immutable=1")
        except sqlite3.OperationalError:
            if not through_wal:
                raise
            conn = _open_ro(path, "mode=ro&immutable=1")  # a WAL this process may not map: read the file as it is
    except sqlite3.OperationalError as e:
        raise M2IVError(f"the library index {path} cannot be read ({e}); check the folder's permissions, or rebuild "
                        "it with `m2iv library check --repair` (it keeps the old file)") from None
    except sqlite3.DatabaseError as e:
        raise M2IVError(f"the library index {path} is not a readable SQLite database ({e}); rebuild it with "
                        "`m2iv library check --repair` (it keeps the old file)") from None
    version = conn.execute("SELECT version FROM schema_version").fetchone()
    if version is not None and version[0] > SCHEMA_VERSION:
        conn.close()
        raise M2IVError(f"the library at {path.parent} has schema version {version[0]}, this m2iv reads up to "
                        f"{SCHEMA_VERSION}; upgrade m2iv")
    return conn


def _open_ro(path: Path, mode: str) -> sqlite3.Connection:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True, timeout=BUSY_TIMEOUT_S,
                           isolation_level=None, check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("SELECT version FROM schema_version").fetchone()  # fails here on a damaged file
    except BaseException:
        conn.close()
        raise
    return conn


def _ensure_schema(conn: sqlite3.Connection, path: Path) -> None:
    with write(conn, path):
        # statement by statement: executescript() would COMMIT the open transaction
        for statement in DDL.split(";"):
            if statement.strip():
                conn.execute(statement)
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        if row is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        elif row[0] > SCHEMA_VERSION:
            raise M2IVError(f"the library at {path.parent} has schema version {row[0]}, this m2iv reads up to "
                            f"{SCHEMA_VERSION}; upgrade m2iv")


@contextmanager
def write(conn: sqlite3.Connection, path: Path):
    """One write transaction that holds the database's write lock from its first statement; a write the disk
    refuses (full, read-only) is rolled back and named as such, never as a damaged index."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")
    except sqlite3.Error as e:
        mapped = disk_error(path, e)
        if mapped is None:
            raise
        raise mapped from None


def seal(conn: sqlite3.Connection, path: Path) -> None:
    """Fold the write-ahead log into the database file (journal mode DELETE), so that file alone is the whole
    index and can be renamed into place; the next `connect` turns WAL back on."""
    try:
        mode = conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0]
    except sqlite3.Error as e:
        mapped = disk_error(path, e)
        if mapped is None:
            raise
        raise mapped from None
    if str(mode).lower() != "delete":
        raise M2IVError(f"could not finish the new library index {path} (journal mode stayed {mode}); check that "
                        "no other m2iv process uses the library and retry")
