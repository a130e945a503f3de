"""I2CL (Li et al. 2024): demonstrations condensed into per-layer context vectors, calibrated by two scalars."""

from m2iv.methods.base import register_method
from m2iv.methods.i2cl.config import I2CLConfig
from m2iv.methods.i2cl.method import I2CL

register_method("i2cl", I2CL)

__all__ = ["I2CL", "I2CLConfig"]
