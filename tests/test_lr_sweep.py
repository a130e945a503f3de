"""`m2iv bench compare --lr-sweep`: each trained method is trained at a few learning rates on the train split minus
held-out validation queries, the best rate by validation score is kept and only its vectors meet the test split."""

import json
from pathlib import Path

import pytest

import m2iv.methods.live  # noqa: F401  (registers "live")
from m2iv.errors import M2IVError
from m2iv.evaluate import bench
from m2iv.evaluate.bench import Cell, lr_grids, pick_lr, run_plan, split_validation, with_lr
from m2iv.models.loading import load_model


def test_pick_lr_takes_the_best_score_and_breaks_ties_towards_the_original():
    assert pick_lr([1e-4, 1e-3, 1e-2], [0.1, 0.5, 0.3], original=1e-4) == 1e-3
    assert pick_lr([1e-4, 1e-3, 1e-2], [0.5, 0.5, 0.5], original=1e-3) == 1e-3  # a flat curve keeps the original
    assert pick_lr([1e-4, 1e-3, 1e-2], [0.0, 0.5, 0.5], original=1e-4) == 1e-3  # nearest tied rate to it
    assert pick_lr([1e-3, 1e-1], [0.2, 0.2], original=1e-2) == 1e-3  # equally near: the smaller
    assert pick_lr([1e-3, 1e-1], [0.2, 0.2]) == 1e-3


def test_lr_grids_default_explicit_and_bad_input():
    assert lr_grids(None, ["live", "icl"]) == {}
    assert lr_grids("default", ["zero-shot", "live", "mimic"]) == {"live": bench.default_grids()["live"],
                                                                   "mimic": bench.default_grids()["mimic"]}
    assert lr_grids("1e-2, 1e-3", ["m2iv", "tv"]) == {"m2iv": [1e-3, 1e-2]}  # sorted; tv has no rate
    for bad in ("fast", "0,1e-2", "-1e-3"):
        with pytest.raises(M2IVError, match="--lr-sweep"):
            lr_grids(bad, ["live"])


def test_lr_grids_per_method_for_per_task_sweeps():
    """One command sweeps each method around its own rate (every task on its own held-out queries)."""
    methods = ["zero-shot", "live", "mimic", "lora", "cartridge"]
    assert lr_grids("live=0.3,0.03,0.1; mimic=0.05", methods) == {"live": [0.03, 0.1, 0.3], "mimic": [0.05]}
    assert lr_grids("default", methods) == {m: bench.default_grids()[m] for m in ("live", "mimic", "lora", "cartridge")}
    with pytest.raises(M2IVError, match="'tv' has no learning rate"):
        lr_grids("tv=0.1", methods + ["tv"])
    with pytest.raises(M2IVError, match="not among --method"):
        lr_grids("hificl=0.1", methods)
    with pytest.raises(M2IVError, match="positive"):
        lr_grids("live=0", methods)


def test_compare_plan_runs_parallel_icl_with_both_chunkings():
    plan = bench.compare_plan(["icl", "parallel-icl", "fv"], budget="cpu")
    assert [(c.method, c.variant) for c in plan] == [("icl", ""), ("parallel-icl", "cluster"),
                                                      ("parallel-icl", "random"), ("fv", "")]
    assert plan[2].options["method_config"] == {"chunking": "random"}
    assert plan[3].options["method_config"] == bench.cpu_budgets()["fv"]


def test_with_lr_sets_the_methods_own_rate_and_keeps_other_settings():
    c = with_lr(Cell("i2cl", options={"method_config": {"epochs": 20}}), 0.1)
    assert c.options["method_config"] == {"epochs": 20, "lr": 0.1}
    m = with_lr(Cell("m2iv", train={"w_ce": 0.0}), 1e-3)
    assert m.train == {"w_ce": 0.0, "lr_vectors": 1e-3, "lr_scales": 1e-3}
    assert with_lr(Cell("live"), 1e-2).options["method_config"] == {"lr_vectors": 1e-2}


def test_split_validation_holds_out_the_last_train_queries():
    splits = {"train": list(range(20)), "support": [1], "test": [99]}
    sub, val = split_validation(splits, 4)
    assert sub["train"] == list(range(16)) and val == sub["test"] == [16, 17, 18, 19] and sub["support"] == [1]
    assert len(split_validation(splits, 100)[1]) == 5  # never more than a quarter


def test_sweep_trains_each_rate_keeps_the_best_on_validation_and_tests_it_once(tmp_path, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    lm = load_model("tiny:idefics3")
    scores = iter([0.25, 0.75])  # validation scores of the two rates, in grid order

    def evaluate_spy(*args, **kw):  # the random tiny model answers nothing right: script its validation scores
        out = evaluate_real(*args, **kw)
        return {**out, "score": next(scores)} if "/val-" in str(args[4]) else out

    from m2iv.evaluate import runner

    evaluate_real = runner.evaluate
    monkeypatch.setattr(runner, "evaluate", evaluate_spy)
    rows = run_plan(lm, ["sandbox-colour-nonce"], [Cell("live")], tmp_path / "work", shots=2, n_test=2,
                    train_defaults={"steps": 2, "batch_size": 2}, task_overrides={"n_train": 8},
                    lr_sweep={"live": [1e-3, 1e-1]}, n_val=2, log=lambda *_: None)
    (row,) = rows
    sw = row["lr_sweep"]
    assert sw["grid"] == [1e-3, 1e-1] and sw["val_scores"] == [0.25, 0.75] and sw["chosen"] == 1e-1
    assert sw["fields"] == ["method_config.lr_vectors"] and sw["original"] == 1e-4 and sw["n_val"] == 2
    cfg = json.loads((Path(row["vectors"]) / "m2iv_config.json").read_text())
    assert cfg["recipe"]["lr_vectors"] == 1e-1 and cfg["training"]["n_train"] == 6  # 8 train queries - 2 held out
    assert row["n"] == 2  # the test split, once, with the chosen vectors
    assert row["variant"] == "lr=0.1"  # tables keep it apart from the method at its original rate
    live_dirs = sorted(p.name for p in (tmp_path / "work" / "sandbox-colour-nonce" / "live-2shot").iterdir())
    assert sum(n.startswith("vectors-") and "." not in n for n in live_dirs) == 2  # one per rate; the best reused
    assert sum(n.startswith("val-") for n in live_dirs) == 2 and sum(n.startswith("eval-") for n in live_dirs) == 1


def test_every_method_with_a_learning_rate_is_swept_at_its_own_field():
    """A method that trains by gradient (it has a rate setting) gets a grid, or the comparison would tune its
    rivals and leave it at its default (HiFICL was missing)."""
    from dataclasses import fields

    from m2iv.methods import METHODS

    for name in METHODS:
        cls = METHODS.get(name)
        cfg = getattr(cls, "config_cls", None)
        names = {f.name for f in fields(cfg)} if cfg is not None else set()
        if names & {"lr", "lr_vectors"}:
            assert name in bench.default_grids() and name in bench.lr_methods(), name
    for name, (where, keys) in bench.lr_methods().items():
        if where == "method_config":
            defaults = bench.get_method_defaults(name)
            assert all(k in defaults for k in keys), name
            if name != "live":  # LIVE's grid starts above its 1e-4 on purpose (see evaluate/bench.py)
                assert min(bench.default_grids()[name]) <= defaults[keys[0]] <= max(bench.default_grids()[name]), name
