"""Folding vectors into the weights they shift, so that a plain model computes what the hooked one does.

A branch output is a linear map's output: attention's `h = o_proj(x) + c` and the MLP's `h = down_proj(x) + c`.
An affine operator of h applied at every token is then the same linear map with other weights:

    linear     b*h + a*v  =  (b*W) x + (b*c + a*v)        weight scaled by b, bias b*c + a*v
    additive   h + a*v    =  W x + (c + a*v)              bias c + a*v
    attn_head  o_proj(b_h*x_h + a_h*v_h per head)  =  (W diag(b)) x + (W (a*v) + c)
    layer      h_layer + a*v: the decoder layer's output is the residual plus the MLP output, so a*v goes into
               down_proj's bias (additive only: a scale of the whole residual stream has no weight to live in)

The model's config must be able to hold those biases: Llama-architecture text models have `attention_bias` (q, k, v
and o projections; q, k, v get zero biases) and `mlp_bias` (gate, up and down; gate and up get zero biases). Every
other case is refused with one line naming why (`vector_reason`, `model_reason`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from m2iv.errors import M2IVError
from m2iv.models.adapter import ModelAdapter
from m2iv.vectors.vector import InContextVectors

# Operators that are an affine map of the branch output, per site.
FOLDABLE: dict[str, tuple[str, ...]] = {"attn": ("additive", "linear"), "attn_head": ("additive", "linear"),
                                        "mlp": ("additive", "linear"), "layer": ("additive",)}
# Folded in this order within a layer: attn_head's fold rewrites o_proj before attn's scale multiplies it, and the
# layer shift joins down_proj's bias after the MLP's scale.
ORDER = ("attn_head", "attn", "mlp", "layer")


@dataclass(frozen=True)
class BiasSwitches:
    """How a text-model family turns on the biases a fold needs (config flags and the projections they govern)."""

    attn_flag: str
    mlp_flag: str
    attn_inputs: tuple[str, ...]  # projections the attention flag also gives a bias (kept zero)
    attn_out: str
    mlp_inputs: tuple[str, ...]
    mlp_out: str


# Text-config model_type -> its switches. Mistral, Qwen2 and Qwen2-VL hard-code their biases (no config flag).
BIAS_SWITCHES: dict[str, BiasSwitches] = {
    "llama": BiasSwitches("attention_bias", "mlp_bias", ("q_proj", "k_proj", "v_proj"), "o_proj",
                          ("gate_proj", "up_proj"), "down_proj"),
}
MERGEABLE = "Llama-architecture text models (idefics3, smolvlm, llava and llava_next with a Llama LM, llama)"


def vector_reason(config: Mapping[str, Any]) -> str | None:
    """Why vectors with this config (a vector config or `InContextVectors.spec()`) cannot be folded; None if they can.
    Reads the config only, so a command can refuse before a model loads."""
    if config.get("condition"):
        return ("these vectors carry a condition (they act only on prompts that fire it) but merged weights act on "
                "every prompt; merge vectors without a condition, or inject these with m2iv")
    policy = config.get("token_policy", "all")
    if policy != "all":
        return (f"token policy {policy!r} shifts only some positions but merged weights act on every token; only "
                "token policy 'all' folds (train with --token-policy all, or inject these with m2iv)")
    for site, spec in config["sites"].items():
        op = spec["operator"]
        if op not in FOLDABLE.get(site, ()):
            if site == "layer" and op == "linear":
                return ("the linear operator at site layer scales the whole residual stream, which no weight holds; "
                        "only additive layer vectors fold")
            return (f"the {op} operator at site {site} is not an affine map of a projection's output; only additive "
                    "and linear vectors on attn, attn_head and mlp (and additive on layer) fold into weights")
    return None


def text_config(model: nn.Module) -> Any:
    """The config of the language model (the model's own config for a text LLM)."""
    config: Any = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def switches_for(model: nn.Module) -> BiasSwitches | None:
    text = text_config(model)
    return BIAS_SWITCHES.get(str(getattr(text, "model_type", "")))


def model_reason(model: nn.Module, adapter: ModelAdapter) -> str | None:
    """Why this model's config cannot hold the folded biases; None if it can."""
    text = text_config(model)
    sw = switches_for(model)
    if sw is None:
        return (f"{adapter.family} models with a {getattr(text, 'model_type', '?')!r} text model have no config switch "
                f"for o_proj/down_proj biases, so a merged checkpoint cannot hold the vectors; merge works for "
                f"{MERGEABLE}, or inject the vectors with m2iv")
    first = adapter.layers[0]
    attn, mlp = getattr(first, adapter.attn_name), getattr(first, adapter.mlp_name)
    missing = [n for n in (*sw.attn_inputs, sw.attn_out) if not isinstance(getattr(attn, n, None), nn.Linear)]
    missing += [n for n in (*sw.mlp_inputs, sw.mlp_out) if not isinstance(getattr(mlp, n, None), nn.Linear)]
    if missing:
        return (f"{adapter.layers_path}.0 lacks the Linear projection(s) {', '.join(missing)} a fold rewrites; "
                "this model is not a Llama-architecture text model")
    return None


def _give_bias(linear: nn.Linear) -> None:
    if linear.bias is None:
        linear.bias = nn.Parameter(torch.zeros(linear.out_features, dtype=linear.weight.dtype,
                                               device=linear.weight.device), requires_grad=False)


def _switch_on(model: nn.Module, adapter: ModelAdapter, sw: BiasSwitches, attn: bool, mlp: bool) -> None:
    """Set the config flags and give every projection they govern a (zero) bias, in every layer, so the saved
    checkpoint loads with exactly these tensors."""
    text = text_config(model)
    for on, flag, module, names in ((attn, sw.attn_flag, adapter.attn_name, (*sw.attn_inputs, sw.attn_out)),
                                    (mlp, sw.mlp_flag, adapter.mlp_name, (*sw.mlp_inputs, sw.mlp_out))):
        if not on:
            continue
        setattr(text, flag, True)
        for block in adapter.layers:
            for name in names:
                _give_bias(getattr(getattr(block, module), name))


def _scales(vectors: InContextVectors, site: str, row: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(a*v, b or None) of one row in float64: a*v is (D,), or (H, Dh) at attn_head with b (H,)."""
    v = vectors.vector(site)[row].detach().double()
    a = vectors.scale(site, "alpha")
    b = vectors.scale(site, "beta")
    a64 = torch.ones(v.shape[:-1], dtype=torch.float64) if a is None else a[row].detach().double()
    av = a64.unsqueeze(-1) * v if v.dim() > 1 else a64 * v
    return av, (None if b is None else b[row].detach().double())


@torch.no_grad()
def _fold_one(linear: nn.Linear, site: str, av: torch.Tensor, b: torch.Tensor | None) -> None:
    assert linear.bias is not None  # _switch_on gave it one
    W = linear.weight.double()  # (D_out, D_in)
    c = linear.bias.double()  # (D_out,)
    if site == "attn_head":  # per-head shift and scale at the o_proj input (D_in = H * Dh)
        if b is not None:
            W = W * b.repeat_interleave(av.shape[-1]).unsqueeze(0)
        c = c + linear.weight.double() @ av.reshape(-1)
    else:
        if b is not None:
            W, c = W * b, c * b
        c = c + av
    linear.weight.copy_(W.to(linear.weight.dtype))
    linear.bias.copy_(c.to(linear.bias.dtype))


def fold(model: nn.Module, adapter: ModelAdapter, vectors: InContextVectors,
         condition: Mapping[str, Any] | None = None) -> list[dict]:
    """Fold `vectors` into `model`'s weights, in place; returns one record per folded (layer, site).
    Refuses (M2IVError, nothing changed) what `vector_reason` / `model_reason` name."""
    reason = vector_reason({**vectors.spec(), "condition": condition}) or model_reason(model, adapter)
    if reason:
        raise M2IVError(reason)
    sw = switches_for(model)
    assert sw is not None  # model_reason checked it
    sites = vectors.sites
    _switch_on(model, adapter, sw, attn=bool({"attn", "attn_head"} & set(sites)),
               mlp=bool({"mlp", "layer"} & set(sites)))
    records = []
    for layer in range(adapter.num_layers):
        block = adapter.layers[layer]
        for site in ORDER:
            if site not in sites or layer not in sites[site].layers:
                continue
            row = sites[site].layers.index(layer)
            av, b = _scales(vectors, site, row)
            owner, name = ((adapter.attn_name, sw.attn_out) if site in ("attn", "attn_head")
                           else (adapter.mlp_name, sw.mlp_out))
            _fold_one(getattr(getattr(block, owner), name), site, av, b)
            records.append({"layer": layer, "site": site, "operator": sites[site].operator,
                            "module": f"{adapter.layers_path}.{layer}.{owner}.{name}"})
    return records
