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
    m.prepare(lm, TASK, splits)
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
        m.prepare(lm, TASK, splits)
    cfg = seen["cfg"]
    assert cfg.val_every == 0 and cfg.steps == 60 and cfg.w_align == 1.0 and cfg.w_ce == 0.5
    assert (cfg.lr_vectors, cfg.lr_scales, cfg.weight_decay, cfg.warmup, cfg.clip) == (5e-3, 5e-3, 1e-3, 0.1, 1.0)
