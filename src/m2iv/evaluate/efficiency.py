"""Inference cost of each method on the same queries, as ratios to zero-shot (issue: efficiency claims), and the
serving view (issue 26): time to first token, time per output token, end-to-end latency, and after how many
queries a trained method's one-off cost is repaid against N-shot ICL.

Each method runs in its own fresh process (so peak memory is its own), on the same test queries in batches of
`batch_size` (latency per query = batch time / batch size, as the evaluation harness reports it), generating
exactly `new_tokens` tokens (min = max), after one warm-up batch. At batch 1 on a CPU every forward pays
for streaming all weights (a one-token forward of the 135M sandbox takes ~40 ms, 44 tokens ~100 ms), so a
short prompt is far from proportionally cheaper than a long one; batching amortises it. Reported per method:
prompt tokens, latency per query and its ratio to plain zero-shot timed on the same queries in the same
process (alternating order, median of per-batch ratios; a zero-shot row's ratio shows the noise floor), peak
resident memory (whole process and above the loaded model; moves by tens of MB between identical runs),
peak tensor memory (weights plus the peak of live activations during one generate() of the warm-up batch,
from the profiler's allocation events: exact and repeatable), parameters stored and training time (from its
vector directory). The injection hooks' own overhead is measured separately: zero-shot with all-zero M²IV
vectors injected against plain zero-shot.

Serving metrics, per request, as vLLM defines them and lmms-eval reports them (`ttft`, `tpot`, and the request's
end-to-end latency): every request of a batch arrives when its generate() starts and is answered when it ends, so
e2e = the batch's wall time, TTFT = the time until generate() streams its first new token (prefill + first
decode step), TPOT = (e2e - TTFT) / (new_tokens - 1) (None for one new token); each a median over the timed
batches, with its paired ratio to zero-shot. Break-even: `break_even` below.

    m2iv bench efficiency sandbox --task sandbox-colour-nonce --vectors-from runs/bench/shared \\
        --new-tokens 1 --batch-size 8 --out benchmarks/efficiency/sandbox-1tok-batch8.json
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m2iv.evaluate.profiling import rss_mb, tensor_peak_mb


class _FirstToken:
    """A generate() streamer noting when the first new token arrives: put() gets the prompt, then each new token."""

    def __init__(self) -> None:
        self.calls = 0
        self.first: float | None = None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2:
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def _serving_ms(gen) -> tuple[float, float]:
    """(end-to-end ms, time-to-first-token ms) of one generate() call."""
    streamer = _FirstToken()
    t0 = time.perf_counter()
    gen(streamer=streamer)
    t1 = time.perf_counter()
    return (t1 - t0) * 1000, ((streamer.first or t1) - t0) * 1000


def break_even(cost_s: float, method_ms: float, baseline_ms: float) -> float | None:
    """Queries after which a method's one-off cost (teacher + training, seconds) is repaid by what it saves per query
    against a baseline (N-shot ICL): cost / (baseline_ms - method_ms). 0 for a method with no cost that is not
    slower; None when it saves nothing per query (never repaid)."""
    saving = baseline_ms - method_ms
    if saving <= 0:
        return 0.0 if cost_s <= 0 and saving == 0 else None
    return round(cost_s * 1000 / saving, 1)


def max_shots(builder, selector, probe, reserve: int) -> int:
    """The most demonstrations (of the probe query's random draw) that fit the model's context window."""
    from m2iv.data.prompts import shots_that_fit
    from m2iv.data.selection import _eligible

    pool = selector.select(probe, len(_eligible(selector.support, probe)))
    return shots_that_fit(builder, pool, probe, reserve=reserve)


@dataclass
class _Setup:
    """What one worker times: the loaded model, the method ready to answer, plain zero-shot to pair it with, and
    how their prompts are built."""

    spec: dict
    lm: Any
    method: Any
    zero: Any
    builder: Any
    selector: Any
    queries: list  # the test queries, the warm-up batch first
    shots: int


def _setup(spec: dict) -> _Setup:
    """Load the model, the task's queries and the method (with its vectors), and resolve the shots."""
    import torch

    from m2iv.data.prompts import PromptBuilder
    from m2iv.data.selection import RandomSelector
    from m2iv.data.tasks import get_task
    from m2iv.methods import get_method
    from m2iv.methods.base import ZeroShot
    from m2iv.models.loading import load_model

    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    lm = load_model(spec["model"])
    task = get_task(spec["task"])
    splits = task.splits(spec.get("data_root"), seed=spec.get("seed", 0))
    queries = splits["test"][: spec["n"] + spec.get("batch_size", 1)]  # + one warm-up batch
    builder = PromptBuilder(lm, task.instruction, task.answer_template)
    options = {"vectors": spec.get("vectors"), "seed": spec.get("seed", 0), "progress": False,
               **({"method_config": spec["method_config"]} if spec.get("method_config") else {})}
    method = get_method(spec["method"], options)
    if spec.get("vectors") or not method.uses_vectors:
        method.prepare(lm, task, splits)
    selector = RandomSelector(splits["support"], seed=spec.get("seed", 0))
    shots = spec["shots"]
    if shots == "max":
        shots = max_shots(builder, selector, queries[0], reserve=spec["new_tokens"] + 32)
    return _Setup(spec, lm, method, ZeroShot(), builder, selector, queries, method.prompt_shots(shots))


def _context(s: _Setup):
    """The method's inference context, or all-zero M²IV vectors injected when timing the hooks' own overhead."""
    from m2iv.vectors.inject import apply
    from m2iv.vectors.vector import InContextVectors

    if s.spec.get("zero_hooks"):
        return apply(s.lm.model, InContextVectors.for_model(s.lm.adapter), s.lm.adapter, freeze_base=False)
    return s.method.inference(s.lm)


def _answer(s: _Setup, group: list, name: str, measure):
    """`measure`'s reading of one answer of `group` by the method (or plain zero-shot), and the prompt lengths."""
    m = s.method if name == "method" else s.zero
    batch = m.encode(s.lm, s.builder, [(q, s.selector.select(q, s.shots) if name == "method" and s.shots else [])
                                       for q in group])
    kw = {"max_new_tokens": s.spec["new_tokens"], "min_new_tokens": s.spec["new_tokens"], "do_sample": False,
          "pad_token_id": s.lm.tokenizer.pad_token_id}
    with _context(s) if name == "method" else contextlib.nullcontext() as handle:
        out: dict = {}

        def gen(**extra):
            out["tokens"] = m.generate(s.lm, batch, handle, **kw, **extra)[1]

        reading = measure(gen)
    return reading, out["tokens"]


def _timed_batches(s: _Setup) -> tuple[dict[str, list], list[int]]:
    """(end-to-end ms, TTFT ms, batch size) of every batch after the warm-up, for the method and for plain
    zero-shot, and the method's prompt lengths."""
    timed: dict[str, list] = {"method": [], "zero": []}
    toks: list[int] = []
    b = s.spec.get("batch_size", 1)
    for i in range(0, len(s.queries), b):
        group = s.queries[i:i + b]
        # The method and plain zero-shot answer the same queries back to back, in alternating order, so
        # the ratio compares like with like even when the machine's speed drifts during the run.
        for name in ["method", "zero"] if (i // b) % 2 == 0 else ["zero", "method"]:
            (e2e, ttft), lengths = _answer(s, group, name, _serving_ms)
            if i:  # the first batch is a warm-up
                timed[name].append((e2e, ttft, len(group)))
                toks += lengths if name == "method" else []
    return timed, toks


def _worker(spec: dict) -> dict:
    import torch

    s = _setup(spec)
    with torch.no_grad():  # model loaded, nothing run yet
        base_rss = rss_mb()
    with torch.no_grad():
        timed, toks = _timed_batches(s)
        peak = rss_mb()
        warm_up = s.queries[:spec.get("batch_size", 1)]
        tensors = _answer(s, warm_up, "method", lambda gen: tensor_peak_mb(gen))[0]  # warm-up batch again
    weights = sum(p.numel() * p.element_size() for p in s.lm.model.parameters()) / 2**20
    vectors = getattr(s.method, "vectors", None)
    return {**_timings(timed, spec["new_tokens"]), "shots": s.shots,
            "prompt_tokens": statistics.fmean(toks), "peak_rss_mb": round(peak, 1),
            "peak_above_model_mb": round(peak - base_rss, 1),
            "peak_activation_mb": None if tensors is None else round(tensors, 2),
            "peak_tensor_mb": None if tensors is None else round(weights + tensors, 1),
            "parameters": vectors.num_parameters() if vectors is not None else 0}


def _timings(timed: dict[str, list], new_tokens: int) -> dict:
    """Latency per query (batch time / batch size) and the serving metrics per request, medians over batches, each
    with its paired ratio to zero-shot (same batch, same process)."""
    med = statistics.median
    lat = [e / n for e, _, n in timed["method"]]
    paired = [e / n for e, _, n in timed["zero"]]
    tpot = [(e - t) / (new_tokens - 1) for e, t, _ in timed["method"]] if new_tokens > 1 else None
    return {"latency_ms": med(lat), "latency_ms_mean": statistics.fmean(lat), "paired_zero_shot_ms": med(paired),
            "paired_ratio": med(m / z for m, z in zip(lat, paired, strict=False)),
            "e2e_ms": round(med(e for e, _, _ in timed["method"]), 2),
            "ttft_ms": round(med(t for _, t, _ in timed["method"]), 2),
            "tpot_ms": None if tpot is None else round(med(tpot), 2),
            "ttft_vs_zero_shot": round(med(m[1] / z[1] for m, z in zip(timed["method"], timed["zero"], strict=False)),
                                       3),
            "e2e_vs_zero_shot": round(med(m[0] / z[0] for m, z in zip(timed["method"], timed["zero"], strict=False)),
                                      3)}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a / b, 4)


def _run(spec: dict) -> dict:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_worker, (spec,))


def _trained_dir(vectors_from: str | Path | None, folder: str, m: str, shots: int) -> Path | None:
    """The vector (or adapter) directory `bench compare` trained for method `m` under its work folder."""
    root = Path(vectors_from or ".") / folder
    found = sorted(root.glob(f"{m}-{shots}shot/vectors-*/m2iv_config.json")) + \
        sorted(root.glob(f"{m}-*/vectors-*/m2iv_config.json"))
    return found[0].parent if found else None


def _versus_zero_shot(rows: list[dict], zs: dict) -> None:
    for r in rows:
        r["latency_vs_zero_shot"] = round(r["paired_ratio"], 3)  # paired, same process (see _worker)
        r["latency_vs_zero_shot_unpaired"] = round(r["latency_ms"] / zs["latency_ms"], 3)
        r["prompt_tokens_vs_zero_shot"] = round(r["prompt_tokens"] / zs["prompt_tokens"], 3)
        r["peak_rss_vs_zero_shot"] = round(r["peak_rss_mb"] / zs["peak_rss_mb"], 4)
        r["peak_tensor_vs_zero_shot"] = _ratio(r["peak_tensor_mb"], zs["peak_tensor_mb"])


def _break_evens(rows: list[dict]) -> None:
    """Each non-ICL row's break-even query count against every N-shot ICL row (`icl-N`): teacher + training seconds
    over the per-query latency saved (see `break_even`)."""
    icl = [r for r in rows if r["method"] == "icl"]
    for r in rows:
        if r["method"] != "icl" and icl:
            r["break_even_queries"] = {f"icl-{i['shots']}": break_even(r["train_seconds"], r["latency_ms"],
                                                                       i["latency_ms"]) for i in icl}


def measure(model: str, task: str, methods: list[str], vectors_from: str | Path | None, shots: int = 16,
            n: int = 30, new_tokens: int = 4, seed: int = 0, data_root: str | None = None, batch_size: int = 1,
            icl_shots: list[int | str] | None = None, training: bool = False, train_batch: int = 16,
            log=print) -> dict:
    """Rows per method (ICL also at each of `icl_shots`: ints or "max", the most that fit the context window), the
    break-even query counts against every ICL row, the hook overhead; ratios are to zero-shot. With `training`, each
    trained method's training-step cost (evaluate/train_cost.py) joins its row."""
    from m2iv.data.tasks import get_task
    from m2iv.methods import METHODS
    from m2iv.train.run import cost_seconds

    folder = get_task(task).name  # bench runs are stored under the task's registered name
    rows: list[dict] = []
    dirs: dict[str, Path] = {}
    base: dict = {"model": model, "task": task, "shots": shots, "n": n, "new_tokens": new_tokens, "seed": seed,
            "data_root": data_root, "batch_size": batch_size}
    extra_icl = [k for k in (icl_shots or []) if k != shots] if "icl" in methods else []
    for m, k in [(m, shots) for m in methods] + [("icl", k) for k in extra_icl]:
        spec = {**base, "method": m, "shots": k}
        train_s, config = 0.0, {}
        if METHODS.get(m).uses_vectors:
            found = _trained_dir(vectors_from, folder, m, shots)
            if found is None:
                log(f"skip {m}: no trained vectors under {Path(vectors_from or '.') / folder}/{m}-*/vectors-*")
                continue
            spec["vectors"] = str(found)
            config = json.loads((found / "m2iv_config.json").read_text())
            info = config.get("training", {})
            train_s = cost_seconds(info)
            if config.get("recipe"):  # trained by gradient steps (not an extraction)
                dirs[m] = found
        log(f"measuring {m}" + (f" at {k} shots" if m == "icl" else ""))
        rows.append({"method": m, **_run(spec), "train_seconds": round(train_s, 1)})
    zs = next((r for r in rows if r["method"] == "zero-shot"), None)
    if zs:
        _versus_zero_shot(rows, zs)
    _break_evens(rows)
    if training and dirs:
        from m2iv.evaluate.train_cost import measure_training

        cost = measure_training(model, task, dirs, batch=train_batch, seed=seed, data_root=data_root, log=log)
        for r in rows:
            r.update(cost["rows"].get(r["method"], {}))
        base["training_reference"] = cost["reference"]
    log("measuring hook overhead (zero vectors)")
    hooks = _run({**base, "method": "zero-shot", "zero_hooks": True})
    overhead = None
    if zs:
        overhead = {"latency_ratio": round(hooks["paired_ratio"], 4),
                    "latency_ratio_unpaired": round(hooks["latency_ms"] / zs["latency_ms"], 4),
                    "peak_rss_ratio": round(hooks["peak_rss_mb"] / zs["peak_rss_mb"], 4),
                    "peak_tensor_ratio": _ratio(hooks["peak_tensor_mb"], zs["peak_tensor_mb"]),
                    "peak_activation_mb": hooks["peak_activation_mb"],
                    "zero_shot_peak_activation_mb": zs["peak_activation_mb"],
                    "peak_rss_above_model_mb": hooks["peak_above_model_mb"],
                    "zero_shot_peak_rss_above_model_mb": zs["peak_above_model_mb"]}
    return {"rows": rows, "hook_overhead": overhead, "settings": base}
