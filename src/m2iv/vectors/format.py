"""The vector directory: `m2iv_config.json` + `vectors.safetensors`, written atomically, verified on load.

    save_vectors(vectors, "out/vqa", adapter=lm.adapter, base_model="tiny:idefics2")
    vectors, config = load_vectors("out/vqa", adapter=lm.adapter)   # refuses a mismatched model

The config records what a bare tensor file cannot: method, base model, architecture fingerprint,
sizes, sites, operators, token policy, dtype, recipe and metrics, plus the sha256 of the tensor
file, so truncation or tampering is caught before any tensor is used. No pickle is read or written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from m2iv.constants import CONFIG_NAME, FORMAT_VERSION, VECTORS_NAME, __version__
from m2iv.errors import M2IVError
from m2iv.files import save_safetensors, sha256_file, write_dir_atomic
from m2iv.models.adapter import ModelAdapter
from m2iv.vectors.compat import compat_reason
from m2iv.vectors.validate import MAX_CONFIG_BYTES, check_tensor_bytes, validate_config
from m2iv.vectors.vector import InContextVectors

LIBRARY_PREFIX = "library:"  # resolved above this room: m2iv.library.resolve (vectors/ never imports the library)


def _dtype_name(vectors: InContextVectors) -> str:
    return str(next(vectors.parameters()).dtype).replace("torch.", "")


def save_vectors(vectors: InContextVectors, directory: str | Path, *, adapter: ModelAdapter, base_model: str,
                 recipe: dict | None = None, metrics: dict | None = None, method_config: dict | None = None,
                 extra: dict | None = None) -> Path:
    """Save `vectors` (trained on the model `adapter` describes) as a vector directory."""
    compat_reason(vectors, adapter)
    tensors = vectors.to_tensors()
    directory = Path(directory)
    staging: dict[str, Any] = {}

    def write_tensors(path: Path) -> None:
        save_safetensors(tensors, path, metadata={"format": "m2iv", "format_version": str(FORMAT_VERSION)})
        staging["sha256"] = sha256_file(path)

    def write_config(path: Path) -> None:
        config = {
            "format_version": FORMAT_VERSION, "m2iv_version": __version__, **vectors.spec(),
            "base_model": base_model, "model_type": adapter.family, "fingerprint": adapter.fingerprint,
            "layers_path": adapter.layers_path, "dtype": _dtype_name(vectors), "num_parameters":
            vectors.num_parameters(), "recipe": recipe or {}, "metrics": metrics or {},
            "method_config": method_config or {}, "sha256": staging["sha256"], **(extra or {})}
        tmp = json.dumps(config, indent=2, sort_keys=True) + "\n"
        path.write_text(tmp)

    write_dir_atomic(directory, {VECTORS_NAME: write_tensors, CONFIG_NAME: write_config})
    return directory


def read_config(directory: str | Path) -> dict:
    """The validated config of a vector directory (every field checked before anything is built from it)."""
    directory = Path(directory)
    cfg_path = directory / CONFIG_NAME
    if not directory.is_dir():
        raise M2IVError(f"no vector directory at {directory}; give a directory written by `m2iv train` or "
                        "save_vectors")
    if not cfg_path.is_file():
        raise M2IVError(f"{directory} has no {CONFIG_NAME}; it is not an m2iv vector directory")
    if cfg_path.stat().st_size > MAX_CONFIG_BYTES:
        raise M2IVError(f"{cfg_path} is {cfg_path.stat().st_size} bytes, far more than a vector config; the file "
                        "is damaged or not written by m2iv")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise M2IVError(f"{cfg_path} is not valid JSON ({e}); the file is corrupt") from None
    return validate_config(config, str(cfg_path))


def load_vectors(directory: str | Path, adapter: ModelAdapter | None = None, strict: bool = True,
                 device: str | torch.device = "cpu") -> tuple[InContextVectors, dict]:
    """Load and verify a vector directory; with `adapter`, also refuse it for an incompatible model.
    (`library:<id-or-name>` specs are resolved by m2iv.library.resolve.load_spec, which calls this.)"""
    if isinstance(directory, str) and directory.startswith(LIBRARY_PREFIX):
        raise M2IVError(f"{directory} names a library entry, not a directory; load it with "
                        "m2iv.library.resolve.load_spec (or m2iv.load_vectors)")
    directory = Path(directory)
    config = read_config(directory)
    tpath = directory / VECTORS_NAME
    if not tpath.is_file():
        raise M2IVError(f"{directory} has no {VECTORS_NAME}; the vector directory is incomplete")
    digest = sha256_file(tpath)
    if digest != config["sha256"]:
        raise M2IVError(f"{tpath} does not match the sha256 in {CONFIG_NAME} (truncated or modified); "
                        "re-export or retrain the vectors")
    check_tensor_bytes(config, tpath.stat().st_size, str(tpath))
    if adapter is not None:
        compat_reason(config, adapter, strict=strict)
    try:
        tensors = load_file(str(tpath))
    except (SafetensorError, OSError, ValueError) as e:
        raise M2IVError(f"{tpath} is not a readable safetensors file ({e})") from None
    return vectors_from_tensors(tensors, config, str(directory / CONFIG_NAME)).to(device), config


def vectors_from_tensors(tensors: dict[str, torch.Tensor], config: dict, where: str) -> InContextVectors:
    """Rebuild the vectors a config describes and fill them with `tensors` (shapes checked by load_tensors).
    The config is validated and its declared size checked against the tensors given before anything is
    allocated, so a hostile config cannot make this allocate more than the file holds."""
    validate_config(config, where)
    check_tensor_bytes(config, sum(t.numel() * t.element_size() for t in tensors.values()), where)
    dtype = getattr(torch, str(config["dtype"]), None)
    if not isinstance(dtype, torch.dtype):
        raise M2IVError(f"{where}: unknown dtype {config['dtype']!r} in its config")
    vectors = InContextVectors.from_spec(config, dtype=dtype)
    vectors.load_tensors(tensors)
    return vectors
