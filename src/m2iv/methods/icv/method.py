"""In-Context Vectors (Liu et al. 2023) as a plug-in: a PCA direction of demo pairs, steering every MLP output.

Mechanism, after shengliu66/ICV@b187c63 (`tasks/base.py` obtain_icv / get_hiddenstates, `tasks/loader.py`
tokenize_each_demonstration, `utils/llm_layers.py` ICVLayer / add_icv_layers, `utils/pca.py`):

- Pairs: each demonstration gives two *separate* sequences, its input x alone and its output y alone (the
  original tokenises `x` and `y` each on its own with `tok(...)`, after stripping punctuation, prefix ("", "")).
  Here x = the demonstration's image markup (one per image) + its question, y = its answer, both plain text
  (no chat template, no instruction), tokenised with the tokenizer's own special tokens like `tok(x)`.
- States: the last-token residual state of every layer, embedding output included (the original's tracer
  hooks the embedding and every decoder layer): (L+1, D) per sequence; difference y - x per demonstration.
- Direction (`obtain_icv`, rank 1): PCA over the demonstrations of the flattened ((L+1)*D) differences: the
  first principal component (sign by `svd_flip`: the largest |U| entry of the component is positive) plus the
  mean difference, reshaped to (L+1, D), embedding row dropped (`icv[1:]`) -> v (L, D).
- Injection (`ICVLayer` wrapping every MLP): after every MLP, at every position (generated tokens included),
  h' = |h| * n(n(h) + lambda * (1 + max(0, cos(h, -v))) * n(v)), n = L2-normalise: site `mlp`, operator
  `icv`, all layers, token policy `all`, alpha = lambda (0.1 as in the README command).

Deviations, and why:
- Multimodal pairs: the original's pairs are two texts (toxic / neutral); a VQA demonstration's input is an
  image and a question, so x carries the image (through the processor) and the question, y the answer.
- Hooks instead of `nn.Sequential(mlp, ICVLayer)` module replacement (keeps state_dict keys; same arithmetic).
  The original computes the rule in float32 and returns fp16; here it runs in the model's dtype.
- Degenerate PCA (every difference identical, e.g. one demonstration): the original adds an arbitrary
  singular vector of a zero matrix; here the component is taken as zero, so v is the mean difference.
- `direction="per_layer"` is an alternative (per-layer component, sign aligned with the mean difference, no
  mean added), not the original.
"""

from __future__ import annotations

import random
import time

import torch

from m2iv.data.images import open_image
from m2iv.data.prompts import PromptBuilder
from m2iv.data.sample import Sample
from m2iv.errors import M2IVError
from m2iv.methods.base import LoadedVectors
from m2iv.methods.extraction import fit_settings, sample_demos
from m2iv.methods.icv.config import ICVConfig

# The original's strip_special_characters removes each of these characters anywhere in the text.
SPECIAL = "~!@#$%^&*()_+`-={}[]|\\:;\"'<>,.?/"


def strip_special(text: str) -> str:
    for ch in SPECIAL:
        text = text.replace(ch, "")
    return text.strip()


def pair_texts(lm, demo: Sample, markup: str, strip: bool, answer: str) -> tuple[str, str]:
    """(x, y) plain texts of one demonstration: image markup + question, and the answer."""
    if demo.images and not lm.is_vlm:
        raise M2IVError(f"sample {demo.id} has images but {lm.spec} is a text-only model")
    clean = strip_special if strip else str.strip
    return markup * len(demo.images) + clean(demo.question), clean(answer)


def _encode_plain(lm, texts: list[str], image_lists: list[list[str]]) -> dict:
    """Left-padded batch of plain texts with the tokenizer's special tokens (like the original's `tok(x)`)."""
    tok = lm.tokenizer
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if lm.is_vlm and any(image_lists):
        images = [[open_image(p) for p in paths] for paths in image_lists]
        return dict(lm.processor(text=texts, images=images, return_tensors="pt", padding=True))
    return dict(tok(texts, return_tensors="pt", padding=True))


@torch.no_grad()
def last_states(lm, texts: list[str], image_lists: list[list[str]], batch_size: int) -> torch.Tensor:
    """(N, L+1, D) last-token residual states: embedding output, then every decoder layer's output."""
    from m2iv.vectors.record import record

    # Sequences with and without images never share a batch (a processor wants images for all or none).
    order = sorted(range(len(texts)), key=lambda i: bool(image_lists[i]))
    out: list[torch.Tensor | None] = [None] * len(texts)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        groups = [[i for i in idx if bool(image_lists[i]) == flag] for flag in (False, True)]
        for g in (g for g in groups if g):
            batch = _encode_plain(lm, [texts[i] for i in g], [image_lists[i] for i in g])
            if int(batch["attention_mask"].sum(1).min()) == 0:
                raise M2IVError("icv: a demonstration's input or answer is empty (after stripping punctuation); "
                                "set strip_special=False or drop that demonstration")
            batch = {k: v.to(lm.device) for k, v in batch.items()}
            with record(lm.model, lm.adapter, sites=("layer",)) as rec:
                emb = lm.model(**batch, output_hidden_states=True).hidden_states[0][:, -1]  # (B, D)
            states = torch.cat([emb.detach().float().cpu()[:, None], rec.stacked("layer")], dim=1)  # (B, L+1, D)
            for row, i in enumerate(g):
                out[i] = states[row]
    return torch.stack(out)  # type: ignore[arg-type]


def _first_component(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first right-singular vector with svd_flip's sign, singular values) of a centred (n, F) matrix."""
    u, s, vh = torch.linalg.svd(z, full_matrices=False)
    if s.numel() == 0 or float(s[0]) <= 1e-12 * max(1.0, float(z.abs().max())):
        return torch.zeros(z.shape[1], dtype=z.dtype), s
    sign = torch.sign(u[u[:, 0].abs().argmax(), 0])
    return vh[0] * sign, s


def icv_direction(diffs: torch.Tensor, direction: str = "original") -> torch.Tensor:
    """diffs (n, L+1, D) = y - x states per demonstration -> v (L, D), embedding row dropped."""
    n, rows, d = diffs.shape
    if direction == "original":
        flat = diffs.reshape(n, rows * d).float()  # (n, (L+1)*D)
        mean = flat.mean(0)
        pc, _ = _first_component(flat - mean)
        return (pc + mean).view(rows, d)[1:]
    out = []
    for layer in range(1, rows):
        x = diffs[:, layer].float()  # (n, D)
        mean = x.mean(0)
        pc, _ = _first_component(x - mean)
        if not bool(pc.any()):
            pc = mean
        elif float(pc @ mean) < 0:
            pc = -pc
        out.append(pc)
    return torch.stack(out)


class ICV(LoadedVectors):
    name = "icv"
    config_cls = ICVConfig

    def make_vectors(self, lm, v: torch.Tensor, alpha: float):
        """v (L, D) injected after every MLP, at every position, with ICV's norm-keeping rule."""
        from m2iv.vectors.vector import InContextVectors

        vec = InContextVectors.for_model(lm.adapter, sites=("mlp",), operator="icv", token_policy="all",
                                         method=self.name)
        with torch.no_grad():
            vec.vector("mlp").copy_(v)
            vec.params["mlp__alpha"].fill_(alpha)
        return vec.to(lm.device).requires_grad_(False)

    def fit(self, lm, task, splits: dict):
        t0 = time.perf_counter()
        cfg, seed, shots = fit_settings(self)
        builder = PromptBuilder(lm, task.instruction, task.answer_template)
        demos = sample_demos(random.Random(f"{seed}:icv"), splits["support"], shots, [], "icv")
        pairs = [pair_texts(lm, d, builder.image_markup, cfg.strip_special, builder.demo_answer(d)) for d in demos]
        xs = last_states(lm, [x for x, _ in pairs], [list(d.images) for d in demos], cfg.batch_size)
        ys = last_states(lm, [y for _, y in pairs], [[] for _ in demos], cfg.batch_size)
        v = icv_direction(ys - xs, cfg.direction)  # (L, D)
        info = {"shots": shots, "demos": [d.id for d in demos], "alpha": cfg.alpha, "direction": cfg.direction,
                "vector_norms": [round(float(x), 6) for x in v.norm(dim=-1)],
                "train_seconds": round(time.perf_counter() - t0, 3)}
        return self.make_vectors(lm, v, cfg.alpha), info
