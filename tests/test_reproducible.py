"""Same seed, same bytes: trained vector files are bitwise identical across runs, processes and resumes (issue 27).

The nondeterminism found: training itself was bitwise identical, but safetensors writes the header's metadata
from a Rust HashMap in a random order (safetensors issue #584), so two saves of the same tensors with two
metadata keys differed in their header bytes, and so in sha256. docs/reproducibility.md has the rest.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import torch

from conftest import fixture_task, for_model, method_splits, random_vectors, tiny, train_saved
from m2iv.files import sha256_file
from m2iv.vectors.format import save_vectors


def test_saving_the_same_vectors_again_gives_the_same_bytes(tmp_path):
    # Was: 2 distinct sha256 values in 16 saves (the metadata's two keys in either order).
    lm = tiny("llama")
    vec = random_vectors(lm, seed=0)
    shas = {sha256_file(save_vectors(vec, tmp_path / f"v{i}", adapter=lm.adapter, base_model="tiny:llama")
                        / "vectors.safetensors") for i in range(16)}
    assert len(shas) == 1


def test_safetensors_header_metadata_is_sorted_and_the_file_still_loads(tmp_path):
    from safetensors import safe_open

    from m2iv.files import save_safetensors, write_safetensors_atomic

    meta = {f"k{i}": f"value {i} é \"q\"" for i in (3, 1, 2, 0)}
    tensors = {"b": torch.arange(5.0), "a": torch.ones(2, 3, dtype=torch.float16)}
    for i in range(8):
        (save_safetensors if i % 2 else lambda t, p, m: write_safetensors_atomic(p, t, m))(
            tensors, tmp_path / f"{i}.safetensors", meta)
    data = {(tmp_path / f"{i}.safetensors").read_bytes() for i in range(8)}
    assert len(data) == 1
    blob = data.pop()
    (n,) = struct.unpack("<Q", blob[:8])
    assert list(json.loads(blob[8:8 + n])["__metadata__"]) == ["k0", "k1", "k2", "k3"]
    with safe_open(str(tmp_path / "0.safetensors"), "pt") as f:
        assert f.metadata() == meta
        assert torch.equal(f.get_tensor("b"), tensors["b"]) and torch.equal(f.get_tensor("a"), tensors["a"])


def test_training_twice_and_killed_then_resumed_give_byte_identical_vectors(tmp_path, monkeypatch):
    from m2iv.methods.m2iv.method import M2IV
    from m2iv.train.config import TeacherConfig, TrainConfig

    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    lm = tiny("llama")
    sp = for_model(lm, method_splits(tmp_path / "data", 10, 6))
    cfg = TrainConfig(steps=8, batch_size=2, val_every=0, checkpoint_every=3, seed=3,
                      teacher=TeacherConfig(shots=2, topk=8))

    def train(out: str, stop_after: int | None = None) -> None:
        method = M2IV({})
        train_saved(lm, fixture_task(), sp, method.make_vectors(lm), cfg, tmp_path / out, show_progress=False,
                      stop_after=stop_after, method_config=method.method_config().to_json())

    train("a")
    train("b")
    train("c", stop_after=5)  # "killed" after step 5; its last checkpoint is step 3
    assert not (tmp_path / "c" / "vectors.safetensors").exists()
    train("c")
    shas = {sha256_file(tmp_path / d / "vectors.safetensors") for d in "abc"}
    assert len(shas) == 1


def test_two_cli_training_processes_with_different_hash_seeds_write_the_same_file(tmp_path):
    # Separate processes: Python's string hashing (set and dict orders of str) and safetensors' HashMap keys differ.
    rows = [{"images": [], "question": f"Which word is first in: {w} sun tree?", "answer": w}
            for w in ["red", "blue", "green", "cat", "dog", "moon"] * 3]
    data = tmp_path / "text.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shas = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONHASHSEED": seed,
               "M2IV_HOME": str(tmp_path / f"home{seed}")}
        out = tmp_path / f"out{seed}"
        subprocess.run([sys.executable, "-m", "m2iv.cli.main", "train", "tiny:llama", "--task", f"jsonl:{data}",
                        "--shots", "2", "--steps", "4", "--train-batch-size", "2", "--val-every", "0", "--seed", "3",
                        "--out", str(out)], env=env, check=True, capture_output=True, timeout=300)
        shas.append(sha256_file(out / "vectors.safetensors"))
    assert shas[0] == shas[1]
