"""HiFICL: learnable low-rank virtual key/value pairs in every attention head.

Mechanism (original `AttnApproximatorDirect_final`, src/shift_encoder.py): every head h of every decoder
layer gets V = 8 virtual keys K = A_K B_K and values Vv = A_V B_V (rank r = 8 factors, (V, r) @ (r, Dh)).
Before o_proj, the head's attention output o becomes softmax attention over [virtual keys; real keys]:

    o' = Z2 / (Z1 + Z2) * o + sum_j exp(q.K_j / sqrt(Dh)) / (Z1 + Z2) * Vv_j,   Z1 = sum_j exp(q.K_j / sqrt(Dh)),

Z2 = the head's own normaliser over the real keys, q the post-RoPE query; virtual keys have no position.
Init: A_K, A_V ~ N(0, 1), B_K ~ N(0, 0.01^2), B_V = 0, so the virtual values start at 0 but the virtual keys
already take softmax mass (each exp(s_j) ~ 1): the untrained model is NOT the base model, its heads' outputs
are scaled by Z2 / (Z1 + Z2). Trained by the LM loss on the answer alone (no teacher, no alignment loss),
AdamW lr 5e-3, wd 1e-3, 10% warmup then cosine, batch 2 x accumulation 2, clip 1.0, 3 epochs.

Deviations from the original code, and why (each a setting in HiFICLConfig unless noted):
- logZ2 is taken over the keys the query may attend to (causal and padding masks applied), which makes the
  result exact attention over [virtual; real keys] and cached and uncached generation agree; the original
  sums over every key, future ones included (`normaliser="all_keys"` restores that).
- The statistics come from a function registered with transformers' AttentionInterface (vectors/gate.py,
  shared with MimIC) instead of copied per-model attention forwards, so every family works; the virtual
  scores use the model's own softmax scale (1/sqrt(Dh) on every supported family, as the original).
- Training data and prompt are the harness's (the task's zero-shot prompt + answer, CE on the answer
  tokens and the end-of-turn); validation every `--val-every` steps keeps the best step (harness-wide; the
  original saves each epoch and evaluates every saved epoch). Not a setting: pass `--val-every 0` to keep
  the last step instead.
"""

from __future__ import annotations

import math

import torch

from m2iv.methods.base import LoadedVectors
from m2iv.methods.hificl.config import HiFICLConfig


class HiFICL(LoadedVectors):
    name = "hificl"
    config_cls = HiFICLConfig
    # The recipe flags the user types are these settings (one value each, recorded in the vector config).
    from_recipe = {k: k for k in ("batch_size", "grad_accum", "weight_decay", "warmup", "clip", "w_ce")}
    cpu_budget = {"grad_accum": 1}  # the comparison's batch per step, as every other trained method (original: 2)
    lr_fields = ("method_config", ("lr",))
    lr_grid = (5e-4, 5e-3, 5e-2)

    @classmethod
    def recipe_defaults(cls, settings: HiFICLConfig) -> dict:
        cfg = settings
        return {"batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum, "lr_vectors": cfg.lr, "lr_scales": cfg.lr,
                "weight_decay": cfg.weight_decay, "warmup": cfg.warmup, "clip": cfg.clip, "w_ce": cfg.w_ce,
                "w_mimicry": 0.0, "w_synergy": 0.0, "w_align": 0.0, "synergy": "none"}

    def make_vectors(self, lm, seed: int = 0):
        from m2iv.vectors.vector import InContextVectors, SiteSpec

        cfg: HiFICLConfig = self.method_config()
        a = lm.adapter
        layers = list(range(a.num_layers)) if cfg.layers is None else sorted(cfg.layers)
        spec = SiteSpec("virtual_kv", layers, virtual_tokens=cfg.virtual_tokens, rank=cfg.rank,
                        normaliser=cfg.normaliser)
        vec = InContextVectors(num_layers=a.num_layers, hidden_size=a.hidden_size, num_heads=a.num_heads,
                               head_dim=a.head_dim, sites={"attn_head": spec}, token_policy=cfg.token_policy,
                               method=self.name)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, std in (("key_a", cfg.key_a_std), ("key_b", cfg.key_b_std), ("value_a", cfg.value_a_std),
                              ("value_b", cfg.value_b_std)):
                p = vec.params[f"attn_head__{name}"]
                p.copy_(torch.randn(p.shape, generator=g) * std)
        return vec

    def fit(self, lm, task, splits: dict):
        from dataclasses import replace

        from m2iv.train.run import train_vectors, validation_size

        out = self.require_out()
        cfg: HiFICLConfig = self.method_config()
        train_cfg = self.recipe()
        if "steps" not in self.spec.recipe_set:  # the original's epochs, unless the caller set the steps
            n_train = len(splits["train"]) - validation_size(train_cfg, len(splits["train"]))
            train_cfg = replace(train_cfg, steps=max(1, math.ceil(cfg.epochs * n_train
                                                                  / (train_cfg.batch_size * train_cfg.grad_accum))))
        return train_vectors(lm, task, splits, self.make_vectors(lm, seed=train_cfg.seed), train_cfg, out,
                             method_config=self.spec.settings_json(), **self.train_options())
