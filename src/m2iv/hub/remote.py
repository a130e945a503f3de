"""The Hub side: `hf://org/name[@rev]` specs, the local Hugging Face cache, downloads and one-commit uploads.

A spec is read from the local cache (huggingface_hub's layout: models--org--name/snapshots/<commit>/, with
refs/<branch> naming the commit), without touching the network; when it is not there the error names the
command that fetches it. Downloads (`m2iv library pull`, `from_pretrained("org/name")` online) and uploads go
to HF_ENDPOINT as huggingface_hub reads it; every failure is one M2IVError line.
"""

from __future__ import annotations

import re
from pathlib import Path

from m2iv.errors import M2IVError
from m2iv.models import hub as model_hub

HF_PREFIX = "hf://"
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]*$")


def is_hf_spec(spec) -> bool:
    return isinstance(spec, str) and spec.startswith(HF_PREFIX)


def parse(spec: str) -> tuple[str, str | None]:
    """`hf://org/name[@rev]` (or `org/name[@rev]`) -> (repo id, revision or None)."""
    body = spec[len(HF_PREFIX):] if is_hf_spec(spec) else spec
    repo, _, revision = body.partition("@")
    if not _REPO.match(repo) or ".." in repo:
        raise M2IVError(f"{spec!r} is not a Hub repository; write hf://org/name or hf://org/name@revision")
    if revision and (not _REVISION.match(revision) or ".." in revision):
        raise M2IVError(f"{spec!r} has a malformed revision {revision!r}; give a branch, tag or commit hash")
    return repo, revision or None


def cache_dir() -> str:
    """The Hugging Face hub cache, from the environment at call time (huggingface_hub reads it once, at import)."""
    import os

    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return str(constants.HF_HUB_CACHE)


def cached(repo_id: str, revision: str | None = None) -> Path | None:
    """The cached snapshot folder of `repo_id` at `revision` (default main), or None; never uses the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True, cache_dir=cache_dir()))
    except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError, OSError):
        return None


def not_cached(spec: str, repo_id: str) -> M2IVError:
    return M2IVError(f"{spec} is not in the local Hugging Face cache ({cache_dir()}); fetch it once where the hub is "
                     f"reachable with `hf download {repo_id}` (or `m2iv library pull {repo_id}` into the library)")


def download(repo_id: str, revision: str | None = None, token: str | None = None) -> Path:
    """Fetch a snapshot into the cache (or find it there) and return its folder: one line on any failure."""
    from huggingface_hub import snapshot_download

    if model_hub.offline():
        raise M2IVError(f"{repo_id} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; unset it to "
                        f"download, or fetch it where you have a network (`hf download {repo_id}`)")
    if not model_hub.reachable(model_hub.endpoint()):
        raise M2IVError(f"the hub ({model_hub.endpoint()}) does not answer within {model_hub.HUB_PROBE_S:.0f} s; "
                        f"connect to the network or set HF_ENDPOINT, then download {repo_id} again")
    try:
        return Path(snapshot_download(repo_id, revision=revision, token=token, endpoint=model_hub.endpoint(),
                                      cache_dir=cache_dir()))
    except Exception as e:  # noqa: BLE001 - huggingface_hub's errors vary; the user gets one line
        raise M2IVError(f"could not download {repo_id}{'@' + revision if revision else ''} from "
                        f"{model_hub.endpoint()} ({type(e).__name__}: {_first_line(e)}); check the id and that you "
                        "may read it (`hf auth login`)") from None


def resolve(spec: str | Path, local_files_only: bool = True, token: str | None = None) -> Path:
    """A local folder for `spec`: a directory as it is; `hf://org/name[@rev]` from the cache only; a bare
    `org/name[@rev]` that is not a directory from the cache, else (local_files_only=False) downloaded."""
    text = str(spec)
    if not is_hf_spec(text) and (Path(text).expanduser().exists() or not _REPO.match(text.partition("@")[0])):
        return Path(text).expanduser()
    repo_id, revision = parse(text)
    found = cached(repo_id, revision)
    if found is not None:
        return found
    if local_files_only or is_hf_spec(text):
        raise not_cached(text, repo_id)
    return download(repo_id, revision, token=token)


def upload(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool | None = None,
           revision: str | None = None, commit_message: str | None = None) -> str:
    """Create `repo_id` if missing (and branch `revision`), then commit every file of `folder` to its root in one
    commit; returns the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    parse(repo_id if revision is None else f"{repo_id}@{revision}")
    files = sorted(p for p in Path(folder).iterdir() if p.is_file())
    api = HfApi(endpoint=model_hub.endpoint(), token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        ops = [CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p)) for p in files]
        info = api.create_commit(repo_id, ops, commit_message=commit_message or "Upload in-context vectors (m2iv)",
                                 revision=revision)
    except Exception as e:  # noqa: BLE001 - HTTP, auth and validation errors: one line naming the fix
        raise M2IVError(f"pushing to {repo_id} on {model_hub.endpoint()} failed ({type(e).__name__}: "
                        f"{_first_line(e)}); check that you may write there (`hf auth login` or HF_TOKEN)") from None
    return str(info.commit_url)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else "no message"
