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
# (end of section: library)


# ===== section: training checkpoints and eval run identity, images =====
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
    assert rc == 2 and "could not load 'nobody/not-a-model'" in err


# (end of section: CLI)


# ===== section: sandbox build (no pickles, private work dir) =====
# (end of section: sandbox)
