"""Function Vectors (Todd et al. 2024; ericwtodd/function_vectors@fb9eac7): settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from m2iv.errors import M2IVError


@dataclass
class FVConfig:
    shots: int = 10  # demonstrations per prompt when no --shots is given (the original's --n_shots)
    n_mean_prompts: int = 100  # clean ICL prompts averaged into the mean head outputs (--n_mean_activations_trials)
    n_ie_prompts: int = 25  # shuffled-label prompts the indirect effect is averaged over (--n_indirect_effect_trials)
    n_top_heads: int = 10  # heads summed into the FV (--n_top_heads); capped by the model's layers x heads
    ie_layers: list[int] | None = None  # layers whose heads are scored; None: every layer, as the original
    edit_layer: int | None = None  # layer whose output receives the FV; None: num_layers // 3 (the paper's ~L/3)
    sweep: bool = False  # choose the edit layer by dev accuracy over `layers` instead (the CLI's --edit_layer -1)
    layers: list[int] | None = None  # candidate edit layers of the sweep; None: every layer
    dev_size: int = 32  # held-out training queries that score each candidate edit layer (sweep only)
    batch_size: int = 4  # prompts per forward pass
    # Keep only the clean prompts whose answer's first token the model predicts (the original's `filter_set` of
    # queries answered correctly with ICL); off by default, so the mean sees the same data on every model.
    icl_filter: bool = False

    def __post_init__(self) -> None:
        for name in ("shots", "n_mean_prompts", "n_ie_prompts", "n_top_heads", "dev_size", "batch_size"):
            if getattr(self, name) < 1:
                raise M2IVError(f"fv: {name} must be at least 1, got {getattr(self, name)}")
        for name in ("ie_layers", "layers"):
            if getattr(self, name) is not None and not getattr(self, name):
                raise M2IVError(f"fv: {name} must name at least one layer (or be None for all)")

    def to_json(self) -> dict:
        return asdict(self)
