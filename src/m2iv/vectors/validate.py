"""Checking a vector config before anything is built from it.

A config comes from disk (a vector directory, an imported tar, the library's index), so it may be
damaged or hostile. Every size and field is checked against sane bounds, and the tensor bytes the
config declares are checked against the bytes actually there, BEFORE any tensor is allocated: a
10 KB file that claims hidden_size 125,000,000 is refused instead of allocating gigabytes.
"""

from __future__ import annotations

import re
from typing import Any

from m2iv.constants import FORMAT_VERSION
from m2iv.errors import M2IVError
from m2iv.vectors.condition import validate_condition
from m2iv.vectors.names import ACTIVATIONS, SITES, TOKEN_POLICIES
from m2iv.vectors.operators import OPERATOR_SCALES, OPERATORS

REQUIRED = ("format_version", "method", "model_type", "fingerprint", "num_layers", "hidden_size", "num_heads",
            "head_dim", "sites", "token_policy", "dtype", "sha256")
# Far above any real LVLM (the largest have ~100 layers, hidden sizes ~16k, ~128 heads of <= 256).
BOUNDS = {"num_layers": 1024, "hidden_size": 65536, "num_heads": 1024, "head_dim": 65536}
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
SITE_FIELDS = {"operator", "layers", "scale_activation", "virtual_tokens", "rank", "normaliser"}
MAX_VIRTUAL = 4096  # virtual key/value pairs per head and their rank (HiFICL uses 8 and 8)
MAX_CONFIG_BYTES = 64 << 20  # a config is kilobytes (a training log at most)
_SHA = re.compile(r"^[0-9a-f]{64}$")
_FIX = "the file is damaged or was not written by m2iv; re-export or retrain the vectors"


def _bad(where: str, field: str, value: Any, want: str) -> M2IVError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return M2IVError(f"{where}: field {field} is {shown}; it must be {want} ({_FIX})")


def _int(config: dict, field: str, where: str, lo: int, hi: int) -> int:
    v = config.get(field)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise _bad(where, field, v, f"an integer in [{lo}, {hi}]")
    return v


def _str(config: dict, field: str, where: str, choices: tuple[str, ...] | None = None) -> str:
    v = config.get(field)
    if not isinstance(v, str) or not v or len(v) > 1000 or (choices is not None and v not in choices):
        raise _bad(where, field, v, "one of " + ", ".join(choices) if choices else "a non-empty string")
    return v


def validate_config(config: Any, where: str) -> dict:
    """Refuse a vector config with a missing, mistyped or out-of-bounds field (one line naming it)."""
    if not isinstance(config, dict):
        raise M2IVError(f"{where} does not hold a JSON object ({_FIX})")
    missing = [k for k in REQUIRED if k not in config]
    if missing:
        raise M2IVError(f"{where} lacks field(s) {', '.join(missing)}; the file is incomplete")
    fv = config["format_version"]
    if isinstance(fv, int) and not isinstance(fv, bool) and fv > FORMAT_VERSION:
        raise M2IVError(f"{where} has format_version {fv}, this m2iv reads up to {FORMAT_VERSION}; upgrade m2iv")
    _int(config, "format_version", where, 1, FORMAT_VERSION)
    for field in ("method", "model_type", "fingerprint"):
        _str(config, field, where)
    if not isinstance(config.get("base_model", ""), str):
        raise _bad(where, "base_model", config["base_model"], "a string")
    sizes = {f: _int(config, f, where, 1, hi) for f, hi in BOUNDS.items()}
    _str(config, "token_policy", where, TOKEN_POLICIES)
    _str(config, "dtype", where, tuple(ITEMSIZE))
    if not isinstance(config["sha256"], str) or not _SHA.match(config["sha256"]):
        raise _bad(where, "sha256", config["sha256"], "64 lowercase hex digits")
    sites = config["sites"]
    if not isinstance(sites, dict) or not sites:
        raise _bad(where, "sites", sites, f"an object mapping sites ({', '.join(SITES)}) to their layers")
    for site, spec in sites.items():
        field = f"sites.{site}"
        if site not in SITES:
            raise _bad(where, "sites", site, f"one of {', '.join(SITES)}")
        if not isinstance(spec, dict) or set(spec) - SITE_FIELDS:
            raise _bad(where, field, spec, f"an object with fields among {', '.join(sorted(SITE_FIELDS))}")
        _str(spec, "operator", where + f" ({field})", tuple(OPERATORS))
        if spec["operator"] == "virtual_kv":  # HiFICL: the factor shapes come from these two
            for f, hi in (("virtual_tokens", MAX_VIRTUAL), ("rank", MAX_VIRTUAL)):
                _int({f"{field}.{f}": spec.get(f)}, f"{field}.{f}", where, 1, hi)
        elif "virtual_tokens" in spec or "rank" in spec:
            raise _bad(where, field, spec, "virtual_tokens and rank only with the virtual_kv operator")
        if "normaliser" in spec:
            _str({f"{field}.normaliser": spec["normaliser"]}, f"{field}.normaliser", where, ("masked", "all_keys"))
        _str({"scale_activation": spec.get("scale_activation", "identity")}, "scale_activation",
             where + f" ({field})", ACTIVATIONS)
        layers = spec.get("layers")
        n = sizes["num_layers"]
        if (not isinstance(layers, list) or not layers or len(layers) > n
                or any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n for i in layers)
                or len(set(layers)) != len(layers)):
            raise _bad(where, f"{field}.layers", layers, f"distinct layer indices in [0, {n})")
    if "condition" in config:  # format 2: the prompts the vectors act on
        validate_condition(config["condition"], where, sizes["num_layers"])
    return config


def declared_tensor_bytes(config: dict) -> int:
    """Bytes of tensor data a (validated) config implies: vectors and scales of every site and layer."""
    d, h, dh = config["hidden_size"], config["num_heads"], config["head_dim"]
    total = 0
    for site, spec in config["sites"].items():
        n = len(spec["layers"])
        head = site == "attn_head"
        if spec["operator"] == "virtual_kv":  # (n, H, V, r) and (n, H, r, Dh) factors for keys and values
            total += 2 * n * h * spec["rank"] * (spec["virtual_tokens"] + dh)
            continue
        total += n * (h * dh if head else d)
        for name in OPERATOR_SCALES[spec["operator"]]:
            total += n * (h * dh if name == "gate_w" else (h if head else 1))
    condition = 2 * d * ITEMSIZE["float32"] if "condition" in config else 0  # its vector and center, in float32
    return total * ITEMSIZE[config["dtype"]] + condition


def check_tensor_bytes(config: dict, available: int, where: str) -> None:
    """Refuse a config that declares more tensor bytes than the `available` ones (file size or loaded tensors)."""
    need = declared_tensor_bytes(config)
    if need > available:
        raise M2IVError(f"{where}: its config declares {need} bytes of tensors but only {available} are there; "
                        f"{_FIX}")
