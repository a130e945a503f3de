"""Careless and hostile input (issue 15): nothing a user put on disk is lost."""

from __future__ import annotations

import pytest

from conftest import random_vectors, tiny, train_saved
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
    ("method", ["m2iv"]), ("sha256", 12),
    ("sites", {"attn_head": {"operator": "virtual_kv", "layers": [0], "virtual_tokens": 10**9, "rank": 8}}),
    ("sites", {"attn_head": {"operator": "virtual_kv", "layers": [0], "virtual_tokens": 8, "rank": -1}}),
    ("sites", {"attn_head": {"operator": "gated", "layers": [0], "normaliser": "everything"}})])
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


def _library_cli(root, *args):
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
    rc, out, err = _library_cli(root, "list")
    assert rc == 2 and "check --repair" in err and "(no entries)" not in out
    rc, out, _ = _library_cli(root, "check")
    assert rc == 1 and "problem:" in out and "--repair" in out
    assert _files(root) == files  # checking changes nothing
    rc, out, _ = _library_cli(root, "check", "--repair")
    assert rc == 0, out
    assert list(root.glob("index.sqlite.broken-*"))  # the damaged index is kept, not deleted
    assert set(files) <= set(_files(root))
    with Library(root) as lib:
        assert {x.id: x.to_json() for x in lib.entries()} == before
        assert [x.name for x in lib.entries(tag=["t", "extra"])] == ["e0"]
        assert lib.get("e2").prototype is not None
        lib.export("e1", tmp_path / "out.tar")
        lib.load("e1")
    assert _library_cli(root, "check")[0] == 0


def test_a_bad_json_row_is_reported_and_skipped_by_list_and_repaired_from_its_sidecar(tmp_path):
    # Was: one row with bad JSON made `m2iv library list` (and every search) die with a JSONDecodeError.
    import sqlite3

    from m2iv.library.store import Library

    root, before = _filled_library(tmp_path)
    with sqlite3.connect(root / "index.sqlite") as c:
        c.execute("UPDATE entries SET metrics = '{not json' WHERE name = 'e1'")
    c.close()
    rc, out, err = _library_cli(root, "list")
    names = [line.split()[1] for line in out.splitlines()[1:]]  # the NAME column (ids are random hex)
    assert rc == 0 and names == ["e0", "e2"]
    assert err.count("\n") == 1 and "check --repair" in err
    assert _library_cli(root, "check")[0] == 1
    rc, out, _ = _library_cli(root, "check", "--repair")
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
    rc, out, err = _library_cli(root, "list")
    assert rc == 0 and "e0" in out and 1 <= err.count("\n") < 8 and "check --repair" in err
    rc, out, _ = _library_cli(root, "check", "--repair")
    assert rc == 0, out
    with Library(root) as lib:
        assert {x.id: x.to_json() for x in lib.entries()} == before


def test_library_export_over_a_folder_of_user_files_is_refused_and_keeps_them(tmp_path):
    # Was: `m2iv library export E DIR` renamed DIR aside and rmtree'd it with the user's files in it.
    root, _ = _filled_library(tmp_path)
    out = tmp_path / "exported"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    rc, _, err = _library_cli(root, "export", "e1", str(out))
    assert rc == 2 and "already exists; pass --force" in err and err.count("\n") == 1
    rc, _, err = _library_cli(root, "export", "e1", str(out), "--force")
    assert rc == 2 and "is not a vector directory" in err and err.count("\n") == 1
    assert (out / "notes.txt").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert _library_cli(root, "export", "e1", str(tmp_path / "fresh"))[0] == 0  # an empty or new folder is fine


# (end of section: library)


# ===== section: training checkpoints and eval run identity, images =====
def _train_setup(tmp_path, monkeypatch):
    from conftest import fixture_task, for_model, method_splits
    from m2iv.train.config import TeacherConfig, TrainConfig

    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    lm = tiny("llama")
    sp = for_model(lm, method_splits(tmp_path / "data", 10, 6))
    cfg = TrainConfig(steps=6, batch_size=4, val_every=0, checkpoint_every=2, warmup=0.0,
                      teacher=TeacherConfig(shots=2, topk=8))
    return lm, fixture_task(), sp, cfg


def _train(lm, task, sp, cfg, out, sites=("attn", "mlp"), stop_after=None):
    from m2iv.methods.m2iv.method import M2IV

    method = M2IV({"method_config": {"sites": list(sites)}})
    return train_saved(lm, task, sp, method.make_vectors(lm), cfg, out, show_progress=False, stop_after=stop_after,
                         method_config=method.method_config().to_json())


@pytest.mark.parametrize("change", ["model", "task", "data", "sites"])
def test_checkpoint_of_another_model_task_data_or_layout_is_refused_and_kept(tmp_path, monkeypatch, change):
    # Was: a finished checkpoint was "resumed" for another model/task/data (0 steps trained, saved with the new
    # model's fingerprint); another --sites died with a KeyError.
    from dataclasses import replace

    lm, task, sp, cfg = _train_setup(tmp_path, monkeypatch)
    _train(lm, task, sp, cfg, tmp_path / "v")
    ck = tmp_path / "v.train" / "checkpoint"
    before = {p.name: p.read_bytes() for p in ck.iterdir()}
    sites = ("attn", "mlp")
    if change == "model":
        monkeypatch.setattr(type(lm), "fingerprint", property(lambda self: "0123456789abcdef"))  # other weights
    elif change == "task":
        task = replace(task, name="other-task")
    elif change == "data":
        sp = {**sp, "train": sp["train"][::-1]}
    else:
        sites = ("attn",)
    field = "layout" if change == "sites" else change
    with pytest.raises(M2IVError, match=f"another run.*{field}.*another --out") as e:
        _train(lm, task, sp, cfg, tmp_path / "v", sites=sites)
    assert "\n" not in str(e.value)
    assert {p.name: p.read_bytes() for p in ck.iterdir()} == before


def test_checkpoint_of_the_same_run_still_resumes(tmp_path, monkeypatch):
    lm, task, sp, cfg = _train_setup(tmp_path, monkeypatch)
    _, info = _train(lm, task, sp, cfg, tmp_path / "v", stop_after=4)
    assert info["steps_done"] == 4
    _, info = _train(lm, task, sp, cfg, tmp_path / "v")
    assert info["steps_done"] == 6 and (tmp_path / "v" / "m2iv_config.json").is_file()


@pytest.mark.parametrize("damage", ["truncated-tensors", "bad-json"])
def test_corrupt_checkpoint_is_a_one_line_error_and_nothing_is_deleted(tmp_path, monkeypatch, damage):
    lm, task, sp, cfg = _train_setup(tmp_path, monkeypatch)
    _train(lm, task, sp, cfg, tmp_path / "v", stop_after=4)
    ck = tmp_path / "v.train" / "checkpoint"
    if damage == "truncated-tensors":
        data = (ck / "state.safetensors").read_bytes()
        (ck / "state.safetensors").write_bytes(data[: len(data) // 2])
    else:
        (ck / "trainer_state.json").write_text('{"step": 4, "best"')
    before = {p.name: p.read_bytes() for p in ck.iterdir()}
    with pytest.raises(M2IVError, match="corrupt.*delete") as e:
        _train(lm, task, sp, cfg, tmp_path / "v")
    assert "\n" not in str(e.value)
    assert {p.name: p.read_bytes() for p in ck.iterdir()} == before

def _eval_setup(tmp_path, family="llama"):
    from conftest import fixture_task, for_model, write_samples

    lm = tiny(family)
    splits = {"train": [], "support": write_samples(tmp_path / "support", 6, prefix="s"),
              "test": write_samples(tmp_path / "test", 4, prefix="t")}
    return lm, fixture_task(), for_model(lm, splits)


def test_eval_does_not_resume_predictions_of_vectors_retrained_at_the_same_path(tmp_path):
    # Was: the run identity held only the vectors' path, so old predictions were resumed for new vectors.
    from m2iv.evaluate.runner import EvalConfig, evaluate
    from m2iv.methods import get_method

    lm, task, splits = _eval_setup(tmp_path)
    vec = tmp_path / "vec"
    save_vectors(random_vectors(lm, seed=0), vec, adapter=lm.adapter, base_model="tiny:llama")
    evaluate(lm, task, get_method("vectors", {"vectors": str(vec)}), EvalConfig(batch_size=2), tmp_path / "o",
             splits=splits)
    evaluate(lm, task, get_method("vectors", {"vectors": str(vec)}), EvalConfig(batch_size=2), tmp_path / "o",
             splits=splits)  # the same vectors: resumes
    save_vectors(random_vectors(lm, seed=1), vec, adapter=lm.adapter, base_model="tiny:llama")  # retrained
    before = (tmp_path / "o" / "predictions.jsonl").read_bytes()
    with pytest.raises(M2IVError, match="different run.*vectors.*another --out") as e:
        evaluate(lm, task, get_method("vectors", {"vectors": str(vec)}), EvalConfig(batch_size=2), tmp_path / "o",
                 splits=splits)
    assert "\n" not in str(e.value)
    assert (tmp_path / "o" / "predictions.jsonl").read_bytes() == before


def test_eval_does_not_adopt_predictions_without_a_run_identity(tmp_path):
    # Was: predictions.jsonl without run.json was adopted (resumed) by whatever method ran next.
    from m2iv.evaluate.runner import EvalConfig, evaluate
    from m2iv.methods import get_method

    lm, task, splits = _eval_setup(tmp_path)
    evaluate(lm, task, get_method("zero-shot"), EvalConfig(limit=2), tmp_path / "o", splits=splits)
    (tmp_path / "o" / "run.json").unlink()
    before = (tmp_path / "o" / "predictions.jsonl").read_bytes()
    with pytest.raises(M2IVError, match="no run.json.*another --out"):
        evaluate(lm, task, get_method("icl"), EvalConfig(shots=2, limit=2), tmp_path / "o", splits=splits)
    assert (tmp_path / "o" / "predictions.jsonl").read_bytes() == before
    (tmp_path / "o" / "run.json").write_text('{"task": ')
    with pytest.raises(M2IVError, match="corrupt"):
        evaluate(lm, task, get_method("icl"), EvalConfig(shots=2, limit=2), tmp_path / "o", splits=splits)
    assert (tmp_path / "o" / "predictions.jsonl").read_bytes() == before


def _bomb_png(path, width, height):
    """A valid 1-bit PNG of width x height zeros: a few KB on disk, width*height pixels decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return str(path)


def test_decompression_bomb_is_skipped_or_stops_with_one_line(tmp_path):
    # Was: PIL's DecompressionBombError escaped the image check and aborted eval with a traceback.
    from m2iv.data.images import ImageError
    from m2iv.evaluate.runner import EvalConfig, evaluate
    from m2iv.methods import get_method

    lm, task, splits = _eval_setup(tmp_path, "llava")
    bomb = splits["test"][1].images[0]
    _bomb_png(tmp_path / "test" / "t1_0.png", 20000, 20000)
    assert (tmp_path / "test" / "t1_0.png").stat().st_size < 200_000
    s = evaluate(lm, task, get_method("zero-shot"), EvalConfig(batch_size=4), tmp_path / "o", splits=splits)
    assert s["n"] == 3 and [x["id"] for x in s["skipped"]] == ["t1"] and bomb in s["skipped"][0]["error"]
    with pytest.raises(ImageError, match="pixels") as e:
        evaluate(lm, task, get_method("zero-shot"), EvalConfig(batch_size=4, on_bad_image="stop"), tmp_path / "o2",
                 splits=splits)
    assert isinstance(e.value, M2IVError) and "\n" not in str(e.value)


def test_large_image_is_refused_before_decoding_with_bounded_memory(tmp_path):
    # Was: a 12000 x 12000 PNG (under PIL's own error bound) was decoded in full: gigabytes for one image.
    import subprocess
    import sys

    path = _bomb_png(tmp_path / "big.png", 12000, 12000)
    code = ("import resource, sys\n"
            "from m2iv.data.images import ImageError, open_image\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n    open_image(sys.argv[1]); print('decoded')\n"
            "except ImageError as e:\n    print('refused', e)\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n")
    res = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=120)
    lines = res.stdout.strip().splitlines()
    assert res.returncode == 0 and lines[0].startswith("refused") and "pixels" in lines[0], res.stdout + res.stderr
    assert int(lines[-1]) < 64, f"{lines[-1]} MB more peak memory"


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    from conftest import image
    from m2iv.data.images import ImageError, open_image

    p = tmp_path / "small.png"
    image(0, (40, 30)).save(p)
    assert open_image(p).size == (40, 30)
    monkeypatch.setenv("M2IV_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ImageError, match="over the limit of 1000 pixels.*M2IV_MAX_IMAGE_PIXELS"):
        open_image(p)
    monkeypatch.setenv("M2IV_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(M2IVError, match="M2IV_MAX_IMAGE_PIXELS='lots' is not a positive integer"):
        open_image(p)


def test_truncated_image_is_a_bad_image(tmp_path):
    from conftest import image
    from m2iv.data.images import ImageError, open_image

    p = tmp_path / "cut.png"
    image(0, (64, 64)).save(p)
    p.write_bytes(p.read_bytes()[:-200])
    with pytest.raises(ImageError, match="cut.png"):
        open_image(p)
def test_bench_cell_vectors_are_not_reused_after_a_methods_own_default_changed(tmp_path, monkeypatch):
    # Was: a bench cell's folder was named by the recipe the comparison set, not the method's resolved settings, so
    # vectors trained under an old default (MimIC's val_every 50) were reused after the default changed.
    import dataclasses

    import m2iv.methods.live  # noqa: F401  (registers "live")
    from m2iv.evaluate.bench import Cell, run_plan
    from m2iv.methods.live.config import LIVEConfig
    from m2iv.methods.live.method import LIVE

    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    lm = tiny("idefics3")

    def cell_dirs():
        run_plan(lm, ["sandbox-colour-nonce"], [Cell("live")], tmp_path / "work", shots=2, n_test=2,
                 train_defaults={"steps": 1, "batch_size": 2}, task_overrides={"n_train": 4}, log=lambda *_: None)
        return sorted(p.name for p in (tmp_path / "work" / "sandbox-colour-nonce" / "live-2shot").glob("vectors-*")
                      if "." not in p.name)

    first = cell_dirs()
    assert cell_dirs() == first  # the same settings reuse the same vectors
    @dataclasses.dataclass
    class NewDefault(LIVEConfig):
        lr_vectors: float = 1e-3  # the method's own default changes (a new release, an edited config)

    monkeypatch.setattr(LIVE, "config_cls", NewDefault)
    assert len(cell_dirs()) == 2  # the new default trains new vectors beside the old ones


# (end of section: checkpoints, run identity, images)


# ===== section: CLI (one-line errors, validators, unwritable --out, hub offline) =====
def _no_model(monkeypatch):
    """Loading a model fails the test: every check below must refuse before a model loads."""
    import m2iv.cli.bench
    import m2iv.cli.demo
    import m2iv.cli.evaluate
    import m2iv.cli.train

    def refuse(args):
        raise AssertionError("a model was loaded before the command line was checked")

    for module in (m2iv.cli.bench, m2iv.cli.demo, m2iv.cli.evaluate, m2iv.cli.train):
        monkeypatch.setattr(module, "load_from_args", refuse, raising=False)


def _cli(argv, capsys):
    from m2iv.cli.main import main

    rc = main(argv)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return rc, err


EVAL = ["eval", "tiny:llava", "--task", "easy-vqa"]


@pytest.mark.parametrize(("argv", "flag", "value"), [
    # Were: ValueError tracebacks (random.sample, range() step 0) after the model had loaded.
    ([*EVAL, "--method", "icl", "--shots", "-1"], "--shots", "-1"),
    ([*EVAL, "--batch-size", "0"], "--batch-size", "0"),
    ([*EVAL, "--n-test", "-3"], "--n-test", "-3"),
    ([*EVAL, "--n-test", "0"], "--n-test", "0"),
    ([*EVAL, "--seed", "x"], "--seed", "'x'"),
    (["train", "tiny:llava", "--task", "easy-vqa", "--steps", "0"], "--steps", "0"),
    (["train", "tiny:llava", "--task", "easy-vqa", "--checkpoint-every", "0"], "--checkpoint-every", "0"),
    (["train", "tiny:llava", "--task", "easy-vqa", "--temperature", "0"], "--temperature", "0"),
    (["train", "tiny:llava", "--task", "easy-vqa", "--lr-vectors", "nan"], "--lr-vectors", "nan"),
    (["train", "tiny:llava", "--task", "easy-vqa", "--train-batch-size", "-2"], "--train-batch-size", "-2"),
    (["bench", "suite", "tiny:llava", "--task", "easy-vqa", "--batch-size", "0"], "--batch-size", "0"),
    (["bench", "icl-curve", "tiny:llava", "--task", "easy-vqa", "--shots", "0,4,-1"], "--shots", "-1"),
    (["bench", "efficiency", "tiny:llava", "--task", "easy-vqa", "--n-test", "0"], "--n-test", "0"),
    (["bench", "compare", "tiny:llava", "--task", "easy-vqa,", "--method", "icl"], "--task", "empty name"),
    (["demo", "tiny:llava", "--steps", "-1"], "--steps", "-1"),
])
def test_bad_numbers_are_refused_in_one_line_before_a_model_loads(tmp_path, monkeypatch, capsys, argv, flag, value):
    _no_model(monkeypatch)
    rc, err = _cli([*argv, "--out", str(tmp_path / "out")], capsys)
    assert rc == 2 and err.startswith(f"error: argument {flag}: ") and value in err


def test_eval_limit_is_gone_and_a_negative_count_is_refused(tmp_path, monkeypatch, capsys):
    # Was: `m2iv eval --limit -3` evaluated all but the last 3 test queries and exited 0.
    _no_model(monkeypatch)
    rc, err = _cli([*EVAL, "--limit", "-3", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "--limit is now --n-test" in err
    rc, err = _cli([*EVAL, "--n-test", "-3", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "-3" in err


def _file(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    return f


@pytest.mark.parametrize("argv", [EVAL, ["train", "tiny:llava", "--task", "easy-vqa"], ["demo", "tiny:llava"],
                                  ["report", "summary.json"]])
def test_out_that_is_a_file_where_a_folder_is_expected_is_refused_up_front(tmp_path, monkeypatch, capsys, argv):
    # Was: FileExistsError from mkdir, after the model had loaded and (for train) the teacher had run.
    _no_model(monkeypatch)
    f = _file(tmp_path)
    rc, err = _cli([*argv, "--out", str(f)], capsys)
    assert rc == 2 and f"--out {f} is a file, not a folder" in err and f.read_text() == "mine"


def test_out_through_a_file_is_refused_up_front(tmp_path, monkeypatch, capsys):
    _no_model(monkeypatch)
    f = _file(tmp_path)
    rc, err = _cli([*EVAL, "--out", str(f / "run")], capsys)
    assert rc == 2 and f"goes through {f}, which is a file" in err


def test_bench_out_that_is_a_folder_is_refused_up_front(tmp_path, monkeypatch, capsys):
    _no_model(monkeypatch)
    rc, err = _cli(["bench", "suite", "tiny:llava", "--task", "easy-vqa", "--out", str(tmp_path)], capsys)
    assert rc == 2 and "is a folder, not a file" in err


def test_out_in_a_folder_that_cannot_be_written_is_refused_up_front(tmp_path, monkeypatch, capsys):
    # Was: PermissionError / FileNotFoundError from mkdir once the model had loaded.
    import tempfile
    from pathlib import Path

    def writable(folder: Path) -> bool:
        try:
            with tempfile.TemporaryFile(dir=folder):
                return True
        except OSError:
            return False

    _no_model(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:  # root may write in a 0500 folder; a read-only place such as /sys refuses everyone
        target = next((d for d in (locked, Path("/sys")) if d.is_dir() and not writable(d)), None)
        if target is None:
            pytest.skip("no unwritable folder on this machine")
        rc, err = _cli([*EVAL, "--out", str(target / "run")], capsys)
        assert rc == 2 and f"cannot write in {target}" in err
    finally:
        locked.chmod(0o700)


def test_method_config_with_a_value_of_the_wrong_type_is_one_line(tmp_path, monkeypatch, capsys):
    _no_model(monkeypatch)
    rc, err = _cli(["train", "tiny:llava", "--task", "easy-vqa", "--method", "tv", "--method-config", "shots=abc",
                    "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and err == "error: --method-config shots=abc: expected int\n"


def test_unknown_task_or_method_in_a_bench_list_is_refused_before_a_model_loads(tmp_path, monkeypatch, capsys):
    _no_model(monkeypatch)
    rc, err = _cli(["bench", "compare", "tiny:llava", "--task", "easy-vqa,sandbox-colour-words", "--method", "icl",
                    "--out", str(tmp_path / "o.json")], capsys)
    assert rc == 2 and "unknown task 'sandbox-colour-words'" in err
    rc, err = _cli(["bench", "compare", "tiny:llava", "--task", "easy-vqa", "--method", "icl,m2vi",
                    "--out", str(tmp_path / "o.json")], capsys)
    assert rc == 2 and "unknown method 'm2vi'" in err


def test_offline_hub_id_in_eval_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, err = _cli(["eval", "nobody/not-a-model", "--task", "easy-vqa", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "'nobody/not-a-model' is not in the Hugging Face cache" in err


# (end of section: CLI)


# ===== section: sandbox build (no pickles, private work dir) =====
_PICKLE = (r"\btorch\.(save|load)\s*\(|\bimport (cloud)?pickle\b|\bfrom (cloud)?pickle\b|\bpickle\.|"
            r"\bdill\b|\bjoblib\b|allow_pickle\s*=\s*True|weights_only\s*=\s*False")


def test_no_pickle_is_read_or_written_anywhere_in_src():
    # Was: sandbox/train.py torch.save'd its stage states into /tmp/m2iv-sandbox-train and torch.load'ed them back.
    import re
    from pathlib import Path

    src, pattern = Path(__file__).resolve().parents[1] / "src" / "m2iv", re.compile("".join(_PICKLE))
    hits = [f"{p.relative_to(src)}:{i}: {line.strip()}" for p in sorted(src.rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits


def test_sandbox_trainer_state_round_trips_through_safetensors(tmp_path):
    import json

    import torch

    from m2iv.models.loading import load_model
    from m2iv.sandbox.recipe.meta import attach_lora, lora_state, save_lora, unpack_lora
    from m2iv.sandbox.recipe.state import load_state, save_state
    from m2iv.sandbox.recipe.vision import make_heads

    model = load_model("tiny:idefics3").model  # a fresh one: LoRA hooks must not reach the shared tiny models
    heads = make_heads(model)
    parts = {"vision": model.model.vision_model.state_dict(), "heads": heads.state_dict(),
             "connector": model.model.connector.state_dict()}
    path = save_state(tmp_path / "aligned.safetensors", parts)
    header = json.loads(path.read_bytes()[8: 8 + int.from_bytes(path.read_bytes()[:8], "little")])
    assert header["__metadata__"]["format"] == "m2iv-sandbox-train-1"  # a safetensors file, not a zip of pickles
    back = load_state(path)
    assert back.keys() == parts.keys()
    for part, sd in parts.items():
        assert back[part].keys() == sd.keys() and all(torch.equal(back[part][k], v) for k, v in sd.items())
    lora = attach_lora(model, rank=2, alpha=4)
    with torch.no_grad():
        for m in lora.values():
            m.B.normal_()
    state = lora_state(lora)
    again = unpack_lora(load_state(save_lora(tmp_path / "lora.safetensors", state))["lora"])
    assert again.keys() == state.keys()
    assert all(torch.equal(again[k][ab], state[k][ab]) for k in state for ab in ("A", "B"))
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically: no temp files left


def test_sandbox_work_dir_defaults_to_a_private_folder_under_m2iv_home(tmp_path, monkeypatch):
    # Was: /tmp/m2iv-sandbox-train, where another user could plant the pickles the next run loaded.
    import stat

    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    from m2iv.sandbox.recipe.config import default_work_dir
    from m2iv.sandbox.recipe.state import private_dir

    work = private_dir(default_work_dir())
    assert work.parent == tmp_path / "home" and stat.S_IMODE(work.stat().st_mode) == 0o700


@pytest.mark.parametrize("shared", ["world-writable", "tmp"])
def test_a_work_dir_others_can_write_is_refused_in_one_line(tmp_path, shared):
    from pathlib import Path

    from m2iv.sandbox.recipe.state import private_dir

    work = tmp_path / "shared"
    if shared == "tmp":
        work = Path("/tmp")
    else:
        work.mkdir()
        work.chmod(0o777)
    with pytest.raises(M2IVError) as e:
        private_dir(work)
    assert "\n" not in str(e.value) and ("chmod 700" in str(e.value) or "another user" in str(e.value))


def test_cli_from_scratch_refuses_a_shared_work_dir_before_training(tmp_path, capsys):
    from m2iv.cli.main import main

    work = tmp_path / "shared"
    work.mkdir()
    work.chmod(0o777)
    assert main(["sandbox", "build", "--from-scratch", "--work", str(work), "--stages", "vision"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "writable by every user" in err and "chmod 700" in err
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("argv,message", [
    (["--vision-steps", "3"], "--vision-steps only applies to training; add --from-scratch"),
    (["--stages", "meta"], "--stages only applies to training"),
    (["--from-scratch", "--stages", "vision,alin"], "unknown stage(s) ['alin'] in --stages"),
])
def test_sandbox_build_training_options_are_checked_in_one_line(argv, message, capsys):
    from m2iv.cli.main import main

    assert main(["sandbox", "build", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_the_sandbox_is_built_through_the_m2iv_cli(capsys):
    # `python -m m2iv.sandbox` (a shim importing the CLI from below it) is gone; `m2iv sandbox build` is the way.
    from m2iv.cli.main import main

    assert main(["sandbox", "build", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: m2iv sandbox build" in out and "--meta-steps" in out


def test_the_sandbox_build_directory_is_never_written_over_a_users_files(tmp_path):
    # Was: `m2iv sandbox build --out DIR` renamed an existing DIR aside and rmtree'd it, whatever it held.
    from m2iv.files import fill_dir_atomic

    out = tmp_path / "sandbox"
    out.mkdir()
    (out / "my-notes.txt").write_text("mine")

    def save_pretrained(tmp):  # what the build writes (a model directory)
        (tmp / "config.json").write_text("{}")
        (tmp / "model.safetensors").write_bytes(b"x")

    with pytest.raises(M2IVError, match="did not write"):
        fill_dir_atomic(out, save_pretrained)
    assert (out / "my-notes.txt").read_text() == "mine"
    (out / "my-notes.txt").unlink()
    fill_dir_atomic(out, save_pretrained)  # an earlier build (or an empty folder) is replaced whole
    fill_dir_atomic(out, save_pretrained)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["sandbox"]  # no temp or old folder left behind


# (end of section: sandbox)
