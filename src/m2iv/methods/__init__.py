"""Method plug-ins. Importing this package registers every method: zero-shot, icl and vectors live in
base.py; each other method (vectors, adapters, Parallel-ICL) is a subpackage whose `__init__.py` calls
`register_method(name, cls)`."""

from m2iv.methods import (  # noqa: F401  (each registers itself)
    cartridge,
    fv,
    hificl,
    i2cl,
    icv,
    live,
    lora,
    mimic,
    mtv,
    parallel_icl,
    tv,
    vti,
)
from m2iv.methods.base import ICL, METHODS, LoadedVectors, Method, ZeroShot, get_method, register_method
from m2iv.methods.m2iv import M2IV, M2IVConfig

__all__ = ["ICL", "M2IV", "M2IVConfig", "METHODS", "LoadedVectors", "Method", "ZeroShot", "get_method",
           "register_method"]
