"""Plug-ins found through Python entry points, so no room names a higher one by string and another package adds
models and task suites exactly the way m2iv adds its own sandbox (pyproject.toml of the package that provides them):

    [project.entry-points."m2iv.models"]
    my-model = "my_package.models:load"        # load(dtype=None) -> (model, processor, family)
    [project.entry-points."m2iv.tasks"]
    my-suite = "my_package.tasks:register"     # register(datasets, tasks, task_cls) adds its tasks and loaders

`m2iv.models.loading.load_model(name)` and `m2iv.data.tasks.get_task(name)` look these groups up on first use.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from m2iv.errors import M2IVError

MODEL_GROUP = "m2iv.models"
TASK_GROUP = "m2iv.tasks"
OWN = {MODEL_GROUP: "sandbox", TASK_GROUP: "sandbox"}  # an entry point m2iv itself declares in each group


def entry_points(group: str) -> dict[str, metadata.EntryPoint]:
    """name -> entry point of `group`, over every installed distribution (the first one found wins a name)."""
    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=group):
        found.setdefault(ep.name, ep)
    if group in OWN and OWN[group] not in found and _m2iv_installed():
        raise M2IVError(f"the installed m2iv metadata declares no {group} entry points (installed from an older "
                        "source tree); reinstall it: pip install -e . --no-deps")
    return found


def _m2iv_installed() -> bool:
    try:
        metadata.distribution("m2iv")
    except metadata.PackageNotFoundError:  # running from a source tree without any install: nothing to reinstall
        return False
    return True


def load(group: str, name: str) -> Any:
    """The object entry point `name` of `group` names, imported now; one line when its package cannot be imported."""
    ep = entry_points(group)[name]
    try:
        return ep.load()
    except (ImportError, AttributeError) as e:
        raise M2IVError(f"the {group} plug-in {name!r} ({ep.value}) cannot be imported ({e}); install the package "
                        "that provides it, or use another name") from None
