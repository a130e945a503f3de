"""The llama.cpp control-vector file, in the layout repeng's `ControlVector.export_gguf` writes and llama.cpp's
`common_control_vector_load_one` reads (common/common.cpp):

- `general.architecture = "controlvector"`, `controlvector.model_hint` (string), `controlvector.layer_count` (uint32);
- one 1-D F32 tensor `direction.{k}` of n_embd values per layer k, which llama.cpp adds to the output of block k
  (0-based, after the FFN residual add, at every position: `build_cvec(cur, il)` in src/models/*.cpp), i.e. what
  m2iv's `layer` site at layer k is. llama.cpp rejects `direction.0` (block 0's output is never steered) and any
  tensor not named `direction.{k}`; it sums duplicates and ignores the metadata.

m2iv adds its own `m2iv.*` string keys (fidelity, method, base model, vectors' sha256), which llama.cpp and repeng
ignore. Reading checks every tensor before anything is built from it, since the file may come from anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from m2iv.errors import M2IVError
from m2iv.files import write_file_atomic

ARCH = "controlvector"
MAX_DIRECTIONS = 1024  # far above any model's layer count
MAX_EMBD = 65536  # as vector configs' hidden_size bound


@dataclass
class ControlVectorFile:
    """A control vector: layer -> (n_embd,) float32 direction, the model hint and m2iv's metadata."""

    directions: dict[int, np.ndarray]
    model_hint: str
    metadata: dict[str, str] = field(default_factory=dict)  # m2iv.* keys (without the prefix)


def write_control_vector(path: str | Path, cv: ControlVectorFile) -> Path:
    """Write `cv` atomically as a GGUF control vector (directions in increasing layer order)."""
    import gguf

    if not cv.directions:
        raise M2IVError("a control vector needs at least one direction")
    sizes = {d.shape for d in cv.directions.values()}
    if len(sizes) != 1 or len(next(iter(sizes))) != 1:
        raise M2IVError(f"control-vector directions must be 1-D and of one size; got shapes {sorted(sizes)}")

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(str(tmp), ARCH)
        writer.add_string(f"{ARCH}.model_hint", cv.model_hint)
        writer.add_uint32(f"{ARCH}.layer_count", len(cv.directions))
        for key, value in sorted(cv.metadata.items()):
            writer.add_string(f"m2iv.{key}", value)
        for layer in sorted(cv.directions):
            writer.add_tensor(f"direction.{layer}", np.ascontiguousarray(cv.directions[layer], dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    return write_file_atomic(path, write)


def _string(reader, key: str) -> str | None:
    f = reader.get_field(key)
    if f is None or not len(f.parts):
        return None
    return bytes(f.parts[-1]).decode("utf-8", errors="replace")


def _layer_of(name: str, where: str) -> int:
    prefix, _, index = name.partition(".")
    if prefix != "direction" or not index.isdigit():
        raise M2IVError(f"{where} holds tensor {name!r}; a control vector holds only direction.<layer> tensors "
                        "(is this a model file?)")
    return int(index)


def read_control_vector(path: str | Path) -> ControlVectorFile:
    """Read and check a control vector (repeng's or llama.cpp's layout); duplicate layers are summed as
    llama.cpp does. Every failure is one M2IVError line naming the file and the cause."""
    import gguf

    where = str(path)
    if not Path(path).is_file():
        raise M2IVError(f"no control-vector file at {where}; give the path of a .gguf control vector")
    try:
        reader = gguf.GGUFReader(str(path), "r")
    except (ValueError, OSError, KeyError, IndexError) as e:
        raise M2IVError(f"{where} is not a readable GGUF file ({type(e).__name__}: {e})") from None
    if len(reader.tensors) > MAX_DIRECTIONS:
        raise M2IVError(f"{where} holds {len(reader.tensors)} tensors, more than any model has layers; it is not a "
                        "control vector")
    directions: dict[int, np.ndarray] = {}
    n_embd = None
    for t in reader.tensors:
        layer = _layer_of(t.name, where)
        if t.tensor_type != gguf.GGMLQuantizationType.F32:
            raise M2IVError(f"{where}: {t.name} is {t.tensor_type.name}; llama.cpp reads F32 directions only")
        if len([s for s in t.shape if s != 1]) > 1 or not 0 < int(t.n_elements) <= MAX_EMBD:
            raise M2IVError(f"{where}: {t.name} has shape {list(t.shape)}; a direction is one vector of n_embd values")
        if n_embd is not None and int(t.n_elements) != n_embd:
            raise M2IVError(f"{where}: {t.name} has {t.n_elements} values, the others {n_embd}; one file holds one "
                            "size")
        n_embd = int(t.n_elements)
        data = np.asarray(t.data, dtype=np.float32).reshape(-1)
        directions[layer] = directions.get(layer, np.zeros(n_embd, dtype=np.float32)) + data
    if not directions:
        raise M2IVError(f"{where} holds no direction tensors; it is not a control vector")
    if any(not np.isfinite(d).all() for d in directions.values()):
        raise M2IVError(f"{where} holds non-finite values (nan or inf) in a direction; the file is damaged")
    meta = {k[len("m2iv."):]: v for k in reader.fields
            if k.startswith("m2iv.") and (v := _string(reader, k)) is not None}
    return ControlVectorFile(directions, _string(reader, f"{ARCH}.model_hint") or "", meta)


def metadata_strings(values: Mapping[str, object]) -> dict[str, str]:
    """m2iv.* metadata as GGUF strings (numbers and lists written as their JSON text)."""
    import json

    return {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in values.items()}
