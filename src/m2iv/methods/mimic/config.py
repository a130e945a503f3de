"""MimIC (Jiang et al., CVPR 2025; Kamichanw/MimIC@9eda50b): settings and their origin."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MimICConfig:
    vector_init_std: float = 1e-3  # attn_shift = randn * 0.001 in the original
    gate_init_std: float = 0.02  # MultiheadLinear weight ~ N(0, 0.02), bias 0
    lr: float = 5e-3  # original lr (config/peft/mimic.yaml)
    weight_decay: float = 1e-3  # config/train.yaml
    warmup: float = 0.1  # warmup_step: fraction of steps, then cosine
    clip: float = 1.0  # grad_clip_val
    val_every: int = 0  # 0: keep the last vectors, as the original (it saves the last epoch's); K: best of every K
    w_align: float = 1.0  # layer-wise MSE to the ICL teacher's hidden states
    w_ce: float = 0.5  # + 0.5 * LM loss
    # What the MSE aligns (deviations kept as switches, see method.py): m2iv's default is the teacher's decoder-layer
    # outputs at the answer positions; the original's is the MLP outputs ("mlp") at every query + answer token
    # ("query").
    align_site: str = "layer"
    align_span: str = "answer"
    ce_span: str = "answer"  # the LM loss on the answer tokens; the original's labels=input_ids: "sequence"
    decay_gate_bias: bool = True  # weight decay on the gate bias too; the original's AdamW exempts biases: False
    token_policy: str = "all"
    normaliser: str = "masked"  # logZ2 over the keys a query may see; the original's over every key: "all_keys"
