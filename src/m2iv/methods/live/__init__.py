"""LIVE (Peng et al. 2024): a learnable in-context vector per layer, distilled from the ICL teacher."""

from m2iv.methods.base import register_method
from m2iv.methods.live.config import LIVEConfig
from m2iv.methods.live.method import LIVE

register_method("live", LIVE)

__all__ = ["LIVE", "LIVEConfig"]
