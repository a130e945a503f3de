"""`m2iv report`: tables and plots from any mix of results files, and refusal of files that are not results."""

import json
from pathlib import Path

import pytest

from m2iv.errors import M2IVError
from m2iv.evaluate.report import build_report


def _row(task, method, shots, score, tokens, **kw):
    return {"task": task, "method": method, "variant": kw.pop("variant", ""), "shots": shots, "metric": "exact_match",
            "score": score, "n": 0 if score is None else 10, "mean_prompt_tokens": tokens, "mean_latency_ms": 5.0, **kw}


@pytest.fixture
def files(tmp_path):
    compare = {"meta": {}, "rows": [_row("t1", "zero-shot", 0, 0.1, 40), _row("t1", "icl", 16, 0.6, 400),
                                    _row("t1", "m2iv", 16, 0.9, 40)]}
    many = {"meta": {}, "rows": [_row("t1", "icl", 4, 0.3, 120, variant="window-512"),
                                 _row("t1", "icl", 32, None, None, variant="window-512", fits=False)]}
    summary = {"task": "t2", "method": "m2iv", "score": 0.5, "metric": "vqa_accuracy", "shots": 16}
    cost = {"settings": {"task": "t1", "batch_size": 8, "new_tokens": 1, "n": 48},
            "rows": [{"method": "zero-shot", "prompt_tokens": 40.0, "latency_ms": 50.0, "latency_vs_zero_shot": 1.0,
                      "peak_tensor_mb": 660.0, "peak_tensor_vs_zero_shot": 1.0, "peak_rss_mb": 990.0, "parameters": 0,
                      "train_seconds": 0.0},
                     {"method": "m2iv", "prompt_tokens": 40.0, "latency_ms": 51.0, "latency_vs_zero_shot": 1.02,
                      "peak_tensor_mb": 660.1, "peak_tensor_vs_zero_shot": 1.0002, "peak_rss_mb": 991.0,
                      "parameters": 34680, "train_seconds": 362.0}],
            "hook_overhead": {"latency_ratio": 1.03, "peak_tensor_ratio": 1.0, "peak_rss_ratio": 1.002}}
    paths = []
    for name, data in (("compare.json", compare), ("many.json", many), ("summary.json", summary), ("cost.json", cost)):
        (tmp_path / name).write_text(json.dumps(data))
        paths.append(tmp_path / name)
    return paths


def test_report_has_a_table_per_task_cost_tables_and_both_plots(tmp_path, files):
    md = build_report(files, tmp_path / "out", title="T").read_text()
    assert md.startswith("# T") and "## t1" in md and "## t2" in md
    assert "| m2iv | 16 | 0.9000 |  | exact_match | 40 | 5.0 | ../compare.json |" in md
    assert "| icl (window-512) | 32 | does not fit |" in md  # many-shot ICL past the window
    assert "## Inference cost" in md and "| m2iv | 40 | 51.0 | 1.02 | 660.1 | 1.0002 | 991.0 | 34,680 | 362.0 |" in md
    assert "latency x1.03, peak tensor memory x1.0" in md
    for png in ("accuracy_vs_shots.png", "accuracy_vs_cost.png"):
        assert (tmp_path / "out" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cost_files_alone_make_a_report_without_plots(tmp_path, files):
    md = build_report([files[3]], tmp_path / "out").read_text()
    assert "## Inference cost" in md and not (tmp_path / "out" / "accuracy_vs_shots.png").exists()


@pytest.mark.parametrize("content, match", [("{not json", "cannot read results file"),
                                            ('{"hello": 1}', "is not an m2iv results file")])
def test_bad_files_are_refused_with_the_cause(tmp_path, content, match):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(M2IVError, match=match):
        build_report([bad], tmp_path / "out")
    assert not (tmp_path / "out" / "report.md").exists()


def test_serving_rows_show_ttft_tpot_break_even_and_training_cost():
    from m2iv.evaluate.report import _efficiency_lines

    base = {"prompt_tokens": 44.0, "latency_ms": 50.0, "latency_vs_zero_shot": 1.0, "peak_tensor_mb": 660.0,
            "peak_tensor_vs_zero_shot": 1.0, "peak_rss_mb": 990.0, "parameters": 0, "train_seconds": 0.0,
            "ttft_ms": 40.0, "tpot_ms": 10.0, "e2e_ms": 70.0}
    rows = [{**base, "method": "icl", "shots": 16, "latency_ms": 550.0},
            {**base, "method": "m2iv", "shots": 0, "train_seconds": 100.0, "break_even_queries": {"icl-16": 200.0},
             "train_step_ratio": 1.4, "train_peak_vs_finetune": 0.35}]
    text = "\n".join(_efficiency_lines(Path("serving.json"), {"rows": rows, "hook_overhead": {}, "settings": {}}))
    assert "| icl (16-shot) |" in text and "break-even vs icl-16" in text
    assert "| m2iv | 40.0 | 10.0 | 70.0 | 200.0 | 1.4 | 0.35 |" in text
