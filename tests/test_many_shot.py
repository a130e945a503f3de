"""`m2iv bench many-shot` on a tiny Idefics3: ICL capped by a context window, M²IV taught by an ensemble."""

from m2iv.data.prompts import PromptBuilder
from m2iv.evaluate.bench import many_shot
from m2iv.evaluate.tasks import get_task
from m2iv.models.loading import load_model


def test_icl_beyond_the_window_is_marked_and_m2iv_spreads_shots_over_contexts(tmp_path):
    lm = load_model("tiny:idefics3")
    task = get_task("sandbox-colour-nonce")
    splits = task.splits(seed=0)
    builder = PromptBuilder(lm, task.instruction, task.answer_template)
    p = builder.build(splits["support"][:4], splits["test"][0])
    window = builder.num_tokens(p.text, p.image_paths) + task.max_new_tokens + 2  # 4 shots fit, 5 do not
    rows = many_shot(lm, ["sandbox-colour-nonce"], window, [0, 4, 8], [4, 8], tmp_path, n_test=2,
                     train_defaults={"steps": 2, "batch_size": 4}, task_overrides={"n_train": 4}, log=lambda *_: None)
    icl = {r["shots"]: r for r in rows if r["method"] == "icl"}
    assert icl[0]["fits"] and icl[4]["fits"] and icl[4]["score"] is not None
    assert icl[8]["fits"] is False and icl[8]["score"] is None
    m2iv = {r["shots"]: r for r in rows if r["method"] == "m2iv"}
    assert set(m2iv) == {4, 8}
    assert m2iv[4]["teacher_contexts"] == 1 and m2iv[4]["fits"]
    assert m2iv[8]["teacher_contexts"] == 2 and m2iv[8]["variant"] == "2x4" and not m2iv[8]["fits"]
