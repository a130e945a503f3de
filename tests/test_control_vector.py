"""GGUF control vectors (llama.cpp / repeng layout) without llama.cpp: the file, the exact and approximate export,
the import, and every refusal in one line. tests/test_llama_cpp.py runs the files in llama.cpp itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import random_vectors, tiny
from m2iv.cli.main import main
from m2iv.errors import M2IVError
from m2iv.export.control_vector import from_control_vector, layer_shifts, shift_reason, to_control_vector
from m2iv.export.gguf_file import ControlVectorFile, read_control_vector, write_control_vector
from m2iv.vectors.format import load_vectors, save_vectors


def repeng_export(path, model_type: str, directions: dict[int, np.ndarray]) -> None:
    """What repeng's ControlVector.export_gguf writes (vgel/repeng, repeng/extract.py), step for step."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", model_type)
    writer.add_uint32("controlvector.layer_count", len(directions))
    for layer in directions:
        writer.add_tensor(f"direction.{layer}", directions[layer])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _layer_vectors(lm, layers, scale=0.5, seed=0):
    return random_vectors(lm, sites=("layer",), operator="additive", layers=layers, scale=scale, seed=seed)


def test_write_then_read_keeps_directions_hint_and_metadata(tmp_path):
    rng = np.random.default_rng(0)
    dirs = {k: rng.standard_normal(8).astype(np.float32) for k in (1, 2, 5)}
    write_control_vector(tmp_path / "cv.gguf", ControlVectorFile(dirs, "llama", {"fidelity": "exact"}))
    back = read_control_vector(tmp_path / "cv.gguf")
    assert back.model_hint == "llama" and back.metadata == {"fidelity": "exact"}
    assert sorted(back.directions) == [1, 2, 5]
    assert all(np.array_equal(back.directions[k], dirs[k]) for k in dirs)
    import gguf

    reader = gguf.GGUFReader(str(tmp_path / "cv.gguf"))
    assert bytes(reader.get_field("general.architecture").parts[-1]) == b"controlvector"
    assert int(reader.get_field("controlvector.layer_count").parts[-1][0]) == 3
    assert {t.name: t.tensor_type for t in reader.tensors} == {f"direction.{k}": gguf.GGMLQuantizationType.F32
                                                                for k in (1, 2, 5)}


def test_a_repeng_file_imports_as_additive_layer_vectors_with_the_strength(tmp_path):
    lm = tiny("llama")
    rng = np.random.default_rng(1)
    dirs = {k: rng.standard_normal(lm.adapter.hidden_size).astype(np.float32) for k in (1, 0)}
    repeng_export(tmp_path / "r.gguf", "llama", dirs)
    cv = read_control_vector(tmp_path / "r.gguf")
    assert cv.model_hint == "llama" and cv.metadata == {}
    vec = from_control_vector(cv, lm.adapter, strength=0.5)
    assert vec.sites["layer"].operator == "additive" and vec.sites["layer"].layers == [0, 1]
    assert vec.token_policy == "all"
    shifts = layer_shifts(vec)
    assert all(np.allclose(shifts[k], 0.5 * dirs[k]) for k in dirs)


def test_exact_export_is_alpha_times_v_at_every_layer_but_zero(tmp_path):
    lm = tiny("llama")
    vec = _layer_vectors(lm, [1])
    with torch.no_grad():
        vec.params["layer__alpha"].fill_(0.25)
    cv = to_control_vector(vec, {"model_type": "llama", "method": "vectors"})
    assert cv.metadata["fidelity"] == "exact" and sorted(cv.directions) == list(range(1, lm.adapter.num_layers))
    assert np.allclose(cv.directions[1], 0.25 * vec.vector("layer")[0].detach().numpy())
    back = from_control_vector(cv, lm.adapter)
    assert np.allclose(layer_shifts(back)[1], cv.directions[1])


def test_m2iv_needs_approximate_which_sums_the_branch_shifts_and_moves_layer_zero(tmp_path):
    lm = tiny("llama")
    vec = random_vectors(lm, sites=("attn", "mlp"), operator="linear")
    with torch.no_grad():
        vec.params["attn__alpha"].fill_(2.0)
        vec.params["mlp__beta"].fill_(0.5)
    with pytest.raises(M2IVError, match="pass --approximate") as e:
        to_control_vector(vec, {})
    assert "\n" not in str(e.value)
    cv = to_control_vector(vec, {}, approximate=True)
    assert cv.metadata["fidelity"] == "approximate" and "beta" in cv.metadata["approximation"]
    v = {s: vec.vector(s).detach().numpy() for s in ("attn", "mlp")}
    expect = {k: 2.0 * v["attn"][k] + v["mlp"][k] for k in range(lm.adapter.num_layers)}
    assert np.allclose(cv.directions[1], expect[1] + expect[0])  # llama.cpp never steers layer 0: carried to 1
    assert 0 not in cv.directions


@pytest.mark.parametrize("config, cause", [
    ({"sites": {"layer": {"operator": "additive", "layers": [1]}}, "condition": {"kind": "direction"}},
     "carry a condition"),
    ({"sites": {"attn_head": {"operator": "additive", "layers": [1]}}}, "site attn_head"),
    ({"sites": {"mlp": {"operator": "icv", "layers": [1]}}}, "icv operator at site mlp"),
    ({"sites": {"layer": {"operator": "additive", "layers": [1]}}, "token_policy": "last"}, "token policy 'last'"),
    ({"sites": {"layer": {"operator": "additive", "layers": [0, 1]}}}, "never steers layer 0"),
])
def test_what_a_control_vector_cannot_express_is_refused_in_one_line(config, cause):
    reason = shift_reason(config, approximate=False)
    assert reason is not None and cause in reason and "\n" not in reason


@pytest.mark.parametrize("make, cause", [
    (lambda w: w.add_tensor("token_embd.weight", np.zeros(8, np.float32)), "only direction.<layer> tensors"),
    (lambda w: w.add_tensor("direction.1", np.zeros(8, np.float16)), "F32 directions only"),
    (lambda w: w.add_tensor("direction.1", np.zeros((2, 8), np.float32)), "one vector of n_embd values"),
    (lambda w: (w.add_tensor("direction.1", np.zeros(8, np.float32)),
                w.add_tensor("direction.2", np.zeros(4, np.float32))), "one file holds one size"),
    (lambda w: w.add_tensor("direction.1", np.full(8, np.nan, np.float32)), "non-finite"),
    (lambda w: None, "holds no direction tensors"),
])
def test_bad_control_vector_files_are_refused_in_one_line(tmp_path, make, cause):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "bad.gguf"), "controlvector")
    make(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(M2IVError, match=cause) as e:
        read_control_vector(tmp_path / "bad.gguf")
    assert "\n" not in str(e.value)
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(M2IVError, match="not a readable GGUF file"):
        read_control_vector(tmp_path / "junk.gguf")


def test_import_refuses_a_vector_for_another_model():
    lm = tiny("llama")
    wide = ControlVectorFile({1: np.ones(lm.adapter.hidden_size + 1, np.float32)}, "llama")
    with pytest.raises(M2IVError, match="hidden size is 64"):
        from_control_vector(wide, lm.adapter)
    deep = ControlVectorFile({lm.adapter.num_layers: np.ones(lm.adapter.hidden_size, np.float32)}, "llama")
    with pytest.raises(M2IVError, match="steers layer 2 but this model has 2 layers"):
        from_control_vector(deep, lm.adapter)
    with pytest.raises(M2IVError, match="all zero"):
        from_control_vector(ControlVectorFile({1: np.zeros(64, np.float32)}, "llama"), lm.adapter)


def test_cli_export_then_import_round_trips_and_guards_the_output(tmp_path, capsys):
    lm = tiny("llama")
    vec = _layer_vectors(lm, [1])
    save_vectors(vec, tmp_path / "v", adapter=lm.adapter, base_model="tiny:llama")
    out = tmp_path / "v.gguf"
    argv = ["export", "--vectors", str(tmp_path / "v"), "--format", "gguf-control-vector", "--out", str(out)]
    assert main(argv) == 0
    assert main(argv) == 2 and "pass --force" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
    assert main(["import", "tiny:llama", str(out), "--out", str(tmp_path / "back")]) == 0
    back, config = load_vectors(tmp_path / "back", adapter=lm.adapter)
    assert config["imported_from"]["metadata"]["fidelity"] == "exact"
    assert np.allclose(layer_shifts(back)[1], layer_shifts(vec)[1])
    m2iv = random_vectors(lm, sites=("attn", "mlp"), operator="linear")
    save_vectors(m2iv, tmp_path / "m", adapter=lm.adapter, base_model="tiny:llama")
    capsys.readouterr()
    assert main(["export", "--vectors", str(tmp_path / "m"), "--out", str(tmp_path / "m.gguf")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--approximate" in err and not (tmp_path / "m.gguf").exists()
    assert main(["export", "--vectors", str(tmp_path / "m"), "--approximate", "--out", str(tmp_path / "m.gguf")]) == 0
    assert read_control_vector(tmp_path / "m.gguf").metadata["fidelity"] == "approximate"
