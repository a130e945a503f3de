"""Library entries on the Hugging Face Hub: `m2iv library push ENTRY REPO` and `m2iv library pull REPO`.

A pushed repository is the entry's export (library/transfer.py and codec.py: the vector directory exactly as stored, its
`library.json` metadata and any prototype) plus a model card, so `pull` restores name, tags, description and
prototype, and any m2iv command reads the downloaded snapshot as a vector directory (`--vectors hf://REPO`).
A repository written by `push_to_hub` (no library.json) pulls too, named after the repository.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from m2iv.errors import M2IVError
from m2iv.hub import remote
from m2iv.hub.card import README, card_text
from m2iv.library.codec import META_NAME, entry_files
from m2iv.library.entry import Entry
from m2iv.library.store import Library
from m2iv.library.transfer import import_dir
from m2iv.models import hub as model_hub


def push(lib: Library, ref: str, repo_id: str, *, token: str | None = None, private: bool | None = None,
         revision: str | None = None, commit_message: str | None = None) -> str:
    """One commit of the entry's files and card to `repo_id` (created if missing); the commit URL."""
    remote.parse(repo_id)
    entry = lib.get(ref)
    files = entry_files(entry, lib.read_blob(entry))
    config = json.loads(entry.config_text)
    card = card_text(config, repo_id=repo_id, tags=entry.tags)
    with tempfile.TemporaryDirectory(prefix="m2iv-push-") as tmp:
        folder = Path(tmp)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        (folder / README).write_text(card, encoding="utf-8")
        return remote.upload(folder, repo_id, token=token, private=private, revision=revision,
                             commit_message=commit_message or f"m2iv library push {entry.name}")


def fetch(spec: str, token: str | None = None) -> Path:
    """The snapshot folder of `org/name[@rev]` or `hf://...`: downloaded (or found current in the cache) when the hub
    can be reached, else the cached copy; one line when neither."""
    repo_id, revision = remote.parse(spec)
    if not model_hub.offline() and model_hub.reachable(model_hub.endpoint()):
        return remote.download(repo_id, revision, token=token)
    found = remote.cached(repo_id, revision)
    if found is None:
        raise remote.not_cached(spec, repo_id)
    return found


def pull(lib: Library, spec: str, *, name: str | None = None, token: str | None = None) -> Entry:
    """Add the vectors of a Hub repository to the library (metadata restored from its library.json if it has one)."""
    repo_id, _ = remote.parse(spec)
    folder = fetch(spec, token=token)
    if not (folder / "m2iv_config.json").is_file():
        raise M2IVError(f"{repo_id} holds no m2iv_config.json; it is not an m2iv vector repository")
    slug = repo_id.split("/", 1)[1]
    named = name or (None if (folder / META_NAME).is_file() else slug)
    return import_dir(lib, folder, named, source=folder, origin=f"hf://{repo_id}@{folder.name}", derived_name=slug)
