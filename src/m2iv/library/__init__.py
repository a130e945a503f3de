"""The vector library: a local store of trained in-context vectors to add, search (also by example),
compose, export/import and inject. `library:<id-or-name>` names an entry wherever a vector directory
is accepted (see `resolve_vectors`)."""

from m2iv.library.compose import Term, parse_expression, parse_layers
from m2iv.library.search import SearchHit, compute_prototype, example_sample, task_prototype
from m2iv.library.store import PREFIX, Entry, Library, compat_reason, default_root, is_library_spec, resolve_vectors

__all__ = ["PREFIX", "Entry", "Library", "SearchHit", "Term", "compat_reason", "compute_prototype", "default_root",
           "example_sample", "is_library_spec", "parse_expression", "parse_layers", "resolve_vectors",
           "task_prototype"]
