"""Results files in lm-evaluation-harness's shape: summary.json carries the config, versions, git revision,
generation settings, prompt template, date and a standard error per score; predictions.jsonl rows carry the prompt
and per-row token counts; what a run prints to a log file holds no carriage return."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from conftest import write_colour_jsonl

ROOT = Path(__file__).resolve().parents[1]


def test_summary_and_predictions_carry_what_a_reader_needs_and_logs_no_carriage_return(tmp_path):
    # Was: no standard error, date, versions, git revision, generation settings or prompt template; rows without
    # the prompt; tqdm's `\r` bars in log files.
    data = write_colour_jsonl(tmp_path, 24)
    out = tmp_path / "run"
    env = {**os.environ, "M2IV_HOME": str(tmp_path / "home")}
    r = subprocess.run([sys.executable, "-m", "m2iv.cli.main", "eval", "tiny:idefics3", "--task", f"jsonl:{data}",
                        "--method", "icl", "--shots", "1", "--n-test", "6", "--out", str(out)],
                       capture_output=True, env=env)  # stdout and stderr are pipes, as in a log file
    assert r.returncode == 0, r.stderr[-2000:]
    assert b"\r" not in r.stdout + r.stderr  # bytes: text mode would turn a \r into a newline
    s = json.loads((out / "summary.json").read_text())
    assert {"m2iv", "torch", "transformers"} <= set(s["versions"])
    import torch
    import transformers

    assert s["versions"]["torch"] == torch.__version__ and s["versions"]["transformers"] == transformers.__version__
    if (ROOT / ".git").exists():  # run from a git checkout: its commit
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        assert s["git_revision"]["commit"] == head.strip()
    assert datetime.fromisoformat(s["date"]).tzinfo is not None
    assert s["config"]["eval"]["shots"] == 1 and s["config"]["task"]["metric"] == s["metric"]
    assert s["generation"]["max_new_tokens"] == s["config"]["task"]["max_new_tokens"]
    assert s["generation"]["do_sample"] is False and s["generation"]["eos_token_id"]
    assert s["prompt_template"]["instruction"] == s["config"]["task"]["instruction"]
    p, n = s["score"], s["n"]
    assert n == 6 and s["stderr_method"] == "binomial"  # one reference each: exact match, 0 or 1 per query
    assert math.isclose(s["score_stderr"], math.sqrt(p * (1 - p) / n))
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        assert "What colour is thing" in row["prompt"] and row["prompt"].count("What colour") == 2  # demo + query
        assert row["prompt_tokens"] > 0 and 1 <= row["output_tokens"] <= s["generation"]["max_new_tokens"]
    assert s["prompt_template"]["example"] == rows[0]["prompt"]


def test_standard_errors_bootstrap_what_is_not_binary():
    from m2iv.evaluate.metrics import score
    from m2iv.evaluate.results import standard_error

    preds = ["red", "blue", "red", "green", "red", "blue"]
    refs = [["red"] * 3 + ["blue"] * 7, ["blue"] * 10, ["red"] * 10, ["red"] * 10, ["red"] * 2 + ["x"] * 8,
            ["blue"] * 4 + ["red"] * 6]
    res = score("vqa_accuracy", preds, refs)
    se, how = standard_error("vqa_accuracy", preds, refs, res["per_example"], res["score"])
    values = res["per_example"]
    mean = sum(values) / len(values)
    sem = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) / math.sqrt(len(values))
    assert how.startswith("bootstrap") and se is not None and abs(se - sem) < 0.35 * sem  # the bootstrap's SEM
    caps = ["a red circle", "a blue square", "a green triangle", "a red square"]
    cider = score("cider_d", caps, [[c, c + " here"] for c in caps])
    se, how = standard_error("cider_d", caps, [[c, c + " here"] for c in caps], cider["per_example"], cider["score"])
    assert "corpus" in how and se is not None and se > 0
