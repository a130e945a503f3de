"""One way a sandbox task table enters the task and dataset registries (suite v2, the applications): each row is
name -> (load(split), metric, postprocess, max_new_tokens, description); the loaders need no data root."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Row = tuple[Callable[[str], list], str, str, int, str]


def register_table(datasets: Any, tasks: Any, task_cls: Any, table: dict[str, Row], n_support: int) -> None:
    for name, (load, metric, post, max_new, description) in table.items():
        def loader(root, split, _load=load):
            return _load(split)

        loader.needs_root = False  # type: ignore[attr-defined]
        if name not in datasets:
            datasets.register(name, loader)
        if name not in tasks:
            tasks.register(name, task_cls(name, name, metric, "test", "train", instruction="{question}",
                                          postprocess=post, max_new_tokens=max_new, n_support=n_support,
                                          n_train=512, n_test=200, description=f"sandbox: {description}"))
