"""Full disks, read-only folders, a home that is a file, closed pipes, exports over files (issue 27).

ENOSPC is simulated two ways: an `os.fsync` that fails as a full disk does (every m2iv file write fsyncs before
its rename), /dev/full for files written in place, and, for the library's SQLite index, `PRAGMA max_page_count`
set to the index's current size, which makes SQLite fail exactly as on a full disk (SQLITE_FULL, "database or disk
is full") whenever the index would grow.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import random_vectors, tiny
from m2iv.errors import M2IVError
from m2iv.vectors.format import save_vectors


def _failing_fsync(monkeypatch, code=errno.ENOSPC):
    def fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fsync)


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def _cli(argv, capsys):
    from m2iv.cli.main import main

    rc = main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.split("\n") if "error:" in line]  # progress bars may share stderr
    assert len(errors) == 1 and "Traceback" not in err, err
    return rc, errors[0]


def _text_data(tmp_path) -> Path:
    rows = [{"images": [], "question": f"Which word is first in: {w} sun?", "answer": w}
            for w in ["red", "blue", "green", "cat", "dog", "moon"] * 3]
    data = tmp_path / "text.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


# -- m2iv.files ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("code", "cause"), [(errno.ENOSPC, "the disk is full"),
                                              (errno.EROFS, "the file system is read-only"),
                                              (errno.EACCES, "permission denied")])
def test_a_refused_write_is_one_line_naming_the_path_and_leaves_no_temp_file(tmp_path, monkeypatch, code, cause):
    from m2iv.files import write_dir_atomic, write_json_atomic

    _failing_fsync(monkeypatch, code)
    with pytest.raises(OSError) as e:  # still an OSError with its errno, for code that handles those
        write_json_atomic(tmp_path / "r.json", {"a": 1})
    assert isinstance(e.value, M2IVError) and e.value.errno == code
    msg = _one_line(e)
    assert msg.startswith(f"cannot write {tmp_path / 'r.json'}: {cause}") and ".tmp-" not in msg
    with pytest.raises(M2IVError) as e:
        write_dir_atomic(tmp_path / "d", {"x.txt": lambda p: p.write_text("x")})
    assert f"cannot write {tmp_path / 'd'}: {cause}" in _one_line(e)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_path_through_a_file_and_an_append_to_a_full_disk_name_the_cause(tmp_path):
    from m2iv.files import append_lines, write_json_atomic

    (tmp_path / "f").write_text("mine")
    with pytest.raises(M2IVError) as e:
        write_json_atomic(tmp_path / "f" / "sub" / "r.json", {})
    assert "a part of the path is a file" in _one_line(e) or "a file stands where a folder" in str(e.value)
    full = tmp_path / "log.jsonl"
    full.symlink_to("/dev/full")  # every write to /dev/full fails with ENOSPC, as on a full disk
    with pytest.raises(M2IVError) as e:
        append_lines(full, ["x\n"])
    assert f"cannot write {full}: the disk is full" in _one_line(e)


def test_train_on_a_full_disk_exits_2_with_one_line_naming_the_path(tmp_path, monkeypatch, capsys):
    # Was: exit 1 with a bare "OSError: [Errno 28] No space left on device".
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    _failing_fsync(monkeypatch)
    rc, err = _cli(["train", "tiny:llama", "--task", f"jsonl:{_text_data(tmp_path)}", "--shots", "2", "--steps", "2",
                    "--val-every", "0", "--out", str(tmp_path / "A")], capsys)
    assert rc == 2 and "the disk is full" in err and str(tmp_path) in err and "Errno" not in err


def test_train_log_on_a_full_disk_is_one_line_naming_the_log(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    (tmp_path / "A.train").mkdir()
    (tmp_path / "A.train" / "train_log.jsonl").symlink_to("/dev/full")
    rc, err = _cli(["train", "tiny:llama", "--task", f"jsonl:{_text_data(tmp_path)}", "--shots", "2", "--steps", "2",
                    "--val-every", "0", "--out", str(tmp_path / "A")], capsys)
    assert rc == 2 and f"cannot write {tmp_path / 'A.train' / 'train_log.jsonl'}: the disk is full" in err


# -- the library ------------------------------------------------------------------------------------------------
def _full_index(monkeypatch):
    """Every index connection from now on can no longer grow its database (SQLITE_FULL, as on a full disk)."""
    import m2iv.library.schema as schema

    real = sqlite3.connect

    def connect(*args, **kwargs):
        conn = real(*args, **kwargs)
        try:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {max(1, pages)}")
        except sqlite3.DatabaseError:
            pass  # not a database: connect() reports that itself
        return conn

    monkeypatch.setattr(schema.sqlite3, "connect", connect)


def _library(tmp_path, n=2):
    from m2iv.library.store import Library

    lm = tiny("llama")
    root = tmp_path / "lib"
    dirs = [save_vectors(random_vectors(lm, seed=i), tmp_path / f"v{i}", adapter=lm.adapter, base_model="tiny:llama",
                         method_config={"task": "t"}) for i in range(n + 1)]
    with Library(root) as lib:
        for i in range(n):
            lib.add(dirs[i], name=f"e{i}")
    return root, dirs[n]


def test_library_add_on_a_full_disk_names_the_disk_not_the_index(tmp_path, monkeypatch):
    # Was: "not a readable SQLite database ... rebuild it with check --repair" (or a bare sqlite3 error).
    from m2iv.library.store import Library

    root, extra = _library(tmp_path)
    _full_index(monkeypatch)
    with Library(root) as lib, pytest.raises(M2IVError) as e:
        lib.add(extra, name="more", description="long " * 4000)  # needs new pages: the index must grow
    msg = _one_line(e)
    assert f"cannot write {root / 'index.sqlite'}: the disk is full" in msg and "repair" not in msg
    monkeypatch.undo()
    with Library(root) as lib:
        assert [x.name for x in lib.entries()] == ["e0", "e1"]
        lib.add(extra, name="more")  # with space again, the same add works


def test_library_add_when_the_blob_cannot_be_written_names_the_blob(tmp_path, monkeypatch):
    from m2iv.library.store import Library

    root, extra = _library(tmp_path, n=1)
    _failing_fsync(monkeypatch)
    with Library(root) as lib, pytest.raises(M2IVError) as e:
        lib.add(extra, name="more")
    assert "cannot write" in _one_line(e) and f"{root / 'blobs'}" in str(e.value) and "the disk is full" in str(e.value)


def test_repair_on_a_full_disk_never_replaces_the_index(tmp_path, monkeypatch):
    # Was: the damaged index was moved aside and a 0-byte index.sqlite left in its place until a second repair.
    from m2iv.library.repair import check
    from m2iv.library.store import Library

    root, _ = _library(tmp_path)
    index = root / "index.sqlite"
    index.write_bytes(b"not a database, " * 64)
    damaged = index.read_bytes()
    _full_index(monkeypatch)
    with pytest.raises(M2IVError) as e:
        check(root, repair=True)
    assert "the disk is full" in _one_line(e)
    assert index.read_bytes() == damaged  # the old index is where it was, not a 0-byte file
    assert sorted(p.name for p in root.iterdir()) == ["blobs", "index.sqlite"]  # nothing half-built left behind
    monkeypatch.undo()
    report = check(root, repair=True)
    assert report.ok, report.problems
    with Library(root) as lib:
        assert [x.name for x in lib.entries()] == ["e0", "e1"]


def test_repair_of_a_readable_index_on_a_full_disk_leaves_it_as_it_was(tmp_path, monkeypatch):
    from m2iv.library.repair import check
    from m2iv.library.store import Library

    root, extra = _library(tmp_path, n=1)
    with Library(root) as lib:  # drop a row (repair would restore it from its sidecar) and shrink the file
        lib.add(extra, name="big", description="long " * 4000)
        with lib.index.write() as c:
            c.execute("DELETE FROM tags WHERE entry_id IN (SELECT id FROM entries WHERE name = 'big')")
            c.execute("DELETE FROM entries WHERE name = 'big'")
        lib.index.conn.execute("VACUUM")
    _full_index(monkeypatch)
    with pytest.raises(M2IVError, match="the disk is full"):
        check(root, repair=True)
    monkeypatch.undo()
    with Library(root) as lib:
        assert [x.name for x in lib.entries()] == ["e0"]
    assert check(root, repair=True).ok
    with Library(root) as lib:
        assert [x.name for x in lib.entries()] == ["e0", "big"]


def test_library_export_refuses_an_existing_file_unless_forced(tmp_path, monkeypatch, capsys):
    # Was: `library export E OUT.tar` silently replaced an existing OUT.tar.
    root, _ = _library(tmp_path, n=1)
    out = tmp_path / "mine.tar"
    out.write_bytes(b"my archive")
    rc, err = _cli(["library", "export", "e0", str(out), "--root", str(root)], capsys)
    assert rc == 2 and f"{out} already exists; pass --force" in err and out.read_bytes() == b"my archive"
    from m2iv.cli.main import main

    assert main(["library", "export", "e0", str(tmp_path / "d"), "--root", str(root)]) == 0
    assert json.loads((tmp_path / "d" / "library.json").read_text())["name"] == "e0"
    rc, err = _cli(["library", "export", "e0", str(tmp_path / "d"), "--root", str(root)], capsys)
    assert rc == 2 and "already exists" in err
    assert main(["library", "export", "e0", str(out), "--root", str(root), "--force"]) == 0
    assert out.read_bytes() != b"my archive"
    (tmp_path / "d" / "notes.txt").write_text("mine")  # a folder holding a user's file: refused even with --force
    rc, err = _cli(["library", "export", "e0", str(tmp_path / "d"), "--root", str(root), "--force"], capsys)
    assert rc == 2 and (tmp_path / "d" / "notes.txt").read_text() == "mine"


def test_library_export_to_a_read_only_folder_is_one_line_naming_the_target(tmp_path, monkeypatch, capsys):
    # Was: exit 1 naming a temp file (".x.tar.tmp-...").
    root, _ = _library(tmp_path, n=1)
    _failing_fsync(monkeypatch, errno.EROFS)
    rc, err = _cli(["library", "export", "e0", str(tmp_path / "x.tar"), "--root", str(root)], capsys)
    assert rc == 2 and f"cannot write {tmp_path / 'x.tar'}: the file system is read-only" in err
    assert ".tmp-" not in err and not list(tmp_path.glob(".x.tar*"))


# -- home, pipes --------------------------------------------------------------------------------------------------
def test_m2iv_home_that_is_a_file_is_refused_before_the_model_loads(tmp_path, monkeypatch, capsys):
    # Was: NotADirectoryError, exit 1, after the model had loaded.
    home = tmp_path / "home"
    home.write_text("not a folder")
    monkeypatch.setenv("M2IV_HOME", str(home))
    monkeypatch.setattr("m2iv.models.loading.load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    rc, err = _cli(["train", "tiny:llama", "--task", f"jsonl:{_text_data(tmp_path)}", "--out", str(tmp_path / "A")],
                   capsys)
    assert rc == 2 and f"M2IV_HOME {home} is a file, not a folder" in err
    monkeypatch.setenv("M2IV_HOME", str(home / "sub"))
    rc, err = _cli(["library", "list"], capsys)
    assert rc == 2 and f"goes through the file {home}" in err


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    # Was: `m2iv library show X --json | head -c 100` printed a BrokenPipeError traceback and exited 1.
    read, write = os.pipe()
    os.close(read)  # the reader is gone before m2iv writes: every write gets EPIPE
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "M2IV_LIBRARY": str(tmp_path / "lib")}
    proc = subprocess.run([sys.executable, "-m", "m2iv.cli.main", "tasks"], stdout=write, stderr=subprocess.PIPE,
                          env=env, timeout=120)
    os.close(write)
    assert proc.stderr == b"" and proc.returncode == 141
