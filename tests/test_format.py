"""The vector directory format: exact round trip, refusal of mismatched models and corrupt files."""

import json

import pytest
import torch
import transformers as T

from conftest import ALL_FAMILIES, logits_with, make_inputs, random_vectors, tiny
from m2iv.constants import CONFIG_NAME, VECTORS_NAME
from m2iv.errors import M2IVError
from m2iv.models.adapter import discover
from m2iv.vectors import load_vectors, save_vectors
from m2iv.vectors.vector import InContextVectors, SiteSpec


def _save(tmp_path, family="llama", **kw):
    lm = tiny(family)
    vec = random_vectors(lm, **kw)
    d = save_vectors(vec, tmp_path / "vec", adapter=lm.adapter, base_model=f"tiny:{family}",
                     recipe={"lr": 0.01}, metrics={"acc": 0.5})
    return lm, vec, d


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_round_trip_is_exact_and_reproduces_logits(tmp_path, family):
    lm, vec, d = _save(tmp_path, family, sites=("attn", "attn_head", "mlp"), operator="linear")
    with torch.no_grad():
        for p in vec.parameters():
            p.add_(torch.randn_like(p))  # scales too, not only vectors
    d = save_vectors(vec, tmp_path / "vec", adapter=lm.adapter, base_model=f"tiny:{family}")
    loaded, cfg = load_vectors(d, adapter=lm.adapter)
    for (n1, p1), (n2, p2) in zip(vec.named_parameters(), loaded.named_parameters(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2)
    inputs = make_inputs(lm, ["What colour?"])
    assert torch.equal(logits_with(lm, inputs, vec), logits_with(lm, inputs, loaded))
    assert cfg["model_type"] == family and cfg["fingerprint"] == lm.adapter.fingerprint
    assert set(cfg["sites"]) == {"attn", "attn_head", "mlp"}


def test_config_is_self_describing(tmp_path):
    _, vec, d = _save(tmp_path)
    cfg = json.loads((d / CONFIG_NAME).read_text())
    for key in ("format_version", "m2iv_version", "method", "base_model", "model_type", "fingerprint",
                "hidden_size", "num_layers", "num_heads", "head_dim", "sites", "token_policy", "dtype", "recipe",
                "metrics", "sha256"):
        assert key in cfg
    assert cfg["recipe"] == {"lr": 0.01} and cfg["metrics"] == {"acc": 0.5}
    assert cfg["sites"]["attn"]["operator"] == "linear"
    assert cfg["num_parameters"] == vec.num_parameters()


def _llama(**kw):
    cfg = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=448)
    return discover(T.LlamaForCausalLM(T.LlamaConfig(**{**cfg, **kw})))


@pytest.mark.parametrize("other,field", [(lambda: _llama(hidden_size=32, num_attention_heads=2), "hidden_size"),
                                         (lambda: _llama(num_hidden_layers=3), "num_layers"),
                                         (lambda: tiny("qwen2").adapter, "model_type"),
                                         (lambda: _llama(intermediate_size=96), "fingerprint")])
def test_loading_onto_a_different_model_names_the_difference(tmp_path, other, field):
    _, _, d = _save(tmp_path)
    with pytest.raises(M2IVError, match=field):
        load_vectors(d, adapter=other())


def test_fingerprint_check_can_be_relaxed(tmp_path):
    _, vec, d = _save(tmp_path)
    loaded, _ = load_vectors(d, adapter=_llama(intermediate_size=96), strict=False)
    assert torch.equal(loaded.vector("attn"), vec.vector("attn"))


def test_truncated_tensor_file_is_refused(tmp_path):
    _, _, d = _save(tmp_path)
    data = (d / VECTORS_NAME).read_bytes()
    (d / VECTORS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(M2IVError, match="sha256"):
        load_vectors(d)


def test_modified_tensor_file_is_refused(tmp_path):
    _, _, d = _save(tmp_path)
    data = bytearray((d / VECTORS_NAME).read_bytes())
    data[-3] ^= 0xFF
    (d / VECTORS_NAME).write_bytes(bytes(data))
    with pytest.raises(M2IVError, match="truncated or modified"):
        load_vectors(d)


@pytest.mark.parametrize("corrupt,match", [("{not json", "not valid JSON"), ("[1, 2]", "JSON object"),
                                           ('{"format_version": 1}', "lacks field"),
                                           (None, "no m2iv_config.json")])
def test_bad_config_is_refused_with_the_cause(tmp_path, corrupt, match):
    _, _, d = _save(tmp_path)
    if corrupt is None:
        (d / CONFIG_NAME).unlink()
    else:
        (d / CONFIG_NAME).write_text(corrupt)
    with pytest.raises(M2IVError, match=match):
        load_vectors(d)


def test_newer_format_version_is_refused(tmp_path):
    _, _, d = _save(tmp_path)
    cfg = json.loads((d / CONFIG_NAME).read_text())
    cfg["format_version"] = 99
    (d / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(M2IVError, match="upgrade m2iv"):
        load_vectors(d)


def test_missing_directory_is_refused(tmp_path):
    with pytest.raises(M2IVError, match="no vector directory"):
        load_vectors(tmp_path / "nope")


def test_failed_save_leaves_the_previous_directory_intact(tmp_path, monkeypatch):
    lm, vec, d = _save(tmp_path)
    before = {p.name: p.read_bytes() for p in d.iterdir()}

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("m2iv.vectors.directory.save_safetensors", broken)
    with pytest.raises(OSError, match="disk full"):
        save_vectors(vec * 2.0, d, adapter=lm.adapter, base_model="tiny:llama")
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["vec"]  # no temp leftovers
    load_vectors(d, adapter=lm.adapter)


def test_layer_subset_and_sigmoid_scales_round_trip(tmp_path):
    lm = tiny("qwen2_vl")
    a = lm.adapter
    vec = InContextVectors(num_layers=a.num_layers, hidden_size=a.hidden_size, num_heads=a.num_heads,
                           head_dim=a.head_dim, sites={"layer": SiteSpec("norm_preserving", [1], "sigmoid")},
                           token_policy="text", method="live")
    with torch.no_grad():
        vec.vector("layer").normal_()
    d = save_vectors(vec, tmp_path / "v", adapter=a, base_model="tiny:qwen2_vl")
    loaded, cfg = load_vectors(d, adapter=a)
    assert cfg["method"] == "live" and cfg["token_policy"] == "text"
    assert loaded.sites["layer"] == SiteSpec("norm_preserving", [1], "sigmoid")
    alpha = loaded.scale("layer", "alpha")
    assert alpha is not None and torch.equal(alpha, torch.sigmoid(torch.zeros(1)))
    assert torch.equal(loaded.vector("layer"), vec.vector("layer"))


def test_one_compatibility_check_for_configs_and_vectors(tmp_path):
    import dataclasses

    from m2iv.vectors.compat import compat_reason

    lm, other = tiny("llama"), tiny("idefics2")
    vec = random_vectors(lm)
    d = save_vectors(vec, tmp_path / "v", adapter=lm.adapter, base_model="tiny:llama")
    config = json.loads((d / CONFIG_NAME).read_text())
    assert compat_reason(config, lm.adapter) is None and compat_reason(vec, lm.adapter) is None
    why = compat_reason(config, other.adapter, raise_error=False)
    assert why and "model_type='llama' (tiny:llama)" in why and "model_type='idefics2'" in why
    with pytest.raises(M2IVError, match="model_type"):
        compat_reason(config, other.adapter)
    refit = dataclasses.replace(lm.adapter, fingerprint="0123456789abcdef")
    assert "fingerprint" in (compat_reason(config, refit, raise_error=False) or "")
    assert compat_reason(config, refit, strict=False) is None and compat_reason(vec, refit) is None
    small = dataclasses.replace(lm.adapter, hidden_size=32)
    assert "hidden_size=64" in (compat_reason(vec, small, raise_error=False) or "")


def test_library_specs_are_resolved_above_the_vectors_room(tmp_path):
    with pytest.raises(M2IVError, match="load_spec"):
        load_vectors("library:vqa")
