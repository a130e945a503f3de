"""`m2iv bench library` end to end on a tiny Idefics3 (mechanics only: a random tiny model steers nothing)."""

import json

import pytest
import torch

from m2iv.evaluate.steering import ROUTED, library_applications, markdown
from m2iv.library import Library
from m2iv.models.loading import load_model


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    work = tmp_path_factory.mktemp("apps")
    lm = load_model("tiny:idefics3")
    kw = dict(shots=2, n_test=3, search_n=3, train_defaults={"steps": 2, "batch_size": 4},
              task_overrides={"n_train": 8}, log=lambda *_: None)
    first = library_applications(lm, work, **kw)
    again = library_applications(lm, work, **kw)  # every cell resumes from its run folder
    return work, first, again


def test_every_application_is_measured_and_a_rerun_reuses_the_runs(result):
    work, first, again = result
    apps = {(r["application"], r["task"], r["config"]) for r in first["rows"]}
    assert {a for a, _, _ in apps} == {"alignment", "style", "safety"}
    assert {c for a, _, c in apps if a == "style"} == {"zero-shot", "caps", "french", "caps + french",
                                                                 "0.5 caps + 0.5 french"}
    assert {(t, c) for a, t, c in apps if a == "safety"} >= {
        ("sandbox-safety-harmful", "m2iv negated"), ("sandbox-safety-benign", "m2iv negated")}
    assert all(set(r["checks"]) == {"capitals", "french_content", "english_content", "caps_and_french"}
               for r in first["rows"] if r["application"] == "style")
    strip = lambda res: [{k: v for k, v in r.items() if k != "mean_latency_ms"} for r in res["rows"]]  # noqa: E731
    assert strip(first) == strip(again)
    assert [r["task"] for r in first["routing"]] == ROUTED
    s = first["search_by_example"]
    assert s["n"] == 12 and 0.0 <= s["top1"] <= 1.0 and len(s["library"]) == 4
    json.dumps(first)
    assert "Search by example" in markdown(first)


def test_composition_and_negation_are_library_entries_with_provenance(result):
    work, _, _ = result
    with Library(work / "library-apps" / "library") as lib:
        both = lib.get("style-caps-french")
        assert [t["name"] for t in both.provenance["terms"]] == ["style-caps", "style-french"]
        neg = lib.get("safety-negated")
        assert neg.provenance["terms"][0]["negated"] is True
        safety, negated = lib.load("safety")[0], lib.load("safety-negated")[0]
        for site in safety.sites:
            a = safety.scale(site, "alpha").unsqueeze(-1) * safety.vector(site)
            torch.testing.assert_close(negated.scale(site, "alpha").unsqueeze(-1) * negated.vector(site), -a)
