"""Helpers shared by the extract-and-inject baselines (Task Vectors, Function Vectors, ICV): demonstration
draws, dev splits, batched last-token recording, first-answer-token scoring and the layer sweep."""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Iterator

import torch

from m2iv.data.prompts import Prompt, PromptBuilder
from m2iv.data.sample import Sample
from m2iv.errors import M2IVError


def fit_settings(method, default_shots_field: str = "shots"):
    """(config with the shots actually used, seed, shots) for an extraction method's `fit`; the saved config
    then names the shots used."""
    cfg = method.method_config()
    seed = method.spec.seed
    shots = getattr(cfg, default_shots_field)
    if shots < 1:
        raise M2IVError(f"--shots must be at least 1 for an extracted vector, got {shots}")
    return cfg, seed, int(shots)


def split_dev(train: list[Sample], dev_size: int, seed: int, name: str) -> tuple[list[Sample], list[Sample]]:
    """Seeded split of the training queries into (dev, pool); both non-empty, dev at most half."""
    if len(train) < 2:
        raise M2IVError(f"{name} needs at least 2 training queries (dev + extraction); the task's train split has "
                        f"{len(train)}")
    order = list(train)
    random.Random(f"{seed}:{name}:dev").shuffle(order)
    n = min(dev_size, len(order) // 2)
    return order[:n], order[n:]


def sample_demos(rng: random.Random, support: list[Sample], k: int, avoid: list[Sample], name: str) -> list[Sample]:
    """k random support samples sharing no id and no image with `avoid` (the queries of the prompt)."""
    ids = {s.id for s in avoid}
    imgs = {p for s in avoid for p in s.images}
    ok = [s for s in support if s.id not in ids and not imgs & set(s.images)]
    if k > len(ok):
        raise M2IVError(f"{name} asked for {k} demonstrations but only {len(ok)} support examples are eligible; "
                        "lower --shots or enlarge the support set")
    return rng.sample(ok, k)


def model_batches(lm, builder: PromptBuilder, prompts: list[Prompt], batch_size: int) -> Iterator[dict]:
    """Left-padded model inputs on the model's device (query_start and labels removed)."""
    for i in range(0, len(prompts), batch_size):
        batch = builder.encode(prompts[i:i + batch_size])
        batch.pop("query_start")
        batch.pop("labels", None)
        yield {k: v.to(lm.device) for k, v in batch.items()}


@torch.no_grad()
def record_last(lm, builder: PromptBuilder, prompts: list[Prompt], site: str, batch_size: int) -> torch.Tensor:
    """Last-token activations of every layer at `site`: (N, L, D), or (N, L, H, Dh) for attn_head."""
    from m2iv.vectors.record import record

    with record(lm.model, lm.adapter, sites=(site,)) as rec:
        for batch in model_batches(lm, builder, prompts, batch_size):
            lm.model(**batch)
    return rec.stacked(site)


def answer_first_ids(builder: PromptBuilder, demos: list[list[Sample]], queries: list[Sample],
                     batch_size: int = 16) -> torch.Tensor:
    """(N,) id of the first token of each query's training answer, tokenised in its prompt."""
    out = []
    for i in range(0, len(queries), batch_size):
        qs, ds = queries[i:i + batch_size], demos[i:i + batch_size]
        prompts = [builder.build(d, q, answer=builder.target(q)) for d, q in zip(ds, qs, strict=True)]
        labels = builder.encode(prompts)["labels"]
        has = labels != -100  # (B, T)
        if not bool(has.any(1).all()):
            raise M2IVError("a query has an empty training answer; every query needs at least one answer")
        first = has.float().argmax(1)  # (B,) first answer column
        out.append(labels.gather(1, first[:, None])[:, 0])
    return torch.cat(out)


@torch.no_grad()
def first_token_scores(lm, builder: PromptBuilder, queries: list[Sample], vectors, batch_size: int,
                       targets: torch.Tensor | None = None) -> tuple[float, float]:
    """(accuracy of the first predicted token, mean log-prob of the correct one) on zero-shot prompts of
    `queries` with `vectors` injected (None: the plain model)."""
    from contextlib import nullcontext

    from m2iv.vectors.inject import apply

    targets = answer_first_ids(builder, [[] for _ in queries], queries) if targets is None else targets
    prompts = [builder.build([], q) for q in queries]
    hits, logps = [], []
    ctx = nullcontext() if vectors is None else apply(lm.model, vectors, lm.adapter, freeze_base=False)
    with ctx:
        for i, batch in enumerate(model_batches(lm, builder, prompts, batch_size)):
            t = targets[i * batch_size:(i + 1) * batch_size].to(lm.device)
            lp = torch.log_softmax(lm.model(**batch).logits[:, -1].float(), dim=-1)  # (B, V)
            hits.append((lp.argmax(-1) == t).float().cpu())
            logps.append(lp.gather(1, t[:, None])[:, 0].cpu())
    return float(torch.cat(hits).mean()), float(torch.cat(logps).mean())


def choose_layer(lm, builder: PromptBuilder, dev: list[Sample], layers: list[int],
                 make_vectors: Callable[[int], object], batch_size: int) -> tuple[int, dict[int, dict]]:
    """argmax over `layers` of (dev first-token accuracy, mean correct log-prob) with make_vectors(layer) injected."""
    targets = answer_first_ids(builder, [[] for _ in dev], dev)
    scores = {}
    for layer in layers:
        acc, logp = first_token_scores(lm, builder, dev, make_vectors(layer), batch_size, targets)
        scores[layer] = {"accuracy": acc, "logprob": logp}
    best = max(layers, key=lambda i: (scores[i]["accuracy"], scores[i]["logprob"]))
    return best, scores


class LastPositionRerun:
    """A batch run once in full (its last-position logits are `full`), its KV cache kept without the last
    position, then only the last position rerun as often as asked. Exact for edits of the last position alone
    (its keys and values reach no earlier position) and ~T times cheaper than full forwards: the original
    Task Vectors dev sweep's past_key_values trick, used here for FV's per-head patching and MTV's sampled
    head masks. Checked on the spot (the unedited rerun must give `full`); a model whose cached path differs
    or fails falls back to full forwards."""

    def __init__(self, lm, batch: dict, repeated: dict | None = None) -> None:
        """`repeated`: the batch whose logits are asked for is `batch` with each row repeated r times in place
        (encoded by the caller, used as is by the fallback); the full pass still runs once per row of `batch`.
        Hooks registered now must leave the model unedited."""
        self.model = lm.model
        self.batch = batch if repeated is None else repeated
        repeat = len(self.batch["input_ids"]) // len(batch["input_ids"])
        self._name = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self.cache = None
        with torch.no_grad():
            try:
                out = self.model(**batch, use_cache=True)
                self.full = out.logits[:, -1]
                self.cache = getattr(out, "cache", None) or out.past_key_values
                self.cache.crop(-1)
                if not torch.allclose(self._last(batch).float(), self.full.float(), atol=1e-4, rtol=1e-3):
                    self.cache = None
                elif repeat > 1:
                    self.cache.batch_repeat_interleave(repeat)
            except (RuntimeError, ValueError, IndexError, TypeError, AttributeError):
                self.cache = None
                self.full = self.model(**batch).logits[:, -1]

    @property
    def cached(self) -> bool:
        return self.cache is not None

    def _last(self, batch: dict) -> torch.Tensor:
        assert self.cache is not None
        try:
            return self.model(input_ids=batch["input_ids"][:, -1:], attention_mask=batch["attention_mask"],
                              use_cache=True, **{self._name: self.cache}).logits[:, -1]
        finally:
            self.cache.crop(-1)

    @torch.no_grad()
    def logits(self) -> torch.Tensor:
        """(B·r, V) last-position logits under whatever hooks are registered now."""
        if self.cache is None:
            return self.model(**self.batch).logits[:, -1]
        return self._last(self.batch)


def check_layers(layers: list[int], num_layers: int, name: str) -> list[int]:
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad:
        raise M2IVError(f"{name}: layer(s) {bad} out of range; the model has layers 0..{num_layers - 1}")
    return sorted(set(layers))


# -- the method ---------------------------------------------------------------------------------------------
