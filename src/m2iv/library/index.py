"""Queries on the library's SQLite index (tables in schema.py): rows to entries, lookups, listing.

Listing reads the entry ids first and then each row on its own, so one damaged row (a corrupt page,
bad JSON) is reported and skipped instead of hiding every other entry.
"""

from __future__ import annotations

import difflib
import json
import re
import sqlite3
import uuid
from pathlib import Path

import numpy as np

from m2iv.errors import M2IVError
from m2iv.library import schema
from m2iv.library.entry import PREFIX, REPAIR_HINT, Entry


class Index:
    """The entries and tags tables of one library (`conn` from schema.connect)."""

    def __init__(self, conn: sqlite3.Connection, root: Path, path: Path | None = None) -> None:
        self.conn, self.root = conn, root
        self.path = path or root / schema.INDEX_NAME

    def entry(self, row: sqlite3.Row) -> Entry:
        """The Entry of a row; a damaged row is a one-line M2IVError naming the repair."""
        try:
            tags = [r[0] for r in self.conn.execute("SELECT tag FROM tags WHERE entry_id = ? ORDER BY tag",
                                                    (row["id"],))]
            proto = None if row["prototype"] is None else np.frombuffer(row["prototype"], dtype="<f4").copy()
            return Entry(id=row["id"], name=row["name"], base_model=row["base_model"], fingerprint=row["fingerprint"],
                         model_type=row["model_type"], num_layers=row["num_layers"], hidden_size=row["hidden_size"],
                         num_heads=row["num_heads"], head_dim=row["head_dim"], task=row["task"],
                         method=row["method"], shots=row["shots"], metrics=json.loads(row["metrics"]), tags=tags,
                         description=row["description"], created_at=row["created_at"], sha256=row["sha256"],
                         config=json.loads(row["config"]), provenance=json.loads(row["provenance"]),
                         prototype=proto,
                         prototype_info=json.loads(row["prototype_info"]) if row["prototype_info"] else None,
                         config_text=row["config"])
        except (sqlite3.DatabaseError, ValueError, TypeError, KeyError) as e:
            raise M2IVError(f"library index row {_row_id(row)} in {self.root} is damaged ({type(e).__name__}: "
                            f"{e}); {REPAIR_HINT}") from None

    def get(self, ref: str) -> Entry:
        """An entry by id, name, `library:<id-or-name>` or a unique id prefix (>= 4 characters)."""
        ref = str(ref)
        key = ref.removeprefix(PREFIX)
        try:
            row = self.conn.execute("SELECT * FROM entries WHERE id = ? OR name = ? ORDER BY id = ? DESC",
                                    (key, key, key)).fetchone()
            if row is None and len(key) >= 4 and re.fullmatch(r"[0-9a-f]+", key):
                rows = self.conn.execute("SELECT * FROM entries WHERE id LIKE ?", (key + "%",)).fetchmany(2)
                if len(rows) > 1:
                    raise M2IVError(f"{ref!r} matches several library entry ids; give more of the id or the name")
                row = rows[0] if rows else None
            if row is None:
                names = [r[0] for r in self.conn.execute("SELECT name FROM entries")]
        except sqlite3.DatabaseError as e:
            raise M2IVError(f"the library index in {self.root} cannot be read ({e}); {REPAIR_HINT}") from None
        if row is None:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise M2IVError(f"no library entry {key!r} in {self.root}{hint}; see `m2iv library list`")
        return self.entry(row)

    def ids(self) -> list[str]:
        """Every entry id (read from the id index alone where SQLite can, so damaged rows do not hide it)."""
        try:
            return [r[0] for r in self.conn.execute("SELECT id FROM entries")]
        except sqlite3.DatabaseError as e:
            raise M2IVError(f"the library index in {self.root} cannot be listed ({e}); {REPAIR_HINT}") from None

    def entry_by_id(self, eid: str) -> Entry:
        try:
            row = self.conn.execute("SELECT * FROM entries WHERE id = ?", (eid,)).fetchone()
        except sqlite3.DatabaseError as e:
            raise M2IVError(f"library index row {eid} in {self.root} cannot be read ({e}); {REPAIR_HINT}") from None
        if row is None:
            raise M2IVError(f"no library entry {eid!r} in {self.root}")
        return self.entry(row)

    def all(self) -> tuple[list[Entry], list[str]]:
        """(every readable entry, one line per damaged row that was skipped)."""
        entries, problems = [], []
        for eid in self.ids():
            try:
                entries.append(self.entry_by_id(eid))
            except M2IVError as e:
                problems.append(str(e))
        return entries, problems

    def __len__(self) -> int:
        return len(self.ids())

    # -- writing (inside schema.write) ---------------------------------------------------------------
    def id_taken(self, eid: str) -> bool:
        return self.conn.execute("SELECT 1 FROM entries WHERE id = ?", (eid,)).fetchone() is not None

    def new_id(self) -> str:
        while True:
            eid = uuid.uuid4().hex[:12]
            if not self.id_taken(eid):
                return eid

    def name_owner(self, name: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT id, sha256 FROM entries WHERE name = ?", (name,)).fetchone()

    def free_name(self, base: str, sha: str) -> str:
        for cand in (base, f"{base}-{sha[:8]}", *(f"{base}-{sha[:8]}-{i}" for i in range(2, 1000))):
            if self.name_owner(cand) is None:
                return cand
        raise M2IVError(f"could not derive a free name from {base!r}; pass --name")

    def insert(self, cols: dict, tags: list[str]) -> None:
        self.conn.execute(f"INSERT INTO entries ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                          tuple(cols.values()))
        self.conn.executemany("INSERT INTO tags (entry_id, tag) VALUES (?, ?)", [(cols["id"], t) for t in tags])

    def sha_in_use(self, sha: str) -> bool:
        return self.conn.execute("SELECT 1 FROM entries WHERE sha256 = ?", (sha,)).fetchone() is not None

    def delete(self, eid: str) -> None:
        self.conn.execute("DELETE FROM tags WHERE entry_id = ?", (eid,))
        self.conn.execute("DELETE FROM entries WHERE id = ?", (eid,))

    def write(self):
        return schema.write(self.conn, self.path)


def _row_id(row) -> str:
    try:
        return str(row["id"])
    except (sqlite3.DatabaseError, IndexError, KeyError):
        return "?"
