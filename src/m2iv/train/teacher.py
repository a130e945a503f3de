"""The ICL teacher: the frozen model running N-shot ICL on (demonstrations, training query), its answer
distribution computed once and cached on disk.

For each (query, draw) the teacher reads `demos + query + answer` (teacher forcing on the ground-truth
answer) and keeps, at every answer token, its top-k logits (or the full distribution) and optionally the
per-layer hidden states there. Shards are safetensors files under
`$M2IV_HOME/cache/teacher/<key>/`, where the key hashes the model fingerprint, task, the query and
support sets, shots, selection, draws and seed; a rerun loads them, an interrupted run fills the gaps.

With `ensemble = E > 1` each draw reads E disjoint demonstration sets in separate contexts and their
answer log-probabilities are averaged (a product of experts, renormalised; Parallel-ICL style) or, with
`ensemble_mode="mixture"`, their probabilities: demonstrations beyond one context window still shape one target.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from m2iv.data.prompts import PromptBuilder
from m2iv.data.sample import Sample, content_hash
from m2iv.data.selection import SELECTORS, RicesSelector, model_embedder
from m2iv.errors import M2IVError
from m2iv.files import write_safetensors_atomic
from m2iv.progress import Progress
from m2iv.train.config import TeacherConfig

SHARD = 64  # (query, draw) items per shard file


@dataclass
class TeacherTargets:
    ids: list[str]  # query id of each item
    draws: list[int]
    labels: torch.Tensor  # (N, A) answer token ids, -100 on left padding
    values: torch.Tensor  # (N, A, k) top-k logits, or (N, A, V) full
    index: torch.Tensor | None  # (N, A, k) vocabulary ids of `values`; None for the full distribution
    hidden: torch.Tensor | None  # (N, L, A, D) per-layer hidden states at the answer positions ((N, L, S, D): query)
    hidden_len: torch.Tensor | None = None  # (N,) query + answer tokens per item (hidden_span "query")
    prompt_tokens: float = 0.0  # mean teacher prompt length (the cost vectors save)
    key: str = ""
    compute_seconds: float | None = None  # what computing every shard took, cached ones too (None: a shard predates it)

    @property
    def accuracy(self) -> float:
        """Fraction of items whose every answer token is the teacher's argmax (teacher-forced exact match)."""
        top = self.values.argmax(-1)
        pred = top if self.index is None else self.index.gather(-1, top.unsqueeze(-1)).squeeze(-1)
        mask = self.labels != -100
        return float(((pred == self.labels) | ~mask).all(-1).float().mean())


def _answer_logits(lm, batch: dict, n: int, hidden: bool, site: str = "layer", span: int | None = None):
    """Logits predicting the n answer tokens (B, A, V) and, with `hidden`, per-layer states (B, L, P, D) of `site`
    ("layer": decoder-layer outputs, "mlp": MLP outputs) at those A positions, or with `span` S at the last S
    positions (the query's and answer's own tokens, MimIC's original alignment span)."""
    caught: list[torch.Tensor] = []
    handles = []
    if hidden and site == "mlp":
        for layer in range(lm.adapter.num_layers):
            handles.append(lm.adapter.module(layer, "mlp").register_forward_hook(
                lambda _m, _a, out: caught.append(out[0] if isinstance(out, tuple) else out)))
    try:
        out = lm.model(**batch, logits_to_keep=n + 1, output_hidden_states=hidden and site == "layer")
    finally:
        for h in handles:
            h.remove()
    logits = out.logits[:, -(n + 1):-1]  # (B, A, V): position t predicts token t+1
    hs = None
    if hidden:
        states = caught if site == "mlp" else out.hidden_states[1:]
        cols = slice(-span, None) if span else slice(-(n + 1), -1)
        hs = torch.stack([h[:, cols] for h in states], dim=1)  # (B, L, P, D)
    return logits, hs


def query_span(batch: dict, query_start: torch.Tensor) -> tuple[int, torch.Tensor]:
    """(S, lengths): the query + answer tokens per row of a left-padded batch (T - query_start) and their max."""
    lengths = batch["input_ids"].shape[1] - query_start
    return int(lengths.max()), lengths


def student_batch(builder: PromptBuilder, queries: list[Sample], demos: list[list[Sample]] | None = None):
    """Encode `demos + query + target answer`; returns (model inputs, labels (B, A) right-aligned, A)."""
    demos = demos or [[] for _ in queries]
    batch = builder.encode([builder.build(d, q, answer=builder.target(q))
                            for d, q in zip(demos, queries, strict=False)])
    query_start = batch.pop("query_start")
    labels = batch.pop("labels")
    n = int((labels != -100).sum(1).max())
    return batch, labels[:, -n:], query_start


def teacher_key(lm, task_name: str, queries: list[Sample], support: list[Sample], cfg: TeacherConfig,
                seed: int, experts: list[list[Sample]] | None = None) -> str:

    cfg_json = cfg.to_json()  # fields added later drop out at their defaults: older cache keys stay valid
    pools = [content_hash(p) for p in experts] if experts else content_hash(support)
    payload = json.dumps({"model": lm.fingerprint, "task": task_name, "queries": content_hash(queries),
                          "support": pools, "cfg": cfg_json, "seed": seed, "v": 1}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _pad_left(t: torch.Tensor, n: int, value) -> torch.Tensor:
    """Right-align dim 1 of t to length n: left-pad, or drop leading (padding) columns."""
    if t.shape[1] >= n:
        return t[:, t.shape[1] - n:]
    pad = torch.full((t.shape[0], n - t.shape[1], *t.shape[2:]), value, dtype=t.dtype)
    return torch.cat([pad, t], dim=1)


def compute_teacher(lm, builder: PromptBuilder, queries: list[Sample], support: list[Sample], cfg: TeacherConfig,
                    task_name: str, seed: int = 0, cache_dir: str | Path | None = None, batch_size: int = 4,
                    show_progress: bool = True, experts: list[list[Sample]] | None = None,
                    progress: Progress | None = None) -> TeacherTargets:
    """`experts`: several demonstration pools, each one context per ensemble slot (cfg.experts names them).
    `progress`: the job's progress line, whose phase "teacher" counts the (query, draw) items; else one of its own."""
    from m2iv.constants import m2iv_home

    if cfg.shots < 1:
        raise M2IVError("the teacher needs at least 1 shot (--shots)")
    if bool(experts) != bool(cfg.experts) or (experts and len(experts) != len(cfg.experts)):
        raise M2IVError(f"the teacher config names {len(cfg.experts)} expert pool(s) but {len(experts or [])} were "
                        "given; pass one demonstration pool per name in teacher.experts")
    key = teacher_key(lm, task_name, queries, support, cfg, seed, experts)
    root = Path(cache_dir or m2iv_home() / "cache" / "teacher") / key
    root.mkdir(parents=True, exist_ok=True)
    cls = SELECTORS.get(cfg.selection)
    if cls is None:
        raise M2IVError(f"unknown teacher selection {cfg.selection!r}; use random, fixed or rices")
    if cls is RicesSelector:
        embed = model_embedder(lm, PromptBuilder(lm, builder.instruction))
        selectors = [RicesSelector(pool, embed, seed=seed) for pool in (experts or [support])]
    else:
        selectors = [cls(pool, seed=seed) for pool in (experts or [support])]
    items = [(q, d) for q in queries for d in range(cfg.draws)]
    shards = [items[i:i + SHARD] for i in range(0, len(items), SHARD)]
    bar = progress or Progress(f"teacher {cfg.shots}-shot", [("teacher", len(items))], disable=not show_progress)
    bar.start("teacher")
    loaded: list[dict] = []
    seconds: list[float | None] = []
    for si, shard in enumerate(shards):
        path = root / f"shard-{si:05d}.safetensors"
        data, spent = _load_shard(path)
        if data is None:
            t0 = time.perf_counter()
            data = _compute_shard(lm, builder, shard, selectors, cfg, seed, batch_size, bar)
            spent = time.perf_counter() - t0
            _write_shard(path, data, {"ids": json.dumps([q.id for q, _ in shard]), "seconds": f"{spent:.3f}"})
        else:
            bar.skip("teacher", len(shard))
        seconds.append(spent)
        loaded.append(data)
    if progress is None:
        bar.close()
    n = max(d["labels"].shape[1] for d in loaded)
    cat = lambda k, v: torch.cat([_pad_left(d[k], n, v) for d in loaded])  # noqa: E731
    return TeacherTargets(
        ids=[q.id for q, _ in items], draws=[d for _, d in items], labels=cat("labels", -100),
        values=cat("values", 0.0), index=cat("index", 0) if "index" in loaded[0] else None,
        hidden=_cat_hidden([d["hidden"] for d in loaded]) if "hidden" in loaded[0] else None,
        hidden_len=torch.cat([d["hidden_len"] for d in loaded]) if "hidden_len" in loaded[0] else None,
        prompt_tokens=float(torch.cat([d["prompt_tokens"] for d in loaded]).float().mean()), key=key,
        compute_seconds=None if None in seconds else round(sum(t for t in seconds if t is not None), 3))


def _load_shard(path: Path) -> tuple[dict | None, float | None]:
    """A cached shard's tensors and the seconds its computation took (None when it predates that record);
    (None, None) when absent or unreadable (a broken shard is removed and recomputed, never trusted)."""
    if not path.is_file():
        return None, None
    try:
        data = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            recorded = (f.metadata() or {}).get("seconds")
    except Exception:  # noqa: BLE001
        path.unlink(missing_ok=True)
        return None, None
    return data, float(recorded) if recorded is not None else None


def combine(logps: list[torch.Tensor], mode: str = "product", weights: torch.Tensor | None = None) -> torch.Tensor:
    """E experts' log-probabilities (each (..., V)) as one distribution's log-scores.

    "product" (a product of experts): the mean log-probability, or with `weights` (..., E), summing to 1 over E,
    the weighted sum (Parallel-ICL's weighted PoE); unnormalised, log_softmax renormalises it. "mixture": the log of
    the (weighted) mean probability. Without weights the terms are added in order, as the teacher always has."""
    if weights is None:
        acc = logps[0]
        for lp in logps[1:]:
            acc = torch.logaddexp(acc, lp) if mode == "mixture" else acc + lp
        return acc - math.log(len(logps)) if mode == "mixture" else acc / len(logps)
    w = weights.to(logps[0].dtype)
    if mode == "mixture":
        return torch.logsumexp(torch.stack([lp + w[..., e, None].log() for e, lp in enumerate(logps)]), dim=0)
    out = w[..., 0, None] * logps[0]
    for e, lp in enumerate(logps[1:], start=1):
        out = out + w[..., e, None] * lp
    return out


def _cat_hidden(parts: list[torch.Tensor]) -> torch.Tensor:
    """(N_i, L, P_i, D) shards, left-padded along the positions to the longest P_i, as one (N, L, P, D)."""
    p = max(t.shape[2] for t in parts)
    return torch.cat([_pad_left(t.transpose(1, 2), p, 0.0) for t in parts]).transpose(1, 2)


def _demo_sets(selector, q: Sample, draw: int, cfg: TeacherConfig, seed: int) -> list[list[Sample]]:
    """`ensemble` disjoint sets of `shots` demonstrations for one (query, draw); empty ones for a query the
    vectors must leave alone when `negatives` is "zero-shot" (the plain model is its teacher)."""
    if cfg.negatives == "zero-shot" and (q.meta or {}).get("condition") is False:
        return [[] for _ in range(cfg.ensemble)]
    k = cfg.shots * cfg.ensemble
    if cfg.selection == "random":
        pool = random.Random(f"{seed}:{q.id}:{draw}").sample(
            [s for s in selector.support if s.id != q.id and not set(s.images) & set(q.images)], k)
    else:
        pool = selector.select(q, k)
        if draw:
            random.Random(f"{seed}:{q.id}:{draw}").shuffle(pool)
    return [pool[i * cfg.shots:(i + 1) * cfg.shots] for i in range(cfg.ensemble)]


def _write_shard(path: Path, data: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    write_safetensors_atomic(path, data, metadata)


@torch.no_grad()
def _compute_shard(lm, builder, shard, selectors, cfg: TeacherConfig, seed, batch_size, bar: Progress) -> dict:
    labels_all, values_all, index_all, hidden_all, ptoks, spans = [], [], [], [], [], []
    n_ctx = cfg.ensemble * len(selectors)  # contexts per target: every expert pool's ensemble slots
    for i in range(0, len(shard), batch_size):
        chunk = shard[i:i + batch_size]
        sets = [[ds for sel in selectors for ds in _demo_sets(sel, q, d, cfg, seed)] for q, d in chunk]
        experts: list[torch.Tensor] = []
        hs_sum: torch.Tensor | None = None
        for e in range(n_ctx):
            batch, labels, query_start = student_batch(builder, [q for q, _ in chunk], [s[e] for s in sets])
            ptoks.append(batch["attention_mask"].sum(1) - (labels != -100).sum(1))
            span = None
            if cfg.hidden_states and cfg.hidden_span == "query":
                span, lengths = query_span(batch, query_start)
                if e == 0:
                    spans.append(lengths)
            batch = {k: v.to(lm.device) for k, v in batch.items()}
            logits, hs = _answer_logits(lm, batch, labels.shape[1], cfg.hidden_states, cfg.hidden_site, span)
            experts.append(F.log_softmax(logits.float(), dim=-1).cpu())
            if hs is not None:
                hs_sum = hs.float().cpu() if hs_sum is None else hs_sum + hs.float().cpu()
        # product of experts: the mean log-probability; mixture: log of the mean probability. Finite in fp16.
        logps = combine(experts, cfg.ensemble_mode).clamp_min(-1e4)
        if cfg.topk:
            v, ix = logps.topk(min(cfg.topk, logps.shape[-1]), dim=-1)
            values_all.append(v.half())
            index_all.append(ix.int())
        else:
            values_all.append(logps.half())
        labels_all.append(labels)
        if hs_sum is not None:
            hidden_all.append((hs_sum / n_ctx).half())
        bar.update("teacher", len(chunk))
    n = max(t.shape[1] for t in labels_all)
    out = {"labels": torch.cat([_pad_left(t, n, -100) for t in labels_all]).long(),
           "values": torch.cat([_pad_left(t, n, 0.0) for t in values_all]),
           "prompt_tokens": torch.cat(ptoks)}
    if index_all:
        out["index"] = torch.cat([_pad_left(t, n, 0) for t in index_all]).long()
    if hidden_all:
        out["hidden"] = _cat_hidden(hidden_all)  # positions: the answer's A, or the query span's S
    if spans:
        out["hidden_len"] = torch.cat(spans)
    return {k: v.contiguous() for k, v in out.items()}
