"""HiFICL's virtual key/value pairs: attention over [virtual keys; real keys] without touching the KV cache.

Each head h of a layer owns V virtual keys K = key_a @ key_b and values Vv = value_a @ value_b ((V, r) @
(r, Dh), low rank r). With s_j = scale * q.K_j, Z1 = sum_j exp(s_j) and Z2 the real keys' normaliser
(gate.py), softmax attention over both sets of keys is, exactly,

    out = Z2 / (Z1 + Z2) * o  +  sum_j exp(s_j) / (Z1 + Z2) * Vv_j,      o = the model's own attention output,

which is what the original `AttnApproximatorDirect_final.do_shift` computes. So the o_proj pre-hook can
rescale the real output and add the virtual part from the stashed q and logZ2: the real keys, the
attention kernel and the cache stay the model's own. Virtual keys carry no position (no RoPE).
"""

from __future__ import annotations

import torch

from m2iv.vectors.gate import statistics


def attend(q: torch.Tensor, lse: torch.Tensor, scale: float, keys: torch.Tensor, values: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(share, part): the real keys' share Z2 / (Z1 + Z2) (B, T, H, 1) and the virtual values' part (B, T, H, Dh).

    q (B, T, H, Dh), lse = logZ2 (B, T, H), keys / values (H, V, Dh); computed in float32.
    """
    s = torch.einsum("bthd,hvd->bthv", q.float(), keys.float()) * scale  # (B, T, H, V)
    log_den = torch.logaddexp(s.logsumexp(-1), lse.float())  # log(Z1 + Z2)
    share = torch.exp(lse.float() - log_den).unsqueeze(-1)
    part = torch.einsum("bthv,hvd->bthd", torch.exp(s - log_den.unsqueeze(-1)), values.float())
    return share, part


def low_rank(vectors, site: str, row: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """This row's virtual keys and values, (H, V, Dh) each, from their factors."""
    p = vectors.params
    keys = p[f"{site}__key_a"][row] @ p[f"{site}__key_b"][row]
    values = p[f"{site}__value_a"][row] @ p[f"{site}__value_b"][row]
    return keys.to(device), values.to(device)


def terms(attn_module, vectors, site: str, row: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The virtual_kv operator's (share, part) for the per-head output x (B, T, H, Dh), in x's dtype."""
    q, lse, scale = statistics(attn_module)
    keys, values = low_rank(vectors, site, row, x.device)
    share, part = attend(q.to(x.device), lse.to(x.device), scale, keys, values)
    return share.to(x.dtype), part.to(x.dtype)
