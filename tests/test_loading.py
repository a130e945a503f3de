import json
import subprocess
import sys

import pytest
import torch

from conftest import ALL_FAMILIES, make_inputs, tiny
from m2iv.errors import M2IVError
from m2iv.models.loading import load_model


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_local_directory_loads_like_the_model_that_was_saved(tmp_path, family):
    lm = tiny(family)
    lm.model.save_pretrained(tmp_path)
    lm.processor.save_pretrained(tmp_path)
    again = load_model(str(tmp_path))
    assert again.family == family and again.adapter.fingerprint == lm.adapter.fingerprint
    inputs = make_inputs(lm, ["What colour is it?"])
    inputs2 = make_inputs(again, ["What colour is it?"])
    assert torch.equal(inputs["input_ids"], inputs2["input_ids"])
    with torch.no_grad():
        assert torch.equal(lm.model(**inputs).logits, again.model(**inputs2).logits)


def test_tiny_models_are_seeded():
    a, b = load_model("tiny:qwen2"), load_model("tiny:qwen2")
    c = load_model("tiny:qwen2", seed=1)
    sa, sb, sc = (m.model.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_dtype_option():
    lm = load_model("tiny:llama", dtype="bf16")
    assert next(lm.model.parameters()).dtype == torch.bfloat16
    with pytest.raises(M2IVError, match="unknown dtype"):
        load_model("tiny:llama", dtype="int3")


@pytest.mark.parametrize("spec,match", [("tiny:gpt9", "supported: idefics2"), ("./no/such/dir", "no model directory"),
                                        ("/tmp/definitely/missing", "no model directory"),
                                        ("missing.gguf", "no GGUF file")])
def test_bad_specs_get_one_line_errors(spec, match):
    with pytest.raises(M2IVError, match=match) as e:
        load_model(spec)
    assert "\n" not in str(e.value)


def test_unsupported_model_type_names_what_was_found(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(M2IVError, match="'gpt2' model.*supported: idefics2"):
        load_model(str(tmp_path))


def test_directory_without_config(tmp_path):
    with pytest.raises(M2IVError, match="no config.json"):
        load_model(str(tmp_path))


def test_offline_hub_id_fails_in_one_line():
    r = subprocess.run([sys.executable, "-m", "m2iv.cli.main", "inspect", "nobody/not-a-model"],
                       capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "could not load 'nobody/not-a-model'" in r.stderr
