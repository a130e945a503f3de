"""`m2iv bench efficiency` mechanics on a tiny model (ratios, batching, hook-overhead run)."""

import torch

from m2iv.evaluate.efficiency import _tensor_peak_mb, measure


def test_tensor_peak_counts_live_allocations_only():
    def call():
        a = torch.ones(1024 * 1024)  # 4 MiB
        b = torch.ones(512 * 1024)  # 2 MiB while a lives: the peak
        del a, b
        torch.ones(256 * 1024)  # 1 MiB after both were freed

    assert abs(_tensor_peak_mb(call) - 6.0) < 0.01


def test_measure_reports_ratios_to_zero_shot_per_query_in_batches():
    out = measure("tiny:idefics3", "sandbox-colour-nonce", ["zero-shot", "icl", "m2iv"], vectors_from=None, shots=2,
                  n=4, new_tokens=1, batch_size=2, log=lambda *_: None)
    rows = {r["method"]: r for r in out["rows"]}
    assert set(rows) == {"zero-shot", "icl"}  # m2iv is skipped: no trained vectors under vectors_from
    assert rows["zero-shot"]["latency_vs_zero_shot_unpaired"] == 1.0
    assert 0.3 < rows["zero-shot"]["latency_vs_zero_shot"] < 3.0  # zero-shot paired with itself: the noise floor
    assert rows["icl"]["paired_zero_shot_ms"] > 0
    assert rows["icl"]["prompt_tokens"] > rows["zero-shot"]["prompt_tokens"]
    assert rows["icl"]["prompt_tokens_vs_zero_shot"] > 1.0
    assert out["settings"]["batch_size"] == 2
    assert set(out["hook_overhead"]) >= {"latency_ratio", "peak_rss_ratio", "peak_tensor_ratio"}
    assert rows["icl"]["peak_activation_mb"] > rows["zero-shot"]["peak_activation_mb"] > 0  # longer prompts
    assert rows["zero-shot"]["peak_tensor_vs_zero_shot"] == 1.0
