"""Careless and hostile input (issue 15): nothing a user put on disk is lost."""

from __future__ import annotations

import pytest

from conftest import random_vectors, tiny
from m2iv.errors import M2IVError
from m2iv.vectors.format import load_vectors, save_vectors


def test_saving_vectors_over_a_directory_of_user_files_is_refused_and_keeps_them(tmp_path):
    # Was: the atomic writer renamed the directory aside and rmtree'd it, user files included.
    lm = tiny("llama")
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(M2IVError, match="did not write"):
        save_vectors(random_vectors(lm), out, adapter=lm.adapter, base_model="tiny:llama")
    assert (out / "thesis.tex").read_text() == "years of work"


def test_saving_over_an_existing_vector_directory_replaces_it(tmp_path):
    lm = tiny("llama")
    out = tmp_path / "out"
    save_vectors(random_vectors(lm, seed=0), out, adapter=lm.adapter, base_model="tiny:llama")
    new = random_vectors(lm, seed=1)
    save_vectors(new, out, adapter=lm.adapter, base_model="tiny:llama")
    loaded, _ = load_vectors(out, adapter=lm.adapter)
    for k, v in new.params.items():
        assert bool((loaded.params[k].cpu() == v.detach().cpu()).all())


# ===== section: library (archive sizes, index, blobs, check --repair) =====
def _lib_vec_dir(lm, path, seed=0, family="llama"):
    return save_vectors(random_vectors(lm, seed=seed), path, adapter=lm.adapter, base_model=f"tiny:{family}",
                        method_config={"task": "t"}, metrics={"acc": 0.5})


def _edit_config(directory, **changes):
    import json

    from m2iv.constants import CONFIG_NAME

    cfg = json.loads((directory / CONFIG_NAME).read_text())
    cfg.update(changes)
    (directory / CONFIG_NAME).write_text(json.dumps(cfg))
    return directory


def _no_vectors_built(monkeypatch):
    """Make building any InContextVectors fail loudly: a hostile config must be refused before allocation."""
    from m2iv.vectors.vector import InContextVectors

    def boom(*a, **k):
        raise AssertionError("vectors were built (memory allocated) before the config was checked")

    monkeypatch.setattr(InContextVectors, "__init__", boom)


def test_library_import_of_a_10kb_tar_declaring_hidden_size_125m_is_refused_before_allocating(tmp_path, monkeypatch):
    # Was: `library import` built the vectors the config declared (2.2 GB RSS) before noticing the shapes.
    import tarfile

    from m2iv.library.store import Library

    lm = tiny("llama")
    d = _edit_config(_lib_vec_dir(lm, tmp_path / "v" / "evil"), hidden_size=125_000_000)
    with tarfile.open(tmp_path / "evil.tar", "w") as t:
        t.add(d, arcname="evil")
    assert (tmp_path / "evil.tar").stat().st_size < 20_000
    _no_vectors_built(monkeypatch)
    with Library(tmp_path / "lib") as lib:
        with pytest.raises(M2IVError, match=r"hidden_size is 125000000; it must be an integer in \[1, 65536\]") as e:
            lib.import_path(tmp_path / "evil.tar")
        assert "\n" not in str(e.value) and len(lib) == 0


@pytest.mark.parametrize("field,value", [
    ("hidden_size", -64), ("num_heads", 0), ("num_layers", 5000), ("head_dim", "16"), ("num_layers", True),
    ("sites", ["attn", "mlp"]), ("sites", {"attn": {"operator": "linear", "layers": "0-1"}}),
    ("sites", {"attn": {"operator": "linear", "layers": [0, 7]}}), ("sites", {"attn": "linear"}),
    ("sites", {"nowhere": {"operator": "linear", "layers": [0]}}), ("dtype", 7), ("token_policy", None),
    ("method", ["m2iv"]), ("sha256", 12)])
def test_vector_config_with_a_wrong_type_or_size_is_one_line_naming_the_field(tmp_path, monkeypatch, field, value):
    # Was: negative sizes, `sites` as a list and other wrong types raised RuntimeError/AttributeError tracebacks.
    from m2iv.library.store import Library

    lm = tiny("llama")
    d = _edit_config(_lib_vec_dir(lm, tmp_path / "v"), **{field: value})
    _no_vectors_built(monkeypatch)
    for load in (lambda: load_vectors(d), lambda: Library(tmp_path / "lib").add(d)):
        with pytest.raises(M2IVError, match=f"field {field}") as e:
            load()
        assert "\n" not in str(e.value)


def test_config_declaring_more_tensor_bytes_than_the_file_holds_is_refused_before_allocating(tmp_path, monkeypatch):
    # In bounds (1024 layers of 65536) but the 1 KB tensor file cannot hold them: refused before 1 GB is allocated.
    lm = tiny("llama")
    layers = list(range(1024))
    d = _edit_config(_lib_vec_dir(lm, tmp_path / "v"), num_layers=1024, hidden_size=65536,
                     sites={"attn": {"operator": "linear", "layers": layers, "scale_activation": "identity"}})
    _no_vectors_built(monkeypatch)
    with pytest.raises(M2IVError, match="declares 268443648 bytes of tensors but only"):
        load_vectors(d)


@pytest.mark.parametrize("kind,why", [("many", "more than 16 members"), ("twice", "appears twice"),
                                      ("deep", "deeper or longer")])
def test_tar_member_count_duplicates_and_depth_are_checked_before_extracting(tmp_path, kind, why):
    import io
    import tarfile

    from m2iv.library.store import Library

    names = {"many": [f"v/f{i}.txt" for i in range(40)], "twice": ["v/a.txt", "v/a.txt"],
             "deep": ["v/a/b/c/d/e.txt"]}[kind]
    with tarfile.open(tmp_path / "bad.tar", "w") as t:
        for n in names:
            info = tarfile.TarInfo(n)
            info.size = 2
            t.addfile(info, io.BytesIO(b"hi"))
    with Library(tmp_path / "lib") as lib:
        with pytest.raises(M2IVError, match=why):
            lib.import_path(tmp_path / "bad.tar")
        assert not list((lib.root / "tmp").iterdir())


def _filled_library(tmp_path, n=3):
    """A library of `n` entries (tags, one with a prototype) and its root; closed (WAL checkpointed)."""
    import numpy as np

    from m2iv.library.store import Library

    lm = tiny("llama")
    root = tmp_path / "lib"
    with Library(root) as lib:
        for i in range(n):
            e = lib.add(_lib_vec_dir(lm, tmp_path / f"v{i}", seed=i), name=f"e{i}", tags=["t", f"only{i}"])
        lib.set_prototype(e.id, np.arange(64, dtype=np.float32), {"task": "t", "n": 1})
        lib.tag("e0", add=("extra",))
        before = {x.id: x.to_json() for x in lib.entries()}
    return root, before


def _cli(root, *args):
    import contextlib
    import io

    from m2iv.cli.library import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([*args, "--root", str(root)])
    return rc, out.getvalue(), err.getvalue()


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "index.sqlite" not in p.name)


@pytest.mark.parametrize("damage", ["zero-bytes", "garbage"])
def test_damaged_index_is_an_error_naming_repair_and_repair_rebuilds_it_from_the_sidecars(tmp_path, damage):
    # Was: a zero-byte index.sqlite read as an empty library (every blob orphaned, configs lost with the index).
    from m2iv.library.store import Library

    root, before = _filled_library(tmp_path)
    files = _files(root)
    (root / "index.sqlite").write_bytes(b"" if damage == "zero-bytes" else b"not a database " * 300)
    with pytest.raises(M2IVError, match="m2iv library check --repair") as e:
        Library(root)
    assert "\n" not in str(e.value)
    rc, out, err = _cli(root, "list")
    assert rc == 2 and "check --repair" in err and "(no entries)" not in out
    rc, out, _ = _cli(root, "check")
    assert rc == 1 and "problem:" in out and "--repair" in out
    assert _files(root) == files  # checking changes nothing
    rc, out, _ = _cli(root, "check", "--repair")
    assert rc == 0, out
    assert list(root.glob("index.sqlite.broken-*"))  # the damaged index is kept, not deleted
    assert set(files) <= set(_files(root))
    with Library(root) as lib:
        assert {x.id: x.to_json() for x in lib.entries()} == before
        assert [x.name for x in lib.entries(tag=["t", "extra"])] == ["e0"]
        assert lib.get("e2").prototype is not None
        lib.export("e1", tmp_path / "out.tar")
        lib.load("e1")
    assert _cli(root, "check")[0] == 0


def test_a_bad_json_row_is_reported_and_skipped_by_list_and_repaired_from_its_sidecar(tmp_path):
    # Was: one row with bad JSON made `m2iv library list` (and every search) die with a JSONDecodeError.
    import sqlite3

    from m2iv.library.store import Library

    root, before = _filled_library(tmp_path)
    with sqlite3.connect(root / "index.sqlite") as c:
        c.execute("UPDATE entries SET metrics = '{not json' WHERE name = 'e1'")
    c.close()
    rc, out, err = _cli(root, "list")
    assert rc == 0 and "e0" in out and "e2" in out and "e1" not in out
    assert err.count("\n") == 1 and "check --repair" in err
    assert _cli(root, "check")[0] == 1
    rc, out, _ = _cli(root, "check", "--repair")
    assert rc == 0, out
    with Library(root) as lib:
        assert {x.id: x.to_json() for x in lib.entries()} == before


def test_a_corrupt_page_of_the_index_skips_its_rows_in_list_and_repair_restores_them(tmp_path):
    import sqlite3

    from m2iv.library.store import Library

    root, before = _filled_library(tmp_path, n=8)
    with sqlite3.connect(root / "index.sqlite") as c:
        page = c.execute("PRAGMA page_size").fetchone()[0]
        rootpage = c.execute("SELECT rootpage FROM sqlite_master WHERE name = 'entries'").fetchone()[0]
    c.close()
    data = bytearray((root / "index.sqlite").read_bytes())
    node = data[(rootpage - 1) * page:rootpage * page]
    assert node[0] == 0x05  # an interior page: the table spans several leaves
    last_leaf = int.from_bytes(node[8:12], "big")
    data[(last_leaf - 1) * page:last_leaf * page] = b"\xff" * page
    (root / "index.sqlite").write_bytes(bytes(data))
    rc, out, err = _cli(root, "list")
    assert rc == 0 and "e0" in out and 1 <= err.count("\n") < 8 and "check --repair" in err
    rc, out, _ = _cli(root, "check", "--repair")
    assert rc == 0, out
    with Library(root) as lib:
        assert {x.id: x.to_json() for x in lib.entries()} == before


# (end of section: library)


# ===== section: training checkpoints and eval run identity, images =====
# (end of section: checkpoints, run identity, images)


# ===== section: CLI (one-line errors, validators, unwritable --out, hub offline) =====
# (end of section: CLI)


# ===== section: sandbox build (no pickles, private work dir) =====
# (end of section: sandbox)
