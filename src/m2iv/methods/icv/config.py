"""In-Context Vectors (Liu et al. 2023; shengliu66/ICV@b187c63): settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from m2iv.errors import M2IVError

DIRECTIONS = ("original", "per_layer")


@dataclass
class ICVConfig:
    shots: int = 5  # demonstration pairs when no --shots is given (the README's --num_k_shots 5)
    alpha: float = 0.1  # lambda, the ICV strength (the README's --lam 0.1; the argparse default is 0.8)
    # "original": one PCA over the differences of all layers concatenated (embedding row included), vector =
    # first component (svd_flip sign) + mean difference, as `obtain_icv`; "per_layer": each layer's own first
    # component, sign aligned with that layer's mean difference.
    direction: str = "original"
    strip_special: bool = True  # remove punctuation from x and y first (the original's strip_special_characters)
    batch_size: int = 4  # sequences per forward pass

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise M2IVError(f"icv: direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")
        if self.shots < 1 or self.batch_size < 1:
            raise M2IVError("icv: shots and batch_size must be at least 1")

    def to_json(self) -> dict:
        return asdict(self)
