"""Big models (issue 23 item 5): `load_model(..., device_map=...)` and `--device-map` shard a model through
accelerate's big-model loading, and vectors trained on the sharded model are the ones trained on it whole.

A CPU-only machine has one compute device, so the split here is CPU + disk: the second decoder layer's weights
live in an offload folder and sit on `meta` in the model, and accelerate's hooks load them for each forward,
which is the path a model too big for its devices takes. (Two accelerators would add a device change between
layers; the hooks' `.to(h.device)` in vectors/inject.py is what covers that, and a CPU cannot exercise it.)
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import fixture_task, method_splits, train_saved
from m2iv.errors import M2IVError
from m2iv.methods import M2IV
from m2iv.models.adapter import weights_fingerprint
from m2iv.models.loading import load_model
from m2iv.models.placement import parse_max_memory, placement
from m2iv.train.config import TeacherConfig, TrainConfig

TASK = fixture_task()
TEXT = "model.text_model"
MANUAL = {"model.vision_model": "cpu", "model.connector": "cpu", f"{TEXT}.embed_tokens": "cpu",
          f"{TEXT}.layers.0": "cpu", f"{TEXT}.layers.1": "disk", f"{TEXT}.norm": "cpu", "lm_head": "cpu"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """tiny:idefics3 saved as a checkpoint directory, the way a big model arrives."""
    d = tmp_path_factory.mktemp("ckpt") / "idefics3"
    lm = load_model("tiny:idefics3")
    lm.model.save_pretrained(d)
    lm.processor.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return method_splits(tmp_path_factory.mktemp("data"), 10, 6)


def _cfg():
    return TrainConfig(steps=6, batch_size=4, lr_vectors=0.05, lr_scales=0.05, val_every=0, checkpoint_every=100,
                       warmup=0.0, teacher=TeacherConfig(shots=2, topk=16))


def _train(lm, splits, out):
    vectors, _ = train_saved(lm, TASK, splits, M2IV().make_vectors(lm), _cfg(), out, show_progress=False)
    log = (out.parent / f"{out.name}.train" / "train_log.jsonl").read_text().splitlines()
    log = [json.loads(x)["loss"] for x in log]
    return vectors, log


def test_a_layer_offloaded_to_disk_trains_the_same_vectors_and_losses(checkpoint, splits, tmp_path, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    whole = load_model(str(checkpoint))
    sharded = load_model(str(checkpoint), device_map=MANUAL, offload_folder=tmp_path / "offload")
    assert placement(sharded.model)[f"{TEXT}.layers.1"] == "disk"
    offloaded = [p for n, p in sharded.model.named_parameters() if n.startswith(f"{TEXT}.layers.1.")]
    assert offloaded and all(p.device.type == "meta" for p in offloaded)  # the weights really are elsewhere
    assert sharded.device == torch.device("cpu")
    # The same weights, read back from the offload folder block by block: the same model to every cache key.
    assert weights_fingerprint(sharded.model) == weights_fingerprint(whole.model)
    v_whole, loss_whole = _train(whole, splits, tmp_path / "whole")
    v_sharded, loss_sharded = _train(sharded, splits, tmp_path / "sharded")
    assert len(loss_whole) == 6 and v_whole.vector("mlp").abs().sum() > 0  # six steps that moved the vectors
    assert loss_sharded == pytest.approx(loss_whole, rel=1e-5, abs=1e-6)
    for key in v_whole.params:
        assert torch.allclose(v_whole.params[key], v_sharded.params[key], atol=1e-6), key
    assert all(p.device.type == "meta" for p in offloaded)  # training left the offloaded layer where it was


def test_auto_map_under_a_memory_cap_sends_layers_to_disk(checkpoint, tmp_path):
    lm = load_model(str(checkpoint), device_map="auto", max_memory="cpu=300KB", offload_folder=tmp_path / "off")
    places = set(placement(lm.model).values())
    assert places == {"cpu", "disk"}, placement(lm.model)
    ids = torch.tensor([[1, 5, 7, 9]])
    with torch.no_grad():
        assert torch.allclose(lm.model(input_ids=ids).logits, load_model(str(checkpoint)).model(input_ids=ids).logits)


def test_models_built_in_code_are_dispatched_with_the_same_map(tmp_path):
    """tiny: and the sandbox are built in memory, then placed by accelerate's dispatch."""
    lm = load_model("tiny:idefics3", device_map=MANUAL, offload_folder=tmp_path / "off", torch_dtype="float32")
    assert placement(lm.model) == MANUAL
    assert weights_fingerprint(lm.model) == weights_fingerprint(load_model("tiny:idefics3").model)


def test_bad_placements_are_one_line_errors(tmp_path):
    with pytest.raises(M2IVError, match="no offload folder"):
        load_model("tiny:idefics3", device_map=MANUAL)
    with pytest.raises(M2IVError, match="device or device_map, not both"):
        load_model("tiny:llama", device="cuda:0", device_map="auto")
    with pytest.raises(M2IVError, match="not a device"):
        load_model("tiny:llama", device_map={"": "gpu-seven"})
    with pytest.raises(M2IVError, match="dtype=bfloat16 and torch_dtype=float16 disagree"):
        load_model("tiny:llama", dtype="bfloat16", torch_dtype="float16")
    with pytest.raises(M2IVError, match="DEVICE=SIZE"):
        parse_max_memory("cpu:20GB")
    assert parse_max_memory("0=20GiB, cpu=60GiB") == {0: "20GiB", "cpu": "60GiB"}


def test_cli_train_with_device_map_writes_vectors(checkpoint, tmp_path, splits):
    """`m2iv train DIR --device-map FILE.json --offload-folder DIR`, and a bad map refused before any load."""
    data = tmp_path / "task.jsonl"
    rows = [{"id": s.id, "images": list(s.images), "question": s.question, "answers": list(s.answers)}
            for s in splits["train"] + splits["support"]]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "map.json").write_text(json.dumps(MANUAL))
    env = {**os.environ, "M2IV_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    base = [sys.executable, "-m", "m2iv.cli.main", "train", str(checkpoint), "--task", f"jsonl:{data}",
            "--shots", "2", "--steps", "2", "--out", str(tmp_path / "v")]
    bad = subprocess.run(base + ["--device-map", '{"": "gpu-seven"}'], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "not a device" in bad.stderr
    ok = subprocess.run(base + ["--device-map", str(tmp_path / "map.json"), "--offload-folder",
                                str(tmp_path / "off")], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads((tmp_path / "v" / "m2iv_config.json").read_text())["method"] == "m2iv"
