"""The vector directory: `m2iv_config.json` + `vectors.safetensors`, written atomically, verified on load.

    save_vectors(vectors, "out/vqa", adapter=lm.adapter, base_model="tiny:idefics2")
    vectors, config = load_vectors("out/vqa", adapter=lm.adapter)   # refuses a mismatched model

The config records what a bare tensor file cannot: method, base model, architecture fingerprint,
sizes, sites, operators, token policy, dtype, recipe and metrics, plus the sha256 of the tensor
file, so truncation or tampering is caught before any tensor is used. No pickle is read or written.
Reading and writing the files is directory.py; this module builds the vectors from what it reads.
"""

from __future__ import annotations

from pathlib import Path

import torch

from m2iv.models.adapter import ModelAdapter
from m2iv.vectors.directory import LIBRARY_PREFIX, read_config, read_verified, save_vectors
from m2iv.vectors.vector import InContextVectors

__all__ = ["LIBRARY_PREFIX", "load_vectors", "read_config", "resave", "save_vectors", "vectors_from_tensors"]


def load_vectors(directory: str | Path, adapter: ModelAdapter | None = None, strict: bool = True,
                 device: str | torch.device = "cpu") -> tuple[InContextVectors, dict]:
    """Load and verify a vector directory; with `adapter`, also refuse it for an incompatible model.
    (`library:<id-or-name>` and `hf://org/name` specs are resolved by m2iv.library.resolve.load_spec.)
    The vectors keep their config as `.config`, so `save_pretrained` / `push_to_hub` can write them again."""
    tensors, config = read_verified(directory, adapter=adapter, strict=strict)
    vectors = InContextVectors.from_tensors(tensors, config, str(Path(directory) / "m2iv_config.json"))
    return vectors.to(device), config


def vectors_from_tensors(tensors: dict[str, torch.Tensor], config: dict, where: str) -> InContextVectors:
    """Rebuild the vectors a config describes and fill them with `tensors` (InContextVectors.from_tensors)."""
    return InContextVectors.from_tensors(tensors, config, where)


# Config keys save_vectors writes itself; everything else in a config (training record, provenance) is carried over.
_OWN_KEYS = {"format_version", "m2iv_version", "method", "token_policy", "num_layers", "hidden_size", "num_heads",
             "head_dim", "sites", "condition", "base_model", "model_type", "fingerprint", "layers_path", "dtype",
             "num_parameters", "recipe", "metrics", "method_config", "sha256"}


def resave(directory: str | Path, vectors: InContextVectors, config: dict, *, adapter: ModelAdapter,
           out: str | Path | None = None) -> Path:
    """Save `vectors` (e.g. given a condition) with the rest of `config` (their directory's) kept, to `out` or back
    in place (atomically)."""
    return save_vectors(vectors, out or directory, adapter=adapter, base_model=config.get("base_model", ""),
                        recipe=config.get("recipe"), metrics=config.get("metrics"),
                        method_config=config.get("method_config"),
                        extra={k: v for k, v in config.items() if k not in _OWN_KEYS})
