"""The KV cartridge against PEFT's own PeftModel on the saved directory (the oracle), generation, and training."""

import json

import pytest
import torch

from conftest import fixture_task, for_model, make_inputs, method_splits, tiny
from m2iv.adapters.cartridge import KVPrefix
from m2iv.adapters.peft_dir import load_adapter, save_adapter
from m2iv.errors import M2IVError
from m2iv.methods import get_method
from m2iv.models.loading import load_model

TASK = fixture_task()


def peft_logits(family: str, directory, inputs) -> torch.Tensor:
    from peft import PeftModel

    pm = PeftModel.from_pretrained(load_model(f"tiny:{family}").model, str(directory))
    with torch.no_grad():
        return pm(**inputs).logits


def random_prefix(lm, p=5, frozen=1, seed=0) -> KVPrefix:
    kv = KVPrefix.for_model(lm.adapter, p, frozen)
    kv.load_embeddings(torch.randn(kv.embeddings().shape, generator=torch.Generator().manual_seed(seed)))
    return kv


@pytest.mark.parametrize("family", ["idefics3", "llava_onevision", "llama"])
def test_prefix_equals_peft_loading_the_saved_directory(tmp_path, family):
    lm = tiny(family)
    inputs = make_inputs(lm, ["What colour is it?", "And its shape?"])
    save_adapter(random_prefix(lm), tmp_path / "c", lm=lm)
    kv, cfg = load_adapter(tmp_path / "c", lm)
    with torch.no_grad():
        base = lm.model(**inputs).logits
        with kv.attach(lm, freeze_base=False):
            ours = lm.model(**inputs).logits
        assert torch.equal(lm.model(**inputs).logits, base)
    assert (ours - base).abs().max() > 1e-2
    torch.testing.assert_close(ours, peft_logits(family, tmp_path / "c", inputs), rtol=0, atol=1e-5)
    peft_cfg = json.loads((tmp_path / "c" / "adapter_config.json").read_text())
    assert peft_cfg["peft_type"] == "CARTRIDGE" and peft_cfg["num_virtual_tokens"] == 5
    assert peft_cfg["num_frozen_tokens"] == 1 and cfg["kind"] == "cartridge"


def test_cached_generation_agrees_with_a_full_forward():
    """Greedy tokens generated with the cache are the argmax of one forward over prompt + answer, the prefix on."""
    lm = tiny("idefics3")
    inputs = make_inputs(lm, ["What colour is it?"])
    kv = random_prefix(lm, p=4)
    with torch.no_grad(), kv.attach(lm, freeze_base=False):
        gen = lm.model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        n = inputs["input_ids"].shape[1]
        full = {**inputs, "input_ids": gen, "attention_mask": torch.ones_like(gen)}
        logits = lm.model(**full).logits
    assert torch.equal(logits[0, n - 1:-1].argmax(-1), gen[0, n:])


def test_gradients_reach_the_trainable_rows_only():
    lm = tiny("llava")
    kv = random_prefix(lm, p=4, frozen=1)
    handle = kv.attach(lm)
    try:
        lm.model(**make_inputs(lm, ["What is it?"])).logits.sum().backward()
    finally:
        handle.remove()
    assert kv.params["prefix__trainable"].grad is not None
    assert kv.params["prefix__frozen"].grad is None and not kv.params["prefix__frozen"].requires_grad
    assert all(p.grad is None for p in lm.model.parameters())


def test_mrope_families_are_refused():
    with pytest.raises(M2IVError, match="M-RoPE"):
        KVPrefix.for_model(tiny("qwen2_vl").adapter, 4)


def test_trains_from_the_demonstrations_kv_and_loads_through_the_method(tmp_path, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    lm = tiny("idefics3")
    splits = for_model(lm, method_splits(tmp_path / "d", 8))
    cfg = {"steps": 5, "batch_size": 8, "val_every": 0, "warmup": 0.0, "teacher": {"shots": 2}}
    m = get_method("cartridge", {"out": str(tmp_path / "v"), "train_config": cfg, "progress": False,
                                 "method_config": {"num_virtual_tokens": 6}})
    init = m.make_adapter(lm, TASK, splits, seed=0).embeddings().detach().clone()
    m.train(lm, TASK, splits)
    log = [json.loads(x) for x in (tmp_path / "v.train" / "train_log.jsonl").read_text().splitlines()]
    assert "mimicry" in log[0] and "ce" not in log[0]  # context distillation from the 2-shot teacher
    assert log[-1]["mimicry"] < log[0]["mimicry"]
    saved = m.vectors.embeddings().detach().cpu()
    assert torch.equal(saved[0], init[0]) and not torch.equal(saved[1:], init[1:])  # the sink row stays frozen
    again = get_method("cartridge", {"vectors": str(tmp_path / "v")})
    again.prepare(lm, TASK, splits)
    inputs = make_inputs(lm, ["What is it?"])
    with torch.no_grad(), again.inference(lm):
        ours = lm.model(**inputs).logits
    torch.testing.assert_close(ours, peft_logits("idefics3", tmp_path / "v", inputs), rtol=0, atol=1e-5)


def test_demos_init_needs_enough_tokens(tmp_path, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    lm = tiny("llama")
    splits = for_model(lm, method_splits(tmp_path / "d", 4))
    m = get_method("cartridge", {"shots": 1, "method_config": {"num_virtual_tokens": 4096}})
    with pytest.raises(M2IVError, match="fewer than the cartridge's 4096"):
        m.make_adapter(lm, TASK, splits, seed=0)
