"""A small generic registry (lm-evaluation-harness style): names -> objects, with suggestions.

Entries whose definitions are costly to import (the sandbox suites) come from providers: functions that
register them, run once, on the first lookup or listing, so importing a registry stays cheap."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from m2iv.errors import M2IVError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._providers: list[Callable[[], None]] = []

    def add_provider(self, provider: Callable[[], None]) -> None:
        """Call `provider()` (which registers entries) before the next lookup or listing, once."""
        self._providers.append(provider)

    def _resolve(self) -> None:
        while self._providers:  # popped first: a provider may look entries up while registering
            self._providers.pop(0)()

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register `obj` under `name`; without `obj` this works as a decorator."""
        if name != name.lower() or not name:
            raise ValueError(f"{self.kind} names are lower case, got {name!r}")

        def _add(target: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = target
            return target

        return _add if obj is None else _add(obj)

    def remove(self, name: str) -> None:
        """Unregister `name` (a plug-in registered for a test or a session only)."""
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        if name not in self._items:
            self._resolve()
        if name not in self._items:
            close = difflib.get_close_matches(name, self._items, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise M2IVError(f"unknown {self.kind} {name!r}{hint}; available: {', '.join(sorted(self._items))}")
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            self._resolve()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        self._resolve()
        return sorted(self._items)
