"""MTV settings; originals from Brandon3964/MultiModal-Task-Vector@b2698c4 (`MTV/mtv_utils.py`, `mtv_eval.py`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from m2iv.errors import M2IVError


@dataclass
class MTVConfig:
    shots: int = 0  # demonstrations per ICL run of the mean activations; 0 follows --shots (original 4 or 16)
    n_trials: int = 100  # ICL runs averaged (original --num_example 100)
    batch_size: int = 4  # ICL runs per forward pass while extracting
    steps: int = 600  # REINFORCE steps, one query each (original 600)
    samples: int = 32  # head masks sampled per step (original 32)
    sample_batch: int = 32  # masks evaluated per (last-position) forward pass
    lr: float = 0.1  # Adam on the Bernoulli logits
    init_logit: float = -1.0  # every head starts with p = sigmoid(-1) ~ 0.27
    eps: float = 1e-3  # probability clamp and reward-normalisation epsilon
    n_queries: int = 100  # REINFORCE query pool drawn from the train split (original 100)
    n_final: int = 10  # masks sampled from the learned probabilities at the end (original 10)
    n_val: int = 50  # train queries that score them; the lowest mean CE wins (original train[:50])
    threshold: float | None = None  # zero probabilities <= this before the final draw; None: the family's
    #                                 `mtv_threshold` in models/families.py (0.8 on idefics2, as the original)
    replace_generated: bool = True  # also replace at every generated token, as the original's hooks do
    #                                 under KV-cache generation (the saved token policy is "last")
    layers: list[int] | None = None  # None: every decoder layer

    def __post_init__(self) -> None:
        if self.samples < 2:
            raise M2IVError("MTV needs samples >= 2 per REINFORCE step (rewards are normalised by their std)")
        if min(self.n_trials, self.batch_size, self.steps, self.sample_batch, self.n_queries, self.n_final,
               self.n_val) < 1 or self.shots < 0:
            raise M2IVError("MTV counts (n_trials, batch_size, steps, sample_batch, n_queries, n_final, n_val) "
                            "must be >= 1 and shots >= 0")

    def to_json(self) -> dict:
        return asdict(self)
