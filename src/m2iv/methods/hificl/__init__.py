"""HiFICL: learnable low-rank virtual key/value pairs in every attention head (a baseline)."""

from m2iv.methods.base import register_method
from m2iv.methods.hificl.config import HiFICLConfig
from m2iv.methods.hificl.method import HiFICL

register_method("hificl", HiFICL)

__all__ = ["HiFICL", "HiFICLConfig"]
