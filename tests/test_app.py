"""`m2iv library serve` without a browser (issue 24): the catalog reads a library without writing a byte, bad input
is a one-line message, answers are made the way `m2iv eval` makes them, the bench tables and plots read the
committed files with one colour per method, and writes go through the store. tests/test_app_browser.py drives
the same page in Chromium."""

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex

from conftest import image, random_vectors, tiny
from m2iv.app import pages, plots
from m2iv.app.answers import Session, compose_answer, search_example, try_entry
from m2iv.app.catalog import Catalog
from m2iv.app.handlers import Handlers, guard
from m2iv.app.results import Benchmarks
from m2iv.cli.main import main
from m2iv.data.tasks import get_task
from m2iv.errors import M2IVError
from m2iv.evaluate.colours import METHOD_COLOURS, method_colour
from m2iv.library.store import Library
from m2iv.vectors import save_vectors

ROOT = Path(__file__).resolve().parents[1]
MODEL = "tiny:idefics3"


def _vectors(lm, path, seed, scale=0.5, **kw):
    return save_vectors(random_vectors(lm, seed=seed, scale=scale, **kw), path, adapter=lm.adapter, base_model=MODEL,
                        method_config={"task": "easy-vqa"}, metrics={"acc": 0.5})


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """Three entries of tiny:idefics3 for easy-vqa (two with prototypes, one all-zero) and one of tiny:llava."""
    tmp = tmp_path_factory.mktemp("applib")
    lm, other = tiny("idefics3"), tiny("llava")
    zero = random_vectors(lm, sites=("mlp",), operator="additive", scale=0.0)
    with Library(tmp / "lib") as lib:
        for name, seed in (("colour", 1), ("shape", 2)):
            e = lib.add(_vectors(lm, tmp / name, seed), name=name, tags=[name])
            lib.add_prototype_from_task(e.id, lm, get_task("easy-vqa"), n=4)
        lib.add(save_vectors(zero, tmp / "zero", adapter=lm.adapter, base_model=MODEL,
                             method_config={"task": "easy-vqa"}), name="zero")
        lib.add(save_vectors(random_vectors(other, seed=3), tmp / "llava", adapter=other.adapter,
                             base_model="tiny:llava"), name="for-llava")
    return tmp / "lib"


@pytest.fixture
def session(library):
    return Session(Catalog(library), MODEL, loader=lambda spec: tiny(spec.split(":")[1]))


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


# -- the catalog: reading writes nothing ------------------------------------------------------------------------
def test_the_catalog_reads_a_library_without_writing_anything(library, session):
    before = _files(library)
    cat = Catalog(library)
    names = [e.name for e in cat.entries()]
    assert names == ["colour", "shape", "zero", "for-llava"] and not cat.problems
    entry = cat.get("colour")
    vectors, config = cat.load(entry.id)
    assert config["sha256"] == entry.sha256 and vectors.num_parameters() == config["num_parameters"]
    assert cat.train_log(entry) == []
    with cat._index():  # not even while it reads: a read-only folder or a git checkout needs no -wal/-shm files
        assert _files(library) == before
    try_entry(session, "colour", None, "What colour is it?", 0)  # the page answering reads only
    assert _files(library) == before  # no -wal/-shm files, no tmp folder, no cache export


def test_the_catalog_sees_an_entry_a_writer_is_adding(tmp_path):
    lm = tiny("idefics3")
    with Library(tmp_path / "lib") as lib:
        lib.add(_vectors(lm, tmp_path / "a", 1), name="a")
        assert [e.name for e in Catalog(tmp_path / "lib").entries()] == ["a"]
        lib.add(_vectors(lm, tmp_path / "b", 2), name="b")  # the writer still has the index open (WAL)
        assert [e.name for e in Catalog(tmp_path / "lib").entries()] == ["a", "b"]


def test_a_missing_or_damaged_library_is_a_message_on_the_page(tmp_path, library):
    def status(root):
        h = Handlers(Catalog(root), Session(Catalog(root), MODEL), Benchmarks(None))
        out = guard(h.browse, 13)("", pages.ANY, pages.ANY, pages.ANY, pages.ANY)
        assert len(out) == 13 and all(isinstance(x, dict) for x in out[1:])  # the rest left as it was
        return out[0]

    assert "no library at" in status(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    (broken / "blobs").mkdir(parents=True)
    (broken / "index.sqlite").write_bytes(b"this is not a database" * 100)
    assert "not a readable SQLite database" in status(broken) and "check --repair" in status(broken)
    (broken / "index.sqlite").unlink()
    for sub in library.glob("blobs/*"):
        (broken / "blobs" / sub.name).mkdir()
        for f in sub.iterdir():
            (broken / "blobs" / sub.name / f.name).write_bytes(f.read_bytes())
    assert "is missing" in status(broken) and "check --repair" in status(broken)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert Catalog(empty).entries() == [] and not list(empty.iterdir())  # an empty folder stays empty


# -- bad input on the Try and Search pages ----------------------------------------------------------------------
def test_bad_input_is_one_line_naming_the_fix(tmp_path, library, session):
    h = Handlers(session.catalog, session, Benchmarks(None))
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    status, path, preview, reference = h.uploaded(str(text))
    assert status.startswith("⚠️ notes.png is not an image") and "PNG, JPEG" in status and path is preview is None
    assert str(tmp_path) not in status  # the upload's temporary path is not shown
    good = tmp_path / "cat.png"
    image(0).save(good)
    assert h.uploaded(str(good))[:2] == ("", str(good))
    sample = session.examples("easy-vqa")[0]
    path, preview, question, reference = h.example_picked("easy-vqa#0")
    assert (path, question) == (sample.images[0], sample.question) and preview.size == (64, 64)
    assert reference == f"Reference answer (easy-vqa): **{sample.answers[0]}**"
    assert "no longer listed" in guard(h.example_picked, 5)("easy-vqa#99")[0]

    out = guard(h.answer, 5)("for-llava", None, "What colour is it?", 2)
    assert "for-llava is for tiny:llava, not for tiny:idefics3" in out[0]
    assert "m2iv library serve tiny:llava" in out[0] and "\n" not in out[0]
    assert "pick an entry" in guard(h.answer, 5)(None, None, "q", 2)[0]
    assert "give an image or a question" in guard(h.answer, 5)("colour", None, "  ", 2)[0]
    assert guard(h.answer, 5)("colour", None, "What colour is it?", 2)[0] == ""  # a question alone is enough

    def boom(*_):
        raise RuntimeError("line one\nline two")

    out = guard(boom, 3)()
    assert out[0].startswith("⚠️ Unexpected error: RuntimeError: line one line two") and "\n" not in out[0]


# -- answers -----------------------------------------------------------------------------------------------------
def test_answers_side_by_side_as_eval_makes_them(tmp_path, session):
    good = tmp_path / "cat.png"
    image(1).save(good)
    zero, icl, steered = try_entry(session, "zero", str(good), "What colour is it?", 2)
    assert (zero.way, icl.way, steered.way) == ("zero-shot", "2-shot ICL", "steered by zero")
    assert icl.prompt_tokens > zero.prompt_tokens == steered.prompt_tokens
    assert all(a.latency_ms is not None and a.latency_ms > 0 for a in (zero, icl, steered))
    assert steered.text == zero.text  # all-zero additive vectors change nothing
    no_icl = try_entry(session, "colour", str(good), "What colour is it?", 0)[1]
    assert no_icl.latency_ms is None and "0 shots" in no_icl.note

    answer, provenance = compose_answer(session, [("colour", 0.5), ("shape", -1.0)], str(good), "What colour is it?")
    assert provenance["expression"] == "0.5*colour - 1.0*shape" and answer.way.startswith("composed: 0.5*colour")
    assert answer.prompt_tokens == zero.prompt_tokens
    with pytest.raises(M2IVError, match="pick at least one entry"):
        compose_answer(session, [], str(good), "q")

    hits = search_example(session, str(good), "What colour is it?", top=5)
    assert {h.entry.name for h in hits} == {"colour", "shape"}  # the entries with prototypes, for this model
    assert all(-1.0 <= h.score <= 1.0 for h in hits) and hits[0].score >= hits[1].score


def test_the_model_defaults_to_the_one_most_entries_were_made_for(library):
    assert Session(Catalog(library)).spec == MODEL


# -- writes ------------------------------------------------------------------------------------------------------
def test_writes_need_allow_writes_and_go_through_the_store(tmp_path, library):
    import shutil

    root = tmp_path / "lib"
    shutil.copytree(library, root)
    read_only = Handlers(Catalog(root), Session(Catalog(root), MODEL), Benchmarks(None))
    assert "--allow-writes" in guard(read_only.save_composition, 2)("colour", 1.0, "shape", 1.0, "mix")[0]
    cat = Catalog(root, allow_writes=True)
    h = Handlers(cat, Session(cat, MODEL), Benchmarks(None))
    results = []
    threads = [threading.Thread(target=lambda n=n, i=i: results.append(guard(h.save_composition, 2)(
        "colour", 0.5, "shape", 0.5 * (i + 1), n))) for i, n in enumerate(("mix-a", "mix-b", "mix-c"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r[0] == "" and "Saved `library:mix-" in r[1] for r in results), results
    with Library(root) as lib:
        mixes = {e.name: e.provenance["expression"] for e in lib.entries(method="composed")}
    assert mixes == {"mix-a": "0.5*colour + 0.5*shape", "mix-b": "0.5*colour + 1.0*shape",
                     "mix-c": "0.5*colour + 1.5*shape"}


# -- results, entry pages and colours ----------------------------------------------------------------------------
def test_the_committed_bench_tables_render_with_one_colour_per_method():
    bench = Benchmarks(ROOT / "benchmarks")
    names = bench.names()
    assert names[0] == "compare/sandbox.json" and {"sandbox_suite.json", "library/sandbox.json"} <= set(names)
    rows = bench.rows("compare/sandbox.json")
    committed = json.loads((ROOT / "benchmarks" / "compare" / "sandbox.json").read_text())["rows"]
    assert len(rows) == len(committed) and {r["method"] for r in rows} >= {"zero-shot", "icl", "m2iv", "live", "hificl"}
    with pytest.raises(M2IVError, match="not a table under"):
        bench.rows("../README.md")

    shots, cost, tasks = plots.accuracy_vs_shots(rows), plots.accuracy_vs_cost(rows), plots.per_task(rows)
    line_colours = {to_hex(line.get_color()) for ax in shots.axes for line in ax.get_lines()}
    point_colours = {to_hex(c) for ax in cost.axes for coll in ax.collections for c in coll.get_facecolors()}
    bar_colours = {to_hex(p.get_facecolor()) for ax in tasks.axes for p in ax.patches}
    for method in ("zero-shot", "icl", "m2iv", "live", "mimic", "hificl"):
        assert METHOD_COLOURS[method] in line_colours & point_colours & bar_colours, method
    assert method_colour("m2iv (kl-only)") == METHOD_COLOURS["m2iv"]
    assert method_colour("some-new-method") == method_colour("some-new-method (v2)")

    library_rows = bench.rows("library/sandbox.json")  # `bench library` rows name a config, not a method
    icl = [r for r in library_rows if r["method"] == "icl" and r["task"] == "sandbox-grounding"]
    assert icl and icl[0]["shots"] == 16


def test_an_entrys_page_shows_its_scores_condition_and_recipe(library):
    cat = Catalog(library)
    entry = cat.get("colour")
    entry.task, entry.method = "sandbox-colour-nonce", "m2iv"
    rows = pages.score_rows(entry, Benchmarks(ROOT / "benchmarks"))
    assert rows[0][:2] == ["entry metrics", "acc"]
    methods = {(r[0], r[1]) for r in rows}
    assert ("compare/sandbox.json", "zero-shot") in methods and ("compare/sandbox.json", "icl") in methods
    assert ("compare/sandbox.json", "m2iv") in methods
    assert "act on every prompt" in pages.condition_md(entry)
    entry.config = {**entry.config, "condition": {"kind": "prototype", "layer": 1, "pool": "mean",
                                                  "similarity": "cosine", "threshold": 0.42, "side": "above",
                                                  "fit": {"precision": 0.9}}}
    text = pages.condition_md(entry)
    assert "0.42" in text and "prototype" in text and "precision 0.9" in text
    entry.provenance = {"kind": "composed", "expression": "0.5*a + 1.0*b",
                        "terms": [{"name": "a", "id": "x1", "weight": 0.5}, {"name": "b", "id": "x2", "weight": 1}]}
    assert "0.5*a + 1.0*b" in pages.provenance_md(entry)
    vectors, _ = cat.load(entry.id)
    fig = plots.vector_norms(vectors)
    norms = {line.get_label(): line.get_ydata() for line in fig.axes[0].get_lines()}
    expected = torch.linalg.vector_norm(vectors.vector("attn").detach(), dim=-1).numpy()
    assert np.allclose(norms["attn ‖v‖"], expected)
    assert plots.training_curve([]) is None
    curve = plots.training_curve([{"step": 1, "loss": 2.0, "ce": 1.0}, {"step": 2, "loss": 1.0, "ce": 0.5,
                                                                       "val_acc": 0.75}])
    assert [line.get_label() for ax in curve.axes for line in ax.get_lines()] == ["loss", "ce", "validation accuracy"]


# -- the command line --------------------------------------------------------------------------------------------
def test_serve_command_line(capsys):
    from m2iv.app.server import is_loopback
    from m2iv.cli.main import build_parser

    args = build_parser().parse_args(["library", "serve", "--root", "lib"])
    assert (args.model, args.host, args.port, args.allow_writes) == (None, "127.0.0.1", None, False)
    assert main(["library", "serve", "--port", "70000"]) == 2
    assert "is not a port" in capsys.readouterr().err
    assert main(["library", "serve", "--model", "tiny:idefics3"]) == 2
    assert "--model is now the positional MODEL" in capsys.readouterr().err
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_a_library_committed_under_benchmarks_is_not_read_as_tables(tmp_path, library):
    import shutil

    bench = tmp_path / "benchmarks"
    (bench / "compare").mkdir(parents=True)
    shutil.copy(ROOT / "benchmarks" / "compare" / "sandbox-vqa.json", bench / "compare" / "vqa.json")
    shutil.copytree(library, bench / "library" / "vlibrary")
    (bench / "library" / "vlibrary" / "blobs" / "zz").mkdir()
    (bench / "library" / "vlibrary" / "blobs" / "zz" / "x.json").write_text('{"rows": [{"task": "t", "method": "m"}]}')
    assert Benchmarks(bench).names() == ["compare/vqa.json"]
    assert [e.name for e in Catalog(bench / "library" / "vlibrary").entries()] == ["colour", "shape", "zero",
                                                                                   "for-llava"]


def test_the_committed_sandbox_library_opens_as_it_is():
    """`m2iv library serve --root benchmarks/library/vlibrary` needs no setup: the committed copy is whole (one
    index file, no write-ahead log), every blob matches its hash and reading it writes nothing."""
    root = ROOT / "benchmarks" / "library" / "vlibrary"
    files = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert not [p for p in files if p.name.endswith(("-wal", "-shm"))]
    cat = Catalog(root)
    entries = {e.name: e for e in cat.entries()}
    assert not cat.problems and {"grounding", "style-caps", "style-french", "safety", "safety-gated"} <= set(entries)
    for name in entries:
        vectors = cat.load(name)[0]  # verifies the blob's sha256
        assert vectors.num_layers == 30
    assert cat.load("safety-gated")[0].condition is not None and cat.load("safety")[0].condition is None
    assert cat.train_log(entries["safety"])  # the trainer's log kept with the entry
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == files
