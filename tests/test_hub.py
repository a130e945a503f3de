"""Vectors and the Hugging Face Hub (issue 23 item 3): save_pretrained / from_pretrained / push_to_hub, the model
card, `hf://org/name[@rev]` from the local cache, and `m2iv library push` / `pull`.

Nothing here reaches a network: the cache is built on disk in huggingface_hub's layout (tests/_fake_hub.py
`fake_cache`), and uploads and downloads go to a Hub on the loopback that records what it is sent (`FakeHub`).
"""

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from _fake_hub import FakeHub, fake_cache
from conftest import logits_with, make_inputs, random_vectors, tiny
from m2iv.constants import CONFIG_NAME, VECTORS_NAME
from m2iv.errors import M2IVError
from m2iv.library.resolve import load_spec
from m2iv.library.store import Library
from m2iv.methods import get_method
from m2iv.vectors import InContextVectors, save_vectors

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def _saved(tmp_path, seed=0, name="v", **kw):
    lm = tiny("llama")
    vec = random_vectors(lm, seed=seed)
    d = vec.save_pretrained(tmp_path / name, adapter=lm.adapter, base_model=kw.pop("base_model", "tiny:llama"),
                            metrics={"val_acc": 0.75}, method_config={"task": "colour"}, **kw)
    return lm, vec, d


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def _same_vectors(a: dict[str, bytes], b: dict[str, bytes]) -> None:
    """Two saves of the same vectors: equal tensors and configs (safetensors writes its metadata in a per-process
    order, so the file bytes, and with them the sha256 field, may differ)."""
    from safetensors.torch import load

    ta, tb = load(a[VECTORS_NAME]), load(b[VECTORS_NAME])
    assert sorted(ta) == sorted(tb) and all(torch.equal(ta[k], tb[k]) for k in ta)
    ca, cb = json.loads(a[CONFIG_NAME]), json.loads(b[CONFIG_NAME])
    assert {**ca, "sha256": ""} == {**cb, "sha256": ""}


# -- save_pretrained / from_pretrained and the card ------------------------------------------------------------
def test_save_pretrained_writes_the_vector_directory_and_a_model_card(tmp_path):
    lm, vec, d = _saved(tmp_path)
    assert sorted(p.name for p in d.iterdir()) == ["README.md", CONFIG_NAME, VECTORS_NAME]
    config = json.loads((d / CONFIG_NAME).read_text())
    meta = _front_matter((d / "README.md").read_text())
    assert meta["library_name"] == "m2iv" and "in-context-vectors" in meta["tags"]
    assert "base_model" not in meta  # tiny:llama names no Hub repository; the Hub would refuse it
    assert meta["m2iv"] == {"method": "m2iv", "task": "colour", "metrics": {"val_acc": 0.75}, "m2iv_version": "0.1.0",
                            "format_version": config["format_version"], "base_model": "tiny:llama", "model_type":
                            "llama", "sites": {"attn": "linear", "mlp": "linear"}, "token_policy": "all",
                            "num_parameters": vec.num_parameters(), "sha256": config["sha256"]}
    loaded = InContextVectors.from_pretrained(d, adapter=lm.adapter)
    assert loaded.config == config
    inputs = make_inputs(lm, ["What colour is it?"])
    assert torch.equal(logits_with(lm, inputs, loaded), logits_with(lm, inputs, vec))
    # A Hub id as base model goes into the Hub's own base_model field.
    _, _, hub = _saved(tmp_path, name="hub", base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert _front_matter((hub / "README.md").read_text())["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_loaded_vectors_save_again_without_their_model_and_keep_the_readme_prose(tmp_path):
    lm, _, d = _saved(tmp_path)
    readme = (d / "README.md").read_text().replace("## Use", "## Use\n\nHand-written note: works best at T=0.")
    (d / "README.md").write_text(readme)
    loaded = InContextVectors.from_pretrained(d)
    again = loaded.save_pretrained(tmp_path / "again")  # the config it was loaded with names the model
    _same_vectors(_files(again), _files(d))
    assert "Hand-written note" not in (again / "README.md").read_text()  # a new folder gets a new card
    loaded.save_pretrained(d, metrics={"val_acc": 0.8})  # into its own folder: prose kept, metadata renewed
    text = (d / "README.md").read_text()
    assert "Hand-written note: works best at T=0." in text
    assert _front_matter(text)["m2iv"]["metrics"] == {"val_acc": 0.8}
    with pytest.raises(M2IVError, match="adapter=lm.adapter and base_model=lm.spec"):
        random_vectors(lm).save_pretrained(tmp_path / "new")
    with pytest.raises(M2IVError, match="was trained on|were made for"):
        InContextVectors.from_pretrained(d, adapter=tiny("qwen2").adapter)


# -- hf:// from the local cache --------------------------------------------------------------------------------
def test_hf_specs_read_the_local_cache_offline_at_any_revision(tmp_path, monkeypatch):
    lm, v_main, d_main = _saved(tmp_path, seed=1, name="main")
    _, v_tag, d_tag = _saved(tmp_path, seed=2, name="tag")
    cache = tmp_path / "hf"
    fake_cache(cache, "org/colour-vectors", _files(d_main))
    tagged = fake_cache(cache, "org/colour-vectors", _files(d_tag), revision="v2")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    inputs = make_inputs(lm, ["What colour is it?"])
    for spec, want in (("hf://org/colour-vectors", v_main), ("hf://org/colour-vectors@v2", v_tag),
                       (f"hf://org/colour-vectors@{tagged}", v_tag)):
        got, config = load_spec(spec, adapter=lm.adapter)  # what --vectors goes through
        assert torch.equal(logits_with(lm, inputs, got), logits_with(lm, inputs, want)), spec
    method = get_method("vectors", {"vectors": "hf://org/colour-vectors@v2"})
    method.prepare(lm, None, {})  # `m2iv eval --method vectors --vectors hf://...`
    assert torch.equal(method.vectors.vector("mlp"), v_tag.vector("mlp"))
    assert torch.equal(InContextVectors.from_pretrained("org/colour-vectors", revision="v2").vector("attn"),
                       v_tag.vector("attn"))
    with pytest.raises(M2IVError) as e:
        load_spec("hf://org/other@main", adapter=lm.adapter)
    assert str(e.value).count("\n") == 0 and "hf download org/other" in str(e.value) and str(cache) in str(e.value)
    with pytest.raises(M2IVError, match="not a Hub repository"):
        load_spec("hf://just-a-name")


def test_cli_eval_reads_hf_vectors_and_names_the_fix_when_missing(tmp_path):
    lm, _, d = _saved(tmp_path)
    cache = tmp_path / "hf"
    fake_cache(cache, "org/vecs", _files(d))
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "M2IV_HOME": str(tmp_path / "home")}
    data = tmp_path / "task.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "images": [], "question": "What colour?", "answers": ["red"]})
                            + "\n" for i in range(3)))
    base = [sys.executable, "-m", "m2iv.cli.main", "eval", "tiny:llama", "--task", f"jsonl:{data}", "--method",
            "vectors", "--n-test", "2"]
    ok = subprocess.run(base + ["--vectors", "hf://org/vecs", "--out", str(tmp_path / "run")], env=env,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr[-1500:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["vectors"]["file_sha256"] == json.loads((d / CONFIG_NAME).read_text())["sha256"]
    bad = subprocess.run(base + ["--vectors", "hf://org/missing", "--out", str(tmp_path / "run2")], env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "hf download org/missing" in bad.stderr


# -- uploads and downloads through a Hub on the loopback ---------------------------------------------------------
def _env(hub: FakeHub, tmp_path: Path) -> dict:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{TESTS}", "HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_test",
            "HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(tmp_path / "hf"), "M2IV_HOME": str(tmp_path / "home"),
            "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}


PUSH = """
import sys, torch
from conftest import random_vectors, tiny
from m2iv.vectors import InContextVectors
lm = tiny("llama")
vec = random_vectors(lm, seed=3)
print(vec.push_to_hub("me/colour", adapter=lm.adapter, base_model="tiny:llama", metrics={"val_acc": 0.75},
                      method_config={"task": "colour"}, commit_message="first vectors"))
vec.save_pretrained(sys.argv[1], adapter=lm.adapter, base_model="tiny:llama", metrics={"val_acc": 0.75},
                    method_config={"task": "colour"})
back = InContextVectors.from_pretrained("me/colour", adapter=lm.adapter)   # online: downloaded into the cache
assert all(torch.equal(back.params[k], vec.params[k]) for k in vec.params)
"""


def test_push_to_hub_sends_one_commit_of_the_saved_directory(tmp_path):
    with FakeHub() as hub:
        run = subprocess.run([sys.executable, "-c", PUSH, str(tmp_path / "local")], env=_env(hub, tmp_path),
                             capture_output=True, text=True, cwd=TESTS)
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.strip().startswith(f"{hub.url}/me/colour/commit/")
        created = [r for r in hub.requests if r["path"] == "/api/repos/create"]
        assert [(r["json"]["organization"], r["json"]["name"]) for r in created] == [("me", "colour")]
        (commit,) = hub.commits()
        assert commit["authorization"] == "Bearer hf_test" and commit["content_type"] == "application/x-ndjson"
        header, *files = commit["ndjson"]
        assert header == {"key": "header", "value": {"summary": "first vectors", "description": ""}}
        sent = {f["value"]["path"]: f["value"] for f in files}
        assert sorted(sent) == ["README.md", CONFIG_NAME, VECTORS_NAME]
        # what save_pretrained writes locally (save and push share one writer), and exactly what the commit sent
        remote = hub.files("me/colour")
        _same_vectors(remote, _files(tmp_path / "local"))
        assert all(base64.b64decode(sent[name]["content"]) == data for name, data in remote.items())
        assert json.loads(remote[CONFIG_NAME])["sha256"] == hashlib.sha256(remote[VECTORS_NAME]).hexdigest()
        card = remote["README.md"].decode()
        assert "from_pretrained(\"me/colour\"" in card and _front_matter(card)["m2iv"]["task"] == "colour"
        validated = [r for r in hub.requests if r["path"] == "/api/validate-yaml"]
        assert validated and validated[0]["json"]["content"] == card
        assert (tmp_path / "hf" / "models--me--colour" / "refs" / "main").is_file()  # the download is cached


def test_library_push_and_pull_move_an_entry_with_its_metadata(tmp_path):
    lm = tiny("llama")
    save_vectors(random_vectors(lm, seed=4), tmp_path / "v", adapter=lm.adapter, base_model="tiny:llama",
                 method_config={"task": "colour"})
    with Library(tmp_path / "lib") as lib:
        entry = lib.add(tmp_path / "v", name="colour", tags=["vqa", "red"], description="colour answers")
        blob = lib.read_blob(entry)
    with FakeHub() as hub:
        env = _env(hub, tmp_path)

        def m2iv(*args, **kw):
            return subprocess.run([sys.executable, "-m", "m2iv.cli.main", "library", *args], env={**env, **kw},
                                  capture_output=True, text=True)

        pushed = m2iv("push", "colour", "me/colour-lib", "--root", str(tmp_path / "lib"))
        assert pushed.returncode == 0, pushed.stderr[-1500:]
        sent = hub.files("me/colour-lib")
        assert sorted(sent) == ["README.md", "library.json", CONFIG_NAME, VECTORS_NAME]
        assert sent[VECTORS_NAME] == blob and {"vqa", "red"} <= set(_front_matter(sent["README.md"].decode())["tags"])
        pulled = m2iv("pull", "me/colour-lib", "--root", str(tmp_path / "lib2"))
        assert pulled.returncode == 0, pulled.stderr[-1500:]
        assert "pulled colour" in pulled.stdout
        # offline, from the cache the pull filled; --name stores a second copy under another name
        again = m2iv("pull", "hf://me/colour-lib", "--name", "colour-copy", "--root", str(tmp_path / "lib2"),
                     HF_HUB_OFFLINE="1")
        assert again.returncode == 0, again.stderr[-1500:]
        missing = m2iv("pull", "me/nothing-here", "--root", str(tmp_path / "lib2"), HF_HUB_OFFLINE="1")
        assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "hf download me/nothing-here" in \
            missing.stderr
    with Library(tmp_path / "lib2") as lib2:
        e = lib2.get("colour")
        assert (e.tags, e.description, e.task) == (["red", "vqa"], "colour answers", "colour")
        assert lib2.read_blob(e) == blob and lib2.get("colour-copy").sha256 == e.sha256
