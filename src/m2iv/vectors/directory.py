"""The vector directory on disk: `m2iv_config.json` + `vectors.safetensors`, written atomically, read back
verified (config validated, tensor file hashed) as plain tensors.

This module never builds an `InContextVectors` (format.py does, and the class itself in `from_pretrained`), so
the class can save and read directories without an import cycle. Callers use format.py's
save_vectors / load_vectors; a directory may also hold a model card (README.md, hub/card.py) next to the two files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from m2iv.constants import CONFIG_NAME, FORMAT_VERSION, VECTORS_NAME, __version__
from m2iv.errors import M2IVError
from m2iv.files import save_safetensors, sha256_file, write_dir_atomic
from m2iv.models.adapter import ModelAdapter
from m2iv.vectors.compat import compat_reason
from m2iv.vectors.validate import MAX_CONFIG_BYTES, check_tensor_bytes, validate_config

if TYPE_CHECKING:
    from collections.abc import Callable

    from m2iv.vectors.vector import InContextVectors

LIBRARY_PREFIX = "library:"  # resolved above this room: m2iv.library.resolve (vectors/ never imports the library)
HF_PREFIX = "hf://"  # resolved by m2iv.hub.remote (the Hugging Face cache)


def _dtype_name(vectors: InContextVectors) -> str:
    return str(next(vectors.parameters()).dtype).replace("torch.", "")


def save_vectors(vectors: InContextVectors, directory: str | Path, *, adapter: ModelAdapter, base_model: str,
                 recipe: dict | None = None, metrics: dict | None = None, method_config: dict | None = None,
                 extra: dict | None = None, files: dict[str, Callable[[dict], str]] | None = None) -> Path:
    """Save `vectors` (trained on the model `adapter` describes) as a vector directory; `files` adds text files
    rendered from the final config (the model card), in the same atomic write."""
    compat_reason(vectors, adapter)
    config = {"format_version": FORMAT_VERSION, "m2iv_version": __version__, "base_model": base_model,
              "model_type": adapter.family, "fingerprint": adapter.fingerprint, "layers_path": adapter.layers_path,
              "recipe": recipe or {}, "metrics": metrics or {}, "method_config": method_config or {}, **(extra or {})}
    return write_directory(vectors, directory, config, files)


def write_directory(vectors: InContextVectors, directory: str | Path, config: dict,
                    files: dict[str, Callable[[dict], str]] | None = None) -> Path:
    """Tensors + `config` completed from `vectors` (layout, dtype, size, sha256 of the tensor file) + text files
    rendered from that final config, as one atomic directory. Re-saving loaded vectors passes their own config."""
    tensors = vectors.to_tensors()
    directory = Path(directory)
    staging: dict[str, Any] = {}

    def write_tensors(path: Path) -> None:
        save_safetensors(tensors, path, metadata={"format": "m2iv", "format_version": str(FORMAT_VERSION)})
        staging["sha256"] = sha256_file(path)

    def write_config(path: Path) -> None:
        own = {k: v for k, v in config.items() if k != "condition"}  # the vectors' own spec says whether they have one
        staging["config"] = {**own, **vectors.spec(), "dtype": _dtype_name(vectors),
                             "num_parameters": vectors.num_parameters(), "sha256": staging["sha256"]}
        path.write_text(json.dumps(staging["config"], indent=2, sort_keys=True) + "\n")

    def text_writer(render: Callable[[dict], str]) -> Callable[[Path], object]:
        return lambda path: path.write_text(render(staging["config"]), encoding="utf-8")

    writers: dict[str, Callable[[Path], object]] = {VECTORS_NAME: write_tensors, CONFIG_NAME: write_config}
    writers.update({name: text_writer(render) for name, render in (files or {}).items()})
    write_dir_atomic(directory, writers)
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


def read_verified(directory: str | Path, adapter: ModelAdapter | None = None,
                  strict: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, config) of a vector directory, every check done: config fields, sha256, declared sizes and,
    with `adapter`, the model it was trained on. The caller builds the vectors (InContextVectors.from_tensors)."""
    for prefix, how in ((LIBRARY_PREFIX, "m2iv.library.resolve.load_spec (or m2iv.load_vectors)"),
                        (HF_PREFIX, "InContextVectors.from_pretrained (or m2iv.load_vectors)")):
        if isinstance(directory, str) and directory.startswith(prefix):
            raise M2IVError(f"{directory} is not a directory; load it with {how}")
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
    return tensors, config
