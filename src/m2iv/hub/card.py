"""The model card of a vector directory: README.md whose YAML metadata the Hub indexes (library_name: m2iv,
base_model, tags) and whose `m2iv:` block says what the vectors are (method, task, metrics, m2iv version,
layout), written from the vectors' own config, so the card can never disagree with the files next to it.

A README.md already in the folder keeps its prose: only the metadata is brought up to date (PEFT does the same).
`base_model` is set only when the model spec is a Hub id; `sandbox`, `tiny:...` and local paths stay in `m2iv:`,
because the Hub rejects a base_model that names no repository.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from m2iv.constants import __version__

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
README = "README.md"


def hub_base_model(spec: str | None) -> str | None:
    """The Hub id a base-model spec names, if it names one (not a directory, tiny:, sandbox or .gguf)."""
    if not spec or not _HUB_ID.match(spec) or spec.endswith(".gguf") or Path(spec).expanduser().exists():
        return None
    return spec


def metadata(config: dict, tags: list[str] | tuple[str, ...] = ()) -> dict:
    """The YAML metadata of the card, from a vector config (and extra tags, e.g. a library entry's)."""
    task = (config.get("method_config") or {}).get("task")
    sites = {site: spec.get("operator") for site, spec in (config.get("sites") or {}).items()}
    tags = ["m2iv", "in-context-vectors", "multimodal-icl", str(config.get("method", "vectors")), *tags]
    meta: dict[str, Any] = {"library_name": "m2iv", "tags": list(dict.fromkeys(tags))}
    base = hub_base_model(config.get("base_model"))
    if base:
        meta["base_model"] = base
    meta["m2iv"] = {"method": config.get("method"), "task": task, "metrics": config.get("metrics") or {},
                    "m2iv_version": config.get("m2iv_version", __version__), "format_version":
                    config.get("format_version"), "base_model": config.get("base_model"),
                    "model_type": config.get("model_type"), "sites": sites, "token_policy": config.get("token_policy"),
                    "num_parameters": config.get("num_parameters"), "sha256": config.get("sha256")}
    return meta


def _body(config: dict, meta: dict) -> str:
    m = meta["m2iv"]
    where = meta.get("base_model") or m["base_model"]
    metrics = "\n".join(f"| {k} | {v} |" for k, v in sorted(m["metrics"].items())) or "| (none recorded) | |"
    sites = ", ".join(f"`{s}` ({op})" for s, op in m["sites"].items())
    return f"""
# In-context vectors: {m['method']} on {m['task'] or 'an unnamed task'}

In-context vectors for `{where}` ({m['model_type']}), made with m2iv {m['m2iv_version']}: {m['num_parameters']}
parameters at {sites}, token policy `{m['token_policy']}`. They stand in for the demonstrations of in-context
learning: the model answers at its zero-shot prompt length, the vectors injected by forward hooks.

## Use

```python
from m2iv import InContextVectors, load_model, apply

lm = load_model("{m['base_model']}")
vectors = InContextVectors.from_pretrained("REPO_ID", adapter=lm.adapter)   # refused for another model
with apply(lm.model, vectors, lm.adapter):
    ...  # generate as usual
```

or `m2iv eval {m['base_model']} --task TASK --method {m['method']} --vectors hf://REPO_ID`.

## Metrics recorded at training

| metric | value |
|---|---|
{metrics}

The files are m2iv's vector directory: `m2iv_config.json` (layout, model fingerprint, recipe, sha256 of the tensors)
and `vectors.safetensors`; loading checks the hash and the model before any tensor is used.
"""


def card_text(config: dict, existing: str | None = None, repo_id: str | None = None,
              tags: list[str] | tuple[str, ...] = ()) -> str:
    """README.md for a vector directory; `existing` (a README already there) keeps its prose."""
    from huggingface_hub import ModelCard, ModelCardData

    meta = metadata(config, tags)
    if existing is not None:
        card = ModelCard(existing, ignore_metadata_errors=True)
        meta["tags"] = list(dict.fromkeys([*(getattr(card.data, "tags", None) or []), *meta["tags"]]))
        for key, value in meta.items():
            setattr(card.data, key, value)
        return str(card)
    body = _body(config, meta)
    if repo_id:
        body = body.replace("REPO_ID", repo_id)
    data = ModelCardData(**meta)
    return f"---\n{data.to_yaml()}\n---\n{body}"
