"""M²IV training on tiny models: losses, teacher cache, resume exactness, DDP, reload."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ALL_FAMILIES, fixture_task, for_model, method_splits, tiny, train_saved
from m2iv.data.prompts import PromptBuilder
from m2iv.errors import M2IVError
from m2iv.methods import M2IV
from m2iv.train import losses
from m2iv.train.config import TeacherConfig, TrainConfig
from m2iv.train.teacher import compute_teacher, student_batch
from m2iv.vectors import apply, load_vectors

TASK = fixture_task()


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return method_splits(tmp_path_factory.mktemp("data"), 12, 8)


def _cfg(**kw):
    base = dict(steps=12, batch_size=4, lr_vectors=0.05, lr_scales=0.05, val_every=0, checkpoint_every=5,
                teacher=TeacherConfig(shots=2, topk=16), warmup=0.0)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_training_lowers_loss_and_saved_vectors_reproduce_logits(tmp_path, family, splits, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    lm = tiny(family)
    sp = for_model(lm, splits)
    vec = M2IV().make_vectors(lm)
    best, info = train_saved(lm, TASK, sp, vec, _cfg(), tmp_path / "v", show_progress=False)
    log = [json.loads(x) for x in (tmp_path / "v.train" / "train_log.jsonl").read_text().splitlines()]
    first, last = sum(r["loss"] for r in log[:3]) / 3, sum(r["loss"] for r in log[-3:]) / 3
    assert last < first, (first, last)
    loaded, cfg = load_vectors(tmp_path / "v", adapter=lm.adapter)
    assert cfg["method"] == "m2iv" and cfg["recipe"]["steps"] == 12 and cfg["training"]["teacher"]["shots"] == 2
    builder = PromptBuilder(lm, TASK.instruction)
    batch, _, _ = student_batch(builder, sp["train"][:2])
    with torch.no_grad(), apply(lm.model, best, lm.adapter):
        a = lm.model(**batch).logits
    with torch.no_grad(), apply(lm.model, loaded, lm.adapter):
        b = lm.model(**batch).logits
    assert torch.equal(a, b)


def test_killed_run_resumes_to_identical_vectors(tmp_path, splits, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    lm = tiny("qwen2_vl")
    full, _ = train_saved(lm, TASK, splits, M2IV().make_vectors(lm), _cfg(val_every=4), tmp_path / "a",
                            show_progress=False)
    train_saved(lm, TASK, splits, M2IV().make_vectors(lm), _cfg(val_every=4), tmp_path / "b",
                  show_progress=False, stop_after=8)  # "killed" after step 8; last checkpoint at step 5
    assert not (tmp_path / "b").exists()
    resumed, _ = train_saved(lm, TASK, splits, M2IV().make_vectors(lm), _cfg(val_every=4), tmp_path / "b",
                               show_progress=False)
    for k in full.params:
        assert torch.equal(full.params[k], resumed.params[k]), k
    log = (tmp_path / "b.train" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in log] == list(range(1, 13))


def test_resume_with_other_settings_is_refused(tmp_path, splits, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    lm = tiny("llama")
    sp = for_model(lm, splits)
    train_saved(lm, TASK, sp, M2IV().make_vectors(lm), _cfg(), tmp_path / "v", show_progress=False, stop_after=6)
    with pytest.raises(M2IVError, match="other settings.*lr_vectors"):
        train_saved(lm, TASK, sp, M2IV().make_vectors(lm), _cfg(lr_vectors=0.5), tmp_path / "v",
                      show_progress=False)


def test_teacher_is_computed_once_and_cached(tmp_path, splits, monkeypatch):
    lm = tiny("idefics2")
    builder = PromptBuilder(lm, TASK.instruction)
    cfg = TeacherConfig(shots=3, topk=8, draws=2, hidden_states=True)
    t1 = compute_teacher(lm, builder, splits["train"][:5], splits["support"], cfg, "fx", cache_dir=tmp_path,
                         show_progress=False)
    assert t1.values.shape[:1] == (10,) and t1.index.shape == t1.values.shape and t1.values.shape[-1] == 8
    assert t1.hidden.shape[:2] == (10, lm.adapter.num_layers) and t1.hidden.shape[-1] == lm.adapter.hidden_size
    full = compute_teacher(lm, builder, splits["train"][:2], splits["support"], TeacherConfig(shots=3, topk=None),
                           "fx", cache_dir=tmp_path, show_progress=False)
    assert full.index is None and full.values.shape[-1] == lm.model.config.get_text_config().vocab_size
    calls = []
    monkeypatch.setattr("m2iv.train.teacher._compute_shard", lambda *a, **k: calls.append(1))
    t2 = compute_teacher(lm, builder, splits["train"][:5], splits["support"], cfg, "fx", cache_dir=tmp_path,
                         show_progress=False)
    assert not calls and torch.equal(t1.values, t2.values) and t1.key == t2.key
    # a cache hit still reports what computing the teacher cost, so a run reusing it is not costed as free
    assert t1.compute_seconds is not None and t1.compute_seconds > 0 and t2.compute_seconds == t1.compute_seconds


def test_training_cost_counts_a_cached_teacher_at_its_compute_time():
    from m2iv.train.run import cost_seconds

    assert cost_seconds({"train_seconds": 10.0, "teacher": {"seconds": 0.1, "compute_seconds": 50.0}}) == 60.0
    assert cost_seconds({"train_seconds": 10.0, "teacher": {"seconds": 4.0, "compute_seconds": None}}) == 14.0
    assert cost_seconds({"train_seconds": 3.0}) == 3.0


def test_mimicry_loss_matches_hand_computation():
    student = torch.tensor([[[2.0, 0.0, -1.0]]])
    teacher = torch.tensor([[[0.5, 0.5, 0.0]]]).log()  # full distribution as log-probs
    p, q = teacher.exp(), student.log_softmax(-1)
    expected = (p[..., :2] * (teacher[..., :2] - q[..., :2])).sum()  # 0 * log 0 counts as 0
    got = losses.mimicry(student, teacher, None, torch.ones(1, 1, dtype=torch.bool))
    torch.testing.assert_close(got, expected)
    # top-2 teacher: renormalised over its top k, student read at the same ids of its full softmax
    got_k = losses.mimicry(student, torch.tensor([[[1.0, 1.0]]]), torch.tensor([[[0, 1]]]),
                           torch.ones(1, 1, dtype=torch.bool))
    torch.testing.assert_close(got_k, expected)


def test_synergy_losses():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert losses.synergy_decorrelation(a, a) == pytest.approx(1.0)
    assert losses.synergy_decorrelation(a, torch.tensor([[0.0, 1.0], [1.0, 0.0]])) == pytest.approx(0.0)
    assert losses.synergy("none", a, a) is None


def test_two_process_training_keeps_ranks_identical(tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    script = os.path.join(os.path.dirname(__file__), "_ddp_train.py")
    r = subprocess.run([torchrun, "--nproc_per_node", "2", script, str(tmp_path)], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "M2IV_HOME": str(tmp_path / "home")})
    assert r.returncode == 0, r.stderr[-3000:]
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(a[k].abs().sum() > 0 for k in a if "vector" in k)


def test_alignment_loss_and_frozen_vectors(tmp_path, splits, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    lm = tiny("idefics3")
    vec = M2IV().make_vectors(lm)
    vec.params["attn__vector"].requires_grad_(False)
    before = vec.params["attn__vector"].detach().clone()
    cfg = _cfg(w_align=1.0, w_mimicry=0.0, teacher=TeacherConfig(shots=2, topk=8, hidden_states=True), steps=4)
    train_saved(lm, TASK, splits, vec, cfg, tmp_path / "v", show_progress=False)
    log = [json.loads(x) for x in (tmp_path / "v.train" / "train_log.jsonl").read_text().splitlines()]
    assert all("align" in r and "mimicry" not in r for r in log)
    assert torch.equal(vec.params["attn__vector"], before)  # frozen: no update, no weight decay
    assert not torch.equal(vec.params["mlp__vector"], torch.zeros_like(before))
    with pytest.raises(M2IVError, match="hidden states"):
        TrainConfig(w_align=1.0)
