"""Method plug-ins. Importing this package registers every method: zero-shot, icl and vectors live in base.py;
every subpackage here is one method (vectors, adapters, Parallel-ICL) whose `__init__.py` calls
`register_method(name, cls)`, found by walking the package: a new method is one folder, listed nowhere else.
A method defined outside the package registers itself the same way (see tests/test_method_contract.py)."""

import importlib
import pkgutil

from m2iv.methods.base import ICL, METHODS, LoadedVectors, Method, ZeroShot, get_method, register_method

for _info in pkgutil.iter_modules(__path__):
    if _info.ispkg:
        importlib.import_module(f"{__name__}.{_info.name}")

from m2iv.methods.m2iv import M2IV, M2IVConfig  # noqa: E402  (registered by the walk above)

__all__ = ["ICL", "M2IV", "M2IVConfig", "METHODS", "LoadedVectors", "Method", "ZeroShot", "get_method",
           "register_method"]
