"""A plain Hugging Face checkpoint with the vectors folded into its weights (`m2iv merge`).

    lm = load_model("sandbox")
    vectors, config = load_vectors("out/colour", adapter=lm.adapter)
    merge(lm, vectors, "merged/colour", vector_config=config)       # folds into lm.model in place, then saves

The directory is what `save_pretrained` writes for the model and for its processor (or tokenizer), plus
`m2iv_merge.json` saying what was folded from where; `from_pretrained` loads it without m2iv, and any server
that serves the original architecture serves it (the config only gains `attention_bias` / `mlp_bias`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from m2iv.constants import MERGE_NAME, __version__
from m2iv.export.fold import fold
from m2iv.files import fill_dir_atomic
from m2iv.models.loading import LoadedModel
from m2iv.vectors.vector import InContextVectors


def merge(lm: LoadedModel, vectors: InContextVectors, out: str | Path, *, vector_config: dict | None = None,
          vectors_source: str = "") -> dict[str, Any]:
    """Fold `vectors` into `lm.model` (in place) and save model + processor to `out` atomically; returns the
    provenance written to `out/m2iv_merge.json`. Refuses, before anything changes, vectors or models a fold
    cannot express (one-line M2IVError naming why)."""
    config = vector_config or {}
    records = fold(lm.model, lm.adapter, vectors, condition=config.get("condition"))
    info = {"m2iv_version": __version__, "base_model": lm.spec, "model_type": lm.family,
            "vectors": vectors_source, "vectors_sha256": config.get("sha256", ""),
            "method": config.get("method", vectors.method), "task": config.get("method_config", {}).get("task", ""),
            "token_policy": vectors.token_policy, "folded": records}

    def fill(tmp: Path) -> None:
        lm.model.save_pretrained(tmp)
        lm.processor.save_pretrained(tmp)
        (tmp / MERGE_NAME).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")

    fill_dir_atomic(out, fill)
    return info
