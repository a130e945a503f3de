"""Where a hub id (`org/name`) is loaded from, decided before transformers touches the network: offline-first.

The local Hugging Face cache is used whenever it holds the model's config (no network at all). Otherwise
the hub is tried only if offline mode is off and its endpoint answers within HUB_PROBE_S; without network,
transformers would otherwise spend ~25 s in retries before failing. Every failure is one M2IVError line.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request

from m2iv.errors import M2IVError

HUB_PROBE_S = 2.0  # seconds the hub endpoint gets to answer before we call the network unreachable
_TRUE = {"1", "ON", "YES", "TRUE"}


def endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")


def offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as huggingface_hub reads it, checked at call time."""
    return any(os.environ.get(v, "").strip().upper() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def cached(repo_id: str) -> bool:
    """Whether the local cache holds this repo's config.json (a lookup on disk only)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - an id the cache cannot even parse is not cached
        return False


def reachable(url: str, timeout: float = HUB_PROBE_S) -> bool:
    """Whether `url` answers (any HTTP status) within `timeout` seconds, DNS included (a daemon thread, so a
    hanging name lookup cannot hold us past the timeout)."""
    answered: list[bool] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            answered.append(True)
        except urllib.error.HTTPError:
            answered.append(True)  # it answered, even if with an error status
        except Exception:  # noqa: BLE001 - refused, unresolvable, timed out: all mean "no network"
            answered.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered and answered[0])


def source(repo_id: str) -> dict:
    """from_pretrained keywords for `repo_id`: the cache only if it has the model, else the hub if it can be
    reached now; raises a one-line M2IVError naming the cause and fix otherwise."""
    if cached(repo_id):
        return {"local_files_only": True}
    if offline():
        raise M2IVError(f"{repo_id!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; download it "
                        f"first (`hf download {repo_id}`), unset HF_HUB_OFFLINE, or give a local model directory")
    if not reachable(endpoint()):
        raise M2IVError(f"{repo_id!r} is not in the Hugging Face cache and the hub ({endpoint()}) does not answer "
                        f"within {HUB_PROBE_S:.0f} s; connect to the network, download it where you have one "
                        f"(`hf download {repo_id}`), or give a local model directory or tiny:<family>")
    return {}


def failure(repo_id: str, error: Exception, kw: dict) -> str:
    """The one-line message for a hub load that failed after `source` chose where to load from."""
    name = type(error).__name__
    if kw.get("local_files_only"):
        return (f"{repo_id!r} is only partly in the Hugging Face cache ({name}); download it whole with "
                f"`hf download {repo_id}`, or give a local model directory")
    return (f"could not load {repo_id!r} from the hub ({name}); check that {endpoint()}/{repo_id} exists and that "
            "you may read it (`hf auth login`), or give a local model directory or tiny:<family>")
