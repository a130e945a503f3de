"""MimIC: per-head learned shifts inside self-attention, gated by the attention normaliser.

Mechanism (original `AttnApproximator.do_shift`): before o_proj, each head's output o_h becomes
o_h + mu_h * v_h with mu_h = exp(logZ1 - logaddexp(logZ1, logZ2)), logZ1 = w_h . q_h + b_h (a learned
per-head linear map of the head's post-RoPE query) and logZ2 = logsumexp(q_h K_h^T / sqrt(d_h)), the
head's own attention normaliser. Trained with layer-wise MSE to the N-shot ICL teacher's hidden states
(weight 1) plus 0.5 x the LM loss on the answer.

Deviations from the original code, and why:
- logZ2 is taken over the keys the query may attend to (causal and padding masks applied); the original
  sums over every key of the sequence, future ones included, which leaks the answer into the gate and
  makes cached and uncached generation disagree; `normaliser="all_keys"` restores it.
- The gate reads q and K through a function registered with transformers' AttentionInterface instead
  of copied attention forwards, so it works on every family and transformers version (see vectors/gate.py).
- Alignment targets are the teacher's decoder-layer outputs at the answer positions (cached once by the
  shared teacher) rather than MLP outputs (`ffn_strategy: RECORD_HIDDEN_STATES`) on every query + answer token
  of a live teacher pass; the MSE is one mean over all answer tokens of the batch, not a per-sample mean
  averaged over the batch (`calculate_layer_wise_loss`). `align_site="mlp"` and `align_span="query"` give the
  original's targets (the teacher's MLP outputs at every query + answer token, the student's at the same tokens
  of its own sequence); the single mean over tokens stays.
- The LM loss covers the answer tokens; the original's labels are the whole query + answer
  (`labels=input_ids`): `ce_span="sequence"` (padding excluded, which the original's pad-token labels
  include). Weight decay also reaches the gate bias; `decay_gate_bias=False` exempts it, as the original.
- Kept as the original (checked by tests/test_method_oracles.py): the gate
  mu = exp(logZ1 - logaddexp(logZ1, logZ2)) with logZ1 = MultiheadLinear(q) on post-RoPE queries, the
  per-head shift before o_proj, the inits (shift randn * 1e-3, gate weight N(0, 0.02), bias 0), lr 5e-3,
  AdamW wd 1e-3, 10% warmup then cosine, clip 1.0, and the LAST vectors kept (no validation-based choice:
  `val_every = 0`; the shared trainer's default of keeping the best validation step was a deviation).
"""

from __future__ import annotations

import torch

from m2iv.methods.base import LoadedVectors
from m2iv.methods.mimic.config import MimICConfig


class MimIC(LoadedVectors):
    name = "mimic"
    config_cls = MimICConfig
    lr_fields = ("method_config", ("lr",))
    lr_grid = (5e-4, 5e-3, 5e-2)

    @classmethod
    def recipe_defaults(cls, settings: MimICConfig) -> dict:
        cfg = settings
        return {"w_mimicry": 0.0, "w_synergy": 0.0, "w_ce": cfg.w_ce, "w_align": cfg.w_align, "synergy": "none",
                "lr_vectors": cfg.lr, "lr_scales": cfg.lr, "weight_decay": cfg.weight_decay, "warmup": cfg.warmup,
                "clip": cfg.clip, "val_every": cfg.val_every, "ce_span": cfg.ce_span,
                "no_decay": [] if cfg.decay_gate_bias else ["gate_b"],
                "teacher": {"hidden_states": True, "hidden_site": cfg.align_site, "hidden_span": cfg.align_span}}

    def make_vectors(self, lm, seed: int = 0):
        from m2iv.vectors.vector import InContextVectors, SiteSpec

        cfg: MimICConfig = self.method_config()
        a = lm.adapter
        vec = InContextVectors(num_layers=a.num_layers, hidden_size=a.hidden_size, num_heads=a.num_heads,
                               head_dim=a.head_dim, sites={"attn_head": SiteSpec("gated", list(range(a.num_layers)),
                                                                normaliser=cfg.normaliser)},
                               token_policy=cfg.token_policy, method=self.name)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            v = vec.vector("attn_head")
            v.copy_(torch.randn(v.shape, generator=g) * cfg.vector_init_std)
            w = vec.params["attn_head__gate_w"]
            w.copy_(torch.randn(w.shape, generator=g) * cfg.gate_init_std)
        return vec

    def fit(self, lm, task, splits: dict):
        from m2iv.train.run import train_vectors

        out = self.require_out()
        train_cfg = self.recipe()
        return train_vectors(lm, task, splits, self.make_vectors(lm, seed=train_cfg.seed), train_cfg, out,
                             method_config=self.spec.settings_json(), **self.train_options())
