"""A user's own data (issue 27): the jsonl: layouts, strict reading with bounded sizes, images that are not files,
and errors that name the real cause, all before a model loads."""

from __future__ import annotations

import json
import os

import pytest

from conftest import image
from m2iv.data.tasks import get_task
from m2iv.errors import M2IVError


def _rows(path, n, split=None, prefix="q", **extra):
    rows = [{"id": f"{prefix}{i}", "images": [], "question": f"Question {prefix}{i}?", "answer": f"a{i}", **extra}
            for i in range(n)]
    for r in rows:
        if split:
            r["split"] = split
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _error(fn, *args) -> str:
    with pytest.raises(M2IVError) as e:
        fn(*args)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def _no_model(monkeypatch):
    import m2iv.cli.evaluate
    import m2iv.cli.train

    def refuse(args):
        raise AssertionError("a model was loaded before the data was checked")

    for module in (m2iv.cli.evaluate, m2iv.cli.train):
        monkeypatch.setattr(module, "load_from_args", refuse)


def _cli(argv, capsys):
    from m2iv.cli.main import main

    rc = main(argv)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return rc, err


# -- sizes, encoding -------------------------------------------------------------------------------------
def test_a_10mb_question_is_refused_naming_file_line_and_limit_before_a_model_loads(tmp_path, monkeypatch, capsys):
    # Was: eval tried to allocate 56 TB for the attention over the question and exited 1 after 82 s.
    data = _rows(tmp_path / "d.jsonl", 6)
    lines = data.read_text().splitlines()
    lines[3] = json.dumps({"images": [], "question": "why " * 2_621_440, "answer": "x"})
    data.write_text("\n".join(lines) + "\n")
    msg = _error(get_task, f"jsonl:{data}")
    assert f"{data} line 4:" in msg and "10485760 characters" in msg and "limit of 8192" in msg
    _no_model(monkeypatch)
    rc, err = _cli(["eval", "tiny:llama", "--task", f"jsonl:{data}", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and f"{data} line 4:" in err


@pytest.mark.parametrize(("row", "needle", "env"), [
    ({"images": [], "question": "q?", "answer": "x" * 3000}, "an answer has 3000 characters, over the limit of 2048",
     "M2IV_MAX_ANSWER_CHARS"),
    ({"images": ["a.png"] * 17, "question": "q?", "answer": "x"}, "it has 17 images, over the limit of 16",
     "M2IV_MAX_IMAGES"),
    ({"images": [], "question": "q?", "answers": ["x"] * 101}, "it has 101 answers, over the limit of 100",
     "M2IV_MAX_ANSWERS"),
])
def test_answer_length_answers_and_images_per_row_are_bounded_and_the_bound_can_be_raised(tmp_path, monkeypatch, row,
                                                                                        needle, env):
    from m2iv.data.datasets import load_dataset

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"images": [], "question": "ok?", "answer": "y"}) + "\n" + json.dumps(row) + "\n")
    msg = _error(load_dataset, "jsonl", "test", data)
    assert f"{data} line 2: {needle}" in msg and env in msg
    monkeypatch.setenv(env, "100000")
    assert len(load_dataset("jsonl", "test", data)) == 2


def test_invalid_utf8_in_a_question_is_an_error_naming_file_and_line(tmp_path):
    # Was: read with errors="replace", so the model was asked a question with U+FFFD in it, silently.
    from m2iv.data.datasets import load_dataset

    data = tmp_path / "d.jsonl"
    good = json.dumps({"images": [], "question": "fine?", "answer": "y"}).encode()
    data.write_bytes(good + b"\n" + b'{"images": [], "question": "caf\xe9 ?", "answer": "y"}\n')
    msg = _error(load_dataset, "jsonl", "test", data)
    assert f"{data} line 2: not UTF-8 text (byte 0xe9" in msg and "save the file as UTF-8" in msg
    data.write_bytes(b"\xef\xbb\xbf" + good + b"\n")  # a UTF-8 byte-order mark is fine
    assert load_dataset("jsonl", "test", data)[0].question == "fine?"


# -- images that are not files ---------------------------------------------------------------------------
def test_an_image_path_that_is_a_folder_or_a_fifo_is_named_as_such_without_blocking(tmp_path):
    # Was: both skipped as "no such file".
    from m2iv.data.images import ImageError, open_image

    folder = tmp_path / "pic.png"
    folder.mkdir()
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # opening this for reading would block forever if m2iv tried
    with pytest.raises(ImageError, match="a folder, not an image file"):
        open_image(folder)
    with pytest.raises(ImageError, match="a FIFO"):
        open_image(fifo)
    with pytest.raises(ImageError, match="no such file"):
        open_image(tmp_path / "missing.png")
    (tmp_path / "link.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(ImageError, match="broken symbolic link"):
        open_image(tmp_path / "link.png")
    image(0).save(tmp_path / "ok.png")
    assert open_image(tmp_path / "ok.png").size == (40, 30)


# -- the real cause --------------------------------------------------------------------------------------
def test_jsonl_without_a_path_or_with_a_missing_file_names_the_real_cause(tmp_path, monkeypatch):
    # Were: "M2IV_DATA is not set" and "(from --data-root) does not exist".
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("M2IV_DATA", raising=False)
    msg = _error(get_task, "jsonl:")
    assert "needs your data after the colon" in msg and "M2IV_DATA" not in msg
    msg = _error(get_task, "jsonl:missing.jsonl")
    assert f"{tmp_path / 'missing.jsonl'} does not exist" in msg and "--data-root" not in msg
    (tmp_path / "dir.jsonl").mkdir()
    assert "holds none of train.jsonl" in _error(get_task, "jsonl:dir.jsonl")


# -- layouts ---------------------------------------------------------------------------------------------
def test_a_folder_with_train_and_test_files_uses_both(tmp_path):
    # Was: train.jsonl beside test.jsonl was silently ignored (everything came from test.jsonl).
    _rows(tmp_path / "d" / "train.jsonl", 12, prefix="tr")
    _rows(tmp_path / "d" / "test.jsonl", 5, prefix="te")
    task = get_task(f"jsonl:{tmp_path / 'd'}")
    sp = task.splits(seed=0)
    assert {s.id for s in sp["test"]} == {f"te{i}" for i in range(5)}
    assert {s.id for s in sp["train"] + sp["support"]} == {f"tr{i}" for i in range(12)}
    assert sp["train"] and sp["support"] and not {s.id for s in sp["train"]} & {s.id for s in sp["support"]}


def test_separate_train_support_and_test_files_in_one_spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _rows(tmp_path / "a.jsonl", 7, prefix="tr")
    _rows(tmp_path / "x" / "b.jsonl", 3, prefix="te")
    _rows(tmp_path / "c.jsonl", 4, prefix="su")
    task = get_task("jsonl:train=a.jsonl,test=x/b.jsonl,support=c.jsonl")
    assert task.name == "jsonl:train=a.jsonl,test=b.jsonl,support=c.jsonl"
    sp = task.splits(seed=1)
    assert [sorted(s.id[:2] for s in sp[k]) for k in ("train", "support", "test")] == [["tr"] * 7, ["su"] * 4,
                                                                                       ["te"] * 3]
    sp2 = get_task("jsonl:test=x/b.jsonl,train=a.jsonl").splits(seed=1)  # support drawn from train
    assert len(sp2["train"]) + len(sp2["support"]) == 7 and len(sp2["test"]) == 3
    assert "one file for two splits" in _error(get_task, "jsonl:train=a.jsonl,test=a.jsonl")
    assert "SPLIT=FILE" in _error(get_task, "jsonl:train=a.jsonl,val=c.jsonl")


def test_one_file_with_split_labels_uses_them_and_without_is_split_by_seed(tmp_path):
    data = tmp_path / "d.jsonl"
    rows = [json.dumps({"id": f"r{i}", "images": [], "question": "q?", "answer": "a",
                        "split": "test" if i < 4 else "train"}) for i in range(14)]
    data.write_text("\n".join(rows) + "\n")
    sp = get_task(f"jsonl:{data}").splits(seed=0)
    assert {s.id for s in sp["test"]} == {"r0", "r1", "r2", "r3"}
    assert len(sp["train"]) + len(sp["support"]) == 10
    pool = _rows(tmp_path / "pool.jsonl", 20)
    sp = get_task(f"jsonl:{pool}").splits(seed=0)
    assert sum(len(v) for v in sp.values()) <= 20 and sp["test"] and sp["train"] and sp["support"]


@pytest.mark.parametrize("layout", ["labelled-file", "folder", "map"])
def test_train_only_data_fails_before_the_model_loads(tmp_path, monkeypatch, capsys, layout):
    # Was: a train-only file failed only after the model had loaded.
    if layout == "labelled-file":
        spec = str(_rows(tmp_path / "t.jsonl", 8, split="train"))
    elif layout == "folder":
        _rows(tmp_path / "d" / "train.jsonl", 8)
        spec = str(tmp_path / "d")
    else:
        spec = f"train={_rows(tmp_path / 't.jsonl', 8)}"
    _no_model(monkeypatch)
    rc, err = _cli(["train", "tiny:llama", "--task", f"jsonl:{spec}", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "no test data" in err and "train" in err


def test_rows_that_would_leak_or_vanish_between_splits_are_refused(tmp_path):
    mixed = tmp_path / "m.jsonl"
    mixed.write_text(json.dumps({"images": [], "question": "q?", "answer": "a", "split": "test"}) + "\n"
                     + json.dumps({"images": [], "question": "r?", "answer": "b"}) + "\n")
    assert "line 2 has no 'split' but line 1 has one" in _error(get_task, f"jsonl:{mixed}")
    _rows(tmp_path / "d" / "test.jsonl", 3)
    _rows(tmp_path / "d" / "train.jsonl", 3, split="test")
    msg = _error(get_task, f"jsonl:{tmp_path / 'd'}")
    assert f"{tmp_path / 'd' / 'train.jsonl'} line 1: 'split' is 'test'" in msg
    assert "'split' is 'val'" in _error(get_task, f"jsonl:{_rows(tmp_path / 'v.jsonl', 3, split='val')}")


# -- the prompt and the task .json route ------------------------------------------------------------------
def test_a_task_json_overrides_the_prompt_and_its_data_path_starts_at_its_folder(tmp_path, monkeypatch):
    _rows(tmp_path / "mine" / "train.jsonl", 8)
    _rows(tmp_path / "mine" / "test.jsonl", 3, prefix="t")
    spec = {"name": "my-task", "dataset": "jsonl", "data_path": ".", "metric": "exact_match", "test_split": "test",
            "support_split": "train", "instruction": "{question} Reply in French."}
    (tmp_path / "mine" / "task.json").write_text(json.dumps(spec))
    monkeypatch.chdir(tmp_path)
    task = get_task("mine/task.json")
    assert task.data_path == str(tmp_path / "mine") and task.instruction == "{question} Reply in French."
    assert len(task.splits(seed=0)["test"]) == 3


def test_m2iv_tasks_states_the_generic_prompt_and_how_to_add_your_own(capsys):
    from m2iv.cli.main import main
    from m2iv.data.tasks import VQA_INSTRUCTION

    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "jsonl:train=A.jsonl,test=B.jsonl" in out and repr(VQA_INSTRUCTION) in out
    assert "docs/your-own-data.md" in out and "instruction" in out


def test_the_run_record_states_the_prompt(tmp_path, capsys):
    from m2iv.cli.main import main

    _rows(tmp_path / "d" / "train.jsonl", 4)
    _rows(tmp_path / "d" / "test.jsonl", 2, prefix="t")
    assert main(["eval", "tiny:llama", "--task", f"jsonl:{tmp_path / 'd'}", "--out", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["prompt"]["instruction"] == "{question} Answer the question using a single word or phrase."
