"""M²IV: multimodal in-context vectors on the MHA and MLP branches, trained by self-distillation."""

from m2iv.methods.base import register_method
from m2iv.methods.m2iv.config import M2IVConfig
from m2iv.methods.m2iv.method import M2IV

register_method("m2iv", M2IV)

__all__ = ["M2IV", "M2IVConfig"]
