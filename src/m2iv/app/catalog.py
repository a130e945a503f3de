"""A library root as the app sees it: read without writing a byte, written only through the CLI's store.

`Library(root)` creates the folder, the index and its schema on open, which is right for the CLI but wrong
for a page that may be pointed at a committed or read-only library (`benchmarks/library/vlibrary/`). The
catalog opens the index read-only for every look (`schema.connect_readonly`: nothing is created beside it)
and reads blobs and sidecars as they are. Writing (saving a composition, tagging) needs `--allow-writes`
and goes through `Library`, the same code as `m2iv library compose|tag`: its SQLite transactions make
concurrent writers (this page, the CLI, another page) wait for each other instead of losing an entry.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from m2iv.errors import M2IVError
from m2iv.library import schema
from m2iv.library.blobs import Blobs
from m2iv.library.codec import vectors_from_bytes
from m2iv.library.entry import Entry, default_root
from m2iv.library.index import Index
from m2iv.library.store import Library, check_entry, select

READ_ONLY_HINT = "this page is read-only; start it with `m2iv library serve --allow-writes` to save from it"


class Catalog:
    """The entries, vectors and training logs of one library root (see the module docstring)."""

    def __init__(self, root: str | Path | None = None, allow_writes: bool = False) -> None:
        self.root = Path(root).expanduser() if root else default_root()
        self.allow_writes = allow_writes
        self.blobs = Blobs(self.root)
        self.problems: list[str] = []  # damaged rows skipped by the last `entries()`, one line each

    def __repr__(self) -> str:
        return f"Catalog({str(self.root)!r}, allow_writes={self.allow_writes})"

    @contextmanager
    def _index(self) -> Iterator[Index | None]:
        """A read-only view of the index for one look; None for a library with no index and no blobs yet."""
        if not self.root.is_dir():
            raise M2IVError(f"no library at {self.root}; give --root a library folder (for example "
                            "benchmarks/library/vlibrary) or add entries with `m2iv library add DIR`")
        index = self.root / schema.INDEX_NAME
        if not index.is_file() or index.stat().st_size == 0:
            if self.blobs.has_content():
                state = "missing" if not index.exists() else "empty (0 bytes)"
                raise M2IVError(f"the library index {index} is {state} but {self.root / 'blobs'} holds stored "
                                "vectors; rebuild it with `m2iv library check --repair` (it keeps every file)")
            yield None
            return
        conn = schema.connect_readonly(index)
        try:
            yield Index(conn, self.root)
        finally:
            conn.close()

    # -- reading ----------------------------------------------------------------------------------
    def entries(self, *, model: str | None = None, task: str | None = None, method: str | None = None,
                tag: str | list[str] | tuple[str, ...] | None = None) -> list[Entry]:
        """Entries, oldest first, filtered as `Library.entries` does; damaged rows land in `self.problems`."""
        with self._index() as index:
            if index is None:
                self.problems = []
                return []
            found, self.problems = index.all()
        return select(found, model=model, task=task, method=method, tag=tag)

    def get(self, ref: str) -> Entry:
        """An entry by id, name, `library:<id-or-name>` or a unique id prefix."""
        with self._index() as index:
            if index is None:
                raise M2IVError(f"the library at {self.root} has no entries yet; add some with "
                                "`m2iv library add DIR`")
            return index.get(ref)

    def load(self, ref: str, adapter=None, device: str = "cpu"):
        """(InContextVectors, config) of an entry, its blob verified; refused for another model with `adapter`."""
        entry = self.get(ref)
        if adapter is not None:
            check_entry(entry, adapter)
        vectors = vectors_from_bytes(self.blobs.read(entry), entry.config, where=f"library entry {entry.name}")
        return vectors.to(device), entry.config

    def train_log(self, entry: Entry) -> list[dict]:
        """The per-step training records `library add` kept beside the entry's blob ([] when none)."""
        return self.blobs.read_train_log(entry)

    # -- writing ----------------------------------------------------------------------------------
    @contextmanager
    def writer(self) -> Iterator[Library]:
        """The CLI's store on this root, for one write; refused unless the app was started with --allow-writes."""
        if not self.allow_writes:
            raise M2IVError(READ_ONLY_HINT)
        with Library(self.root) as lib:
            yield lib


__all__ = ["READ_ONLY_HINT", "Catalog"]
