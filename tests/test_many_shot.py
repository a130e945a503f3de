"""`m2iv bench many-shot` on a tiny Idefics3: ICL capped by a context window, M²IV taught by an ensemble."""

import json
from pathlib import Path

import pytest

from m2iv.data.prompts import PromptBuilder
from m2iv.data.tasks import get_task
from m2iv.evaluate.bench import many_shot
from m2iv.models.loading import load_model


@pytest.mark.parametrize("mode", ["product", "mixture"])
def test_icl_beyond_the_window_is_marked_and_m2iv_spreads_shots_over_contexts(tmp_path, mode):
    lm = load_model("tiny:idefics3")
    task = get_task("sandbox-colour-nonce")
    splits = task.splits(seed=0)
    builder = PromptBuilder(lm, task.instruction, task.answer_template)
    p = builder.build(splits["support"][:4], splits["test"][0])
    window = builder.num_tokens(p.text, p.image_paths) + task.max_new_tokens + 2  # 4 shots fit, 5 do not
    rows = many_shot(lm, ["sandbox-colour-nonce"], window, [0, 4, 8], [4, 8], tmp_path, n_test=2,
                     train_defaults={"steps": 2, "batch_size": 4}, task_overrides={"n_train": 4}, ensemble_mode=mode,
                     log=lambda *_: None)
    icl = {r["shots"]: r for r in rows if r["method"] == "icl"}
    assert icl[0]["fits"] and icl[4]["fits"] and icl[4]["score"] is not None
    assert icl[8]["fits"] is False and icl[8]["score"] is None
    m2iv = {r["shots"]: r for r in rows if r["method"] == "m2iv"}
    assert set(m2iv) == {4, 8}
    assert m2iv[4]["teacher_contexts"] == 1 and m2iv[4]["fits"]
    suffix = "" if mode == "product" else "-mixture"  # the product's cells keep their names
    assert m2iv[8]["teacher_contexts"] == 2 and m2iv[8]["variant"] == "2x4" + suffix and not m2iv[8]["fits"]
    recipe = json.loads((Path(m2iv[8]["vectors"]) / "m2iv_config.json").read_text())["recipe"]
    assert (recipe["teacher"]["ensemble"], recipe["teacher"]["ensemble_mode"]) == (2, mode)


@pytest.mark.parametrize("mode", ["product", "mixture"])
def test_teacher_ensemble_combines_the_contexts_as_asked(tmp_path, mode):
    """E contexts per query, each run alone: "product" caches the mean of their answer log-probabilities (renormalised
    by the KL), "mixture" the log of the mean of their probabilities."""
    import torch
    import torch.nn.functional as F

    from conftest import method_splits, tiny
    from m2iv.data.prompts import PromptBuilder
    from m2iv.data.selection import SELECTORS
    from m2iv.train.config import TeacherConfig
    from m2iv.train.teacher import _demo_sets, compute_teacher, student_batch

    lm = tiny("qwen2_vl")
    splits = method_splits(tmp_path / "d", 2, n_support=8)
    builder = PromptBuilder(lm, "")
    cfg = TeacherConfig(shots=2, topk=None, ensemble=3, ensemble_mode=mode)
    tt = compute_teacher(lm, builder, splits["train"], splits["support"], cfg, "fx", cache_dir=tmp_path / "c",
                         show_progress=False)
    selector = SELECTORS.get("random")(splits["support"], seed=0)
    for i, q in enumerate(splits["train"]):
        per = []
        for demos in _demo_sets(selector, q, 0, cfg, 0):
            batch, labels, _ = student_batch(builder, [q], [demos])
            with torch.no_grad():
                logits = lm.model(**batch).logits[0, -labels.shape[1] - 1:-1]
            per.append(F.log_softmax(logits.float(), -1))
        stack = torch.stack(per)  # (E, A, V)
        expected = stack.mean(0) if mode == "product" else torch.logsumexp(stack, 0) - torch.log(torch.tensor(3.0))
        a = labels.shape[1]
        torch.testing.assert_close(tt.values[i, -a:].float(), expected, rtol=2e-3, atol=2e-2)  # fp16 cache
    if mode == "mixture":
        assert torch.allclose(tt.values.float().exp().sum(-1)[tt.labels != -100], torch.ones(1), atol=2e-2)
