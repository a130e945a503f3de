"""HiFICL (CVPR 2026, arXiv 2603.12760; bbbandari/HiFICL@198c21b): settings and their origin.

Origin: `src/config/encoder/hifi.yaml` (AttnApproximatorDirect_final, num_virtual_tokens 8, lora_rank 8,
model_strategy LM_LOSS), `src/config/peft/hifi.yaml` (lr 5e-3), `src/config/train.yaml` (AdamW weight decay
1e-3, 10% warmup then cosine, batch 2 x accumulation 2, gradient clip 1.0) and `scripts/run_hifi.sh`
(epochs=3 over 1000 training queries), identical in its three model folders.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from m2iv.errors import M2IVError


@dataclass
class HiFICLConfig:
    virtual_tokens: int = 8  # num_virtual_tokens per head and layer
    rank: int = 8  # lora_rank, shared by the key and value factors
    key_a_std: float = 1.0  # K_learn_A ~ N(0, 1)
    key_b_std: float = 0.01  # K_learn_B ~ N(0, 0.01^2)
    value_a_std: float = 1.0  # V_learn_A ~ N(0, 1)
    value_b_std: float = 0.0  # V_learn_B = 0: the virtual values start at 0 (the keys still take softmax mass)
    layers: list[int] | None = None  # None: every decoder layer, every head (the original's lmm_layers)
    lr: float = 5e-3  # one rate for all four factors
    weight_decay: float = 1e-3  # on all four (the original exempts only names containing "bias")
    warmup: float = 0.1
    clip: float = 1.0
    batch_size: int = 2
    grad_accum: int = 2
    epochs: float = 3.0  # steps = ceil(epochs * train queries / (batch_size * grad_accum)) unless --steps is set
    w_ce: float = 1.0  # Strategy.LM_LOSS alone: cross-entropy on the answer, no teacher, no alignment loss
    # "masked": logZ2 over the keys a query may see (exact attention over [virtual; real keys]);
    # "all_keys": over every key of the sequence, future and padding ones included, as the original computes it.
    normaliser: str = "masked"
    token_policy: str = "all"  # every position, as the original

    def __post_init__(self) -> None:
        if self.virtual_tokens <= 0 or self.rank <= 0:
            raise M2IVError(f"HiFICL needs virtual_tokens > 0 and rank > 0 (got {self.virtual_tokens}, {self.rank})")
        if self.normaliser not in ("masked", "all_keys"):
            raise M2IVError(f"HiFICL normaliser must be 'masked' or 'all_keys'; got {self.normaliser!r}")
        if self.epochs <= 0:
            raise M2IVError(f"HiFICL epochs must be > 0; got {self.epochs}")

    def to_json(self) -> dict:
        return asdict(self)
