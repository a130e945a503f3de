"""Vectors <-> llama.cpp control vectors: one shift added to each decoder layer's output at every position.

Exact: additive vectors on the `layer` site with token policy `all` (direction.k = a_k * v_k), except at layer 0,
whose output llama.cpp never steers.

Approximate (`approximate=True`, M²IV's two branches): the effective shifts of a layer's branches are summed and
added to that layer's output, direction.k = a_attn,k v_attn,k + a_mlp,k v_mlp,k (+ a layer vector). What is lost:
- beta, the scale of the branch output h (b*h + a*v becomes h + a*v);
- where the attention shift enters: at the layer output, so the layer's own MLP no longer sees it;
- the token policy: llama.cpp shifts every position, prompt included;
- layer 0: its shift is carried to layer 1's output (llama.cpp rejects direction.0).
benchmarks/export/ measures what this costs; docs/export.md explains it.

Importing a control vector gives additive `layer` vectors with alpha = strength (llama.cpp's
--control-vector-scaled), which m2iv's hooks apply exactly as llama.cpp does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from m2iv.errors import M2IVError
from m2iv.export.gguf_file import ControlVectorFile, metadata_strings
from m2iv.models.adapter import ModelAdapter
from m2iv.vectors.vector import InContextVectors, SiteSpec

SHIFT_SITES = ("attn", "mlp", "layer")  # sites whose vector is a shift of the residual stream
SHIFT_OPERATORS = ("additive", "linear")
APPROXIMATION = ("beta (the scale of each branch output) is dropped; the attention shift is added at the layer output, "
                 "after the MLP; every position is shifted; layer 0's shift is added at layer 1")


def shift_reason(config: Mapping[str, Any], approximate: bool) -> str | None:
    """Why these vectors (a vector config or `InContextVectors.spec()`) have no control-vector form (None: they do,
    exactly, or approximately when `approximate`)."""
    if config.get("condition"):
        return ("these vectors carry a condition (they act only on prompts that fire it); a llama.cpp control vector "
                "acts on every prompt, so it cannot express them")
    for site, spec in config["sites"].items():
        if site not in SHIFT_SITES:
            return (f"site {site} shifts the per-head input of o_proj, which a control vector (one shift of each "
                    "layer's output) cannot express; export vectors on attn, mlp or layer")
        if spec["operator"] not in SHIFT_OPERATORS:
            return (f"the {spec['operator']} operator at site {site} depends on the hidden state, so it has no fixed "
                    "shift for a control vector; export additive or linear vectors")
    if approximate:
        return None
    inexact = [s for s, spec in config["sites"].items() if s != "layer" or spec["operator"] != "additive"]
    if inexact:
        return (f"llama.cpp adds one shift to each layer's output, which is exact only for additive layer vectors; "
                f"these are {config['sites'][inexact[0]]['operator']} on {', '.join(inexact)}: pass --approximate to "
                f"export the documented approximation ({APPROXIMATION})")
    if config.get("token_policy", "all") != "all":
        return (f"token policy {config.get('token_policy')!r} shifts only some positions but llama.cpp shifts every "
                "position; pass --approximate to export it anyway")
    if 0 in config["sites"]["layer"]["layers"]:
        return ("llama.cpp never steers layer 0's output (it rejects direction.0); pass --approximate to add layer "
                "0's shift at layer 1, or use vectors without layer 0")
    return None


@torch.no_grad()
def layer_shifts(vectors: InContextVectors) -> dict[int, np.ndarray]:
    """layer -> sum over its shift sites of a*v (float32 (D,)), for every layer any site touches."""
    shifts: dict[int, np.ndarray] = {}
    for site, spec in vectors.sites.items():
        v = vectors.vector(site).detach().double()  # (n, D)
        a = vectors.scale(site, "alpha")
        eff = v if a is None else a.detach().double().unsqueeze(-1) * v
        for row, layer in enumerate(spec.layers):
            shifts[layer] = shifts.get(layer, 0) + eff[row].numpy()
    return {k: np.asarray(s, dtype=np.float32) for k, s in sorted(shifts.items())}


def to_control_vector(vectors: InContextVectors, config: Mapping[str, Any], *, approximate: bool = False,
                      model_hint: str | None = None) -> ControlVectorFile:
    """The control vector of `vectors` (refused with the reason where none exists; see the module docstring).
    Every layer 1..L-1 gets a direction (zeros where nothing shifts), as llama.cpp's cvector-generator writes."""
    spec = {**vectors.spec(), "condition": config.get("condition")}
    reason = shift_reason(spec, approximate)
    if reason:
        raise M2IVError(reason)
    if vectors.num_layers < 2:
        raise M2IVError("a control vector steers layers 1..L-1; this model has a single layer")
    shifts = layer_shifts(vectors)
    if 0 in shifts:
        shifts[1] = shifts.get(1, np.zeros(vectors.hidden_size, np.float32)) + shifts.pop(0)
    zero = np.zeros(vectors.hidden_size, dtype=np.float32)
    directions = {k: shifts.get(k, zero) for k in range(1, vectors.num_layers)}
    exact = shift_reason(spec, approximate=False) is None
    meta = {"fidelity": "exact" if exact else "approximate", "method": str(config.get("method", vectors.method)),
            "base_model": str(config.get("base_model", "")), "vectors_sha256": str(config.get("sha256", "")),
            "m2iv_version": str(config.get("m2iv_version", ""))}
    if not exact:
        meta["approximation"] = APPROXIMATION
    return ControlVectorFile(directions, model_hint or str(config.get("model_type", "")), metadata_strings(meta))


def from_control_vector(cv: ControlVectorFile, adapter: ModelAdapter, strength: float = 1.0) -> InContextVectors:
    """Additive `layer` vectors that add strength * direction.k to layer k's output at every position, as llama.cpp
    does (all-zero directions are left out)."""
    sizes = {d.shape[0] for d in cv.directions.values()}
    if sizes != {adapter.hidden_size}:
        raise M2IVError(f"the control vector's directions have {sorted(sizes)} values but this model's hidden size is "
                        f"{adapter.hidden_size}; use a control vector made for this model")
    beyond = [k for k in cv.directions if k >= adapter.num_layers]
    if beyond:
        raise M2IVError(f"the control vector steers layer {max(beyond)} but this model has {adapter.num_layers} layers "
                        f"(0..{adapter.num_layers - 1}); use a control vector made for this model")
    layers = sorted(k for k, d in cv.directions.items() if np.any(d != 0))
    if not layers:
        raise M2IVError("the control vector's directions are all zero; it changes nothing")
    vectors = InContextVectors(num_layers=adapter.num_layers, hidden_size=adapter.hidden_size,
                               num_heads=adapter.num_heads, head_dim=adapter.head_dim,
                               sites={"layer": SiteSpec("additive", layers)}, token_policy="all",
                               method="vectors")
    with torch.no_grad():
        vectors.vector("layer").copy_(torch.from_numpy(np.stack([cv.directions[k] for k in layers])))
        vectors.params["layer__alpha"].fill_(float(strength))
    return vectors
