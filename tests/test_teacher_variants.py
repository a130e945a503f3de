"""Teacher variants for steering: several experts at once (a composed target from two teachers), the plain model as
the teacher of the queries vectors must leave alone (contrastive training), and training on top of frozen vectors."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from conftest import method_splits, random_vectors, tiny, train_saved
from m2iv.data.prompts import PromptBuilder
from m2iv.data.selection import SELECTORS
from m2iv.errors import M2IVError
from m2iv.train.config import TeacherConfig
from m2iv.train.teacher import _demo_sets, compute_teacher, student_batch


def _alone(lm, builder, q, demos):
    batch, labels, _ = student_batch(builder, [q], [demos])
    with torch.no_grad():
        logits = lm.model(**batch).logits[0, -labels.shape[1] - 1:-1]
    return F.log_softmax(logits.float(), -1), labels.shape[1]


def test_experts_teacher_is_the_product_of_each_pool_read_alone(tmp_path):
    lm = tiny("qwen2_vl")
    splits = method_splits(tmp_path / "d", 2, n_support=8)
    pool_a, pool_b = splits["support"][:4], splits["support"][4:]
    builder = PromptBuilder(lm, "")
    cfg = TeacherConfig(shots=2, topk=None, experts=["a", "b"])
    tt = compute_teacher(lm, builder, splits["train"], [], cfg, "fx", cache_dir=tmp_path / "c", show_progress=False,
                         experts=[pool_a, pool_b])
    sel = [SELECTORS.get("random")(p, seed=0) for p in (pool_a, pool_b)]
    for i, q in enumerate(splits["train"]):
        per = [_alone(lm, builder, q, _demo_sets(s, q, 0, cfg, 0)[0]) for s in sel]
        expected, a = torch.stack([p for p, _ in per]).mean(0), per[0][1]
        torch.testing.assert_close(tt.values[i, -a:].float(), expected, rtol=2e-3, atol=2e-2)  # fp16 cache
    with pytest.raises(M2IVError, match="expert pool"):
        compute_teacher(lm, builder, splits["train"], [], cfg, "fx", cache_dir=tmp_path / "c", show_progress=False)


def test_negatives_are_taught_by_the_plain_model_and_keep_its_answer(tmp_path):
    from m2iv.train.contrastive import own_answers

    lm = tiny("llama")
    splits = method_splits(tmp_path / "d", 4, n_support=6)
    splits = {k: [replace(s, images=()) for s in v] for k, v in splits.items()}
    train = [replace(s, meta={"condition": i % 2 == 0}) for i, s in enumerate(splits["train"])]
    builder = PromptBuilder(lm, "")
    kept = own_answers(lm, builder, train, max_new_tokens=4)
    for before, after in zip(train, kept, strict=True):
        if before.meta["condition"]:
            assert after.answers == before.answers
        else:  # the plain model's own greedy answer
            batch = builder.encode([builder.build([], before)])
            batch.pop("query_start")
            gen = lm.model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
            text = lm.tokenizer.decode(gen[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()
            assert after.answers == (text,)
    cfg = TeacherConfig(shots=2, topk=None, negatives="zero-shot")
    tt = compute_teacher(lm, builder, kept, splits["support"], cfg, "fx", cache_dir=tmp_path / "c",
                         show_progress=False)
    sel = SELECTORS.get("random")(splits["support"], seed=0)
    for i, q in enumerate(kept):
        demos = [] if not q.meta["condition"] else _demo_sets(sel, q, 0, cfg, 0)[0]
        expected, a = _alone(lm, builder, q, demos)
        torch.testing.assert_close(tt.values[i, -a:].float(), expected, rtol=2e-3, atol=2e-2)
    with pytest.raises(M2IVError, match="labelled"):
        own_answers(lm, builder, splits["train"], max_new_tokens=2)


def test_teacher_config_keeps_older_recipes_and_cache_keys():
    """Fields added for steering drop out of the stored recipe at their defaults: earlier vector folders, teacher
    caches and checkpoints keep their names."""
    assert "experts" not in TeacherConfig().to_json() and "negatives" not in TeacherConfig().to_json()
    assert TeacherConfig(negatives="zero-shot").to_json()["negatives"] == "zero-shot"
    with pytest.raises(M2IVError, match="negatives"):
        TeacherConfig(negatives="some")


def test_sequential_training_runs_on_top_of_frozen_vectors(tmp_path):
    import json

    from conftest import fixture_task, make_inputs
    from m2iv.train.config import TrainConfig
    from m2iv.train.run import _frozen_under
    from m2iv.vectors import InContextVectors, apply

    lm = tiny("llama")
    base = random_vectors(lm, scale=0.5, seed=3)
    inputs = make_inputs(lm, ["What colour is it?"])
    with torch.no_grad():
        with apply(lm.model, base, lm.adapter, freeze_base=False):
            want = lm.model(**inputs).logits
        with _frozen_under(lm, base):
            torch.testing.assert_close(lm.model(**inputs).logits, want, rtol=0, atol=0)
        assert not torch.allclose(lm.model(**inputs).logits, want)  # removed afterwards
    splits = method_splits(tmp_path / "d", 6, n_support=4)
    splits = {k: [replace(s, images=()) for s in v] for k, v in splits.items()}
    cfg = TrainConfig(steps=2, batch_size=2, val_every=0, teacher=TeacherConfig(shots=1))
    vec = InContextVectors.for_model(lm.adapter)
    train_saved(lm, fixture_task(), splits, vec, cfg, tmp_path / "out", show_progress=False, base_vectors=base)
    config = json.loads((tmp_path / "out" / "m2iv_config.json").read_text())
    assert config["trained_with"]["spec"]["sites"] == base.spec()["sites"]
    assert not any(p.requires_grad for p in base.parameters())
