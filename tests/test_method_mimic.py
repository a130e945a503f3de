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
