"""Careless and hostile input (issue 15): nothing a user put on disk is lost."""

from __future__ import annotations

import pytest
from conftest import random_vectors, tiny

from m2iv.errors import M2IVError
from m2iv.vectors.format import load_vectors, save_vectors


def test_saving_vectors_over_a_directory_of_user_files_is_refused_and_keeps_them(tmp_path):
    # Was: the atomic writer renamed the directory aside and rmtree'd it, user files included.
    lm = tiny("llama")
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(M2IVError, match="did not write"):
        save_vectors(random_vectors(lm), out, adapter=lm.adapter, base_model="tiny:llama")
    assert (out / "thesis.tex").read_text() == "years of work"


def test_saving_over_an_existing_vector_directory_replaces_it(tmp_path):
    lm = tiny("llama")
    out = tmp_path / "out"
    save_vectors(random_vectors(lm, seed=0), out, adapter=lm.adapter, base_model="tiny:llama")
    new = random_vectors(lm, seed=1)
    save_vectors(new, out, adapter=lm.adapter, base_model="tiny:llama")
    loaded, _ = load_vectors(out, adapter=lm.adapter)
    for k, v in new.params.items():
        assert bool((loaded.params[k].cpu() == v.detach().cpu()).all())


# ===== section: library (archive sizes, index, blobs, check --repair) =====
# (end of section: library)


# ===== section: training checkpoints and eval run identity, images =====
# (end of section: checkpoints, run identity, images)


# ===== section: CLI (one-line errors, validators, unwritable --out, hub offline) =====
# (end of section: CLI)


# ===== section: sandbox build (no pickles, private work dir) =====
# (end of section: sandbox)
