"""Task Vectors (Hendel et al. 2023; roeehendel/icl_task_vectors@1da0db6): settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from m2iv.errors import M2IVError


@dataclass
class TVConfig:
    shots: int = 5  # demonstrations per extraction prompt when no --shots is given (results dir `main/5`)
    n_prompts: int = 32  # demonstration sets whose extraction prompts are averaged into the one vector
    dummy_queries: int = 2  # dummy queries per demonstration set (the original's num_test_inputs_to_avg = 2)
    dev_size: int = 32  # held-out training queries that score each candidate layer (the original: 50 dev sets)
    layers: list[int] | None = None  # candidate layers of the dev sweep; None: every decoder layer
    layer: int | None = None  # patch this layer and skip the sweep; None: argmax of dev accuracy
    batch_size: int = 4  # prompts per forward pass

    def __post_init__(self) -> None:
        for name in ("shots", "n_prompts", "dummy_queries", "dev_size", "batch_size"):
            if getattr(self, name) < 1:
                raise M2IVError(f"tv: {name} must be at least 1, got {getattr(self, name)}")
        if self.layers is not None and not self.layers:
            raise M2IVError("tv: layers must name at least one candidate layer (or be None for all)")

    def to_json(self) -> dict:
        return asdict(self)
