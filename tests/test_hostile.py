"""Careless and hostile input (issue 15): nothing a user put on disk is lost."""

from __future__ import annotations

import pytest
from conftest import random_vectors, tiny

from m2iv.errors import M2IVError
from m2iv.vectors.format import load_vectors, save_vectors


def test_saving_vectors_over_a_directory_of_user_files_is_refused_and_keeps_them(tmp_path):
    # Was: the atomic writer renamed the directory aside and rmtree'd it, user files included.
    lm = tiny("llama")
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(M2IVError, match="did not write"):
        save_vectors(random_vectors(lm), out, adapter=lm.adapter, base_model="tiny:llama")
    assert (out / "thesis.tex").read_text() == "years of work"


def test_saving_over_an_existing_vector_directory_replaces_it(tmp_path):
    lm = tiny("llama")
    out = tmp_path / "out"
    save_vectors(random_vectors(lm, seed=0), out, adapter=lm.adapter, base_model="tiny:llama")
    new = random_vectors(lm, seed=1)
    save_vectors(new, out, adapter=lm.adapter, base_model="tiny:llama")
    loaded, _ = load_vectors(out, adapter=lm.adapter)
    for k, v in new.params.items():
        assert bool((loaded.params[k].cpu() == v.detach().cpu()).all())


# ===== section: library (archive sizes, index, blobs, check --repair) =====
# (end of section: library)


# ===== section: training checkpoints and eval run identity, images =====
# (end of section: checkpoints, run identity, images)


# ===== section: CLI (one-line errors, validators, unwritable --out, hub offline) =====
# (end of section: CLI)


# ===== section: sandbox build (no pickles, private work dir) =====
_PICKLE = (r"\btorch\.(save|load)\s*\(|\bimport (cloud)?pickle\b|\bfrom (cloud)?pickle\b|\bpickle\.|"
            r"\bdill\b|\bjoblib\b|allow_pickle\s*=\s*True|weights_only\s*=\s*False")


def test_no_pickle_is_read_or_written_anywhere_in_src():
    # Was: sandbox/train.py torch.save'd its stage states into /tmp/m2iv-sandbox-train and torch.load'ed them back.
    import re
    from pathlib import Path

    src, pattern = Path(__file__).resolve().parents[1] / "src" / "m2iv", re.compile("".join(_PICKLE))
    hits = [f"{p.relative_to(src)}:{i}: {line.strip()}" for p in sorted(src.rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits


def test_sandbox_trainer_state_round_trips_through_safetensors(tmp_path):
    import json

    import torch

    from m2iv.models.loading import load_model
    from m2iv.sandbox.train_meta import attach_lora, lora_state, save_lora, unpack_lora
    from m2iv.sandbox.train_state import load_state, save_state
    from m2iv.sandbox.train_vision import make_heads

    model = load_model("tiny:idefics3").model  # a fresh one: LoRA hooks must not reach the shared tiny models
    heads = make_heads(model)
    parts = {"vision": model.model.vision_model.state_dict(), "heads": heads.state_dict(),
             "connector": model.model.connector.state_dict()}
    path = save_state(tmp_path / "aligned.safetensors", parts)
    header = json.loads(path.read_bytes()[8: 8 + int.from_bytes(path.read_bytes()[:8], "little")])
    assert header["__metadata__"]["format"] == "m2iv-sandbox-train-1"  # a safetensors file, not a zip of pickles
    back = load_state(path)
    assert back.keys() == parts.keys()
    for part, sd in parts.items():
        assert back[part].keys() == sd.keys() and all(torch.equal(back[part][k], v) for k, v in sd.items())
    lora = attach_lora(model, rank=2, alpha=4)
    with torch.no_grad():
        for m in lora.values():
            m.B.normal_()
    state = lora_state(lora)
    again = unpack_lora(load_state(save_lora(tmp_path / "lora.safetensors", state))["lora"])
    assert again.keys() == state.keys()
    assert all(torch.equal(again[k][ab], state[k][ab]) for k in state for ab in ("A", "B"))
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically: no temp files left


def test_sandbox_work_dir_defaults_to_a_private_folder_under_m2iv_home(tmp_path, monkeypatch):
    # Was: /tmp/m2iv-sandbox-train, where another user could plant the pickles the next run loaded.
    import stat

    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    from m2iv.sandbox.train_config import default_work_dir
    from m2iv.sandbox.train_state import private_dir

    work = private_dir(default_work_dir())
    assert work.parent == tmp_path / "home" and stat.S_IMODE(work.stat().st_mode) == 0o700


@pytest.mark.parametrize("shared", ["world-writable", "tmp"])
def test_a_work_dir_others_can_write_is_refused_in_one_line(tmp_path, shared):
    from pathlib import Path

    from m2iv.sandbox.train_state import private_dir

    work = tmp_path / "shared"
    if shared == "tmp":
        work = Path("/tmp")
    else:
        work.mkdir()
        work.chmod(0o777)
    with pytest.raises(M2IVError) as e:
        private_dir(work)
    assert "\n" not in str(e.value) and ("chmod 700" in str(e.value) or "another user" in str(e.value))


def test_cli_from_scratch_refuses_a_shared_work_dir_before_training(tmp_path, capsys):
    from m2iv.cli.main import main

    work = tmp_path / "shared"
    work.mkdir()
    work.chmod(0o777)
    assert main(["sandbox", "build", "--from-scratch", "--work", str(work), "--stages", "vision"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "writable by every user" in err and "chmod 700" in err
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("argv,message", [
    (["--vision-steps", "3"], "--vision-steps only applies to training; add --from-scratch"),
    (["--stages", "meta"], "--stages only applies to training"),
    (["--from-scratch", "--stages", "vision,alin"], "unknown stage(s) ['alin'] in --stages"),
])
def test_sandbox_build_training_options_are_checked_in_one_line(argv, message, capsys):
    from m2iv.cli.main import main

    assert main(["sandbox", "build", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_python_m_m2iv_sandbox_is_the_m2iv_cli():
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "m2iv.sandbox", "--help"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=300)
    assert out.returncode == 0 and "usage: m2iv sandbox build" in out.stdout and "--meta-steps" in out.stdout


# (end of section: sandbox)
