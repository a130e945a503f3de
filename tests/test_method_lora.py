"""LoRA through hooks against PEFT's own LoraModel on the saved directory (the oracle), and its training."""

import json

import pytest
import torch

from conftest import fixture_task, for_model, make_inputs, method_splits, tiny
from m2iv.adapters.lora import LoRAWeights, find_targets
from m2iv.adapters.peft_dir import load_adapter, save_adapter
from m2iv.errors import M2IVError
from m2iv.methods import get_method
from m2iv.models.loading import load_model

TASK = fixture_task()
ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]


def peft_logits(family: str, directory, inputs) -> torch.Tensor:
    """PEFT's forward with the saved adapter, on a fresh copy of the tiny model (PEFT replaces its modules)."""
    from peft import PeftModel

    pm = PeftModel.from_pretrained(load_model(f"tiny:{family}").model, str(directory))
    pm.eval()
    with torch.no_grad():
        return pm(**inputs).logits


def random_lora(lm, modules, seed=0) -> LoRAWeights:
    w = LoRAWeights(layers_path=lm.adapter.layers_path, targets=find_targets(lm.adapter, modules), rank=4, alpha=8,
                    dropout=0.1)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in w.params.values():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return w


@pytest.mark.parametrize("family", ["idefics3", "llava", "qwen2_vl", "llama"])
def test_hooked_lora_equals_peft_loading_the_saved_directory(tmp_path, family):
    lm = tiny(family)
    inputs = make_inputs(lm, ["What colour is it?", "And its shape?"])  # left-padded batch of two
    w = random_lora(lm, ATTN + MLP)
    save_adapter(w, tmp_path / "a", lm=lm)
    assert {p.name for p in (tmp_path / "a").iterdir()} == {"adapter_config.json", "adapter_model.safetensors",
                                                            "m2iv_config.json"}
    loaded, cfg = load_adapter(tmp_path / "a", lm)
    with torch.no_grad():
        base = lm.model(**inputs).logits
        with loaded.attach(lm, freeze_base=False):
            ours = lm.model(**inputs).logits
        assert torch.equal(lm.model(**inputs).logits, base)  # hooks removed: the model is the base model again
    assert (ours - base).abs().max() > 1e-2  # the adapter does something
    torch.testing.assert_close(ours, peft_logits(family, tmp_path / "a", inputs), rtol=0, atol=1e-5)
    peft_cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert peft_cfg["peft_type"] == "LORA" and peft_cfg["r"] == 4 and peft_cfg["lora_alpha"] == 8
    assert cfg["kind"] == "lora" and cfg["fingerprint"] == lm.adapter.fingerprint


def test_targets_are_the_language_models_only():
    lm = tiny("idefics3")  # its vision tower has q_proj/k_proj/v_proj too
    targets = find_targets(lm.adapter, ATTN)
    assert len(targets) == 4 * lm.adapter.num_layers
    paths = [LoRAWeights(layers_path=lm.adapter.layers_path, targets=targets, rank=2, alpha=4).module_path(t)
             for t in targets]
    assert all(p.startswith(lm.adapter.layers_path + ".") for p in paths)
    with pytest.raises(M2IVError, match="not linear layers"):
        find_targets(lm.adapter, ["qkv_fused"])


def test_peft_init_leaves_the_model_unchanged_and_gradients_reach_only_the_factors():
    lm = tiny("llava")
    inputs = make_inputs(lm, ["What is it?"])
    w = LoRAWeights(layers_path=lm.adapter.layers_path, targets=find_targets(lm.adapter, ATTN), rank=4, alpha=8,
                    dropout=0.0).init_peft(0)
    with torch.no_grad():
        base = lm.model(**inputs).logits
    handle = w.attach(lm)  # training: base frozen
    try:
        out = lm.model(**inputs).logits
        assert torch.equal(out.detach(), base)  # B = 0: the untrained adapter is the base model
        out.sum().backward()
        assert all(p.grad is None for p in lm.model.parameters())
        assert all(p.grad is not None for n, p in w.params.items() if n.endswith("__lora_B"))
    finally:
        handle.remove()
    assert all(p.requires_grad for p in lm.model.parameters())


def test_trains_saves_loads_and_evaluates_through_the_method(tmp_path, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    lm = tiny("idefics3")
    splits = for_model(lm, method_splits(tmp_path / "d", 8))
    cfg = {"steps": 6, "batch_size": 8, "val_every": 0, "warmup": 0.0}
    m = get_method("lora", {"out": str(tmp_path / "v"), "train_config": cfg, "progress": False,
                            "method_config": {"lr": 0.05, "rank": 4}})
    m.train(lm, TASK, splits)
    log = [json.loads(x) for x in (tmp_path / "v.train" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["ce"] < log[0]["ce"] and "mimicry" not in log[0]  # CE alone by default, and it goes down
    side = json.loads((tmp_path / "v" / "m2iv_config.json").read_text())
    assert side["method"] == "lora" and side["recipe"]["lr_vectors"] == 0.05 and side["rank"] == 4
    inputs = make_inputs(lm, ["What is it?"])
    with torch.no_grad(), m.inference(lm):
        trained = lm.model(**inputs).logits
    torch.testing.assert_close(trained, peft_logits("idefics3", tmp_path / "v", inputs), rtol=0, atol=1e-5)
    again = get_method("lora", {"vectors": str(tmp_path / "v")})  # `--method lora --vectors DIR`
    again.prepare(lm, TASK, splits)
    with torch.no_grad(), again.inference(lm):
        assert torch.equal(lm.model(**inputs).logits, trained)
    with pytest.raises(M2IVError, match="holds a 'lora' adapter"):
        get_method("cartridge", {"vectors": str(tmp_path / "v")}).prepare(lm, TASK, splits)


def test_a_tampered_or_foreign_directory_is_refused(tmp_path):
    lm = tiny("llava")
    save_adapter(random_lora(lm, ATTN), tmp_path / "a", lm=lm)
    with pytest.raises(M2IVError, match="another architecture"):
        load_adapter(tmp_path / "a", tiny("idefics2"))
    f = tmp_path / "a" / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[:-8])
    with pytest.raises(M2IVError, match="sha256"):
        load_adapter(tmp_path / "a", lm)
    with pytest.raises(M2IVError, match="not an m2iv adapter directory"):
        load_adapter(tmp_path, lm)
