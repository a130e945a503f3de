import pytest
import torch
import transformers as T

from conftest import ALL_FAMILIES, tiny
from m2iv.errors import M2IVError
from m2iv.models.adapter import discover


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_discovery_matches_text_config(family):
    lm = tiny(family)
    tc = lm.model.config.get_text_config()
    a = lm.adapter
    assert a.num_layers == tc.num_hidden_layers == len(a.layers)
    assert (a.hidden_size, a.num_heads) == (tc.hidden_size, tc.num_attention_heads)
    assert a.head_dim * a.num_heads == a.layers[0].self_attn.o_proj.in_features
    assert not any(w in a.layers_path for w in ("vision", "visual", "perceiver", "connector"))
    assert a.layers_path in ("model.layers", "model.language_model.layers", "model.text_model.layers")
    assert lm.model.get_submodule(a.layers_path)[0] is a.layers[0]


def test_idefics2_picks_neither_perceiver_nor_vision_layers():
    lm = tiny("idefics2")
    not_lm = list(lm.model.model.connector.modules()) + list(lm.model.model.vision_model.modules())
    ids = {id(m) for m in not_lm}
    for layer in lm.adapter.layers:
        assert id(layer) not in ids and not any(id(m) in ids for m in layer.modules())
    # The perceiver layers also have self_attn + mlp: discovery must not be fooled by that shape.
    assert lm.adapter.layers_path == "model.text_model.layers"


@pytest.mark.parametrize("family,expected", [("llava", ["<image>"]), ("idefics2", ["<image>"]),
                                             ("qwen2_vl", ["<|image_pad|>", "<|video_pad|>"]),
                                             ("llava_onevision", ["<image>", "<video>"]), ("llama", [])])
def test_image_token_ids(family, expected):
    lm = tiny(family)
    assert lm.adapter.image_token_ids == sorted(lm.tokenizer.convert_tokens_to_ids(t) for t in expected)


def test_override_by_path_and_by_regex():
    lm = tiny("llava")
    a = discover(lm.model, layers="model.language_model.layers")
    b = discover(lm.model, layers=r"model\.language_model\.layers\.\d+")
    assert [id(x) for x in a.layers] == [id(x) for x in b.layers] == [id(x) for x in lm.adapter.layers]


def test_override_pointing_at_vision_tower_is_refused():
    lm = tiny("llava")
    with pytest.raises(M2IVError, match="hidden_size|features|attention"):
        discover(lm.model, layers="model.vision_tower.encoder.layers")


def test_override_matching_nothing_is_refused():
    with pytest.raises(M2IVError, match="matched no module"):
        discover(tiny("llama").model, layers=r"nothing\.here\.\d+")


def test_layer_count_disagreeing_with_config_is_refused():
    lm = tiny("llama")
    with pytest.raises(M2IVError, match="num_hidden_layers"):
        discover(lm.model, layers=r"model\.layers\.0")


def test_fingerprint_tracks_architecture_not_weights():
    cfg = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=64)
    torch.manual_seed(0)
    m1 = T.LlamaForCausalLM(T.LlamaConfig(**cfg))
    m2 = T.LlamaForCausalLM(T.LlamaConfig(**cfg))
    m3 = T.LlamaForCausalLM(T.LlamaConfig(**{**cfg, "num_hidden_layers": 3}))
    assert discover(m1).fingerprint == discover(m2).fingerprint != discover(m3).fingerprint
