import json

import pytest
import torch

from conftest import fixture_task, for_model, tiny, write_samples
from m2iv.data.images import ImageError
from m2iv.errors import M2IVError
from m2iv.evaluate.runner import EvalConfig, evaluate
from m2iv.methods import get_method

TASK = fixture_task()


@pytest.fixture()
def splits(tmp_path):
    return {"train": [], "support": write_samples(tmp_path / "support", 8, prefix="s"),
            "test": write_samples(tmp_path / "test", 6, prefix="t")}


def _rows(d):
    return [json.loads(line) for line in (d / "predictions.jsonl").read_text().splitlines()]


def test_icl_run_writes_predictions_and_summary(tmp_path, splits):
    lm = tiny("idefics2")
    s = evaluate(lm, TASK, get_method("icl"), EvalConfig(shots=4, batch_size=4), tmp_path / "out", splits=splits)
    rows = _rows(tmp_path / "out")
    assert [r["id"] for r in rows] == [q.id for q in splits["test"]]
    assert all(len(r["demos"]) == 4 and r["id"] not in r["demos"] for r in rows)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary == json.loads(json.dumps(s))
    for key in ("task", "method", "shots", "n", "metric", "score", "mean_prompt_tokens", "mean_latency_ms",
                "peak_memory_mb", "model_fingerprint", "seed", "m2iv_version"):
        assert key in summary
    assert summary["n"] == 6 and summary["shots"] == 4 and 0 <= summary["score"] <= 1
    zs = evaluate(lm, TASK, get_method("zero-shot"), EvalConfig(batch_size=3), tmp_path / "zs", splits=splits)
    assert zs["mean_prompt_tokens"] < summary["mean_prompt_tokens"] / 3


def test_killed_run_resumes_without_recomputing(tmp_path, splits, monkeypatch):
    lm = tiny("idefics2")
    real = lm.model.generate
    calls = {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed during the third batch
        return real(*a, **k)

    monkeypatch.setattr(lm.model, "generate", dying)
    cfg = EvalConfig(shots=2, batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        evaluate(lm, TASK, get_method("icl"), cfg, tmp_path / "o", splits=splits)
    first = _rows(tmp_path / "o")
    assert len(first) == 4
    with open(tmp_path / "o" / "predictions.jsonl", "a") as f:
        f.write('{"id": "t9", "predic')  # a torn line from a kill mid-write
    calls["n"] = 10
    evaluate(lm, TASK, get_method("icl"), cfg, tmp_path / "o", splits=splits)
    assert calls["n"] == 11  # only the last batch was generated again
    rows = _rows(tmp_path / "o")
    assert [r["id"] for r in rows] == [q.id for q in splits["test"]]
    assert [r["prediction"] for r in rows[:4]] == [r["prediction"] for r in first]


def test_rerun_with_other_settings_into_same_dir_is_refused(tmp_path, splits):
    lm = tiny("llama")
    text_splits = for_model(lm, splits)
    evaluate(lm, TASK, get_method("zero-shot"), EvalConfig(limit=2), tmp_path / "o", splits=text_splits)
    with pytest.raises(M2IVError, match="different run.*method"):
        evaluate(lm, TASK, get_method("icl"), EvalConfig(shots=2, limit=2), tmp_path / "o", splits=text_splits)


def _corrupt(splits, i=2):
    path = splits["test"][i].images[0]
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n garbage")
    return path


def test_unreadable_image_is_skipped_and_recorded(tmp_path, splits):
    bad = _corrupt(splits)
    s = evaluate(tiny("llava"), TASK, get_method("zero-shot"), EvalConfig(batch_size=4), tmp_path / "o",
                 splits=splits)
    assert s["n"] == 5 and len(s["skipped"]) == 1
    assert s["skipped"][0]["id"] == "t2" and bad in s["skipped"][0]["error"]


def test_unreadable_image_can_stop_the_run_keeping_predictions(tmp_path, splits):
    bad = _corrupt(splits, i=3)
    with pytest.raises(ImageError, match=bad):
        evaluate(tiny("llava"), TASK, get_method("zero-shot"), EvalConfig(batch_size=2, on_bad_image="stop"),
                 tmp_path / "o", splits=splits)
    assert [r["id"] for r in _rows(tmp_path / "o")] == ["t0", "t1", "t2"]


def test_two_process_run_merges_into_the_single_process_files(tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    args = ["-m", "m2iv.cli.main", "eval", "tiny:llava", "--task", "easy-vqa", "--n-test", "10", "--batch-size", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], capture_output=True, text=True,
                         env=env)
    two = subprocess.run([torchrun, "--nproc_per_node", "2", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    drop = lambda r: {k: v for k, v in r.items() if k != "latency_ms"}  # noqa: E731
    a, b = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert [drop(r) for r in a] == [drop(r) for r in b] and len(a) == 10
    sa, sb = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert sb["world_size"] == 2 and sa["score"] == sb["score"] and sa["n"] == sb["n"]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["predictions.jsonl", "run.json", "summary.json"]


def test_rices_selection_with_the_models_own_embeddings(tmp_path, splits, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    lm = tiny("qwen2_vl")
    s = evaluate(lm, TASK, get_method("icl"), EvalConfig(shots=3, selection="rices", batch_size=3), tmp_path / "o",
                 splits=splits)
    rows = _rows(tmp_path / "o")
    assert s["n"] == 6 and all(len(r["demos"]) == 3 for r in rows)
    cached = list((tmp_path / "home" / "cache" / "rices").glob("*.safetensors"))
    assert len(cached) == 1  # support embeddings computed once and cached
    from m2iv.data.prompts import PromptBuilder
    from m2iv.data.selection import model_embedder

    emb = model_embedder(lm, PromptBuilder(lm, TASK.instruction))
    sup = torch.nn.functional.normalize(emb(splits["support"]), dim=-1)
    q = torch.nn.functional.normalize(emb([splits["test"][0]]), dim=-1)[0]
    nearest = splits["support"][int((sup @ q).argmax())].id
    assert rows[0]["demos"][-1] == nearest  # the most similar demonstration sits next to the query


def test_end_of_turn_tokens_come_from_the_family_table():
    # Was: the runner kept its own list of end-of-turn strings for every model.
    from m2iv.evaluate.runner import eos_ids
    from m2iv.models.families import FAMILIES, end_of_turn_tokens

    assert end_of_turn_tokens("idefics2") == ("<end_of_utterance>",)
    assert set(end_of_turn_tokens("some-new-family")) == {t for f in FAMILIES.values() for t in f.end_of_turn}
    lm = tiny("idefics2")
    tok = lm.tokenizer
    assert eos_ids(lm) == sorted({tok.eos_token_id, tok.convert_tokens_to_ids("<end_of_utterance>")})
    assert tok.convert_tokens_to_ids("<|eot_id|>") not in eos_ids(lm)
