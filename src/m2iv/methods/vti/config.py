"""VTI-style steering: settings (the layer and the strength are chosen on held-out training queries)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from m2iv.errors import M2IVError


@dataclass
class VTIConfig:
    dev_size: int = 32  # held-out training queries that choose the layer and the strength
    layers: list[int] | None = None  # candidate layers; None: every decoder layer
    alphas: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0])  # candidate strengths of the shift
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.dev_size < 1 or self.batch_size < 1:
            raise M2IVError("vti: dev_size and batch_size must be at least 1")
        if not self.alphas or any(a <= 0 for a in self.alphas):
            raise M2IVError(f"vti: alphas must be positive strengths, got {self.alphas}")
        if self.layers is not None and not self.layers:
            raise M2IVError("vti: layers must name at least one candidate layer (or be None for all)")

    def to_json(self) -> dict:
        return asdict(self)
