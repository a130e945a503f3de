"""I2CL settings; defaults follow LzVv123456/I2CL@c2c6dd9 `configs/config_i2cl.py`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from m2iv.errors import M2IVError


@dataclass
class I2CLConfig:
    n_demos: int = 0  # demonstrations condensed (and calibrated on); 0 follows --shots (original: 5 per class)
    sites: list[str] = field(default_factory=lambda: ["attn", "mlp"])  # original config['module']
    layers: list[int] | None = None  # None: every decoder layer (original 'layer': 'all')
    init_alpha: float = 0.1  # a in o' = b*o + a*cv (original init_value[0])
    init_beta: float = 1.0  # b (original init_value[1])
    noise_scale: float = 1e-3  # training-only noise, relative to each token's norm (original add_noise); 0: off
    epochs: int = 100  # calibration epochs over the demonstrations: steps = epochs * (n_demos // batch_size)
    batch_size: int = 2  # original grad_bs
    lr: float = 1e-2  # AdamW on the scalars (original lr)
    weight_decay: float = 1e-3  # original wd
    warmup: float = 0.05  # original: 5% of the epochs of linear warmup, then cosine
    ce_span: str = "answer"  # calibration CE on every answer token + end of turn; the original's: "first" (label word)

    def __post_init__(self) -> None:
        if not self.sites or not set(self.sites) <= {"attn", "mlp", "layer"}:
            raise M2IVError(f"I2CL sites must be among attn, mlp, layer; got {self.sites}")
        if self.n_demos < 0 or self.epochs <= 0 or self.batch_size <= 0 or self.noise_scale < 0:
            raise M2IVError("I2CL needs n_demos >= 0, epochs > 0, batch_size > 0 and noise_scale >= 0")

    def to_json(self) -> dict:
        return asdict(self)
