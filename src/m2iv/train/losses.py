"""The three M²IV losses (docs/method-notes.md), one small function each.

Shapes: logits (B, A, V) at the A answer positions; labels (B, A) with -100 on padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mimicry(student_logits: torch.Tensor, teacher_values: torch.Tensor, teacher_index: torch.Tensor | None,
            mask: torch.Tensor, temperature: float = 1.0, eps: float = 0.0) -> torch.Tensor:
    """KL(teacher || student) per answer token, averaged over real tokens.

    With top-k teacher logits (values, index: (B, A, k)) the teacher distribution is renormalised over its
    top k and the student's log-probabilities are read at the same k tokens (of its full softmax). `eps` > 0
    puts eps inside both logs, as LIVE's original does (1e-6): it caps a student log-probability at log(eps)
    and so damps the gradient of tokens the student deems impossible; 0 is the exact KL.
    """
    s_logp = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (B, A, V)
    if teacher_index is not None:
        s_logp = s_logp.gather(-1, teacher_index)  # (B, A, k)
    t_logp = F.log_softmax(teacher_values.float() / temperature, dim=-1)  # (B, A, k|V)
    p = t_logp.exp()
    if eps:
        s_logp, t_logp = (s_logp.exp() + eps).log(), (p + eps).log()
    kl = torch.where(p > 0, p * (t_logp - s_logp), torch.zeros_like(p)).sum(-1)  # (B, A); 0 log 0 = 0
    m = mask.float()
    return (kl * m).sum() / m.sum().clamp_min(1) * temperature**2


def answer_positions(mask: torch.Tensor, skip_first: bool = False) -> torch.Tensor:
    """The answer predictions a loss covers: all of them, or (LIVE's original KL masks, which keep the logits AT
    the answer tokens) all but the first answer token's prediction. mask: (B, A), left-padded."""
    return mask & (mask.cumsum(1) > 1) if skip_first else mask


def first_answer_position(mask: torch.Tensor) -> torch.Tensor:
    """The prediction of each label's first token only (I2CL's calibration CE). mask: (B, A), left-padded."""
    return mask & (mask.cumsum(1) == 1)


def supervised(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the ground-truth answer tokens."""
    return F.cross_entropy(student_logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)


def alignment(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Layer-wise MSE between student and teacher hidden states (B, L, P, D) at the real positions (MimIC)."""
    m = mask[:, None, :, None].float()  # (B, 1, A, 1)
    se = (student_hidden.float() - teacher_hidden.float()).pow(2) * m
    return se.sum() / (m.sum() * student_hidden.shape[1] * student_hidden.shape[-1]).clamp_min(1)


def synergy_decorrelation(v_attn: torch.Tensor, v_mlp: torch.Tensor) -> torch.Tensor:
    """Mean squared cosine between each layer's MHA and MLP vectors (L, D).

    Default synergistic term: the paper assigns the two branches complementary roles (MHA: cross-modal
    fidelity; MLP: fine-grained semantics), so each layer's two vectors are pushed towards orthogonal
    directions instead of both learning the same shift. It is scale-free, so it never fights the
    mimicry loss over magnitudes, and it is 0 for zero (untrained) vectors' gradients to start from.
    """
    cos = F.cosine_similarity(v_attn.float(), v_mlp.float(), dim=-1, eps=1e-8)  # (L,)
    return (cos**2).mean()


def synergy_barlow(v_attn: torch.Tensor, v_mlp: torch.Tensor, off_diagonal: float = 1e-3) -> torch.Tensor:
    """Barlow-Twins cross-correlation of layer-normalised MHA and MLP vectors: diagonal -> 1, off-diagonal
    -> 0 (the form the third-party MoICV repo labels "M²IV synergistic loss"; unverified against the paper)."""
    a = (v_attn - v_attn.mean(0)) / (v_attn.std(0) + 1e-6)  # (L, D)
    b = (v_mlp - v_mlp.mean(0)) / (v_mlp.std(0) + 1e-6)
    c = a.T @ b / a.shape[0]  # (D, D)
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = (c - torch.diag(torch.diagonal(c))).pow(2).sum()
    return (on + off_diagonal * off) / c.shape[0]


def synergy(kind: str, v_attn: torch.Tensor | None, v_mlp: torch.Tensor | None) -> torch.Tensor | None:
    if kind == "none" or v_attn is None or v_mlp is None or v_attn.shape != v_mlp.shape:
        return None
    return synergy_decorrelation(v_attn, v_mlp) if kind == "decorrelation" else synergy_barlow(v_attn, v_mlp)
