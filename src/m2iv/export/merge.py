"""A plain Hugging Face checkpoint with the vectors folded into its weights (`m2iv merge`).

    lm = load_model("sandbox")
    vectors, config = load_vectors("out/colour", adapter=lm.adapter)
    merge(lm, vectors, "merged/colour", vector_config=config)       # folds into lm.model in place, then saves

The directory is what `save_pretrained` writes for the model and for its processor (or tokenizer), plus
`m2iv_merge.json` saying what was folded from where; `from_pretrained` loads it without m2iv, and any server
that serves the original architecture serves it (the config only gains `attention_bias` / `mlp_bias`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from m2iv.constants import MERGE_NAME, __version__
from m2iv.errors import M2IVError
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
    if Path(lm.spec).expanduser().is_dir() and Path(lm.spec).expanduser().resolve() == Path(out).expanduser().resolve():
        raise M2IVError(f"--out {out} is the model's own directory; merge writes a new checkpoint beside it: choose "
                        "another --out")
    records = fold(lm.model, lm.adapter, vectors, condition=config.get("condition"))
    info = {"m2iv_version": __version__, "base_model": lm.spec, "model_type": lm.family,
            "vectors": vectors_source, "vectors_sha256": config.get("sha256", ""),
            "method": config.get("method", vectors.method), "task": config.get("method_config", {}).get("task", ""),
            "token_policy": vectors.token_policy, "folded": records}

    def fill(tmp: Path) -> None:
        serialisable(lm.model).save_pretrained(tmp)
        lm.processor.save_pretrained(tmp)
        (tmp / MERGE_NAME).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")

    fill_dir_atomic(out, fill)
    return info


def serialisable(model: Any) -> Any:
    """`model`, or for one transformers loaded from a GGUF file (dequantized in memory, but flagged quantized, so
    save_pretrained refuses it) the same weights in a plain model of its class (shared tensors, no copy)."""
    config: Any = model.config
    quant = getattr(config, "quantization_config", None)
    if quant is None:
        return model
    method = getattr(quant, "quant_method", None) or (quant.get("quant_method") if isinstance(quant, dict) else None)
    if str(getattr(method, "value", method)) != "gguf":
        raise M2IVError(f"the model is quantized ({getattr(method, 'value', method)}); folded weights would be "
                        "re-quantized: load it in float (--dtype float32) to merge")
    plain = copy.deepcopy(config)
    del plain.quantization_config
    with torch.device("meta"):
        fresh = type(model)(plain)
    fresh.load_state_dict(model.state_dict(), assign=True)
    fresh.tie_weights()
    return fresh.eval()
