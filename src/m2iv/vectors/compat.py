"""The one compatibility check: can these vectors be applied to that model?

Vectors fit a model when the sizes they were made for (layers, hidden size, heads, head size) are the
model's; a vector config also names the model type, and, unless `strict=False`, the architecture
fingerprint must match too (same sizes but other weights layout, e.g. a fine-tune of another base).
Every caller (saving, loading, injecting, the library, composition) asks here, so the reasons read alike.

    why = compat_reason(config, lm.adapter, strict=True, raise_error=False)   # None, or the reason
    compat_reason(vectors, lm.adapter)                                        # raises M2IVError instead
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from m2iv.errors import M2IVError

# (field in a vector config / on InContextVectors, attribute on ModelAdapter)
SIZE_FIELDS = (("num_layers", "num_layers"), ("hidden_size", "hidden_size"), ("num_heads", "num_heads"),
               ("head_dim", "head_dim"))


def compat_reason(vectors: Any, adapter: Any, strict: bool = True, *, raise_error: bool = True,
                  what: str = "these vectors") -> str | None:
    """None when `vectors` (a vector config dict or an InContextVectors) fit the model `adapter` describes;
    otherwise the reason, naming the first differing field: raised as M2IVError, or returned when
    `raise_error=False`. `what` names the vectors in the reason (e.g. "library entry vqa (ab12cd)")."""
    is_config = isinstance(vectors, Mapping)

    def get(name: str) -> Any:
        return vectors.get(name) if is_config else getattr(vectors, name, None)

    base = get("base_model") if is_config else None
    made_for = f" ({base})" if base else ""
    fields = ((("model_type", "family"),) if is_config else ()) + SIZE_FIELDS
    reason = None
    for field, attr in fields:
        mine, theirs = get(field), getattr(adapter, attr)
        if mine != theirs:
            reason = (f"{what} were made for a model with {field}={mine!r}{made_for}, but this model "
                      f"({adapter.family}) has {field}={theirs!r}; use vectors trained on this model")
            break
    if reason is None and is_config and strict and get("fingerprint") != adapter.fingerprint:
        reason = (f"{what} were trained on {base or '?'} (architecture fingerprint {get('fingerprint')}) but this "
                  f"model's fingerprint is {adapter.fingerprint}; pass strict=False (--no-strict) to apply them "
                  "anyway")
    if reason is not None and raise_error:
        raise M2IVError(reason)
    return reason
