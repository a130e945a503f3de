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
    from m2iv.train.run import train_vectors

    method = M2IV({"method_config": {"sites": list(sites)}})
    return train_vectors(lm, task, sp, method.make_vectors(lm), cfg, out, show_progress=False, stop_after=stop_after,
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
        monkeypatch.setattr("m2iv.train.run.weights_fingerprint", lambda model: "0123456789abcdef")
    elif change == "task":
        task = replace(task, name="other-task")
    elif change == "data":
        sp = {**sp, "train": sp["train"][::-1]}
    else:
        sites = ("attn",)
    with pytest.raises(M2IVError, match=f"another run.*{'layout' if change == 'sites' else change}.*another --out") as e:
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

# (end of section: checkpoints, run identity, images)


# ===== section: CLI (one-line errors, validators, unwritable --out, hub offline) =====
# (end of section: CLI)


# ===== section: sandbox build (no pickles, private work dir) =====
# (end of section: sandbox)
