"""LIVE settings; defaults follow ForJadeForest/LIVE-Learnable-In-Context-Vector@83e8491 (`config/`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from m2iv.errors import M2IVError


@dataclass
class LIVEConfig:
    # Where the shift enters: "mlp" (MLP output; the original's Idefics2 config) or "layer" (decoder-layer
    # output; its Idefics-9B config).
    site: str = "mlp"
    layers: list[int] | None = None  # None: every decoder layer (intervention_layer: -1)
    init_std: float = 0.01  # vectors start as N(0, init_std^2) (GlobalICVEncoder)
    lr_vectors: float = 1e-4  # icv_lr
    lr_alpha: float = 1e-2  # alpha_lr (alpha is a logit through a sigmoid, init 0)
    weight_decay: float = 1e-3
    warmup: float = 0.1  # warm_steps: fraction of steps, then cosine
    w_ce: float = 0.0  # hard_loss_weight: CE next to the KL (0 in the original)
    temperature: float = 1.0  # init_temperature (not learned, no decay)
    # Deviations kept as switches (see method.py): the original's eps inside the KL's logs (1e-6) and its masks,
    # which leave the first answer token's prediction out of the KL. m2iv's defaults: the exact KL on every one.
    kl_eps: float = 0.0
    kl_skip_first: bool = False

    def __post_init__(self) -> None:
        if self.site not in ("mlp", "layer"):
            raise M2IVError(f"LIVE site must be 'mlp' or 'layer'; got {self.site!r}")
        if self.init_std < 0:
            raise M2IVError("LIVE init_std must be >= 0")

    def to_json(self) -> dict:
        return asdict(self)
