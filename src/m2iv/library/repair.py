"""`m2iv library check [--repair]`: compare the index with the blobs and sidecars, and rebuild it.

Checked: the index opens and every row reads; every entry has its blob (hash verified) and its sidecar,
and the sidecar agrees with the row; every sidecar has its entry; every blob belongs to an entry.
Repairing rebuilds what the sidecars describe: a new index is built from the sidecars beside a missing, empty
or unreadable one, and only once it is complete is the old one moved aside (`index.sqlite.broken-<time>`,
never deleted) and the new one renamed into place, so a full or read-only disk leaves the library as it was.
Entries missing from a readable index are re-added, damaged rows replaced from their sidecar, and missing or
stale sidecars written from the index. Nothing on disk is deleted; what cannot be repaired (a missing or
changed blob, an orphaned blob, a damaged sidecar) is reported. An index that cannot be opened because of the
disk (full, read-only, no permission) is not damaged: that is reported, and nothing is rebuilt.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from m2iv.errors import M2IVError
from m2iv.files import FileWriteError, writing
from m2iv.library import schema
from m2iv.library.entry import Entry, default_root, entry_from_record, entry_record
from m2iv.library.store import Library


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)  # what is wrong (after repairing: what still is)
    fixed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _sidecars(lib_root: Path) -> tuple[dict[str, tuple[Path, Entry]], list[str]]:
    from m2iv.library.blobs import Blobs

    found: dict[str, tuple[Path, Entry]] = {}
    bad = []
    for path, rec in Blobs(lib_root).sidecars():
        try:
            if isinstance(rec, str):
                raise M2IVError(f"{path} cannot be read ({rec}); it was left as it is")
            entry = entry_from_record(rec, str(path))
            if path.name != f"{entry.sha256}.{entry.id}.json":
                raise M2IVError(f"{path} describes entry {entry.id} of blob {entry.sha256[:16]}, not its file name; "
                                "it was left as it is")
            found[entry.id] = (path, entry)
        except M2IVError as e:
            bad.append(str(e))
    return found, bad


def _move_aside(index: Path) -> Path:
    """Rename the index (and its WAL files) to `index.sqlite.broken-<time>`; never delete them."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kept = index.with_name(f"{index.name}.broken-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        src = index.with_name(index.name + suffix)
        if src.exists():
            os.replace(src, kept.with_name(kept.name + suffix))
    return kept


def _restore(lib: Library, entry: Entry, report: Report) -> bool:
    """Add `entry` (from its sidecar) to the index under its id, name, tags and prototype."""
    try:
        data = lib.read_blob(entry)
    except M2IVError as e:
        report.problems.append(f"cannot restore {entry.name} ({entry.id}) from its sidecar: {e}")
        return False
    name = entry.name if lib.index.name_owner(entry.name) is None else None
    lib.insert(entry.config, entry.config_text, data, name=name, derived_name=entry.name, tags=entry.tags,
               description=entry.description, task=entry.task, method=entry.method, shots=entry.shots,
               metrics=entry.metrics, provenance=entry.provenance, prototype=entry.prototype,
               prototype_info=entry.prototype_info, entry_id=entry.id, created_at=entry.created_at)
    report.fixed.append(f"restored entry {entry.name} ({entry.id}) from its sidecar"
                        + ("" if name else " under a new name (its name is taken)"))
    return True


def check(root: str | Path | None = None, repair: bool = False) -> Report:
    """Check the library at `root` (see the module docstring); with `repair`, fix what the sidecars allow."""
    root = Path(root).expanduser() if root else default_root()
    report = Report()
    sidecars, bad_sidecars = _sidecars(root)
    report.problems += bad_sidecars
    try:
        lib = Library(root)
    except FileWriteError as e:  # the disk, not the index: a rebuild would need the same disk
        report.problems.append(f"{e} (the index was left as it is)")
        return report
    except M2IVError as e:
        if not repair:
            report.problems.append(str(e))
            return report
        _rebuild(root, sidecars, [], report)
        return report
    with lib:
        damaged = _check_index(lib, sidecars, repair, report)
    if repair and damaged:
        sidecars, _ = _sidecars(root)  # now also those just written from the readable rows
        _rebuild(root, sidecars, damaged, report)
    return report


def _rebuild(root: Path, sidecars: dict[str, tuple[Path, Entry]], damaged: list[str], report: Report) -> None:
    """Build a new index from the sidecars beside the old one; only once it is whole, move the old one aside and
    rename the new one into place. A failure on the way (a full disk) removes the half-built one and leaves the
    old index where it was."""
    index = root / schema.INDEX_NAME
    new_name = f".{index.name}.new-{uuid.uuid4().hex[:8]}"
    built = Report()
    try:
        with Library(root, verify_index=False, index_name=new_name) as lib:
            for _, entry in sorted(sidecars.values(), key=lambda s: (s[1].created_at, s[1].name)):
                _restore(lib, entry, built)
            _report_orphans(lib, sidecars, {}, built)
            lib.seal()
        with writing(index):
            kept = _move_aside(index) if index.exists() else None
            os.replace(root / new_name, index)
    except BaseException:
        for suffix in ("", "-wal", "-shm", "-journal"):
            (root / (new_name + suffix)).unlink(missing_ok=True)
        raise
    report.fixed.append("started a new index" + (f" (the old one is kept as {kept.name})" if kept else ""))
    report.fixed += built.fixed
    report.problems += built.problems
    for eid in damaged:
        if eid not in sidecars:
            report.problems.append(f"damaged index row {eid} has no sidecar, so it could not be restored "
                                   f"(the old index is kept as {kept.name if kept else '?'})")


def _check_index(lib: Library, sidecars: dict[str, tuple[Path, Entry]], repair: bool, report: Report
                 ) -> list[str]:
    """Check rows, blobs and sidecars of a readable index; the ids of damaged rows (to rebuild when repairing)."""
    try:
        ids = lib.index.ids()
    except M2IVError as e:
        report.problems.append(str(e))
        return ["?"]
    good: dict[str, Entry] = {}
    damaged = []
    for eid in ids:
        try:
            good[eid] = lib.index.entry_by_id(eid)
        except M2IVError as e:
            damaged.append(eid)
            if not repair:
                report.problems.append(str(e))
    for eid, entry in good.items():
        try:
            lib.read_blob(entry)
        except M2IVError as e:
            report.problems.append(str(e))
        side = sidecars.get(eid)
        if side is not None and entry_record(side[1]) == entry_record(entry):
            continue
        why = "no sidecar" if side is None else "a sidecar that differs from the index"
        if repair:
            lib.blobs.write_sidecar(entry)
            report.fixed.append(f"wrote the sidecar of {entry.name} ({eid}) from the index (it had {why})")
        else:
            report.problems.append(f"entry {entry.name} ({eid}) has {why}")
    if repair and damaged:
        return damaged
    for eid, (path, entry) in sidecars.items():
        if eid in good or eid in damaged:
            continue
        if not repair:
            report.problems.append(f"{path} describes entry {entry.name} ({eid}), which the index lacks")
        elif _restore(lib, entry, report):
            good[eid] = lib.get(eid)
    _report_orphans(lib, sidecars, good, report)
    return []


def _report_orphans(lib: Library, sidecars: dict[str, tuple[Path, Entry]], good: dict[str, Entry],
                    report: Report) -> None:
    used = {e.sha256 for e in good.values()} | {e.sha256 for _, e in sidecars.values()}
    for sha in lib.blobs.shas():
        if sha not in used:
            report.problems.append(f"blob {lib.blob_path(sha)} belongs to no entry and has no sidecar (kept; "
                                   "import its vector directory again to use it)")


__all__ = ["Report", "check"]
