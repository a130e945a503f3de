"""In-Context Vectors (Liu et al. 2023): the top PCA direction of demo (output - input) states, after every MLP."""

from m2iv.methods.base import register_method
from m2iv.methods.icv.config import ICVConfig
from m2iv.methods.icv.method import ICV

register_method("icv", ICV)

__all__ = ["ICV", "ICVConfig"]
