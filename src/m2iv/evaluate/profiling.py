"""Small measuring tools shared by `bench efficiency` (inference) and its training-step cost: wall time, peak
resident memory, and the peak of live tensors from the profiler's allocation events."""

from __future__ import annotations

import resource
import time


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def elapsed_ms(call) -> float:
    t0 = time.perf_counter()
    call()
    return (time.perf_counter() - t0) * 1000


def tensor_peak_mb(call) -> float | None:
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
