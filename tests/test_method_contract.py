"""The contract every method plug-in keeps (PEFT's tester pattern): fit -> save -> load -> evaluate on a tiny
model, and the vectors handed over in memory answer exactly as the saved ones reloaded. A toy method defined in this
one module runs through the same contract, the bench plan and the CLI: adding a method takes one module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from conftest import fixture_task, for_model, method_splits, tiny, write_samples
from m2iv.cli.main import main
from m2iv.errors import M2IVError
from m2iv.evaluate.bench import compare_plan, default_grids, lr_grids
from m2iv.evaluate.runner import EvalConfig, evaluate, read_predictions
from m2iv.methods import METHODS, get_method
from m2iv.methods.base import LoadedVectors, register_method

TASK = fixture_task()
TINY_RECIPE = {"steps": 2, "batch_size": 2, "val_every": 0, "warmup": 0.0, "teacher": {"shots": 2, "topk": 8}}


# -- the toy method: everything it needs is here ----------------------------------------------------------------
@dataclass
class ShiftConfig:
    scale: float = 0.5  # the shift added to every layer's output, in units of the mean support activation
    lr: float = 1e-2


class Shift(LoadedVectors):
    """Adds `scale` x the mean last-token layer output of the support prompts at every layer (a one-line TV)."""

    name = "toy-shift"
    config_cls = ShiftConfig
    cpu_budget = {"scale": 0.25}
    variants = (("half", {"scale": 0.5}), ("double", {"scale": 2.0}))
    lr_fields = ("method_config", ("lr",))
    lr_grid = (1e-3, 1e-2, 1e-1)

    def fit(self, lm, task, splits: dict):
        from m2iv.data.prompts import PromptBuilder
        from m2iv.vectors.vector import InContextVectors

        cfg: ShiftConfig = self.method_config()
        builder = PromptBuilder(lm, task.instruction, task.answer_template)
        batch = builder.encode([builder.build([], q) for q in splits["support"][:2]])
        batch.pop("query_start")
        with torch.no_grad():
            hidden = lm.model(**{k: v.to(lm.device) for k, v in batch.items()}, output_hidden_states=True).hidden_states
        vec = InContextVectors.for_model(lm.adapter, sites=("layer",), operator="additive", method=self.name)
        with torch.no_grad():
            vec.vector("layer").copy_(torch.stack([h[:, -1].mean(0) for h in hidden[1:]]) * cfg.scale)
        return vec.to(lm.device), {"metrics": {"norm": float(vec.vector("layer").detach().norm())}}


@pytest.fixture
def toy():
    register_method(Shift.name, Shift)
    yield Shift
    METHODS.remove(Shift.name)


# -- the contract -----------------------------------------------------------------------------------------------
def _options(cls, **extra) -> dict:
    return {"shots": 2, "seed": 0, "progress": False, "train_config": dict(TINY_RECIPE),
            **({"method_config": dict(cls.tiny_budget)} if cls.config_cls is not None else {}), **extra}


def _answers(lm, method, splits: dict, out) -> list[str]:
    summary = evaluate(lm, TASK, method, EvalConfig(shots=2, limit=3, batch_size=2), out, splits=splits,
                       show_progress=False)
    assert summary["n"] == 3 and summary["method"] == method.name
    return [r["prediction"] for r in read_predictions(out)]


def _contract(name: str, tmp_path, family: str = "idefics2") -> None:
    cls = METHODS.get(name)
    lm = tiny(family)
    splits = method_splits(tmp_path / "data", 10)
    splits = for_model(lm, {**splits, "test": write_samples(tmp_path / "data", 3, prefix="t")})
    if not cls.fits():  # nothing to fit: it answers as it is
        _answers(lm, get_method(name, _options(cls)), splits, tmp_path / "run")
        return
    with pytest.raises(M2IVError, match="train them first"):  # answering never fits on the fly
        _answers(lm, get_method(name, _options(cls)), splits, tmp_path / "unfitted")
    out = tmp_path / "vectors"
    fitted = get_method(name, _options(cls, out=str(out)))
    fitted.train(lm, TASK, splits)  # fit -> save -> use
    config = json.loads((out / "m2iv_config.json").read_text())
    assert config["method"] == name and config["method_config"]["task"] == TASK.name
    in_memory = _answers(lm, fitted, splits, tmp_path / "in-memory")
    loaded = get_method(name, {"vectors": str(out), "progress": False})
    assert _answers(lm, loaded, splits, tmp_path / "loaded") == in_memory


CONTRACT = [n for n in METHODS.names() if n != "vectors"]  # `vectors` answers with any saved directory: above


def _grounded_and_hallucinating(self, lm, builder, pool, batch_size):
    """VTI needs the plain model right on some training queries and wrong on others; a random tiny model is right on
    none (refused, see below), so its direction is a fixed one here. VTI's own direction is measured on the sandbox's
    POPE probe (benchmarks/library)."""
    a = lm.adapter
    return torch.linspace(-1, 1, a.num_layers * a.hidden_size).view(a.num_layers, -1), {"grounded": 1}


@pytest.mark.parametrize("name", CONTRACT)
def test_every_method_fits_saves_loads_and_answers(name, tmp_path, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    if name == "vti":
        lm = tiny("idefics2")
        with pytest.raises(M2IVError, match="needs both grounded and hallucinating runs"):
            get_method("vti", _options(METHODS.get("vti"))).fit(lm, TASK, for_model(lm, method_splits(tmp_path, 8)))
        monkeypatch.setattr(METHODS.get("vti"), "directions", _grounded_and_hallucinating)
    _contract(name, tmp_path)


def test_every_method_has_a_tiny_budget_that_its_settings_accept():
    for name in METHODS.names():
        cls = METHODS.get(name)
        if cls.config_cls is not None:
            cls.config_cls(**cls.tiny_budget)
            cls.config_cls(**cls.cpu_budget)


def test_a_toy_method_in_one_module_runs_the_contract(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    _contract(toy.name, tmp_path)


def test_a_toy_method_in_one_module_is_planned_swept_and_on_the_cli(toy, tmp_path, monkeypatch, capsys):
    plan = compare_plan(["icl", toy.name], budget="cpu")
    assert [(c.method, c.variant, c.options.get("method_config")) for c in plan] == [
        ("icl", "", None), (toy.name, "half", {"scale": 0.5}), (toy.name, "double", {"scale": 2.0})]
    assert default_grids()[toy.name] == [1e-3, 1e-2, 1e-1]
    assert lr_grids("default", [toy.name]) == {toy.name: [1e-3, 1e-2, 1e-1]}
    code = main(["eval", "tiny:llama", "--task", "sandbox-colour-nonce", "--method", toy.name,
                 "--out", str(tmp_path / "run")])  # the CLI's one-line error, before any model loads
    assert code == 2 and "train them first" in capsys.readouterr().err
