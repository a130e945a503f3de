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

import torch

from m2iv.data.prompts import Prompt, PromptBuilder
from m2iv.data.sample import Sample
from m2iv.methods.base import LoadedVectors
from m2iv.methods.extraction import check_layers, choose_layer, fit_settings, record_last, sample_demos, split_dev
from m2iv.methods.tv.config import TVConfig


class TaskVectors(LoadedVectors):
    name = "tv"
    config_cls = TVConfig
    tiny_budget = {"n_prompts": 2, "dummy_queries": 2, "dev_size": 3}

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
        return vec.to(lm.device).requires_grad_(False)

    def fit(self, lm, task, splits: dict):
        t0 = time.perf_counter()
        cfg, seed, shots = fit_settings(self)
        builder = PromptBuilder(lm, task.instruction, task.answer_template)
        dev, pool = split_dev(splits["train"], cfg.dev_size, seed, "tv")
        prompts = self.extraction_prompts(builder, splits["support"], pool, shots, cfg, seed)
        states = record_last(lm, builder, prompts, "layer", cfg.batch_size)  # (N, L, D)
        mean = states.mean(0)  # (L, D)
        scores: dict[int, dict] = {}
        if cfg.layer is not None:
            best = check_layers([cfg.layer], lm.adapter.num_layers, "tv")[0]
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
