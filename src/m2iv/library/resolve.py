"""`library:<id-or-name>` and `hf://org/name[@rev]` wherever a vector directory is accepted.

This module sits above the rooms: it imports the library, the hub and vectors/format, so vectors/ never needs
to import the library (no cycle). Callers that take a user's `--vectors` use `load_spec`. An `hf://` spec is
read from the local Hugging Face cache only (hub/remote.py): a run never waits on the network.
"""

from __future__ import annotations

from pathlib import Path

import torch

from m2iv.hub import remote
from m2iv.library.entry import is_library_spec
from m2iv.library.store import Library
from m2iv.vectors.format import load_vectors
from m2iv.vectors.vector import InContextVectors


def resolve_vectors(spec, root: str | Path | None = None, adapter=None, strict: bool = True) -> Path | None:
    """`library:<id-or-name>` -> a verified vector directory; `hf://org/name[@rev]` -> its snapshot in the local
    Hugging Face cache; anything else is returned as a Path unchanged."""
    if spec is not None and remote.is_hf_spec(str(spec)):
        return remote.resolve(str(spec), local_files_only=True)
    if spec is None or not is_library_spec(str(spec)):
        return None if spec is None else Path(spec)
    with Library(root) as lib:
        return lib.resolve(str(spec), adapter=adapter, strict=strict)


def load_spec(spec: str | Path, adapter=None, strict: bool = True, device: str | torch.device = "cpu",
              root: str | Path | None = None) -> tuple[InContextVectors, dict]:
    """Load a vector directory, `library:<id-or-name>` or `hf://org/name[@rev]` (verified; with `adapter`,
    refused for an incompatible model)."""
    path = resolve_vectors(spec, root=root, adapter=adapter, strict=strict)
    assert path is not None
    return load_vectors(path, adapter=adapter, strict=strict, device=device)
