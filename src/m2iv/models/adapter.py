"""Structural discovery of the language-model decoder layers and their injection sites.

The decoder is found through `get_decoder()` (every HF LVLM and LLM has it) and checked against the
text config, so a vision tower, perceiver or connector can never be returned. Unknown models take a
user override: a dotted path to the layer list, or a regex over module names.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from m2iv.errors import M2IVError
from m2iv.models.families import IMAGE_TOKEN_ATTRS, IMAGE_WRAPPER_TOKENS

_ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
_MLP_NAMES = ("mlp", "feed_forward", "ffn")
_OPROJ_NAMES = ("o_proj", "out_proj", "dense", "c_proj")
# A layer list whose path names any of these is never the language model.
_NOT_LM = re.compile(r"vision|visual|perceiver|connector|resampler|projector|image_newline|vit\b", re.I)


@dataclass
class ModelAdapter:
    """What m2iv needs to know of a model: where its decoder layers are and their sizes."""

    family: str
    layers_path: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    attn_name: str
    mlp_name: str
    o_proj_name: str
    image_token_ids: list[int] = field(default_factory=list)
    image_wrapper_ids: list[int] = field(default_factory=list)
    fingerprint: str = ""
    layers: list[nn.Module] = field(default_factory=list, repr=False)

    def sites(self) -> dict[str, str]:
        """Where each injection site hooks, as a `{num}` module-path template."""
        base = f"{self.layers_path}.{{num}}"
        return {
            "attn": f"{base}.{self.attn_name} (output: MHA branch after o_proj)",
            "attn_head": f"{base}.{self.attn_name}.{self.o_proj_name} (input: per-head outputs before o_proj)",
            "mlp": f"{base}.{self.mlp_name} (output: MLP branch)",
            "layer": f"{base} (output: residual stream after the block)",
        }

    def module(self, layer: int, site: str) -> nn.Module:
        block = self.layers[layer]
        if site == "layer":
            return block
        if site == "mlp":
            return getattr(block, self.mlp_name)
        attn = getattr(block, self.attn_name)
        return getattr(attn, self.o_proj_name) if site == "attn_head" else attn

    def describe(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "layers"}
        d["injection_sites"] = self.sites()
        return d


def architecture_fingerprint(model: nn.Module) -> str:
    """Hash of model_type and every parameter's name and shape: equal iff the architecture is equal."""
    shapes = sorted((n, list(p.shape)) for n, p in model.named_parameters())
    payload = json.dumps([getattr(model.config, "model_type", ""), shapes], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _child(module: nn.Module, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if isinstance(getattr(module, n, None), nn.Module)), None)


def _find_by_override(model: nn.Module, override: str) -> tuple[str, list[nn.Module]]:
    try:
        sub = model.get_submodule(override)
        if isinstance(sub, nn.ModuleList):
            return override, list(sub)
    except AttributeError:
        pass
    try:
        pattern = re.compile(override)
    except re.error as e:
        raise M2IVError(f"--layers {override!r} is neither a module path nor a valid regex ({e})") from None
    found = [(n, m) for n, m in model.named_modules() if n and pattern.fullmatch(n)]
    if not found:
        raise M2IVError(f"--layers {override!r} matched no module; give the path of the decoder layer list "
                        "(see `m2iv inspect`) or a regex such as 'model\\.layers\\.\\d+'")
    prefix = found[0][0].rsplit(".", 1)[0]
    return prefix, [m for _, m in found]


def _find_decoder_layers(model: nn.Module) -> tuple[str, list[nn.Module]]:
    decoder = None
    get_decoder = getattr(model, "get_decoder", None)
    if callable(get_decoder):
        try:
            decoder = get_decoder()
        except Exception:  # noqa: BLE001 - some remote-code models raise here
            decoder = None
    if decoder is not None and isinstance(getattr(decoder, "layers", None), nn.ModuleList):
        for name, mod in model.named_modules():
            if mod is decoder.layers:
                return name, list(decoder.layers)
    # Fallback: layer lists whose items have attention + MLP, outside any vision module.
    candidates = [(n, m) for n, m in model.named_modules()
                  if isinstance(m, nn.ModuleList) and len(m) and not _NOT_LM.search(n)
                  and _child(m[0], _ATTN_NAMES) and _child(m[0], _MLP_NAMES)]
    if not candidates:
        raise M2IVError(f"found no decoder layer list in {type(model).__name__}; pass --layers with the "
                        "module path of its language-model layers")
    name, mod = max(candidates, key=lambda c: len(c[1]))
    return name, list(mod)


def _image_ids(model: nn.Module, tokenizer) -> tuple[list[int], list[int]]:
    cfg = model.config
    ids = sorted({int(v) for a in IMAGE_TOKEN_ATTRS if isinstance(v := getattr(cfg, a, None), int) and v >= 0})
    wrappers: list[int] = []
    if tokenizer is not None:
        vocab = tokenizer.get_vocab()
        wrappers = sorted({vocab[t] for t in IMAGE_WRAPPER_TOKENS if t in vocab} - set(ids))
    return ids, wrappers


def discover(model: nn.Module, family: str | None = None, tokenizer=None, layers: str | None = None) -> ModelAdapter:
    """Find the decoder layers and check them against the text config; raise M2IVError when they disagree."""
    cfg: Any = model.config
    tc = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    family = family or str(getattr(cfg, "model_type", "unknown"))
    path, layer_list = _find_by_override(model, layers) if layers else _find_decoder_layers(model)
    if _NOT_LM.search(path) and not layers:
        raise M2IVError(f"layer discovery picked {path!r}, which is not the language model; pass --layers")
    n_cfg = getattr(tc, "num_hidden_layers", None)
    hidden = getattr(tc, "hidden_size", None)
    heads = getattr(tc, "num_attention_heads", None)
    if n_cfg is None or hidden is None or heads is None:
        raise M2IVError(f"text config of {family} lacks num_hidden_layers/hidden_size/num_attention_heads")
    if len(layer_list) != n_cfg:
        raise M2IVError(f"found {len(layer_list)} layers at {path!r} but the text config says num_hidden_layers="
                        f"{n_cfg}; pass --layers with the right module path")
    head_dim = getattr(tc, "head_dim", None) or hidden // heads
    first = layer_list[0]
    attn, mlp = _child(first, _ATTN_NAMES), _child(first, _MLP_NAMES)
    if attn is None or mlp is None:
        raise M2IVError(f"layers at {path!r} have no attention/MLP submodule (looked for {_ATTN_NAMES} and "
                        f"{_MLP_NAMES}); pass --layers with the language-model layer path")
    oproj = _child(getattr(first, attn), _OPROJ_NAMES)
    if oproj is None:
        raise M2IVError(f"attention at {path}.0.{attn} has no output projection (looked for {_OPROJ_NAMES})")
    o = getattr(getattr(first, attn), oproj)
    in_f, out_f = getattr(o, "in_features", None), getattr(o, "out_features", None)
    if out_f is not None and out_f != hidden:
        raise M2IVError(f"{path}.0.{attn}.{oproj} outputs {out_f} features but the text hidden_size is {hidden}")
    if in_f is not None and in_f != heads * head_dim:
        raise M2IVError(f"{path}.0.{attn}.{oproj} takes {in_f} features but heads x head_dim = "
                        f"{heads} x {head_dim}; the text config does not describe these layers")
    img, wrap = _image_ids(model, tokenizer)
    return ModelAdapter(
        family=family, layers_path=path, num_layers=n_cfg, hidden_size=hidden, num_heads=heads,
        num_kv_heads=getattr(tc, "num_key_value_heads", None) or heads, head_dim=head_dim, attn_name=attn,
        mlp_name=mlp, o_proj_name=oproj, image_token_ids=img, image_wrapper_ids=wrap,
        fingerprint=architecture_fingerprint(model), layers=layer_list)


def weights_fingerprint(model: nn.Module, per_tensor: int = 256) -> str:
    """Hash of architecture plus a strided sample of every parameter's values: tells checkpoints apart
    (cheap enough for every evaluation summary and teacher-cache key)."""
    import torch

    from m2iv.models.placement import parameter_values

    h = hashlib.sha256(architecture_fingerprint(model).encode())
    samples: dict[str, bytes] = {}
    with torch.no_grad():
        for name, p in parameter_values(model):  # offloaded weights (a sharded model) read in block by block
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // per_tensor)
            samples[name] = flat[::step][:per_tensor].float().cpu().numpy().tobytes()
    for name in sorted(samples):
        h.update(name.encode())
        h.update(samples[name])
    return h.hexdigest()[:16]
