"""The attention-normaliser gate of MimIC's heads (Jiang et al., CVPR 2025; docs/method-notes.md).

MimIC shifts each head's output before o_proj by  mu * v,  mu = Z1 / (Z1 + Z2) = sigmoid(logZ1 - logZ2),
where logZ2 = logsumexp(q K^T / sqrt(d_h)) is the head's attention normaliser over the real keys and
logZ1 = w_h . q + b_h is learned. q and K (post-RoPE, KV cache included) exist only inside attention,
so the gate uses transformers' own extension point instead of patching a forward: a function
registered with `AttentionInterface` wraps the model's attention implementation for the text decoder
only, computes logZ2 alongside and leaves q, logZ2 and the softmax scale on the attention module for the
o_proj pre-hook. HiFICL's virtual keys/values (virtual_kv.py) read the same statistics.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

_STASH = "_m2iv_gate"


def _base_attention(module, name: str):
    from transformers import AttentionInterface

    if name in AttentionInterface._global_mapping:
        return AttentionInterface._global_mapping[name]
    return sys.modules[type(module).__module__].eager_attention_forward  # every HF modeling file defines it


def _log_normaliser(query: torch.Tensor, key: torch.Tensor, mask, scale: float, all_keys: bool = False
                    ) -> torch.Tensor:
    """logsumexp over the keys a query may attend to (`all_keys`: over every key, as the original MimIC and
    HiFICL code compute it): (B, H, T, Dh) x (B, Hkv, S, Dh) -> (B, H, T)."""
    key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)  # GQA -> (B, H, S, Dh)
    s = (query.float() @ key.float().transpose(-1, -2)) * scale  # (B, H, T, S)
    T, S = s.shape[-2:]
    if all_keys:
        pass
    elif mask is None:  # causal: query i sits at key position S - T + i
        allowed = torch.arange(S, device=s.device)[None, :] <= (torch.arange(T, device=s.device)[:, None] + S - T)
        s = s.masked_fill(~allowed, float("-inf"))
    elif mask.dtype == torch.bool:
        s = s.masked_fill(~mask[..., :S], float("-inf"))
    else:
        s = s + mask[..., :S].float()
    return s.logsumexp(-1)


def make_gate_attention(base_name: str):
    def attention(module, query, key, value, attention_mask, *args, **kwargs):
        out = _base_attention(module, base_name)(module, query, key, value, attention_mask, *args, **kwargs)
        on = getattr(module, "_m2iv_gate_on", False)
        if on:
            scale = kwargs.get("scaling")
            scale = scale if scale is not None else query.shape[-1] ** -0.5
            lse = _log_normaliser(query, key, attention_mask, scale, all_keys=on == "all_keys")
            setattr(module, _STASH, (query.transpose(1, 2), lse.transpose(1, 2), scale))  # (B, T, H, Dh), (B, T, H)
        return out

    return attention


def enable(model, adapter, all_keys: bool = False) -> Callable[[], None]:
    """Switch the text decoder to the gate-recording attention; returns the function that undoes it.
    `all_keys`: logZ2 over every key of the sequence (SiteSpec.normaliser "all_keys")."""
    from transformers import AttentionInterface

    decoder = model.get_decoder()
    base = decoder.config._attn_implementation or "sdpa"
    name = f"m2iv_gate__{base}"
    if name not in AttentionInterface._global_mapping:
        AttentionInterface.register(name, make_gate_attention(base))
    decoder.set_attn_implementation(name)
    attns = [adapter.module(i, "attn") for i in range(adapter.num_layers)]
    for a in attns:
        a._m2iv_gate_on = "all_keys" if all_keys else True

    def undo() -> None:
        decoder.set_attn_implementation(base)
        for a in attns:
            a._m2iv_gate_on = False
            if hasattr(a, _STASH):
                delattr(a, _STASH)

    return undo


def statistics(attn_module) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The current call's post-RoPE query (B, T, H, Dh), logZ2 (B, T, H) and softmax scale."""
    if not hasattr(attn_module, _STASH):
        from m2iv.errors import M2IVError

        raise M2IVError("the gated / virtual_kv operator found no attention statistics; this model's attention does "
                        "not go through transformers' AttentionInterface")
    return getattr(attn_module, _STASH)


def gate(attn_module, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mu (B, T, H, 1) for the current call from the stashed q and logZ2; w (H, Dh), b (H,)."""
    q, lse, _ = statistics(attn_module)
    log_z1 = torch.einsum("bthd,hd->bth", q.to(w.dtype), w) + b  # (B, T, H)
    return torch.sigmoid(log_z1 - lse.to(log_z1.dtype)).unsqueeze(-1)  # exp(logZ1 - logaddexp(logZ1, logZ2))
