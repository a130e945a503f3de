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
from safetensors.torch import load_file, save_file

from m2iv.constants import CONFIG_NAME, FORMAT_VERSION, VECTORS_NAME
from m2iv.errors import M2IVError
from m2iv.files import sha256_file, write_dir_atomic
from m2iv.models.adapter import ModelAdapter
from m2iv.vectors.inject import check_compatible
from m2iv.vectors.vector import InContextVectors

REQUIRED = ("format_version", "method", "model_type", "fingerprint", "num_layers", "hidden_size", "num_heads",
            "head_dim", "sites", "token_policy", "dtype", "sha256")


def _dtype_name(vectors: InContextVectors) -> str:
    return str(next(vectors.parameters()).dtype).replace("torch.", "")


def save_vectors(vectors: InContextVectors, directory: str | Path, *, adapter: ModelAdapter, base_model: str,
                 recipe: dict | None = None, metrics: dict | None = None, method_config: dict | None = None,
                 extra: dict | None = None) -> Path:
    """Save `vectors` (trained on the model `adapter` describes) as a vector directory."""
    from m2iv import __version__

    check_compatible(vectors, adapter)
    tensors = vectors.to_tensors()
    directory = Path(directory)
    staging: dict[str, Any] = {}

    def write_tensors(path: Path) -> None:
        save_file(tensors, str(path), metadata={"format": "m2iv", "format_version": str(FORMAT_VERSION)})
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
    directory = Path(directory)
    cfg_path = directory / CONFIG_NAME
    if not directory.is_dir():
        raise M2IVError(f"no vector directory at {directory}; give a directory written by `m2iv train` or "
                        "save_vectors")
    if not cfg_path.is_file():
        raise M2IVError(f"{directory} has no {CONFIG_NAME}; it is not an m2iv vector directory")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise M2IVError(f"{cfg_path} is not valid JSON ({e}); the file is corrupt") from None
    if not isinstance(config, dict):
        raise M2IVError(f"{cfg_path} does not hold a JSON object")
    missing = [k for k in REQUIRED if k not in config]
    if missing:
        raise M2IVError(f"{cfg_path} lacks field(s) {', '.join(missing)}; the file is incomplete")
    if not isinstance(config["format_version"], int) or config["format_version"] > FORMAT_VERSION:
        raise M2IVError(f"{cfg_path} has format_version {config['format_version']}, this m2iv reads up to "
                        f"{FORMAT_VERSION}; upgrade m2iv")
    return config


def check_config_against(config: dict, adapter: ModelAdapter, strict: bool = True) -> None:
    """Name the first field in which the vectors' model differs from `adapter`'s."""
    for field, theirs in (("model_type", adapter.family), ("num_layers", adapter.num_layers),
                          ("hidden_size", adapter.hidden_size), ("num_heads", adapter.num_heads),
                          ("head_dim", adapter.head_dim)):
        if config[field] != theirs:
            raise M2IVError(f"these vectors were trained for a model with {field}={config[field]!r} "
                            f"({config.get('base_model', '?')}), but this model has {field}={theirs!r}; "
                            "use vectors trained on this model")
    if strict and config["fingerprint"] != adapter.fingerprint:
        raise M2IVError(f"these vectors were trained on {config.get('base_model', '?')} (architecture "
                        f"fingerprint {config['fingerprint']}) but this model's fingerprint is "
                        f"{adapter.fingerprint}; pass strict=False (--no-strict) to apply them anyway")


def load_vectors(directory: str | Path, adapter: ModelAdapter | None = None, strict: bool = True,
                 device: str | torch.device = "cpu") -> tuple[InContextVectors, dict]:
    """Load and verify a vector directory (or `library:<id-or-name>`); with `adapter`, also refuse it for an
    incompatible model."""
    if isinstance(directory, str) and directory.startswith("library:"):
        from m2iv.library import resolve_vectors  # lazy: the library imports this module

        directory = resolve_vectors(directory, adapter=adapter, strict=strict)
    directory = Path(directory)
    config = read_config(directory)
    tpath = directory / VECTORS_NAME
    if not tpath.is_file():
        raise M2IVError(f"{directory} has no {VECTORS_NAME}; the vector directory is incomplete")
    digest = sha256_file(tpath)
    if digest != config["sha256"]:
        raise M2IVError(f"{tpath} does not match the sha256 in {CONFIG_NAME} (truncated or modified); "
                        "re-export or retrain the vectors")
    if adapter is not None:
        check_config_against(config, adapter, strict=strict)
    try:
        tensors = load_file(str(tpath))
    except (SafetensorError, OSError, ValueError) as e:
        raise M2IVError(f"{tpath} is not a readable safetensors file ({e})") from None
    return vectors_from_tensors(tensors, config, str(directory / CONFIG_NAME)).to(device), config


def vectors_from_tensors(tensors: dict[str, torch.Tensor], config: dict, where: str) -> InContextVectors:
    """Rebuild the vectors a config describes and fill them with `tensors` (shapes checked by load_tensors)."""
    dtype = getattr(torch, str(config["dtype"]), None)
    if not isinstance(dtype, torch.dtype):
        raise M2IVError(f"{where}: unknown dtype {config['dtype']!r} in its config")
    vectors = InContextVectors.from_spec(config, dtype=dtype)
    vectors.load_tensors(tensors)
    return vectors
