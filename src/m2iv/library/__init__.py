"""The vector library: a local store of trained in-context vectors to add, search (also by example),
compose, export/import, check/repair and inject. `library:<id-or-name>` names an entry wherever a vector
directory is accepted (see `m2iv.library.resolve`).

Inside m2iv, import from the defining module (`m2iv.library.store`, ...). The names below are for users and
load lazily, so importing one library module never imports the others (no package-level cycles)."""

from importlib import import_module
from typing import Any

_WHERE = {"Library": "store", "Entry": "entry", "PREFIX": "entry", "default_root": "entry",
          "is_library_spec": "entry", "load_spec": "resolve", "resolve_vectors": "resolve", "Term": "compose",
          "parse_expression": "compose", "parse_layers": "compose", "SearchHit": "search",
          "compute_prototype": "search", "example_sample": "search", "task_prototype": "search"}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'm2iv.library' has no attribute {name!r}")
    return getattr(import_module(f"m2iv.library.{_WHERE[name]}"), name)
