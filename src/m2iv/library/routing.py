"""`library:auto`: each query answered by the compatible library entry whose task prototype is nearest to it
(search by example), each chosen entry loaded once. A routing object, made before answering, so the method that
answers only looks routes up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from m2iv.library.store import Library


@dataclass
class Router:
    routes: dict[str, str]  # query id -> entry id
    vectors: dict[str, Any]  # entry id -> its vectors, loaded on the model's device
    entry_names: dict[str, str] = field(default_factory=dict)  # entry id -> entry name

    @classmethod
    def fit(cls, lm, samples: list, root: str | None = None, strict: bool = True) -> Router:
        lib = Library(root)
        ids: list[str] = lib.route(lm, samples, strict=strict)
        chosen = list(dict.fromkeys(ids))
        return cls(routes={s.id: i for s, i in zip(samples, ids, strict=True)},
                   vectors={i: lib.load(i, adapter=lm.adapter, device=lm.device)[0] for i in chosen},
                   entry_names={i: lib.get(i).name for i in chosen})

    def names(self) -> dict[str, str]:
        return dict(self.entry_names)

    def groups(self, samples: list) -> list[tuple[str | None, list]]:
        """Queries grouped by the entry that answers them, in first-seen order."""
        out: dict[str, list] = {}
        for s in samples:
            out.setdefault(self.routes[s.id], []).append(s)
        return list(out.items())
