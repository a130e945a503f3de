"""The vector library: concurrent writers, tamper detection, compatibility refusal, composition,
export/import, safe tar import, search by example and the `m2iv library` CLI."""

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import logits_with, make_inputs, random_vectors, tiny
from m2iv.constants import CONFIG_NAME, VECTORS_NAME
from m2iv.data.tasks import get_task
from m2iv.errors import M2IVError
from m2iv.library import Library, example_sample, parse_expression, parse_layers, resolve_vectors
from m2iv.vectors import load_vectors, save_vectors
from m2iv.vectors.vector import InContextVectors

HERE = Path(__file__).parent


def _vec_dir(lm, path, seed, family, sites=("attn", "mlp"), operator="linear", task="t", **kw):
    return save_vectors(random_vectors(lm, sites=sites, operator=operator, seed=seed, **kw), path,
                        adapter=lm.adapter, base_model=f"tiny:{family}", method_config={"task": task},
                        metrics={"acc": 0.5})


@pytest.fixture
def lib(tmp_path):
    with Library(tmp_path / "lib") as library:
        yield library


# -- store ------------------------------------------------------------------------------------------
def test_root_defaults_to_env_then_m2iv_home(tmp_path, monkeypatch):
    from m2iv.library import default_root

    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("M2IV_LIBRARY", raising=False)
    assert default_root() == tmp_path / "home" / "library"
    monkeypatch.setenv("M2IV_LIBRARY", str(tmp_path / "elsewhere"))
    with Library() as lib:
        assert lib.root == tmp_path / "elsewhere" and (lib.root / "index.sqlite").is_file()
        assert lib._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert lib._conn.execute("SELECT version FROM schema_version").fetchone()[0] == 1


def test_two_processes_adding_50_entries_each_at_once(tmp_path):
    root, go = tmp_path / "lib", tmp_path / "go"
    # the workers start first (importing takes a while) and wait for `go`; both create the library too
    procs = [subprocess.Popen([sys.executable, str(HERE / "_library_worker.py"), str(root), str(tmp_path / f"src-{w}"),
                               w, str(tmp_path / f"ready-{w}"), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for w in ("a", "b")]
    try:
        lm = tiny("llama")
        for w in ("a", "b"):
            for i in range(5, 50):
                _vec_dir(lm, tmp_path / f"src-{w}" / f"v{i:02d}", (1000 if w == "a" else 2000) + i, "llama",
                         sites=("mlp",), operator="additive")
        for i in range(5):  # 5 directories per worker hold the same bytes as the other worker's: stored once
            d = _vec_dir(lm, tmp_path / "src-a" / f"v{i:02d}", 10_000 + i, "llama", sites=("mlp",),
                         operator="additive")
            shutil.copytree(d, tmp_path / "src-b" / f"v{i:02d}")
        deadline = time.time() + 60
        while not all((tmp_path / f"ready-{w}").exists() for w in ("a", "b")) and time.time() < deadline:
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.01)
    finally:
        go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    with Library(root) as lib:
        entries = lib.entries(tag="race")
        assert len(entries) == 100 and len({e.id for e in entries}) == 100
        assert {e.name for e in entries} == {f"{w}-v{i:02d}" for w in "ab" for i in range(50)}
        for e in entries:
            vec, cfg = lib.load(e.id, adapter=lm.adapter)
            assert cfg["sha256"] == e.sha256 and vec.sites["mlp"].operator == "additive"
        blobs = list((root / "blobs").rglob("*.safetensors"))
        assert len(blobs) == len({e.sha256 for e in entries}) == 95
        assert not list((root / "blobs").rglob(".*tmp*"))


def test_tampered_blob_is_detected_and_never_used(tmp_path, lib):
    lm = tiny("llama")
    e = lib.add(_vec_dir(lm, tmp_path / "v", 1, "llama"), name="vqa")
    cached = lib.resolve("library:vqa")
    blob = lib.blob_path(e.sha256)
    assert blob.is_file() and (os.geteuid() == 0 or not os.access(blob, os.W_OK))  # blobs are read-only
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[-3] ^= 0xFF  # one bit pattern in the tensor data
    blob.write_bytes(bytes(data))
    for call in (lambda: lib.load("vqa"), lambda: lib.load("vqa", adapter=lm.adapter),
                 lambda: lib.resolve("library:vqa"), lambda: lib.export("vqa", tmp_path / "out"),
                 lambda: lib.compose("mix", "vqa")):
        with pytest.raises(M2IVError) as err:
            call()
        msg = str(err.value)
        assert "vqa" in msg and e.id in msg and str(blob) in msg and "sha256" in msg and "\n" not in msg
    assert not (tmp_path / "out").exists() and lib.entries(model="llama") == [lib.get("vqa")]
    # the cached export of the good bytes is untouched, and loading it stays verified
    load_vectors(cached, adapter=lm.adapter)


def test_incompatible_model_is_refused_with_the_reason(tmp_path, lib):
    lm, other = tiny("idefics2"), tiny("llama")
    lib.add(_vec_dir(lm, tmp_path / "v", 1, "idefics2"), name="vqa")
    with pytest.raises(M2IVError, match=r"vqa .*model_type='idefics2'.*model_type='llama'"):
        lib.load("vqa", adapter=other.adapter)
    with pytest.raises(M2IVError, match="model_type"):
        lib.resolve("library:vqa", adapter=other.adapter)
    with pytest.raises(M2IVError, match="model_type"):  # the one call the rest of m2iv makes for library: specs
        resolve_vectors("library:vqa", root=lib.root, adapter=other.adapter)
    load_vectors(resolve_vectors("library:vqa", root=lib.root, adapter=lm.adapter), adapter=lm.adapter)
    with pytest.raises(M2IVError, match="per query"):
        lib.resolve("library:auto")
    refit = dataclasses.replace(lm.adapter, fingerprint="0123456789abcdef")
    with pytest.raises(M2IVError, match="fingerprint"):
        lib.load("vqa", adapter=refit)
    lib.load("vqa", adapter=refit, strict=False)  # same sizes: allowed when asked
    assert [h.entry.name for h in lib.search(lm=lm)] == ["vqa"] and lib.search(lm=other) == []
    lib.add(_vec_dir(other, tmp_path / "w", 2, "llama"), name="text")
    with pytest.raises(M2IVError, match="cannot compose vqa .* with text .*model_type"):
        lib.compose("mixed", "vqa + text")


def test_names_ids_and_removal(tmp_path, lib):
    lm = tiny("llama")
    d = _vec_dir(lm, tmp_path / "vqa-run", 1, "llama")
    a = lib.add(d, tags=["x,y", "z"])
    assert a.name == "vqa-run" and len(a.id) == 12 and a.task == "t" and a.metrics == {"acc": 0.5}
    b = lib.add(d)  # same content, derived name taken: new name, blob stored once
    assert b.name == f"vqa-run-{a.sha256[:8]}" and b.sha256 == a.sha256
    with pytest.raises(M2IVError, match="already used"):
        lib.add(d, name="vqa-run")
    with pytest.raises(M2IVError, match="reserved"):
        lib.add(d, name="auto")
    assert lib.get(a.id[:6]).id == a.id and lib.get(f"library:{a.name}").id == a.id
    with pytest.raises(M2IVError, match="did you mean 'vqa-run'"):
        lib.get("vqa-rum")
    lib.remove(a.id)
    assert lib.blob_path(a.sha256).is_file()  # still held by b
    lib.remove(b.name)
    assert not lib.blob_path(a.sha256).exists() and len(lib) == 0
    assert resolve_vectors("some/dir") == Path("some/dir")


def test_publish_writes_a_closed_copy_that_serves_read_only_and_replaces_an_older_one(tmp_path, lib):
    from m2iv.app.catalog import Catalog

    lm = tiny("llama")
    lib.add(_vec_dir(lm, tmp_path / "a", 1, "llama"), name="a")
    dest = lib.publish(tmp_path / "pub")
    assert sorted(p.name for p in dest.iterdir()) == ["blobs", "index.sqlite"]  # no -wal/-shm to commit
    lib.add(_vec_dir(lm, tmp_path / "b", 2, "llama"), name="b")
    lib.publish(dest)
    before = {p: p.stat().st_mtime_ns for p in dest.rglob("*")}
    assert sorted(e.name for e in Catalog(dest).entries()) == ["a", "b"]
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*")} == before  # reading wrote nothing
    with Library(dest) as copy:
        got, want = copy.load("b")[0].params, lib.load("b")[0].params
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


# -- composition ------------------------------------------------------------------------------------
def test_expression_and_layer_parsing():
    assert [(t.weight, t.ref) for t in parse_expression("0.5*a + 1.0*b - c")] == [(0.5, "a"), (1.0, "b"), (-1.0, "c")]
    assert [(t.weight, t.ref) for t in parse_expression(["-2*vqa-x", "+", "y*3"])] == [(-2.0, "vqa-x"), (3.0, "y")]
    assert [(t.weight, t.ref) for t in parse_expression("- c")] == [(-1.0, "c")]
    assert parse_layers("0-2,5", 8) == [0, 1, 2, 5]
    for bad in ("0.5*", "a * b * c", "2*3"):
        with pytest.raises(M2IVError, match="0.5\\*a \\+ 1.0\\*b - c"):
            parse_expression(bad)
    with pytest.raises(M2IVError, match=r"\[0, 2\)"):
        parse_layers("0-3", 2)


def _randomise_scales(vec, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, p in vec.params.items():
            if not key.endswith("__vector"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return vec


def test_compose_injects_the_weighted_sum_and_masks_layers(tmp_path, lib):
    lm = tiny("llama")
    v1, v2 = (_randomise_scales(random_vectors(lm, seed=s), s) for s in (1, 2))
    for name, v in (("a", v1), ("b", v2)):
        lib.add_vectors(v, adapter=lm.adapter, base_model="tiny:llama", name=name, task="vqa")
    mix = lib.compose("mix", "0.5*a - 2*b", tags=["combo"])
    got, cfg = lib.load("mix", adapter=lm.adapter)
    want = InContextVectors.for_model(lm.adapter, sites=("attn", "mlp"), operator="linear")
    with torch.no_grad():
        for site in ("attn", "mlp"):
            eff = 0.5 * v1.scale(site, "alpha").unsqueeze(-1) * v1.vector(site) \
                - 2.0 * v2.scale(site, "alpha").unsqueeze(-1) * v2.vector(site)
            torch.testing.assert_close(got.vector(site), eff)
            assert torch.equal(got.scale(site, "alpha"), torch.ones(2))
            assert torch.equal(got.scale(site, "beta"), v1.scale(site, "beta"))
            want.params[f"{site}__vector"].copy_(eff)
            want.params[f"{site}__beta"].copy_(v1.scale(site, "beta"))
    inputs = make_inputs(lm, ["What colour?"])
    torch.testing.assert_close(logits_with(lm, inputs, got), logits_with(lm, inputs, want))
    assert mix.method == "composed" and mix.task == "vqa" and mix.tags == ["combo"]
    assert mix.provenance["expression"] == "0.5*a - 2.0*b" and cfg["provenance"] == mix.provenance
    assert [(t["name"], t["weight"], t["negated"]) for t in mix.provenance["terms"]] == [("a", 0.5, False),
                                                                                       ("b", -2.0, True)]
    assert [t["id"] for t in mix.provenance["terms"]] == [lib.get("a").id, lib.get("b").id]

    masked = lib.compose("late-mlp", "mix", layers="1", sites="mlp")
    mvec, _ = lib.load("late-mlp")
    assert {s: sp.layers for s, sp in mvec.sites.items()} == {"mlp": [1]}
    assert masked.provenance["layers"] == [1] and masked.provenance["sites"] == ["mlp"]
    # the masked layers/sites get a zero shift with identity scales: same logits as a full layout with zeros
    zeroed = InContextVectors.for_model(lm.adapter, sites=("attn", "mlp"), operator="linear")
    with torch.no_grad():
        zeroed.params["mlp__vector"][1].copy_(want.vector("mlp")[1])
        beta = want.scale("mlp", "beta")
        assert beta is not None
        zeroed.params["mlp__beta"][1].copy_(beta[1])
    torch.testing.assert_close(logits_with(lm, inputs, mvec), logits_with(lm, inputs, zeroed))
    lib.add_vectors(random_vectors(lm, sites=("mlp",)), adapter=lm.adapter, base_model="tiny:llama", name="c")
    with pytest.raises(M2IVError, match="cannot compose a with c: sites differ"):
        lib.compose("bad", "a + c")


# -- export / import ----------------------------------------------------------------------------------
def test_export_import_round_trip_dir_and_tar(tmp_path, lib):
    lm = tiny("llama")
    src = _vec_dir(lm, tmp_path / "src", 3, "llama")
    proto = np.random.default_rng(0).standard_normal(64).astype(np.float32)
    e = lib.add(src, name="vqa", tags=["vqa", "colour"], description="colour VQA", prototype=proto,
                prototype_info={"task": "t", "n": 4})
    d = lib.export("vqa", tmp_path / "out" / "vqa")
    tar = lib.export("vqa", tmp_path / "out" / "vqa.tar")
    for name in (CONFIG_NAME, VECTORS_NAME):  # byte for byte what was added
        assert (d / name).read_bytes() == (src / name).read_bytes()
    load_vectors(d, adapter=lm.adapter)
    with tarfile.open(tar) as t:
        members = t.getmembers()
    assert all(m.isfile() and not m.name.startswith("/") and ".." not in m.name for m in members)
    assert {m.name for m in members} == {f"vqa/{n}" for n in (CONFIG_NAME, VECTORS_NAME, "library.json",
                                                               "prototype.safetensors")}
    for i, path in enumerate((d, tar)):
        with Library(tmp_path / f"other{i}") as other:
            f = other.import_path(path)
            for k in ("id", "name", "tags", "description", "task", "method", "shots", "metrics", "sha256",
                      "config", "provenance", "created_at", "prototype_info", "config_text"):
                assert getattr(f, k) == getattr(e, k), k
            assert np.array_equal(f.prototype, proto)
            got, _ = other.load("vqa")
            ref, _ = lib.load("vqa")
            assert all(torch.equal(a, b) for a, b in zip(got.parameters(), ref.parameters(), strict=True))
            assert other.import_path(path).id == f.id and len(other) == 1  # importing again changes nothing
            renamed = other.import_path(path, name="vqa-2")
            assert renamed.id != f.id and renamed.sha256 == f.sha256
    with pytest.raises(M2IVError, match="already exists; pass --force"):
        lib.export("vqa", tmp_path)  # never replaces an existing folder unasked
    with pytest.raises(M2IVError, match="not a vector directory"):
        lib.export("vqa", tmp_path, force=True)  # nor an unrelated one when asked


def _tar_with(path, name, kind="file"):
    with tarfile.open(path, "w") as t:
        info = tarfile.TarInfo(name)
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            t.addfile(info)
        else:
            info.size = 4
            t.addfile(info, io.BytesIO(b"evil"))
    return path


@pytest.mark.parametrize("member,kind,why", [("../evil.txt", "file", "'..'"), ("vqa/../../evil.txt", "file", "'..'"),
                                             ("/tmp/evil.txt", "file", "absolute"),
                                             ("vqa/link", "symlink", "not a regular file")])
def test_tar_with_unsafe_members_is_refused(tmp_path, lib, member, kind, why):
    bad = _tar_with(tmp_path / "bad.tar", member, kind)
    with pytest.raises(M2IVError, match=f"refusing tar member .*{why}"):
        lib.import_path(bad)
    assert not (tmp_path / "evil.txt").exists() and len(lib) == 0
    assert not list((lib.root / "tmp").iterdir())


# -- search by example --------------------------------------------------------------------------------
def _task(root, name, colour, questions, n=12):
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        arr = np.clip(np.array(colour, dtype=int) + np.random.default_rng(i).integers(-20, 20, (30, 40, 3)), 0, 255)
        Image.fromarray(arr.astype(np.uint8)).save(root / f"{name}{i}.png")
        rows.append({"id": f"{name}{i}", "image": f"{name}{i}.png", "question": questions[i % len(questions)],
                     "answer": "x"})
    (root / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return f"jsonl:{root / f'{name}.jsonl'}"


COLOUR_QS = ["What colour is the shape?", "Which colour is the object?"]
COUNT_QS = ["How many dots are in the picture?", "Count the circles in the image."]


def test_search_by_example_ranks_the_same_task_first(tmp_path, lib):
    lm = tiny("idefics2")
    colour = _task(tmp_path / "data", "colour", (220, 20, 20), COLOUR_QS)
    count = _task(tmp_path / "data", "count", (20, 20, 220), COUNT_QS)
    for name, task, seed in (("colour-vqa", colour, 1), ("count-vqa", count, 2)):
        e = lib.add(_vec_dir(lm, tmp_path / name, seed, "idefics2"), name=name)
        e = lib.add_prototype_from_task(e.id, lm, get_task(task))
        assert e.prototype.shape == (64,) and e.prototype_info["task"].startswith("jsonl:")
    other = tiny("llama")  # incompatible: never a hit, whatever its prototype
    lib.add(_vec_dir(other, tmp_path / "llm", 3, "llama"), name="llm",
            prototype=lib.get("colour-vqa").prototype)
    img = tmp_path / "query.png"
    Image.fromarray(np.full((30, 40, 3), (230, 10, 10), np.uint8)).save(img)
    hits = lib.search(lm=lm, example=example_sample(img, "What colour is this thing?"))
    assert [h.entry.name for h in hits] == ["colour-vqa", "count-vqa"] and hits[0].score > hits[1].score
    Image.fromarray(np.full((30, 40, 3), (10, 10, 230), np.uint8)).save(img)
    hits = lib.search(lm=lm, example=example_sample(img, "How many dots can you see?"))
    assert hits[0].entry.name == "count-vqa"
    from m2iv.data.jsonl import load_jsonl

    samples = load_jsonl(Path(colour[6:]), "test")[:3] + load_jsonl(Path(count[6:]), "test")[:3]
    ids = lib.route(lm, samples)
    assert ids == [lib.get("colour-vqa").id] * 3 + [lib.get("count-vqa").id] * 3
    with pytest.raises(M2IVError, match="needs the model"):
        lib.search(example=samples[0])
    assert [h.entry.name for h in lib.search(text="count")] == ["count-vqa"]


# -- CLI ------------------------------------------------------------------------------------------------
SUBCOMMANDS = ("add", "list", "show", "search", "export", "import", "push", "pull", "remove", "compose", "resolve",
               "check")


def test_every_subcommand_help_shows_an_example(capsys):
    from m2iv.cli.library import main

    for sub in ((), *((s,) for s in SUBCOMMANDS)):
        with pytest.raises(SystemExit) as ex:
            main([*sub, "--help"])
        assert ex.value.code == 0
        assert "example" in capsys.readouterr().out, sub


def test_every_subcommand_runs(tmp_path, monkeypatch, capsys):
    import m2iv.cli.library as cli

    monkeypatch.setattr(cli, "_load_model", lambda spec, dtype, device: tiny(spec.split(":", 1)[1]))
    lm = tiny("idefics2")
    colour = _task(tmp_path / "data", "colour", (220, 20, 20), COLOUR_QS)
    count = _task(tmp_path / "data", "count", (20, 20, 220), COUNT_QS)
    _vec_dir(lm, tmp_path / "v1", 1, "idefics2")
    _vec_dir(lm, tmp_path / "v2", 2, "idefics2")
    root = ["--root", str(tmp_path / "lib")]

    def run(*args, code=0):
        rc = cli.main([*args, *root])
        out, err = capsys.readouterr()
        assert rc == code, err
        return out, err

    out, _ = run("add", str(tmp_path / "v1"), "--name", "colour", "--tag", "vqa,red", "--prototype-from", colour)
    assert "added colour" in out and "library:colour" in out
    run("add", str(tmp_path / "v2"), "tiny:idefics2", "--name", "count", "--tag", "vqa", "--prototype-from", count,
        "--description", "counting")
    out, _ = run("list")
    assert "colour" in out and "count" in out and "tiny:idefics2" in out
    out, _ = run("list", "--tag", "red", "--json")
    assert [e["name"] for e in json.loads(out)] == ["colour"]
    out, _ = run("show", "colour")
    assert "sha256" in out and "blob" in out
    assert json.loads(run("show", "count", "--json")[0])["config"]["model_type"] == "idefics2"
    out, _ = run("search", "--text", "counting")
    assert "count" in out and "colour" not in out
    img = tmp_path / "q.png"
    Image.fromarray(np.full((30, 40, 3), (10, 10, 230), np.uint8)).save(img)
    out, _ = run("search", "tiny:idefics2", "--image", str(img), "--question", "How many dots?", "--json",
              "--top", "1")
    assert [e["name"] for e in json.loads(out)] == ["count"]
    assert json.loads(run("search", "tiny:llama", "--json")[0]) == []
    out, _ = run("compose", "--name", "mix", "0.5*colour", "+", "count", "-", "colour", "--layers", "0-1",
                 "--sites", "attn,mlp")
    assert "composed mix" in out and "0.5*colour + 1.0*count - 1.0*colour" in out
    out, _ = run("resolve", "library:mix")
    load_vectors(out.strip(), adapter=lm.adapter)
    run("export", "mix", str(tmp_path / "mix.tar"))
    run("export", "mix", str(tmp_path / "mix-dir"))
    run("remove", "mix")
    out, _ = run("import", str(tmp_path / "mix.tar"))
    assert "imported mix" in out
    out, _ = run("import", str(tmp_path / "mix-dir"), "--name", "mix2")
    assert "imported mix2" in out
    _, err = run("show", "nope", code=2)
    assert err.startswith("error: no library entry 'nope'") and err.count("\n") == 1
    _, err = run("search", "--image", str(img), code=2)
    assert "MODEL" in err


# -- check / repair -----------------------------------------------------------------------------------
def test_check_is_clean_after_normal_use_and_repair_writes_missing_sidecars(tmp_path, lib):
    from m2iv.library.repair import check

    lm = tiny("llama")
    a = lib.add(_vec_dir(lm, tmp_path / "a", 1, "llama"), name="a", tags=["x"])
    lib.add(_vec_dir(lm, tmp_path / "b", 2, "llama"), name="b")
    lib.tag("b", add=("y",))
    lib.remove("b")
    assert check(lib.root).ok and not check(lib.root).fixed
    side = lib.blobs.sidecar(a.sha256, a.id)
    side.unlink()  # a library written before sidecars existed
    report = check(lib.root)
    assert not report.ok and "no sidecar" in report.problems[0]
    report = check(lib.root, repair=True)
    assert report.ok and side.is_file() and check(lib.root).ok
