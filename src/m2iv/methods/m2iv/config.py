"""M²IV (arXiv 2504.04633): what is learned and where it is injected (docs/method-notes.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from m2iv.errors import M2IVError


@dataclass
class M2IVConfig:
    # Per decoder layer: a vector + weight factors on the MHA branch and on the MLP branch.
    sites: list[str] = field(default_factory=lambda: ["attn", "mlp"])
    # Form (B) `b*h + a*v` (the zeta/eta pair of the paper's invariance theorems); "additive" is form (A),
    # "norm_preserving" adds LIVE's norm rule. Unknown in the paper: kept as a switch.
    operator: str = "linear"
    token_policy: str = "all"  # LIVE, I2CL and MimIC inject at every position, generated tokens included
    layers: list[int] | None = None  # None: every decoder layer

    def __post_init__(self) -> None:
        if not set(self.sites) <= {"attn", "mlp", "attn_head", "layer"} or not self.sites:
            raise M2IVError(f"M²IV sites must be among attn, mlp, attn_head, layer; got {self.sites}")

    def to_json(self) -> dict:
        return asdict(self)
