"""`m2iv bench efficiency` mechanics on a tiny model (ratios, batching, hook-overhead run)."""

import torch

from m2iv.evaluate.efficiency import measure
from m2iv.evaluate.profiling import tensor_peak_mb


def test_tensor_peak_counts_live_allocations_only():
    def call():
        a = torch.ones(1024 * 1024)  # 4 MiB
        b = torch.ones(512 * 1024)  # 2 MiB while a lives: the peak
        del a, b
        torch.ones(256 * 1024)  # 1 MiB after both were freed

    assert abs(tensor_peak_mb(call) - 6.0) < 0.01


def test_measure_reports_ratios_to_zero_shot_per_query_in_batches():
    out = measure("tiny:idefics3", "sandbox-colour-nonce", ["zero-shot", "icl", "m2iv"], vectors_from=None, shots=2,
                  n=4, new_tokens=2, batch_size=2, icl_shots=[1], log=lambda *_: None)
    rows = {(r["method"], r["shots"]): r for r in out["rows"]}
    assert set(rows) == {("zero-shot", 0), ("icl", 2), ("icl", 1)}  # m2iv skipped: no trained vectors
    for r in out["rows"]:  # serving metrics per request: two timed batches, so each median is the mean
        assert 0 < r["ttft_ms"] <= r["e2e_ms"] and abs(r["tpot_ms"] - (r["e2e_ms"] - r["ttft_ms"])) < 0.02
    assert set(rows["zero-shot", 0]["break_even_queries"]) == {"icl-1", "icl-2"}
    assert rows["icl", 1]["prompt_tokens"] < rows["icl", 2]["prompt_tokens"]
    rows = {m: r for (m, k), r in rows.items() if k != 1}
    assert rows["zero-shot"]["latency_vs_zero_shot_unpaired"] == 1.0
    # zero-shot paired with itself: its ratio is the noise floor, a timing (benchmarks/efficiency), not a test bound
    assert rows["zero-shot"]["latency_vs_zero_shot"] > 0
    assert rows["icl"]["paired_zero_shot_ms"] > 0
    assert rows["icl"]["prompt_tokens"] > rows["zero-shot"]["prompt_tokens"]
    assert rows["icl"]["prompt_tokens_vs_zero_shot"] > 1.0
    assert out["settings"]["batch_size"] == 2
    assert set(out["hook_overhead"]) >= {"latency_ratio", "peak_rss_ratio", "peak_tensor_ratio"}
    assert rows["icl"]["peak_activation_mb"] > rows["zero-shot"]["peak_activation_mb"] > 0  # longer prompts
    assert rows["zero-shot"]["peak_tensor_vs_zero_shot"] == 1.0


def test_break_even_is_the_one_off_cost_over_the_per_query_saving():
    from m2iv.evaluate.efficiency import _break_evens, break_even

    assert break_even(100.0, method_ms=50.0, baseline_ms=550.0) == 200.0  # 100 s / 0.5 s saved per query
    assert break_even(100.0, method_ms=600.0, baseline_ms=550.0) is None  # slower than ICL: never repaid
    assert break_even(0.0, method_ms=50.0, baseline_ms=550.0) == 0.0  # nothing to repay
    rows = [{"method": "icl", "shots": 4, "latency_ms": 150.0, "train_seconds": 0.0},
            {"method": "icl", "shots": 16, "latency_ms": 550.0, "train_seconds": 0.0},
            {"method": "m2iv", "shots": 0, "latency_ms": 50.0, "train_seconds": 30.0}]
    _break_evens(rows)
    assert rows[2]["break_even_queries"] == {"icl-4": 300.0, "icl-16": 60.0}
    assert "break_even_queries" not in rows[0]


def test_ttft_tpot_and_e2e_follow_their_serving_definitions(monkeypatch):
    from m2iv.evaluate import efficiency

    clock = iter([0.0, 0.030, 0.130])  # generate() starts; first new token streamed; generate() returns

    def gen(streamer):  # the prompt, then three new tokens
        for _ in range(4):
            streamer.put(None)
        streamer.end()

    monkeypatch.setattr(efficiency.time, "perf_counter", lambda: next(clock))
    e2e, ttft = efficiency._serving_ms(gen)
    assert (round(e2e, 6), round(ttft, 6)) == (130.0, 30.0)
    timed = {"method": [(130.0, 30.0, 2), (150.0, 50.0, 2), (110.0, 10.0, 2)],
             "zero": [(65.0, 15.0, 2), (75.0, 25.0, 2), (55.0, 5.0, 2)]}
    t = efficiency._timings(timed, new_tokens=3)
    assert t["e2e_ms"] == 130.0 and t["ttft_ms"] == 30.0  # medians over batches, per request (not / batch size)
    assert t["tpot_ms"] == 50.0  # (e2e - ttft) / (new tokens - 1)
    assert t["latency_ms"] == 65.0  # the harness's per-query latency: batch time / batch size
    assert t["e2e_vs_zero_shot"] == 2.0 and t["ttft_vs_zero_shot"] == 2.0
    assert efficiency._timings(timed, new_tokens=1)["tpot_ms"] is None


def test_max_shots_is_what_the_context_window_holds(tmp_path):
    from conftest import tiny, write_samples
    from m2iv.data.prompts import PromptBuilder
    from m2iv.data.selection import RandomSelector
    from m2iv.evaluate.efficiency import max_shots

    lm = tiny("llava")
    builder = PromptBuilder(lm)
    support = write_samples(tmp_path / "s", 12)
    probe = write_samples(tmp_path / "q", 1, prefix="q")[0]
    p1 = builder.build(support[:1], probe)
    one = builder.num_tokens(p1.text, p1.image_paths)
    demo = one - builder.num_tokens(builder.build([], probe).text, list(probe.images))
    cfg = lm.model.config.get_text_config()
    window, cfg.max_position_embeddings = cfg.max_position_embeddings, one + 3 * demo + 8
    try:
        n = max_shots(builder, RandomSelector(support, seed=0), probe, reserve=8)
        assert max_shots(builder, RandomSelector(support, seed=0), probe, reserve=8 + 2 * demo) < n
    finally:
        cfg.max_position_embeddings = window
    assert 3 <= n <= 5  # about four demonstrations' worth of window: far fewer than the 12 in support


def test_training_step_against_a_plain_fine_tune(tmp_path, monkeypatch):
    from dataclasses import replace

    from m2iv.data.tasks import get_task
    from m2iv.evaluate.train_cost import measure_training
    from m2iv.methods import get_method
    from m2iv.models.loading import load_model

    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    lm = load_model("tiny:idefics3")
    task = replace(get_task("sandbox-colour-nonce"), n_train=8)
    splits = task.splits(None, seed=0)
    m = get_method("lora", {"out": str(tmp_path / "lora"), "progress": False,
                            "train_config": {"steps": 1, "batch_size": 4, "val_every": 0}})
    m.train(lm, task, splits)
    cost = measure_training("tiny:idefics3", "sandbox-colour-nonce", {"lora": tmp_path / "lora"}, batch=4,
                            repeats=2, log=lambda *_: None)
    r = cost["rows"]["lora"]
    assert r["train_step_ms"] > 0 and r["reference_fwd_bwd_ms"] > 0 and r["train_step_ratio"] > 0
    # a fine-tune step also holds every weight's gradient and both AdamW moments; LoRA holds them for A and B only
    assert 0 < r["train_peak_vs_finetune"] < 1
    assert cost["reference"]["train_peak_tensor_mb"] > r["train_peak_tensor_mb"]
