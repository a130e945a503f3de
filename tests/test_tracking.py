"""Experiment tracking (`--report-to`, offline) and YAML config files (`--config`), as transformers' `report_to` and
lm-eval's YAML: read back through the trackers' own readers; a flag on the command line wins over the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import write_colour_jsonl
from m2iv.cli.main import build_parser, main

pytest.importorskip("tensorboard")
pytest.importorskip("trackio")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_colour_jsonl(tmp_path_factory.mktemp("jsonl"), 30)


def test_report_to_tensorboard_trackio_and_wandb_offline(tmp_path, data):
    # Was: no experiment tracking at all.
    trackers = "tensorboard,trackio" + (",wandb" if _has("wandb") else "")
    env = {**os.environ, "M2IV_HOME": str(tmp_path / "home"), "TRACKIO_DIR": str(tmp_path / "trackio"),
           "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "TRACKIO_PROJECT": "m2iv-test"}
    out = tmp_path / "v"
    r = subprocess.run([sys.executable, "-m", "m2iv.cli.main", "train", "tiny:idefics3", "--task", f"jsonl:{data}",
                        "--shots", "1", "--steps", "3", "--train-queries", "6", "--val-every", "0", "--out", str(out),
                        "--report-to", trackers], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "v.train" / "tensorboard"))
    events.Reload()
    assert "train/loss" in events.Tags()["scalars"]
    log = [json.loads(x) for x in (tmp_path / "v.train" / "train_log.jsonl").read_text().splitlines()]
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("train/loss")] == \
        [(x["step"], round(x["loss"], 4)) for x in log]
    reader = textwrap.dedent("""
        import json
        from trackio.sqlite_storage import SQLiteStorage
        print(json.dumps([[x["step"], x["train/loss"]] for x in SQLiteStorage.get_logs("m2iv-test", run="v")]))
    """)
    r = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [[s, round(v, 4)] for s, v in json.loads(r.stdout.strip().splitlines()[-1])] == \
        [[x["step"], round(x["loss"], 4)] for x in log]
    if "wandb" in trackers:  # an offline run, to be uploaded with `wandb sync`
        assert list((tmp_path / "v.train" / "wandb").glob("offline-run-*/run-*.wandb"))


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_report_to_refuses_an_unknown_tracker_before_loading(capsys):
    assert main(["train", "tiny:idefics3", "--task", "easy-vqa", "--out", "/tmp/x", "--report-to", "mlflow"]) == 2
    assert "not a tracker; use tensorboard, wandb, trackio" in capsys.readouterr().err


def test_config_file_for_train_and_bench_with_the_command_line_winning(tmp_path, data, monkeypatch, capsys):
    # Was: no --config; every setting had to be typed.
    from m2iv.cli.config_file import expand_config

    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    cfg = tmp_path / "train.yaml"
    cfg.write_text(f"model: tiny:idefics3\ntask: jsonl:{data}\nshots: 1\nsteps: 5\ntrain-queries: 6\n"
                   "val_every: 0\nmethod-config: {token_policy: all}\n")
    out = tmp_path / "v"
    assert main(["train", "--config", str(cfg), "--steps", "2", "--out", str(out)]) == 0
    config = json.loads((out / "m2iv_config.json").read_text())
    assert config["recipe"]["steps"] == 2  # the command line wins
    assert config["recipe"]["teacher"]["shots"] == 1 and config["training"]["n_train"] == 6  # the file's values
    bench = tmp_path / "bench.yaml"
    bench.write_text("model: sandbox\ntask: [sandbox-colour-nonce, sandbox-shape-nonce]\nn-test: 7\nbudget: cpu\n")
    parser = build_parser()
    args = parser.parse_args(expand_config(parser, ["bench", "compare", "tiny:llava", "--config", str(bench),
                                                    "--out", "t.json"]))
    assert (args.model, args.task, args.n_test, args.budget) == \
        ("tiny:llava", ["sandbox-colour-nonce", "sandbox-shape-nonce"], 7, "cpu")
    bench.write_text("n-tests: 7\n")
    assert main(["bench", "compare", "x", "--config", str(bench), "--task", "t", "--out", "t.json"]) == 2
    assert "'n-tests' is not a flag of `m2iv bench compare`" in capsys.readouterr().err
