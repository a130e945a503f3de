"""The sandbox LVLM: labels, episode rendering, the not-built error, and (slow) building from the shipped
weights into a temporary M2IV_HOME, loading it through the HF path and describing held-out images."""

from __future__ import annotations

import json

import pytest

from m2iv.errors import M2IVError

easy_vqa = pytest.importorskip("easy_vqa")


def test_load_sandbox_without_a_build_raises_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path))
    from m2iv.sandbox import load_sandbox

    with pytest.raises(M2IVError) as e:
        load_sandbox()
    assert str(e.value) == "the sandbox model is not built; run `m2iv sandbox build` (about a minute)"
    assert "\n" not in str(e.value)


def test_load_model_spec_sandbox_raises_the_same_error(tmp_path, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path))
    from m2iv.models.loading import load_model

    with pytest.raises(M2IVError, match="sandbox model is not built"):
        load_model("sandbox")


def test_importing_the_task_registry_and_model_loading_does_not_load_the_sandbox():
    # Was: the task registry (then evaluate/tasks.py) imported sandbox.suite and sandbox.applications (and torch
    # through them) at import.
    import os
    import subprocess
    import sys

    code = ("import sys; import m2iv.data.tasks, m2iv.models.loading, m2iv.data.datasets; "
            "print(sorted(m for m in sys.modules if m.startswith('m2iv.sandbox')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_sandbox_tasks_are_listed_and_found_on_first_use(capsys):
    from m2iv.cli.main import main
    from m2iv.data.datasets import DATASETS
    from m2iv.data.tasks import TASKS, get_task

    assert main(["tasks"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert {"sandbox-colour-nonce", "sandbox-shape-nonce", "sandbox-grounding", "sandbox-safety"} <= listed
    assert get_task("sandbox-colour-french").metric == "exact_match"
    assert "sandbox-style-caps" in DATASETS and "sandbox-style-caps" in TASKS


def test_sandbox_schedule_is_the_trainers_warmup_cosine_above_a_floor():
    from m2iv.sandbox.recipe.optim import lr_at

    lrs = [lr_at(s, 300, 1.0) for s in range(300)]
    assert lrs[0] == 1 / 20 and abs(lrs[19] - 1.0) < 1e-12 and lrs[20] == 1.0  # 20 warm-up steps
    assert all(a >= b for a, b in zip(lrs[20:], lrs[21:], strict=False)) and 0.1 < lrs[-1] < 0.1001


def test_image_labels_cover_most_images_and_agree_with_direct_answers():
    from m2iv.sandbox.labels import COLOURS, SHAPES, image_labels, image_paths, questions

    for split, n in (("train", 4000), ("test", 1000)):
        labels, paths = image_labels(split), image_paths(split)
        assert len(paths) == n and 0.85 * n < len(labels) <= n
        assert all(c in COLOURS and s in SHAPES for c, s in labels.values())
        assert all(i in paths for i in labels)
    labels = image_labels("test")
    for q, a, i in questions("test"):
        if q == "what color is the shape?" and i in labels:
            assert labels[i][0] == a
        if q == "what shape is in the image?" and i in labels:
            assert labels[i][1] == a


def test_unknown_split_is_a_one_line_error():
    from m2iv.sandbox.labels import image_labels

    with pytest.raises(M2IVError, match="unknown easy-vqa split"):
        image_labels("validation")


def test_training_words_are_disjoint_from_every_evaluation_word():
    from m2iv.sandbox.episodes import EVAL_TASKS, RESERVED_WORDS, training_words

    words = set(training_words())
    assert len(words) == 400 and not words & RESERVED_WORDS
    assert not words & {w for _, m in EVAL_TASKS.values() for w in m.values()}


def test_shipped_weights_match_their_manifest():
    from m2iv.sandbox import assemble as A

    info = A.read_manifest()
    assert info["sha256"] == A.sha256(A.WEIGHTS)
    assert A.WEIGHTS.stat().st_size < 25e6


def test_corrupt_weights_are_refused(tmp_path):
    from m2iv.sandbox import assemble as A

    w, m = tmp_path / "weights.safetensors", tmp_path / "weights.json"
    w.write_bytes(b"not the weights")
    m.write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(M2IVError, match="corrupt or was changed"):
        A.read_manifest(w, m)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Build from the shipped weights into a temporary M2IV_HOME (about a minute)."""
    home = tmp_path_factory.mktemp("m2iv_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("M2IV_HOME", str(home))
    from m2iv.sandbox import build, sandbox_dir

    path = build(progress=lambda s: None)
    assert path == sandbox_dir() and (path / "config.json").is_file()
    yield path
    mp.undo()


@pytest.mark.slow
def test_build_then_load_sandbox_and_load_model(built, monkeypatch):
    import torch

    monkeypatch.setenv("M2IV_HOME", str(built.parent))
    from m2iv.models.loading import load_model
    from m2iv.sandbox import load_sandbox

    model, processor, family = load_sandbox(dtype=torch.bfloat16)
    assert family == "idefics3" and type(model).__name__ == "Idefics3ForConditionalGeneration"
    assert model.dtype == torch.bfloat16 and processor.image_seq_len == 4
    stamp = json.loads((built / "m2iv_sandbox.json").read_text())
    from m2iv.sandbox import assemble as A

    assert stamp["weights_sha256"] == A.read_manifest()["sha256"]
    lm = load_model("sandbox", dtype="bf16")
    assert lm.family == "idefics3" and lm.is_vlm


@pytest.mark.slow
def test_built_sandbox_describes_held_out_images(built, monkeypatch):
    import torch

    monkeypatch.setenv("M2IV_HOME", str(built.parent))
    from m2iv.sandbox import load_sandbox
    from m2iv.sandbox.recipe.eval import eval_describe_hf

    model, processor, _ = load_sandbox(dtype=torch.bfloat16)
    res = eval_describe_hf(model, processor, n=24, batch=12)
    assert res["both"] >= 0.8, res


@pytest.mark.slow
def test_built_sandbox_still_answers_text_only_chat(built, monkeypatch):
    """Text-only prompts go through the same model (meta-training made answers terse; see model_card.json)."""
    import torch

    monkeypatch.setenv("M2IV_HOME", str(built.parent))
    from m2iv.sandbox import load_sandbox

    model, processor, _ = load_sandbox(dtype=torch.bfloat16)
    tok = processor.tokenizer
    msgs = [{"role": "user", "content": [{"type": "text", "text": "What color is the sky?"}]}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    enc = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    answer = tok.decode(out[0, enc["input_ids"].shape[1]:])
    assert "blue" in answer.lower() and answer.endswith("<|im_end|>")


@pytest.mark.slow
def test_suite_task_end_to_end_on_the_sandbox(built, monkeypatch, tmp_path):
    """A suite task through the ordinary harness: 16-shot ICL clearly beats zero-shot on held-out images."""
    monkeypatch.setenv("M2IV_HOME", str(built.parent))
    from m2iv.data.tasks import get_task
    from m2iv.evaluate.runner import EvalConfig, evaluate
    from m2iv.methods import get_method
    from m2iv.models.loading import load_model

    lm = load_model("sandbox")
    task = get_task("sandbox-colour-nonce")
    splits = task.splits(seed=0)
    zs = evaluate(lm, task, get_method("zero-shot"), EvalConfig(limit=24, batch_size=8), tmp_path / "zs",
                  splits=splits)
    icl = evaluate(lm, task, get_method("icl"), EvalConfig(shots=16, limit=24, batch_size=8), tmp_path / "icl",
                   splits=splits)
    assert icl["score"] >= zs["score"] + 0.3, (zs["score"], icl["score"])
    assert icl["mean_prompt_tokens"] > 5 * zs["mean_prompt_tokens"]
