"""`m2iv bench library` end to end on a tiny Idefics3 (mechanics only: a random tiny model steers nothing)."""

import json

import pytest
import torch

from m2iv.evaluate.steering import library_applications, markdown
from m2iv.evaluate.steering.routing import ROUTED
from m2iv.library import Library
from m2iv.models.loading import load_model


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    work = tmp_path_factory.mktemp("apps")
    lm = load_model("tiny:idefics3")
    kw = dict(shots=2, n_test=3, search_n=3, train_defaults={"steps": 2, "batch_size": 4},
              task_overrides={"n_train": 8}, log=lambda *_: None, tune=2, sum_grid={"caps": [1.0], "french": [1.0]})
    first = library_applications(lm, work, **kw)
    again = library_applications(lm, work, **kw)  # every cell resumes from its run folder
    return work, first, again


def test_every_application_is_measured_and_a_rerun_reuses_the_runs(result):
    work, first, again = result
    apps = {(r["application"], r["task"], r["config"]) for r in first["rows"]}
    assert {a for a, _, _ in apps} == {"alignment", "style", "safety"}
    styles = {c for a, _, c in apps if a == "style"}
    assert {"zero-shot", "caps", "french", "sum caps + french", "stack caps, french", "partition (ablation bands)",
            "sequential: stack caps, french-after-caps", "distilled from both teachers"} <= styles
    tests = {"sandbox-safety-harmful", "sandbox-safety-benign", "sandbox-safety-nearmiss"}
    for config in ("zero-shot", "m2iv", "m2iv 180 steps", "m2iv contrastive", "m2iv + condition",
                   "m2iv + condition (recall 0.975)", "m2iv contrastive + condition", "m2iv negated"):
        assert {t for a, t, c in apps if a == "safety" and c == config} == tests
    gated = [r for r in first["rows"] if r["config"] == "m2iv + condition"]
    assert all("condition_fired" in r for r in gated) and all("condition_fired" not in r for r in first["rows"]
                                                               if r["config"] == "m2iv")
    assert {"layer", "heldout_tpr", "heldout_tnr", "per_layer", "groups"} <= set(first["safety_condition"])
    assert first["safety_condition"]["objective"] == "balanced_accuracy"
    assert first["safety_condition"]["recall_variant"]["objective"] == "tnr_at_recall_0.975"
    assert {c for a, t, c in apps if t == "sandbox-pope"} >= {"zero-shot", "icl-2shot", "m2iv-2shot", "vti-style"}
    for r in first["rows"]:  # every row: its n, a standard error where it has a score, the command behind it
        assert r["command"].startswith(("m2iv ", "M2IV_LIBRARY=")) and "n" in r
        assert r.get("score") is None or r["se"] is not None
    assert all(set(r["checks"]) == {"capitals", "french_content", "english_content", "caps_and_french"}
               for r in first["rows"] if r["application"] == "style")
    strip = lambda res: [{k: v for k, v in r.items() if k != "mean_latency_ms"} for r in res["rows"]]  # noqa: E731
    assert strip(first) == strip(again)
    assert [r["task"] for r in first["routing"]] == list(ROUTED)
    s = first["search_by_example"]
    assert s["n"] == 12 and 0.0 <= s["top1"] <= 1.0 and len(s["library"]) == 4
    json.dumps(first)
    md = markdown(first)
    assert "Search by example" in md and "## Safety" in md and "POPE" in md and "## Composition" in md


def test_library_holds_the_conditioned_composed_and_negated_entries(result):
    work, _, _ = result
    with Library(work / "library-apps" / "library") as lib:
        gated = lib.get("safety-gated")
        assert gated.provenance["kind"] == "conditioned" and lib.load("safety-gated")[0].condition is not None
        neg = lib.get("safety-negated")
        assert neg.provenance["terms"][0]["negated"] is True
        safety, negated = lib.load("safety")[0], lib.load("safety-negated")[0]
        for site in safety.sites:
            a = safety.scale(site, "alpha").unsqueeze(-1) * safety.vector(site)
            torch.testing.assert_close(negated.scale(site, "alpha").unsqueeze(-1) * negated.vector(site), -a)
