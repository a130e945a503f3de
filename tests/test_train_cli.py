"""`m2iv train` as a newcomer meets it: --train-queries, a checkpoint a killed run can resume from, one progress line
with the time left for the whole job, and an explicit choice (--resume, --overwrite, --more-steps) when --out
already holds a run."""

from __future__ import annotations

import json

import pytest

from conftest import fixture_task, method_splits, tiny, train_saved, write_colour_jsonl
from m2iv.cli.main import main
from m2iv.errors import M2IVError
from m2iv.methods import M2IV
from m2iv.train.config import TeacherConfig, TrainConfig


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_colour_jsonl(tmp_path_factory.mktemp("jsonl"), 40)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))


def _train(data, out, *extra: str) -> int:
    return main(["train", "tiny:idefics3", "--task", f"jsonl:{data}", "--shots", "1", "--steps", "3",
                 "--train-queries", "6", "--val-every", "0", "--out", str(out), *extra])


def _log_steps(out) -> list[int]:
    path = out.parent / f"{out.name}.train" / "train_log.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_train_queries_caps_the_teacher_pass(tmp_path, data, capsys):
    # Was: `train` had no --train-queries; the teacher read every one of the task's training queries.
    assert _train(data, tmp_path / "v") == 0
    config = json.loads((tmp_path / "v" / "m2iv_config.json").read_text())
    assert config["training"]["n_train"] + config["training"]["n_val"] == 6
    err = capsys.readouterr().err
    assert "teacher 6/6" in err  # the teacher pass read the 6 queries, no more


def test_one_progress_line_estimates_the_whole_job_and_logs_carry_no_carriage_return(tmp_path, data, capsys):
    # Was: a tqdm bar per phase (teacher, then train), no estimate for the whole job, and `\r` in log files.
    assert _train(data, tmp_path / "v") == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [x for x in err.splitlines() if x.startswith("train job:")]
    assert lines and all("teacher" in x and "steps" in x for x in lines)
    assert any("left" in x for x in lines if "steps 0/3" in x)  # the estimate covers training before it starts
    assert lines[-1].startswith("train job: teacher 6/6 | steps 3/3")


def test_a_checkpoint_follows_the_teacher_pass_and_the_clock(tmp_path):
    # Was: with --steps 20 and --checkpoint-every 25, a run killed before the end left no checkpoint at all.
    lm = tiny("idefics3")
    splits = method_splits(tmp_path / "data", 10, 6)
    cfg = dict(steps=20, batch_size=2, checkpoint_every=25, val_every=0, teacher=TeacherConfig(shots=1, topk=8))
    state = tmp_path / "a.train" / "checkpoint" / "trainer_state.json"
    train_saved(lm, fixture_task(), splits, M2IV().make_vectors(lm), TrainConfig(**cfg), tmp_path / "a",
                  show_progress=False, stop_after=0)  # killed right after the teacher pass
    assert json.loads(state.read_text())["step"] == 0
    train_saved(lm, fixture_task(), splits, M2IV().make_vectors(lm), TrainConfig(**cfg, checkpoint_minutes=1e-6),
                  tmp_path / "a", show_progress=False, stop_after=3)  # the clock is due after every step
    assert json.loads(state.read_text())["step"] == 3


def test_a_finished_run_says_it_is_finished_and_where(tmp_path, data, capsys):
    # Was: rerunning a finished `m2iv train` silently "resumed" it (train_seconds 0.1) and said nothing.
    out = tmp_path / "v"
    assert _train(data, out) == 0
    assert f"finished: 3 of 3 steps; vectors in {out}" in capsys.readouterr().out
    assert _train(data, out) == 2
    err = capsys.readouterr().err
    assert "holds a finished run (3 of 3 steps" in err and str(out) in err and "--more-steps" in err
    assert _train(data, out, "--resume") == 0
    assert f"{out} is finished (3 of 3 steps" in capsys.readouterr().out
    assert _log_steps(out) == [1, 2, 3]  # nothing was retrained


def test_more_steps_continues_a_finished_run_and_overwrite_starts_afresh(tmp_path, data, capsys):
    # Was: `--steps 6` after a run of 5 was refused with "delete the checkpoint by hand"; no way to train further.
    out = tmp_path / "v"
    assert _train(data, out) == 0
    assert _train(data, out, "--steps", "4") == 2
    assert "--more-steps" in capsys.readouterr().err
    assert _train(data, out, "--more-steps", "2") == 0
    config = json.loads((out / "m2iv_config.json").read_text())
    assert config["recipe"]["steps"] == 5 and config["recipe"]["restarts"] == [3]
    log = [json.loads(line) for line in (tmp_path / "v.train" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    assert log[3]["lr_scale"] == 1.0 > log[2]["lr_scale"]  # a new warmup + cosine cycle from step 4
    assert _train(data, out, "--overwrite") == 0
    assert _log_steps(out) == [1, 2, 3]
    assert json.loads((out / "m2iv_config.json").read_text())["recipe"]["steps"] == 3


def test_an_interrupted_run_needs_resume_or_overwrite(tmp_path):
    from m2iv.train.session import Previous, plan

    out = tmp_path / "v"
    interrupted = Previous(out, tmp_path / "v.train", vectors=False, step=12, steps=20)
    with pytest.raises(M2IVError, match=r"interrupted run \(checkpoint at step 12 of 20.*--resume.*--overwrite"):
        plan(interrupted)
    assert plan(interrupted, resume=True) == {}
    with pytest.raises(M2IVError, match="not finished.*--resume"):
        plan(interrupted, more_steps=5)
    with pytest.raises(M2IVError, match="nothing to resume"):
        plan(Previous(out, tmp_path / "v.train"), resume=True)


def test_overwrite_deletes_only_what_m2iv_wrote(tmp_path):
    from m2iv.train.session import Previous, plan

    out = tmp_path / "v"
    out.mkdir()
    (out / "m2iv_config.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(M2IVError, match="files m2iv did not write.*notes.txt"):
        plan(Previous(out, tmp_path / "v.train", vectors=True), overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
