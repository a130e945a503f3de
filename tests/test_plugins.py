"""Models and task suites by entry point (m2iv/plugins.py): m2iv's sandbox is found the way a third-party package's
models and suites are, through `m2iv.models` / `m2iv.tasks` in the installed metadata. The real check builds
dist-info folders in tmp (m2iv's own from this tree's pyproject.toml, plus a toy third-party package), so it holds
whatever the venv's install of m2iv declares."""

from __future__ import annotations

import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from m2iv import plugins
from m2iv.data.datasets import DATASETS
from m2iv.data.tasks import TASKS, Task, get_task, register_plugin_suites
from m2iv.errors import M2IVError
from m2iv.models.loading import load_model
from m2iv.registry import Registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]

TOY = '''
from m2iv.models.tiny import build_tiny


def load(dtype=None):
    model, processor = build_tiny("llava")
    return model, processor, "llava"


def register(datasets, tasks, task_cls):
    datasets.register("toy-colours", lambda root, split: [])
    tasks.register("toy-colours", task_cls("toy-colours", "toy-colours", "exact_match", "test", "train"))
'''


def _dist_info(root: Path, name: str, groups: dict[str, dict[str, str]]) -> None:
    d = root / f"{name}-1.0.dist-info"
    d.mkdir(parents=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (d / "entry_points.txt").write_text("".join(
        f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n" for g, eps in groups.items()))


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """m2iv's entry points as this tree's pyproject.toml declares them, and a toy package adding a model and a suite."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    _dist_info(tmp_path, "m2iv", declared)
    _dist_info(tmp_path, "toy_m2iv_plugin", {plugins.MODEL_GROUP: {"toy-llava": "toy_m2iv_plugin:load"},
                                              plugins.TASK_GROUP: {"toy": "toy_m2iv_plugin:register"}})
    (tmp_path / "toy_m2iv_plugin.py").write_text(textwrap.dedent(TOY))
    monkeypatch.syspath_prepend(str(tmp_path))
    return declared


def test_declared_entry_points_resolve_through_importlib_metadata(installed):
    assert {"sandbox", "sandbox-v2", "sandbox-applications"} <= set(installed[plugins.TASK_GROUP])
    for group in (plugins.MODEL_GROUP, plugins.TASK_GROUP):
        found = plugins.entry_points(group)
        assert set(installed[group]) < set(found)  # m2iv's own, and the toy package's
        for name in found:
            assert callable(plugins.load(group, name))


def test_a_third_party_suite_and_model_join_m2ivs_own(installed):
    datasets, tasks = Registry("dataset"), Registry("task")
    register_plugin_suites(datasets, tasks)
    assert {"toy-colours", "sandbox-colour-nonce", "sandbox-safety"} <= set(tasks.names())
    assert tasks.get("toy-colours").metric == "exact_match" and "toy-colours" in datasets
    lm = load_model("toy-llava")
    assert lm.family == "llava" and lm.spec == "toy-llava"


def test_the_sandbox_names_resolve_in_the_global_registries(installed):
    assert get_task("sandbox-colour-nonce").metric == "exact_match"
    assert "sandbox-colour-nonce" in DATASETS and "sandbox-colour-nonce" in TASKS


def test_an_unknown_task_or_model_name_is_one_line(installed):
    with pytest.raises(M2IVError, match="unknown task 'sandbox-colour-nonse' \\(did you mean 'sandbox-colour-nonce'"):
        get_task("sandbox-colour-nonse")
    with pytest.raises(M2IVError) as e:
        load_model("no-such-model")
    assert "\n" not in str(e.value)


def test_a_plugin_that_cannot_be_imported_is_one_line(monkeypatch):
    broken = metadata.EntryPoint("broken", "no_such_package.tasks:register", plugins.TASK_GROUP)
    own = metadata.EntryPoint("sandbox", "m2iv.sandbox.tasks.suite:register", plugins.TASK_GROUP)
    monkeypatch.setattr(plugins.metadata, "entry_points", lambda group: [broken, own] if group == own.group else [])
    with pytest.raises(M2IVError, match="plug-in 'broken' \\(no_such_package.tasks:register\\) cannot be imported"):
        register_plugin_suites(Registry("dataset"), Registry[Task]("task"))


def test_an_install_older_than_the_tree_says_to_reinstall(monkeypatch):
    monkeypatch.setattr(plugins.metadata, "entry_points", lambda group: [])
    monkeypatch.setattr(plugins, "_m2iv_installed", lambda: True)
    with pytest.raises(M2IVError, match="reinstall it: pip install -e ."):
        load_model("sandbox")
