"""`InContextVectors.save_pretrained` / `from_pretrained` / `push_to_hub`, as PEFT's adapters do it:

    vectors.save_pretrained("out/colour", adapter=lm.adapter, base_model="sandbox")   # + README.md model card
    vectors.push_to_hub("me/colour-vectors", adapter=lm.adapter, base_model="sandbox")
    vectors = InContextVectors.from_pretrained("hf://me/colour-vectors", adapter=lm.adapter)

Vectors loaded from a directory keep their config (`.config`), so they save and push again without naming
their model. The class methods call these functions with the class (`cls`): this module never imports
vector.py or format.py, which keeps the import graph free of cycles. The Hub transport (hf:// specs, uploads) and
the model card are the `m2iv.hub` room below this one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from m2iv.errors import M2IVError
from m2iv.hub import remote
from m2iv.hub.card import README, card_text
from m2iv.vectors.directory import read_verified, save_vectors, write_directory

SAVE_FIELDS = ("recipe", "metrics", "method_config", "extra")


def _card(directory: Path, repo_id: str | None):
    """The README renderer: a README.md already in `directory` keeps its prose, its metadata is renewed."""
    existing = directory / README
    text = existing.read_text(encoding="utf-8") if existing.is_file() else None
    return lambda config: card_text(config, existing=text, repo_id=repo_id)


def save(vectors, directory: str | Path, *, adapter=None, base_model: str | None = None,
         repo_id: str | None = None, **fields: Any) -> Path:
    """A vector directory with its model card; see the module docstring for when `adapter` is needed."""
    bad = sorted(set(fields) - set(SAVE_FIELDS))
    if bad:
        raise M2IVError(f"save_pretrained got unknown field(s) {', '.join(bad)}; use {', '.join(SAVE_FIELDS)}")
    directory = Path(directory).expanduser()
    files = {README: _card(directory, repo_id)}
    if adapter is not None:
        if not base_model:
            raise M2IVError("save_pretrained(adapter=...) also needs base_model= (the model spec, e.g. lm.spec)")
        return save_vectors(vectors, directory, adapter=adapter, base_model=base_model, files=files, **fields)
    config = getattr(vectors, "config", None)
    if config is None:
        raise M2IVError("these vectors were not loaded from a vector directory, so their model is unknown; pass "
                        "adapter=lm.adapter and base_model=lm.spec")
    config = dict(config)
    if base_model:
        config["base_model"] = base_model
    for key, value in fields.items():
        config.update(value if key == "extra" else {key: value})
    return write_directory(vectors, directory, config, files)


def load(cls, spec: str | Path, *, adapter=None, strict: bool = True, device: str | torch.device = "cpu",
         revision: str | None = None, local_files_only: bool | None = None):
    """Vectors from a directory, `hf://org/name[@rev]` (the cache only) or `org/name[@rev]` (the cache, then the
    hub unless local_files_only), verified and, with `adapter`, refused for another model."""
    text = str(spec)
    if revision is not None:
        repo, rev = remote.parse(text)
        if rev not in (None, revision):
            raise M2IVError(f"{text} names revision {rev} but revision={revision!r} was passed; give one")
        text = f"{remote.HF_PREFIX if remote.is_hf_spec(text) else ''}{repo}@{revision}"
    path = remote.resolve(text, local_files_only=bool(local_files_only))
    tensors, config = read_verified(path, adapter=adapter, strict=strict)
    return cls.from_tensors(tensors, config, f"{text} ({path})").to(device)


def push(vectors, repo_id: str, *, adapter=None, base_model: str | None = None, token: str | None = None,
         private: bool | None = None, revision: str | None = None, commit_message: str | None = None,
         **fields: Any) -> str:
    """save_pretrained into a scratch folder, then one commit of its files to `repo_id`; the commit URL."""
    remote.parse(repo_id)
    with tempfile.TemporaryDirectory(prefix="m2iv-push-") as tmp:
        folder = save(vectors, Path(tmp) / "vectors", adapter=adapter, base_model=base_model, repo_id=repo_id,
                      **fields)
        return remote.upload(folder, repo_id, token=token, private=private, revision=revision,
                             commit_message=commit_message)
