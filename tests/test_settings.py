"""One settings rule for every method: a value the user set wins, even one equal to a default; what the user
left alone is the method's own default. Driven through `m2iv train` as a user would, stopping at the trainer."""

from __future__ import annotations

import pytest

from conftest import write_colour_jsonl
from m2iv.cli.train import recipe_flag
from m2iv.errors import M2IVError
from m2iv.methods import METHODS
from m2iv.methods.base import LoadedVectors
from m2iv.train.config import TrainConfig

TRAINED = ("m2iv", "live", "mimic", "i2cl", "hificl")  # gradient-trained through train_vectors
EXTRACTED = ("tv", "fv", "icv", "mtv")  # extract-and-inject; `--shots` / `shots=` sets their demonstrations


class _Stop(Exception):
    pass


@pytest.fixture
def captured(monkeypatch):
    """The recipe and settings a method hands to the trainer (then stop: nothing trains)."""
    seen: dict = {}

    def fake_train(lm, task, splits, vectors, cfg, out, method_config=None, **kw):
        seen["recipe"], seen["method_config"] = cfg, method_config
        raise _Stop

    monkeypatch.setattr("m2iv.train.run.train_vectors", fake_train)
    return seen


@pytest.fixture
def settings_seen(monkeypatch):
    """The settings an extraction method would fit with (`train` stops before any extraction)."""
    seen: dict = {}

    def fake_train(self, lm, task, splits, out=None):
        seen["config"] = self.method_config()
        raise _Stop

    monkeypatch.setattr(LoadedVectors, "train", fake_train)
    return seen


def _train(tmp_path, method: str, *flags: str) -> None:
    """`m2iv train` as parsed by the real parser; errors propagate (main would print them as one line)."""
    from m2iv.cli.main import build_parser

    data = write_colour_jsonl(tmp_path)
    args = build_parser().parse_args(["train", "tiny:idefics2", "--task", f"jsonl:{data}", "--method", method,
                                      *flags, "--out", str(tmp_path / "out")])
    with pytest.raises(_Stop):
        args.func(args)


# Every recipe flag of `m2iv train`, each at a value no method defaults to (checked below).
RECIPE_FLAGS = {"steps": 7, "batch_size": 3, "grad_accum": 2, "val_every": 5, "val_size": 4, "checkpoint_every": 6,
                "seed": 11, "lr_vectors": 0.0123, "lr_scales": 0.0456, "weight_decay": 0.0789, "warmup": 0.25,
                "clip": 3.5, "w_mimicry": 0.7, "w_synergy": 0.3, "w_ce": 0.9, "temperature": 1.7}


@pytest.mark.parametrize("method", TRAINED)
def test_every_recipe_flag_reaches_every_trained_method(tmp_path, captured, method):
    flags = [x for k, v in RECIPE_FLAGS.items() for x in (recipe_flag(k), str(v))]  # --train-batch-size for batch_size
    _train(tmp_path, method, *flags, "--shots", "3", "--topk", "5", "--synergy", "barlow")
    r = captured["recipe"]
    for k, v in RECIPE_FLAGS.items():
        assert getattr(r, k) == pytest.approx(v), f"{method}: --{k} {v} became {getattr(r, k)}"
    assert (r.teacher.shots, r.teacher.topk, r.synergy) == (3, 5, "barlow")


@pytest.mark.parametrize("method", TRAINED)
def test_explicit_value_equal_to_the_shared_default_wins_over_the_methods_default(tmp_path, captured, method):
    d = TrainConfig()
    # Each method's own recipe changes some of these (LIVE lr 1e-4, MimIC w_mimicry 0, I2CL w_ce 1 and its
    # epoch-based steps); typed by the user at the shared default, they must stay the shared default.
    typed = {"steps": d.steps, "lr_vectors": d.lr_vectors, "lr_scales": d.lr_scales, "w_mimicry": d.w_mimicry,
             "w_synergy": d.w_synergy, "w_ce": d.w_ce, "val_every": d.val_every, "warmup": d.warmup}
    _train(tmp_path, method, *[x for k, v in typed.items() for x in (f"--{k.replace('_', '-')}", str(v))],
           "--shots", "2")
    for k, v in typed.items():
        assert getattr(captured["recipe"], k) == v, f"{method}: --{k} {v} was replaced by the method's default"


@pytest.mark.parametrize("method", TRAINED)
def test_untyped_fields_keep_the_methods_own_recipe(tmp_path, captured, method):
    _train(tmp_path, method, "--shots", "2", "--steps", "3")
    r = captured["recipe"]
    own = {"live": {"lr_vectors": 1e-4, "w_synergy": 0.0}, "mimic": {"w_mimicry": 0.0, "lr_vectors": 5e-3},
           "i2cl": {"w_ce": 1.0, "w_mimicry": 0.0},
           "hificl": {"w_ce": 1.0, "w_mimicry": 0.0, "lr_vectors": 5e-3, "batch_size": 2, "grad_accum": 2},
           "m2iv": {"lr_vectors": TrainConfig().lr_vectors}}[method]
    for k, v in own.items():
        assert getattr(r, k) == pytest.approx(v), f"{method}: {k} should be its own default {v}"


@pytest.mark.parametrize("method", EXTRACTED)
def test_method_config_shots_is_honoured_by_extraction_methods(tmp_path, settings_seen, method):
    # Was: `m2iv train --method tv --method-config shots=5` extracted with 16 shots (the CLI always passed
    # the teacher's 16 and `or` let it win).
    _train(tmp_path, method, "--method-config", "shots=5")
    assert settings_seen["config"].shots == 5


@pytest.mark.parametrize("method", EXTRACTED)
def test_explicit_shots_equal_to_the_teacher_default_is_honoured(tmp_path, settings_seen, method):
    _train(tmp_path, method, "--shots", "16")
    assert settings_seen["config"].shots == 16


@pytest.mark.parametrize("method", ("tv", "fv", "icv"))
def test_untyped_shots_keep_the_extraction_methods_default(tmp_path, settings_seen, method):
    _train(tmp_path, method)
    assert settings_seen["config"].shots == METHODS.get(method).config_cls().shots


def test_shots_given_twice_with_different_values_is_refused(tmp_path, settings_seen):
    with pytest.raises(M2IVError, match="disagree"):
        _train(tmp_path, "tv", "--shots", "4", "--method-config", "shots=5")


def test_mtv_steps_and_val_size_follow_the_recipe_flags(tmp_path, settings_seen):
    _train(tmp_path, "mtv", "--steps", "200", "--val-size", "64")  # both equal to TrainConfig's defaults
    assert (settings_seen["config"].steps, settings_seen["config"].n_val) == (200, 64)


@pytest.mark.parametrize(("pair", "match"), [("shots=abc", "shots=abc: expected int"),
                                             ("nope=1", "KEY one of"), ("shots", "KEY one of"),
                                             ("layers=x", "expected list")])
def test_bad_method_config_is_one_line_error(tmp_path, pair, match):
    with pytest.raises(M2IVError, match=match) as e:
        _train(tmp_path, "tv", "--method-config", pair)
    assert "\n" not in str(e.value)


def test_m2iv_layout_flags_are_refused_for_methods_without_them(tmp_path):
    with pytest.raises(M2IVError, match="not a setting of live"):
        _train(tmp_path, "live", "--sites", "attn")


def test_layout_flags_reach_m2iv(tmp_path, captured):
    _train(tmp_path, "m2iv", "--sites", "mlp", "--operator", "additive", "--token-policy", "text", "--shots", "2")
    mc = captured["method_config"]
    assert (mc["sites"], mc["operator"], mc["token_policy"]) == (["mlp"], "additive", "text")


def test_live_kl_switches_reach_the_trainer(tmp_path, captured):
    """The original LIVE's KL (eps 1e-6 in the logs, first answer prediction left out) is a setting away."""
    _train(tmp_path, "live", "--method-config", "kl_eps=1e-6", "--method-config", "kl_skip_first=true",
           "--shots", "2", "--steps", "3")
    r = captured["recipe"]
    assert (r.kl_eps, r.kl_skip_first) == (1e-6, True)
    _train(tmp_path, "live", "--shots", "2", "--steps", "3")
    assert (captured["recipe"].kl_eps, captured["recipe"].kl_skip_first) == (0.0, False)


def test_mimic_original_switches_reach_the_trainer(tmp_path, captured):
    """MimIC's original targets, LM-loss span and bias decay are settings away from m2iv's defaults."""
    _train(tmp_path, "mimic", *[x for kv in ("align_site=mlp", "align_span=query", "ce_span=sequence",
                                             "decay_gate_bias=false") for x in ("--method-config", kv)],
           "--shots", "2", "--steps", "3")
    r = captured["recipe"]
    assert (r.teacher.hidden_site, r.teacher.hidden_span, r.ce_span, r.no_decay) == ("mlp", "query", "sequence",
                                                                                     ["gate_b"])
    _train(tmp_path, "mimic", "--shots", "2", "--steps", "3")
    r = captured["recipe"]
    assert (r.teacher.hidden_site, r.teacher.hidden_span, r.ce_span, r.no_decay) == ("layer", "answer", "answer", [])


def test_i2cl_first_token_loss_switch_reaches_the_trainer(tmp_path, captured):
    _train(tmp_path, "i2cl", "--method-config", "ce_span=first", "--shots", "2", "--steps", "3")
    assert captured["recipe"].ce_span == "first"
