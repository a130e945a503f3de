import json
import subprocess
import sys

import pytest

import m2iv.cli.evaluate as cli_evaluate
from m2iv.cli.main import build_parser, iter_parsers, main


def run(*args):
    return subprocess.run([sys.executable, "-m", "m2iv.cli.main", *args], capture_output=True, text=True)


def test_inspect_json_for_qwen2_vl():
    r = run("inspect", "tiny:qwen2_vl", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["layers_path"] == "model.language_model.layers"
    assert info["num_layers"] == 2 and info["hidden_size"] == 64 and info["num_heads"] == 4
    assert info["head_dim"] == 16 and info["image_token_ids"] and "attn_head" in info["injection_sites"]


def test_inspect_text(capsys):
    assert main(["inspect", "tiny:idefics2"]) == 0
    out = capsys.readouterr().out
    assert "model.text_model.layers" in out and "injection_sites" in out


def test_errors_are_one_line_without_traceback():
    r = run("inspect", "./missing-model")
    assert r.returncode == 2 and r.stderr.startswith("error: no model directory at ./missing-model")
    assert "Traceback" not in r.stderr


def test_help_shows_examples():
    r = run("--help")
    assert r.returncode == 0 and "m2iv inspect tiny:qwen2_vl --json" in r.stdout
    assert "example:" in run("inspect", "--help").stdout


def test_demo_pipeline_writes_table_png_and_vectors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    out = tmp_path / "demo"
    assert main(["demo", "tiny:idefics3", "--task", "sandbox-shape-nonce", "--shots", "2", "--n-test", "4",
                 "--steps", "2", "--train-queries", "8", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mean accuracy: zero-shot" in text and str(out) in text
    rows = json.loads((out / "demo.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["zero-shot", "icl", "m2iv"] and rows[2]["variant"] == "all-losses"
    assert rows[2]["mean_prompt_tokens"] == rows[0]["mean_prompt_tokens"] < rows[1]["mean_prompt_tokens"]
    assert (out / "demo.png").stat().st_size > 1000
    assert list((out / "work" / "sandbox-shape-nonce").glob("m2iv-*/vectors-*/vectors.safetensors"))


def test_eval_icl_on_vqav2_fixture_end_to_end(tmp_path):
    from conftest import write_vqav2

    write_vqav2(tmp_path / "data")
    out = tmp_path / "run"
    args = ["eval", "tiny:idefics2", "--task", "vqav2", "--data-root", str(tmp_path / "data"), "--method", "icl",
            "--shots", "4", "--out", str(out)]
    r = run(*args)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "vqav2" and summary["shots"] == 4 and summary["n"] == 6
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 6
    again = run(*args)  # a finished run resumes to the same files
    assert again.returncode == 0 and json.loads((out / "summary.json").read_text())["score"] == summary["score"]


def test_eval_easy_vqa_zero_shot_llava(tmp_path):
    r = run("eval", "tiny:llava", "--task", "easy-vqa", "--method", "zero-shot", "--n-test", "20",
            "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["n"] == 20 and summary["metric"] == "exact_match"


def test_missing_data_root_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "m2iv.cli.main", "eval", "tiny:llava", "--task", "vqav2",
                        "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and str(tmp_path / "nowhere") in r.stderr and r.stderr.count("\n") == 1


# -- issue 15: every failure is one line; 2 for the user's, 1 for ours (with --debug for the traceback) ---------
def _boom(exc):
    def func(args):
        raise exc
    return func


def test_unexpected_error_is_one_line_naming_its_type_with_exit_1(monkeypatch, capsys):
    # Was: the traceback of any exception that is not an M2IVError.
    monkeypatch.setattr(cli_evaluate, "list_tasks", _boom(ValueError("range() arg 3\nmust not be zero")))
    assert main(["tasks"]) == 1
    err = capsys.readouterr().err
    assert err == "error: ValueError: range() arg 3 must not be zero (run with --debug for the traceback)\n"


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_before_or_after_the_subcommand_shows_the_traceback(monkeypatch, capsys, where):
    monkeypatch.setattr(cli_evaluate, "list_tasks", _boom(ValueError("bad")))
    argv = ["--debug", "tasks"] if where == "before" else ["tasks", "--debug"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.endswith("error: ValueError: bad\n")


def test_user_error_with_debug_keeps_exit_2_and_adds_the_traceback(capsys):
    assert main(["inspect", "./missing-model", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1].startswith("error: no model directory at ./missing-model")


def test_ctrl_c_is_one_line_with_exit_130(monkeypatch, capsys):
    monkeypatch.setattr(cli_evaluate, "list_tasks", _boom(KeyboardInterrupt()))
    assert main(["tasks"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted") and err.count("\n") == 1


def test_bad_command_line_is_one_line_naming_the_subcommands_help(capsys):
    # Was: argparse's usage block, then the error, from SystemExit.
    assert main(["eval", "tiny:llava", "--task", "easy-vqa"]) == 2
    assert capsys.readouterr().err == ("error: the following arguments are required: --out "
                                       "(see `m2iv eval --help`)\n")
    assert main(["bench", "suite", "sandbox", "--task", "x", "--out", "o.json", "--bogus"]) == 2
    assert capsys.readouterr().err == "error: unrecognized arguments: --bogus (see `m2iv bench suite --help`)\n"


# -- issue 16: one flag vocabulary -------------------------------------------------------------------------------
@pytest.mark.parametrize(("argv", "old", "new"), [
    (["eval", "tiny:llava", "--task", "easy-vqa", "--limit", "3", "--out", "o"], "--limit", "--n-test"),
    (["bench", "suite", "sandbox", "--tasks", "a", "--out", "o.json"], "--tasks", "--task"),
    (["bench", "compare", "sandbox", "--task", "a", "--methods", "icl", "--out", "o.json"], "--methods", "--method"),
    (["bench", "efficiency", "sandbox", "--task", "a", "--n", "4", "--out", "o.json"], "--n", "--n-test"),
    (["demo", "--model", "tiny:llava"], "--model", "MODEL"),
])
def test_retired_spellings_are_refused_naming_the_new_one(capsys, argv, old, new):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{old} is now" in err and new in err


def test_abbreviated_flags_are_refused():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "tiny:llava", "--task", "easy-vqa", "--n-t", "3", "--out", "o"])


def test_one_vocabulary_across_subcommands():
    retired = {"--tasks", "--methods", "--limit", "--n"}
    benches = {("bench", k) for k in ("suite", "compare", "icl-curve", "many-shot", "library", "efficiency")}
    model_loading = {("inspect",), ("train",), ("eval",), ("demo",)} | benches
    for path, p in iter_parsers(build_parser()):
        flags = {s for a in p._actions for s in a.option_strings}
        if path[:1] != ("library",):  # the library's own flags (--tag, --top) are checked in test_library.py
            assert not flags & retired, (path, flags & retired)
        if path in model_loading:
            assert "--model" not in flags and any(a.dest == "model" and not a.option_strings for a in p._actions), path
        if path in benches:
            assert {"--n-test", "--out", "--seed", "--batch-size"} <= flags, path
    args = build_parser().parse_args(["demo"])
    assert args.model == "sandbox" and args.task == ["sandbox-colour-nonce", "sandbox-shape-nonce",
                                                     "sandbox-colour-french"]
    args = build_parser().parse_args(["bench", "compare", "sandbox", "--task", "a,b", "--method", "icl,m2iv",
                                      "--out", "o.json"])
    assert (args.task, args.method) == (["a", "b"], ["icl", "m2iv"])
    assert build_parser().parse_args(["train", "sandbox", "--task", "t", "--train-batch-size", "3",
                                      "--out", "o"]).batch_size == 3
