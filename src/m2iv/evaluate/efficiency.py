"""Inference cost of each method on the same queries, as ratios to zero-shot (issue: efficiency claims).

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

    m2iv bench efficiency sandbox --task sandbox-colour-nonce --vectors-from runs/bench/shared \\
        --new-tokens 1 --batch-size 8 --out benchmarks/efficiency/sandbox-1tok-batch8.json
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import resource
import statistics
import time
from pathlib import Path


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _elapsed_ms(call) -> float:
    t0 = time.perf_counter()
    call()
    return (time.perf_counter() - t0) * 1000


def _tensor_peak_mb(call) -> float | None:
    """Peak bytes of live tensors during `call()` above those alive before it (the weights), from the
    profiler's allocation events: exact and repeatable, where peak RSS moves by tens of MB between
    identical runs with the C allocator's caching. None where this torch build exposes no such events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    try:
        raw = prof.profiler.kineto_results.events()
    except AttributeError:
        return None
    events = sorted((e for e in raw if e.name() == "[memory]"), key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak / 2**20


def _worker(spec: dict) -> dict:
    import torch

    from m2iv.data.prompts import PromptBuilder
    from m2iv.data.selection import RandomSelector
    from m2iv.evaluate.tasks import get_task
    from m2iv.methods import get_method
    from m2iv.models.loading import load_model
    from m2iv.vectors.inject import apply
    from m2iv.vectors.vector import InContextVectors

    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    lm = load_model(spec["model"])
    task = get_task(spec["task"])
    splits = task.splits(spec.get("data_root"), seed=spec.get("seed", 0))
    queries = splits["test"][: spec["n"] + spec.get("batch_size", 1)]  # + one warm-up batch
    builder = PromptBuilder(lm, task.instruction, task.answer_template)
    method = get_method(spec["method"], {"vectors": spec.get("vectors")})
    if spec.get("vectors"):
        method.prepare(lm, task, splits)
    shots = method.prompt_shots(spec["shots"])
    selector = RandomSelector(splits["support"], seed=spec.get("seed", 0)) if shots else None

    def context():
        if spec.get("zero_hooks"):
            return apply(lm.model, InContextVectors.for_model(lm.adapter), lm.adapter, freeze_base=False)
        return method.inference(lm)

    def run(group, demos_for, ctx, measure) -> tuple[float, list[int]]:
        """`measure`'s reading of one generate() over `group` inside `ctx`, and the prompt lengths."""
        batch = builder.encode([builder.build(demos_for(q), q) for q in group])
        qs = batch.pop("query_start")
        with ctx as handle:
            if handle is not None and hasattr(handle, "set_query_start"):
                handle.set_query_start(qs)
            reading = measure(lambda: lm.model.generate(
                **batch, max_new_tokens=spec["new_tokens"], min_new_tokens=spec["new_tokens"], do_sample=False,
                pad_token_id=lm.tokenizer.pad_token_id))
        return reading, batch["attention_mask"].sum(dim=1).tolist()

    with torch.no_grad():  # model loaded, nothing run yet
        base_rss = _rss_mb()
    demos = {"method": lambda q: selector.select(q, shots) if selector else [], "zero": lambda q: []}
    lat, paired, toks = [], [], []
    b = spec.get("batch_size", 1)
    with torch.no_grad():
        for i in range(0, len(queries), b):
            group = queries[i:i + b]
            # The method and plain zero-shot answer the same queries back to back, in alternating order, so
            # the ratio compares like with like even when the machine's speed drifts during the run.
            order = ["method", "zero"] if (i // b) % 2 == 0 else ["zero", "method"]
            out = {}
            for name in order:
                ctx = context() if name == "method" else contextlib.nullcontext()
                ms, lengths = run(group, demos[name], ctx, _elapsed_ms)
                out[name] = (ms / len(group), lengths)  # per query, as the harness reports it
            if i:  # the first batch is a warm-up
                lat.append(out["method"][0])
                paired.append(out["zero"][0])
                toks += out["method"][1]
        peak = _rss_mb()
        tensors = run(queries[:b], demos["method"], context(), measure=_tensor_peak_mb)[0]  # warm-up batch again
    weights = sum(p.numel() * p.element_size() for p in lm.model.parameters()) / 2**20
    vectors = getattr(method, "vectors", None)
    params = vectors.num_parameters() if vectors is not None else 0
    return {"latency_ms": statistics.median(lat), "latency_ms_mean": statistics.fmean(lat),
            "paired_zero_shot_ms": statistics.median(paired),
            "paired_ratio": statistics.median(m / z for m, z in zip(lat, paired, strict=False)),
            "prompt_tokens": statistics.fmean(toks), "peak_rss_mb": round(peak, 1),
            "peak_above_model_mb": round(peak - base_rss, 1),
            "peak_activation_mb": None if tensors is None else round(tensors, 2),
            "peak_tensor_mb": None if tensors is None else round(weights + tensors, 1),
            "parameters": params}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a / b, 4)


def _run(spec: dict) -> dict:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_worker, (spec,))


def measure(model: str, task: str, methods: list[str], vectors_from: str | Path | None, shots: int = 16,
            n: int = 30, new_tokens: int = 4, seed: int = 0, data_root: str | None = None, batch_size: int = 1,
            log=print) -> dict:
    """Rows per method plus the hook overhead; ratios are to zero-shot."""
    from m2iv.evaluate.tasks import get_task

    folder = get_task(task).name  # bench runs are stored under the task's registered name
    rows = []
    base = {"model": model, "task": task, "shots": shots, "n": n, "new_tokens": new_tokens, "seed": seed,
            "data_root": data_root, "batch_size": batch_size}
    for m in methods:
        spec = {**base, "method": m}
        train_s = 0.0
        if m not in ("zero-shot", "icl"):
            root = Path(vectors_from or ".") / folder
            found = sorted(root.glob(f"{m}-{shots}shot/vectors-*/m2iv_config.json")) + \
                sorted(root.glob(f"{m}-*/vectors-*/m2iv_config.json"))
            if not found:
                log(f"skip {m}: no trained vectors under {root}/{m}-*/vectors-*")
                continue
            spec["vectors"] = str(found[0].parent)
            training = json.loads(found[0].read_text()).get("training", {})
            train_s = (training.get("train_seconds") or 0) + (training.get("teacher", {}).get("seconds") or 0)
        log(f"measuring {m}")
        r = _run(spec)
        rows.append({"method": m, **r, "train_seconds": round(train_s, 1)})
    zs = next((r for r in rows if r["method"] == "zero-shot"), None)
    if zs:
        for r in rows:
            r["latency_vs_zero_shot"] = round(r["paired_ratio"], 3)  # paired, same process (see _worker)
            r["latency_vs_zero_shot_unpaired"] = round(r["latency_ms"] / zs["latency_ms"], 3)
            r["prompt_tokens_vs_zero_shot"] = round(r["prompt_tokens"] / zs["prompt_tokens"], 3)
            r["peak_rss_vs_zero_shot"] = round(r["peak_rss_mb"] / zs["peak_rss_mb"], 4)
            r["peak_tensor_vs_zero_shot"] = _ratio(r["peak_tensor_mb"], zs["peak_tensor_mb"])
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
