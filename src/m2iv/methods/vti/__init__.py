"""VTI-style steering (Liu et al., ICLR 2025), simplified: the mean difference between grounded and hallucinating
runs of the plain model, added to one layer's output."""

from m2iv.methods.base import register_method
from m2iv.methods.vti.config import VTIConfig
from m2iv.methods.vti.method import VTI

register_method("vti", VTI)

__all__ = ["VTI", "VTIConfig"]
