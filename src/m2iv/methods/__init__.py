"""Method plug-ins (zero-shot, ICL, vector methods); importing this package registers them all."""

from m2iv.methods.base import ICL, METHODS, LoadedVectors, Method, ZeroShot, get_method, register_method
from m2iv.methods.m2iv import M2IV, M2IVConfig

__all__ = ["ICL", "M2IV", "M2IVConfig", "METHODS", "LoadedVectors", "Method", "ZeroShot", "get_method",
           "register_method"]
