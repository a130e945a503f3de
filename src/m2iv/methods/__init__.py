"""Method plug-ins. Importing this package imports every method subpackage, which registers itself
with `register_method(name, cls)` in its `__init__.py` (zero-shot, icl and vectors live in base.py)."""

import importlib
import pkgutil

from m2iv.methods.base import ICL, METHODS, LoadedVectors, Method, ZeroShot, get_method, register_method

for _mod in pkgutil.iter_modules(__path__):
    if _mod.ispkg:
        importlib.import_module(f"{__name__}.{_mod.name}")

from m2iv.methods.m2iv import M2IV, M2IVConfig  # noqa: E402

__all__ = ["ICL", "M2IV", "M2IVConfig", "METHODS", "LoadedVectors", "Method", "ZeroShot", "get_method",
           "register_method"]
