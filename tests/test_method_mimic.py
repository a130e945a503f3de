import json

import pytest
import torch

from conftest import fixture_task, for_model, method_splits, tiny
from m2iv.methods import get_method
from m2iv.vectors import load_vectors

TASK = fixture_task()


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics2", "qwen2"])
def test_mimic_trains_gated_heads_with_alignment(tmp_path, family, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    lm = tiny(family)
    splits = for_model(lm, method_splits(tmp_path / "d", 10))
    cfg = {"steps": 6, "batch_size": 4, "val_every": 0, "teacher": {"shots": 2, "topk": 8}}
    m = get_method("mimic", {"out": str(tmp_path / "v"), "train_config": cfg, "progress": False})
    init = m.make_vectors(lm)
    m.train(lm, TASK, splits)
    log = [json.loads(x) for x in (tmp_path / "v.train" / "train_log.jsonl").read_text().splitlines()]
    assert {"align", "ce"} <= set(log[0]) and "mimicry" not in log[0]
    vec, config = load_vectors(tmp_path / "v", adapter=lm.adapter)
    assert config["method"] == "mimic" and config["sites"]["attn_head"]["operator"] == "gated"
    assert set(vec.params) == {"attn_head__vector", "attn_head__gate_w", "attn_head__gate_b"}
    for k in vec.params:  # everything MimIC learns moved: shifts and the logZ1 map
        assert not torch.equal(vec.params[k], init.params[k]), k
    assert vec.num_parameters() == lm.adapter.num_layers * lm.adapter.num_heads * (2 * lm.adapter.head_dim + 1)


def test_mimic_recipe_is_the_originals_and_keeps_the_last_vectors(tmp_path, monkeypatch):
    """The original saves the last epoch's shifts; the shared trainer's default (validate every 50 steps, keep
    the best) must not apply to MimIC unless asked (`--method-config val_every=K`)."""
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    m = get_method("mimic", {"out": str(tmp_path / "v"), "train_config": {"steps": 60}})
    lm = tiny("qwen2")
    splits = method_splits(tmp_path / "d", 10)
    seen = {}
    import m2iv.train.run as run

    def spy(lm, task, splits, vectors, cfg, out, **kw):
        seen["cfg"] = cfg
        raise RuntimeError("stop")

    monkeypatch.setattr(run, "train_vectors", spy)
    with pytest.raises(RuntimeError, match="stop"):
        m.train(lm, TASK, splits)
    cfg = seen["cfg"]
    assert cfg.val_every == 0 and cfg.steps == 60 and cfg.w_align == 1.0 and cfg.w_ce == 0.5
    assert (cfg.lr_vectors, cfg.lr_scales, cfg.weight_decay, cfg.warmup, cfg.clip) == (5e-3, 5e-3, 1e-3, 0.1, 1.0)


def _mlp_outputs(lm, batch: dict) -> list[torch.Tensor]:
    """The original's RECORD_HIDDEN_STATES on the FFN: every layer's MLP output over the whole sequence."""
    seen: list[torch.Tensor] = []
    hooks = [lm.adapter.module(layer, "mlp").register_forward_hook(
        lambda _m, _a, out: seen.append(out[0] if isinstance(out, tuple) else out))
        for layer in range(lm.adapter.num_layers)]
    try:
        with torch.no_grad():
            lm.model(**batch)
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_mimic_original_alignment_targets_are_mlp_outputs_at_every_query_and_answer_token(tmp_path, monkeypatch):
    """`align_site="mlp", align_span="query"`: the teacher's MLP outputs at the query + answer tokens of its N-shot
    sequence, against the student's at the same tokens of its zero-shot one, as the original records them."""
    from m2iv.data.prompts import PromptBuilder
    from m2iv.data.selection import SELECTORS
    from m2iv.train.config import TeacherConfig
    from m2iv.train.teacher import _answer_logits, _demo_sets, compute_teacher, query_span, student_batch

    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    lm = tiny("idefics2")
    splits = method_splits(tmp_path / "d", 3)
    builder = PromptBuilder(lm, "")
    cfg = TeacherConfig(shots=2, topk=8, hidden_states=True, hidden_site="mlp", hidden_span="query")
    tt = compute_teacher(lm, builder, splits["train"], splits["support"], cfg, "fixture", show_progress=False)
    selector = SELECTORS.get("random")(splits["support"], seed=0)
    for i, q in enumerate(splits["train"]):
        demos = _demo_sets(selector, q, 0, cfg, 0)[0]
        t_batch, _, t_start = student_batch(builder, [q], [demos])
        s_batch, s_labels, s_start = student_batch(builder, [q])
        n_t, n_s = t_batch["input_ids"].shape[1] - int(t_start[0]), s_batch["input_ids"].shape[1] - int(s_start[0])
        assert n_t == n_s == int(tt.hidden_len[i])  # the query + answer tokens, the same in both sequences
        original = torch.stack([h[0, int(t_start[0]):] for h in _mlp_outputs(lm, t_batch)])  # (L, S, D)
        torch.testing.assert_close(tt.hidden[i, :, -n_t:].float(), original, rtol=1e-2, atol=1e-2)  # cached in fp16
        span, _ = query_span(s_batch, s_start)
        _, student = _answer_logits(lm, s_batch, s_labels.shape[1], True, "mlp", span)
        original = torch.stack([h[0, int(s_start[0]):] for h in _mlp_outputs(lm, s_batch)])
        torch.testing.assert_close(student[0], original)


def test_mimic_trains_with_the_original_alignment_targets(tmp_path, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    lm = tiny("qwen2_vl")
    splits = for_model(lm, method_splits(tmp_path / "d", 6))
    cfg = {"steps": 3, "batch_size": 3, "val_every": 0, "teacher": {"shots": 2, "topk": 8}}
    m = get_method("mimic", {"out": str(tmp_path / "v"), "train_config": cfg, "progress": False,
                             "method_config": {"align_site": "mlp", "align_span": "query"}})
    m.train(lm, TASK, splits)
    log = [json.loads(x) for x in (tmp_path / "v.train" / "train_log.jsonl").read_text().splitlines()]
    assert all(r["align"] > 0 for r in log)
    config = json.loads((tmp_path / "v" / "m2iv_config.json").read_text())
    teacher = config["recipe"]["teacher"]
    assert (teacher["hidden_site"], teacher["hidden_span"]) == ("mlp", "query")


def test_mimic_sequence_lm_loss_is_the_originals_labels_input_ids(tmp_path):
    """`ce_span="sequence"`: the LM loss of HF's `model(**inputs, labels=input_ids)` on the student's zero-shot
    query + answer (with the vectors injected), as the original computes it; "answer" is the answer tokens only."""
    from m2iv.data.prompts import PromptBuilder
    from m2iv.train.config import TrainConfig
    from m2iv.train.teacher import student_batch
    from m2iv.train.trainer import VectorTrainer
    from m2iv.vectors.inject import inject

    lm = tiny("qwen2_vl")
    q = method_splits(tmp_path / "d", 1)["train"]
    builder = PromptBuilder(lm, "")
    vec = get_method("mimic", {}).make_vectors(lm)
    with torch.no_grad():
        vec.vector("attn_head").normal_(0, 0.5)  # a visible shift, so the loss is the injected model's
        vec.params["attn_head__gate_b"].fill_(2.0)
    losses = {}
    for span in ("sequence", "answer"):
        cfg = TrainConfig(steps=1, w_mimicry=0.0, w_synergy=0.0, synergy="none", w_ce=1.0, ce_span=span)
        trainer = VectorTrainer(lm, vec, cfg, tmp_path / span, show_progress=False)
        with inject(lm.model, vec, lm.adapter) as handle, torch.no_grad():
            losses[span] = trainer._loss(builder, q, None, [0], handle)[1]["ce"]
            batch, labels, start = student_batch(builder, q)
            handle.set_query_start(start)
            original = lm.model(**batch, labels=batch["input_ids"]).loss
            answer_only = lm.model(**batch, labels=torch.cat([torch.full_like(batch["input_ids"][:, :-labels.shape[1]],
                                                                              -100), labels], 1)).loss
    assert losses["sequence"] == pytest.approx(float(original), rel=1e-5)
    assert losses["answer"] == pytest.approx(float(answer_only), rel=1e-5)
    assert abs(losses["sequence"] - losses["answer"]) > 1e-3


def test_mimic_gate_bias_decay_switch_is_the_originals_param_groups(tmp_path):
    """`decay_gate_bias=False`: AdamW without weight decay on the gate bias (the original exempts biases)."""
    from m2iv.train.config import TrainConfig
    from m2iv.train.trainer import VectorTrainer

    lm = tiny("qwen2")
    vec = get_method("mimic", {}).make_vectors(lm)
    for no_decay, exempt in (([], set()), (["gate_b"], {"attn_head__gate_b"})):
        cfg = TrainConfig(steps=1, w_mimicry=0.0, synergy="none", w_synergy=0.0, w_ce=1.0, no_decay=no_decay)
        opt = VectorTrainer(lm, vec, cfg, tmp_path / str(no_decay), show_progress=False).opt
        names = {id(p): n for n, p in vec.params.items()}
        got = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
        assert got == exempt
