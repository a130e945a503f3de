"""MimIC: attention-normaliser-gated per-head shifts (a baseline)."""

from m2iv.methods.base import register_method
from m2iv.methods.mimic.config import MimICConfig
from m2iv.methods.mimic.method import MimIC

register_method("mimic", MimIC)

__all__ = ["MimIC", "MimICConfig"]
