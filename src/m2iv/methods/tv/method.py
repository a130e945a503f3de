"""Task Vectors (Hendel et al. 2023) as a plug-in: no training, a last-token state patched into one layer.

Mechanism, after roeehendel/icl_task_vectors@1da0db6 (`core/task_vectors.py`, `hidden_injector.py`):

- Extraction (`get_single_context_task_hiddens`): an ICL prompt is the demonstrations followed by a *dummy*
  query (an input other than the one being answered, its answer absent: `"example:{input}->"`). The
  decoder-layer output at its last token, for every layer, is the task vector candidate; each demonstration
  set is read with `dummy_queries` (2) different dummy queries and the states averaged.
- Injection (`HiddenInjector`): the zero-shot run's decoder-layer-ℓ output at the last prompt position is
  *replaced* by the vector (here: site `layer`, operator `replace`, token policy `last`; generated tokens
  are not patched, as the original patches only the first forward).
- Layer (`task_vector_accuracy_by_layer`): ℓ = argmax over layers of the dev accuracy of the first predicted
  token (the original predicts one token; here the first token of the query's training answer).

Deviations, and why:
- One vector per task: the original builds a vector per test example from that example's own demonstrations.
  A stored, reusable vector must not depend on the test query, so the vector is the mean over `n_prompts`
  demonstration sets x `dummy_queries` dummy queries (the original averages over sets only for its analysis).
  The dev sweep scores that same mean vector.
- Dev set: `dev_size` held-out training queries (zero-shot prompt, vector patched); dummy queries come from
  the other training queries, so no dev query ever appears in an extraction prompt. Dev accuracy ties (common
  on small dev sets) are broken by the mean log-probability of the correct first token; the original's
  `max(dict)` keeps the lowest layer.
- Prompts are the task's chat-template prompts (images and all) instead of `example:x->y` lines; the last
  token is the end of the generation prompt.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import torch

from m2iv.data.prompts import Prompt, PromptBuilder
from m2iv.data.sample import Sample
from m2iv.errors import M2IVError
from m2iv.methods.base import LoadedVectors
from m2iv.methods.tv.config import TVConfig


# -- helpers shared by the extract-and-inject baselines (tv, fv, icv) --------------------------------------
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


def resolve_shots(options: dict, default: int) -> int:
    shots = options.get("shots") or default
    if shots < 1:
        raise M2IVError(f"--shots must be at least 1 for an extracted vector, got {shots}")
    return int(shots)


def model_batches(lm, builder: PromptBuilder, prompts: list[Prompt], batch_size: int) -> Iterator[dict]:
    """Left-padded model inputs on the model's device (query_start and labels removed)."""
    for i in range(0, len(prompts), batch_size):
        batch = builder.encode(prompts[i:i + batch_size])
        batch.pop("query_start")
        batch.pop("labels", None)
        yield {k: v.to(lm.model.device) for k, v in batch.items()}


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
        labels = builder.encode([builder.build(d, q, answer=builder.target(q)) for d, q in zip(ds, qs)])["labels"]
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
    ctx = nullcontext() if vectors is None else apply(lm.model, vectors, lm.adapter)
    with ctx:
        for i, batch in enumerate(model_batches(lm, builder, prompts, batch_size)):
            t = targets[i * batch_size:(i + 1) * batch_size].to(lm.model.device)
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


def check_layers(layers: list[int], num_layers: int, name: str) -> list[int]:
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad:
        raise M2IVError(f"{name}: layer(s) {bad} out of range; the model has layers 0..{num_layers - 1}")
    return sorted(set(layers))


# -- the method ---------------------------------------------------------------------------------------------
class TaskVectors(LoadedVectors):
    name = "tv"
    config_cls = TVConfig

    def extraction_prompts(self, builder: PromptBuilder, support: list[Sample], pool: list[Sample], shots: int,
                           cfg: TVConfig, seed: int) -> list[Prompt]:
        """n_prompts demonstration sets, each followed by `dummy_queries` different dummy queries (no answer)."""
        rng = random.Random(f"{seed}:tv:extract")
        prompts = []
        for _ in range(cfg.n_prompts):
            queries = rng.sample(pool, min(cfg.dummy_queries, len(pool)))
            demos = sample_demos(rng, support, shots, queries, "tv")
            prompts += [builder.build(demos, q) for q in queries]
        return prompts

    def make_vectors(self, lm, layer: int, vector: torch.Tensor):
        """Replace the decoder-layer-`layer` output at the last prompt token by `vector` (D,)."""
        from m2iv.vectors.vector import InContextVectors

        vec = InContextVectors.for_model(lm.adapter, sites=("layer",), operator="replace", layers=[layer],
                                         token_policy="last", method=self.name)
        with torch.no_grad():
            vec.vector("layer")[0].copy_(vector)
        return vec.to(lm.model.device).requires_grad_(False)

    def fit(self, lm, task, splits: dict):
        t0 = time.perf_counter()
        cfg: TVConfig = self.method_config()
        seed = int(self.options.get("seed") or 0)
        shots = resolve_shots(self.options, cfg.shots)
        self.options["method_config"] = cfg = replace(cfg, shots=shots)  # the saved config names the shots used
        builder = PromptBuilder(lm, task.instruction, task.answer_template)
        dev, pool = split_dev(splits["train"], cfg.dev_size, seed, "tv")
        prompts = self.extraction_prompts(builder, splits["support"], pool, shots, cfg, seed)
        states = record_last(lm, builder, prompts, "layer", cfg.batch_size)  # (N, L, D)
        mean = states.mean(0)  # (L, D)
        if cfg.layer is not None:
            best, scores = check_layers([cfg.layer], lm.adapter.num_layers, "tv")[0], {}
        else:
            layers = check_layers(cfg.layers if cfg.layers is not None else list(range(lm.adapter.num_layers)),
                                  lm.adapter.num_layers, "tv")
            best, scores = choose_layer(lm, builder, dev, layers, lambda i: self.make_vectors(lm, i, mean[i]),
                                        cfg.batch_size)
        info = {"layer": best, "shots": shots, "n_extraction_prompts": len(prompts), "n_dev": len(dev),
                "dev_by_layer": {str(k): v for k, v in scores.items()},
                "metrics": {"dev_first_token_accuracy": scores[best]["accuracy"]} if scores else {},
                "train_seconds": round(time.perf_counter() - t0, 3)}
        return self.make_vectors(lm, best, mean[best]), info
