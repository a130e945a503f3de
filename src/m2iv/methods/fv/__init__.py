"""Function Vectors (Todd et al. 2024): top causal heads' mean outputs through W_O, added at one layer."""

from m2iv.methods.base import register_method
from m2iv.methods.fv.config import FVConfig
from m2iv.methods.fv.method import FunctionVectors

register_method("fv", FunctionVectors)

__all__ = ["FVConfig", "FunctionVectors"]
