"""MTV (Huang et al. 2024): mean head activations of many-shot ICL, placed on heads chosen by REINFORCE."""

from m2iv.methods.base import register_method
from m2iv.methods.mtv.config import MTVConfig
from m2iv.methods.mtv.method import MTV

register_method("mtv", MTV)

__all__ = ["MTV", "MTVConfig"]
