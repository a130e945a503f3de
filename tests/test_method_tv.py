"""Task Vectors: the stored vector is the mean last-token layer output of the extraction prompts, and the patch
replaces exactly the last prompt position at the chosen layer."""

from dataclasses import replace

import pytest
import torch

from conftest import fixture_task, for_model, method_splits, tiny
from m2iv.data.prompts import PromptBuilder
from m2iv.errors import M2IVError
from m2iv.methods import METHODS, get_method
from m2iv.methods.extraction import split_dev
from m2iv.methods.tv import TVConfig
from m2iv.vectors import apply, load_vectors

TASK = fixture_task()
CFG = TVConfig(n_prompts=2, dummy_queries=2, dev_size=3)


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return method_splits(tmp_path_factory.mktemp("data"), 10)


def _single(lm, builder, prompt) -> dict:
    batch = builder.encode([prompt])
    batch.pop("query_start")
    return batch


def _capture(module, store: list):
    return module.register_forward_hook(lambda _m, _a, out: store.append((out[0] if isinstance(out, tuple) else out)
                                                                          .detach().clone()))


@pytest.mark.parametrize("family", ["llama", "qwen2_vl", "llava"])
def test_tv_vector_is_mean_last_token_state_and_patch_replaces_only_last_position(family, splits):
    lm = tiny(family)
    sp = for_model(lm, splits)
    method = get_method("tv", {"shots": 2, "seed": 0, "method_config": CFG})
    vec, info = method.fit(lm, TASK, sp)
    layer = info["layer"]
    spec = vec.spec()
    assert spec["method"] == "tv" and spec["token_policy"] == "last"
    assert spec["sites"] == {"layer": {"operator": "replace", "layers": [layer], "scale_activation": "identity"}}
    # the layer is the argmax of (dev accuracy, mean log-prob) over every layer
    dev = info["dev_by_layer"]
    assert set(dev) == {str(i) for i in range(lm.adapter.num_layers)}
    assert layer == max(range(lm.adapter.num_layers), key=lambda i: (dev[str(i)]["accuracy"], dev[str(i)]["logprob"]))

    # oracle: each extraction prompt run alone (no padding), decoder-layer output at its last token, averaged
    builder = PromptBuilder(lm, TASK.instruction, TASK.answer_template)
    dev_q, pool = split_dev(sp["train"], CFG.dev_size, 0, "tv")
    assert not {q.id for q in dev_q} & {q.id for q in pool}  # no dev query is ever an extraction query
    prompts = method.extraction_prompts(builder, sp["support"], pool, 2, CFG, 0)
    assert len(prompts) == CFG.n_prompts * CFG.dummy_queries == info["n_extraction_prompts"]
    states = []
    with torch.no_grad():
        for p in prompts:
            assert p.answer is None and p.text.endswith(builder.build([], sp["train"][0]).text[-10:])
            got = []
            h = _capture(lm.adapter.layers[layer], got)
            lm.model(**_single(lm, builder, p))
            h.remove()
            states.append(got[0][0, -1])
    torch.testing.assert_close(vec.vector("layer")[0], torch.stack(states).mean(0), atol=1e-4, rtol=1e-4)

    # the patch: at layer `layer`, the last prompt position becomes v; every other position is untouched
    batch = _single(lm, builder, builder.build([], sp["train"][0]))
    pre, post = [], []
    with torch.no_grad():
        h1 = _capture(lm.adapter.layers[layer], pre)
        with apply(lm.model, vec, lm.adapter):
            h2 = _capture(lm.adapter.layers[layer], post)
            lm.model(**batch)
        h1.remove()
        h2.remove()
    assert torch.equal(post[0][:, :-1], pre[0][:, :-1])
    torch.testing.assert_close(post[0][0, -1], vec.vector("layer")[0])
    assert not torch.allclose(pre[0][0, -1], post[0][0, -1])


def test_tv_fixed_layer_round_trip_and_registration(tmp_path, splits):
    assert "tv" in METHODS and get_method("tv").trainable
    lm = tiny("idefics2")
    out = tmp_path / "tv"
    method = get_method("tv", {"shots": 2, "out": str(out), "method_config": replace(CFG, layer=0, n_prompts=1)})
    method.train(lm, TASK, splits)
    assert method.info["layer"] == 0 and method.info["dev_by_layer"] == {}
    loaded, cfg = load_vectors(out, adapter=lm.adapter)
    assert cfg["method"] == "tv" and cfg["method_config"]["task"] == "fixture"
    assert cfg["method_config"]["layer"] == 0 and cfg["method_config"]["shots"] == 2  # the shots actually used
    assert torch.equal(loaded.vector("layer"), method.vectors.vector("layer"))
    again = get_method("tv", {"vectors": str(out)})
    again.prepare(lm, TASK, splits)
    assert torch.equal(again.vectors.vector("layer"), method.vectors.vector("layer"))
    with pytest.raises(M2IVError, match="out of range"):
        get_method("tv", {"shots": 2, "method_config": replace(CFG, layers=[7])}).fit(lm, TASK, splits)
    with pytest.raises(M2IVError, match="demonstrations"):
        get_method("tv", {"shots": 50, "method_config": CFG}).fit(lm, TASK, splits)
