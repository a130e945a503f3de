"""Function Vectors (Todd et al. 2024) as a plug-in: causal heads found by activation patching, no training.

Mechanism, after ericwtodd/function_vectors@fb9eac7 (`utils/extract_utils.py`, `compute_indirect_effect.py`,
`utils/intervention_utils.py`):

- Mean head outputs (`get_mean_head_activations`): the o_proj input, split by head, at the last token of
  `n_mean_prompts` clean N-shot prompts (demonstrations + a query whose answer is absent), averaged: (L, H, Dh).
- Indirect effect (`compute_indirect_effect`, last_token_only): on `n_ie_prompts` prompts whose demonstration
  labels are shuffled among themselves, each head's last-token o_proj input is replaced by its mean, one head
  at a time; the effect is the change in probability of the first token of the query's correct answer,
  averaged over prompts.
- FV (`compute_function_vector`): for the top-k heads, o_proj applied to a vector that is zero except the
  head's mean in that head's slice (W_O[:, slice] @ mean, plus the o_proj bias once per head where o_proj has
  one, exactly as calling `out_proj(x)` does), summed.
- Injection (`add_function_vector`): the FV is added to the decoder-layer-ℓ output at the last prompt token
  (site `layer`, operator `additive` with alpha 1, token policy `last`).

Deviations, and why:
- Edit layer: the original script sweeps every layer by default (`--edit_layer -1`) and reports per layer; the
  paper uses ~L/3. Here ℓ = num_layers // 3 unless `sweep` picks it by dev first-token accuracy (ties broken by
  the correct token's mean log-probability) on held-out training queries, or `edit_layer` fixes it.
- No ICL-correctness filter by default: the original draws queries only from those the model answers correctly
  with ICL (`filter_set`); here queries are any training queries (the filter needs ICL accuracy the tiny and
  small models may not have, and would change which data the vector sees). `icl_filter=True` keeps only the
  clean prompts whose first answer token the model predicts (per prompt, with its own demonstrations, rather
  than per query over one ICL run).
- Prompts are the task's chat-template prompts (images included) instead of `Q: x\\nA: y` lines; multi-token
  word averaging (`idx_avg`) does not arise because only the last token is used.
- Heads are patched in a batch of prompts at once instead of one prompt at a time, and each patched run
  recomputes only the last position on a cached prefix (`LastPositionRerun`; the patch touches nothing
  else): the arithmetic is the same, ~prompt-length times cheaper.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace

import torch

from m2iv.data.prompts import Prompt, PromptBuilder
from m2iv.data.sample import Sample
from m2iv.errors import M2IVError
from m2iv.methods.base import LoadedVectors
from m2iv.methods.extraction import (
    LastPositionRerun,
    answer_first_ids,
    check_layers,
    choose_layer,
    fit_settings,
    model_batches,
    record_last,
    sample_demos,
    split_dev,
)
from m2iv.methods.fv.config import FVConfig


def shuffle_labels(rng: random.Random, demos: list[Sample]) -> list[Sample]:
    """The demonstrations with their answers permuted among them (the original's `shuffle_labels=True`)."""
    perm = list(range(len(demos)))
    rng.shuffle(perm)
    return [replace(d, answers=demos[j].answers) for d, j in zip(demos, perm, strict=True)]


def _patch_head(head: int, head_dim: int, value: torch.Tensor):
    """Pre-hook on o_proj: the head's input slice at the last position becomes `value` (Dh,)."""

    def hook(_module, args):
        x = args[0].clone()  # (B, T, H*Dh)
        x[:, -1, head * head_dim:(head + 1) * head_dim] = value.to(x.device, x.dtype)
        return (x, *args[1:])

    return hook


@torch.no_grad()
def icl_correct(lm, builder: PromptBuilder, prompts: list[Prompt], demos: list[list[Sample]], queries: list[Sample],
                batch_size: int) -> list[Prompt]:
    """The prompts whose next-token argmax is the first token of their query's answer (the original's filter)."""
    targets = answer_first_ids(builder, demos, queries)
    preds = torch.cat([lm.model(**b).logits[:, -1].argmax(-1).cpu()
                       for b in model_batches(lm, builder, prompts, batch_size)])
    keep = [p for p, ok in zip(prompts, (preds == targets).tolist(), strict=True) if ok]
    if not keep:
        raise M2IVError(f"fv icl_filter: the model answers none of its {len(prompts)} ICL prompts right, so there is "
                        "nothing to average; set icl_filter=false or use more shots")
    return keep


@torch.no_grad()
def indirect_effects(lm, builder: PromptBuilder, prompts: list[Prompt], targets: torch.Tensor, mean: torch.Tensor,
                     layers: list[int], batch_size: int) -> torch.Tensor:
    """(N, L, H) gain in p(target) at the last token when one head's last-token o_proj input is replaced by
    `mean` (L, H, Dh); layers not in `layers` stay 0."""
    ad = lm.adapter
    out = torch.zeros(len(prompts), ad.num_layers, ad.num_heads)
    for b, batch in enumerate(model_batches(lm, builder, prompts, batch_size)):
        rows = slice(b * batch_size, b * batch_size + batch["input_ids"].shape[0])
        t = targets[rows].to(lm.device)[:, None]  # (B, 1)
        rerun = LastPositionRerun(lm, batch)  # the patch edits the last position only
        clean = torch.softmax(rerun.full.float(), -1).gather(1, t)[:, 0]  # (B,)
        for layer in layers:
            o_proj = ad.module(layer, "attn_head")
            for head in range(ad.num_heads):
                h = o_proj.register_forward_pre_hook(_patch_head(head, ad.head_dim, mean[layer, head]))
                try:
                    probs = torch.softmax(rerun.logits().float(), -1).gather(1, t)[:, 0]
                finally:
                    h.remove()
                out[rows, layer, head] = (probs - clean).cpu()
    return out


def top_heads(mean_ie: torch.Tensor, k: int, layers: list[int]) -> list[tuple[int, int, float]]:
    """The k (layer, head, score) with the largest mean indirect effect among `layers`, best first."""
    scores = torch.full_like(mean_ie, float("-inf"))
    scores[layers] = mean_ie[layers]
    k = min(k, len(layers) * mean_ie.shape[1])
    vals, idx = torch.topk(scores.flatten(), k)
    H = mean_ie.shape[1]
    return [(int(i) // H, int(i) % H, float(v)) for v, i in zip(vals, idx, strict=True)]


@torch.no_grad()
def function_vector(lm, mean: torch.Tensor, heads: list[tuple[int, int, float]]) -> torch.Tensor:
    """(D,) sum over `heads` of o_proj(x), x zero except the head's slice = its mean output."""
    ad = lm.adapter
    fv = torch.zeros(ad.hidden_size)
    for layer, head, _ in heads:
        o_proj = ad.module(layer, "attn_head")
        w = next(o_proj.parameters())
        x = torch.zeros(1, 1, ad.num_heads * ad.head_dim, dtype=w.dtype, device=w.device)
        x[..., head * ad.head_dim:(head + 1) * ad.head_dim] = mean[layer, head].to(w.device, w.dtype)
        fv += o_proj(x)[0, 0].float().cpu()
    return fv


class FunctionVectors(LoadedVectors):
    name = "fv"
    config_cls = FVConfig
    cpu_budget = {"n_mean_prompts": 32}  # 32 16-shot prompts for the mean activations instead of 100
    tiny_budget = {"n_mean_prompts": 3, "n_ie_prompts": 2, "n_top_heads": 3}

    def make_vectors(self, lm, layer: int, fv: torch.Tensor):
        """Add `fv` (D,) to the decoder-layer-`layer` output at the last prompt token."""
        from m2iv.vectors.vector import InContextVectors

        vec = InContextVectors.for_model(lm.adapter, sites=("layer",), operator="additive", layers=[layer],
                                         token_policy="last", method=self.name)
        with torch.no_grad():
            vec.vector("layer")[0].copy_(fv)
            vec.params["layer__alpha"].fill_(1.0)
        return vec.to(lm.device).requires_grad_(False)

    def prompts(self, builder: PromptBuilder, support: list[Sample], pool: list[Sample], shots: int, cfg: FVConfig,
                seed: int) -> tuple[list[Prompt], list[list[Sample]], list[Sample], list[list[Sample]], list[Sample]]:
        """(clean prompts for the mean, shuffled-label demonstrations and queries for the indirect effect, and the
        clean prompts' demonstrations and queries)."""
        rng = random.Random(f"{seed}:fv")
        clean, clean_demos, clean_queries = [], [], []
        for _ in range(cfg.n_mean_prompts):
            q = rng.choice(pool)
            clean_queries.append(q)
            clean_demos.append(sample_demos(rng, support, shots, [q], "fv"))
            clean.append(builder.build(clean_demos[-1], q))
        queries, demos = [], []
        for _ in range(cfg.n_ie_prompts):
            q = rng.choice(pool)
            queries.append(q)
            demos.append(shuffle_labels(rng, sample_demos(rng, support, shots, [q], "fv")))
        return clean, demos, queries, clean_demos, clean_queries

    def fit(self, lm, task, splits: dict):
        t0 = time.perf_counter()
        cfg, seed, shots = fit_settings(self)
        L = lm.adapter.num_layers
        builder = PromptBuilder(lm, task.instruction, task.answer_template)
        if cfg.sweep:
            dev, pool = split_dev(splits["train"], cfg.dev_size, seed, "fv")
        else:
            dev, pool = [], list(splits["train"])
        if not pool:
            raise M2IVError("fv needs training queries; the task's train split is empty")
        clean, demos, queries, clean_demos, clean_queries = self.prompts(builder, splits["support"], pool, shots,
                                                                         cfg, seed)
        n_clean = len(clean)
        if cfg.icl_filter:
            clean = icl_correct(lm, builder, clean, clean_demos, clean_queries, cfg.batch_size)
        # 1. mean head outputs over clean ICL prompts
        mean = record_last(lm, builder, clean, "attn_head", cfg.batch_size).mean(0)  # (L, H, Dh)
        # 2. indirect effect of each head on shuffled-label prompts
        targets = answer_first_ids(builder, demos, queries)
        ie_layers = check_layers(cfg.ie_layers if cfg.ie_layers is not None else list(range(L)), L, "fv")
        ie_prompts = [builder.build(d, q) for d, q in zip(demos, queries, strict=True)]
        ie = indirect_effects(lm, builder, ie_prompts, targets, mean, ie_layers, cfg.batch_size).mean(0)  # (L, H)
        # 3. the FV and where it goes
        heads = top_heads(ie, cfg.n_top_heads, ie_layers)
        fv = function_vector(lm, mean, heads)
        scores: dict[int, dict] = {}
        if cfg.sweep:
            layers = check_layers(cfg.layers if cfg.layers is not None else list(range(L)), L, "fv")
            layer, scores = choose_layer(lm, builder, dev, layers, lambda i: self.make_vectors(lm, i, fv),
                                         cfg.batch_size)
        else:
            layer = check_layers([L // 3 if cfg.edit_layer is None else cfg.edit_layer], L, "fv")[0]
        info = {"edit_layer": layer, "shots": shots, "top_heads": [list(h) for h in heads],
                "indirect_effect": ie.tolist(), "n_mean_prompts": len(clean), "n_clean_sampled": n_clean,
                "n_ie_prompts": len(queries),
                "fv_norm": float(fv.norm()), "dev_by_layer": {str(k): v for k, v in scores.items()},
                "metrics": {"dev_first_token_accuracy": scores[layer]["accuracy"]} if scores else {},
                "train_seconds": round(time.perf_counter() - t0, 3)}
        return self.make_vectors(lm, layer, fv), info
