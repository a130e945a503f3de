"""Stage 3 of the sandbox recipe: LoRA on every attention/MLP projection of the LM, meta-trained for in-context
learning on interleaved image episodes in m2iv's chat-turn format: random attribute -> word mappings drawn per
episode from training-only invented words (plus flipped colour/shape names), loss on the answers after the
first two demonstrations; mixed with natural episodes (colour, shape, description, easy-vqa QA)."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from m2iv.sandbox import assemble as A
from m2iv.sandbox import episodes as E
from m2iv.sandbox.labels import COLOURS, SHAPES, image_labels, questions
from m2iv.sandbox.recipe.eval import collate, eval_icl_fast, lm_hidden
from m2iv.sandbox.recipe.optim import descend, log
from m2iv.sandbox.recipe.state import save_state

LORA_FILE = "lora.safetensors"


class LoRA(torch.nn.Module):
    """Low-rank delta added to a frozen Linear's output by a forward hook: y += scale * (x A^T) B^T."""

    def __init__(self, lin: torch.nn.Linear, rank: int, scale: float) -> None:
        super().__init__()
        self.A = torch.nn.Parameter(torch.randn(rank, lin.in_features) / math.sqrt(lin.in_features))
        self.B = torch.nn.Parameter(torch.zeros(lin.out_features, rank))
        self.scale = scale
        self.handle = lin.register_forward_hook(self.hook)

    def hook(self, mod, args, out):
        x = args[0]
        return out + ((x.float() @ self.A.T) @ self.B.T * self.scale).to(out.dtype)


def attach_lora(model, rank: int, alpha: float) -> dict[str, LoRA]:
    return {name: LoRA(lin, rank, alpha / rank) for name, lin in A.lora_targets(model).items()}


def lora_state(lora: dict[str, LoRA]) -> dict[str, dict[str, torch.Tensor]]:
    """Per target Linear: A and B with the LoRA scale folded into B (what export ships)."""
    return {k: {"A": m.A.detach(), "B": m.B.detach() * m.scale} for k, m in lora.items()}


def save_lora(path: Path, state: dict[str, dict[str, torch.Tensor]]) -> Path:
    return save_state(path, {"lora": {f"{k}.{ab}": t for k, d in state.items() for ab, t in d.items()}})


def unpack_lora(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The `lora` part of a saved state back into {target: {"A": .., "B": ..}}."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in flat.items():
        name, ab = key.rsplit(".", 1)
        out.setdefault(name, {})[ab] = t
    return out


class Sampler:
    """Seeded episodes: 60% a random mapping learnable only from the demonstrations, else natural tasks."""

    def __init__(self, renderer: E.Renderer, seed: int) -> None:
        self.r = renderer
        self.rng = random.Random(seed)
        lab = image_labels("train")
        self.items = [(i, c, s) for i, (c, s) in sorted(lab.items())]
        self.words = E.training_words()
        self.qa: dict[int, list[tuple[str, str]]] = {}
        for q, a, i in questions("train"):
            self.qa.setdefault(i, []).append((q[0].upper() + q[1:], a))

    def turns(self, n):
        return [self.rng.choice(self.items) for _ in range(n)]

    def episode(self) -> list[E.Turn]:
        rng = self.rng
        u = rng.random()
        if u < 0.6:  # a random mapping, learnable only from the demonstrations
            attr = "colour" if rng.random() < 0.6 else "shape"
            classes = COLOURS if attr == "colour" else SHAPES
            if rng.random() < 0.15:  # flipped natural labels: demonstrations override the prior
                names = list(COLOURS if rng.random() < 0.5 else SHAPES)
                rng.shuffle(names)
                words = (names * 3)[: len(classes)]
            else:
                words = rng.sample(self.words, len(classes))
            mapping = dict(zip(classes, words, strict=True))
            pool = E.TRAIN_INSTRUCTIONS[attr] + E.TRAIN_INSTRUCTIONS["generic"]
            instr = rng.choice(pool)
            n = rng.randint(5, 17)
            return [E.Turn(i, instr, mapping[c if attr == "colour" else s], train=j >= 2)
                    for j, (i, c, s) in enumerate(self.turns(n))]
        kind = rng.choice(["colour", "shape", "describe", "vqa"])
        n = rng.randint(1, 6)
        out = []
        for i, c, s in self.turns(n):
            if kind == "colour":
                out.append(E.Turn(i, rng.choice(E.TRAIN_INSTRUCTIONS["colour"]), c))
            elif kind == "shape":
                out.append(E.Turn(i, rng.choice(E.TRAIN_INSTRUCTIONS["shape"]), s))
            elif kind == "describe":
                out.append(E.Turn(i, rng.choice(E.DESCRIBE_INSTRUCTIONS), E.caption(c, s)))
            else:
                q, a = rng.choice(self.qa[i])
                out.append(E.Turn(i, q, a[0].upper() + a[1:] if rng.random() < 0.5 else a))
        return out


def stage_meta(model, renderer, feats, cfg, curve, work: Path) -> dict[str, LoRA]:
    torch.manual_seed(cfg["seed"] + 5)
    lora = attach_lora(model, cfg["lora_rank"], cfg["lora_alpha"])
    params = [p for m in lora.values() for p in m.parameters()]
    opt = torch.optim.AdamW([{"params": params, "lr": cfg["meta_lr"], "base": cfg["meta_lr"]}], weight_decay=0.0)
    sampler = Sampler(renderer, cfg["seed"] + 6)
    pad = renderer.tok.convert_tokens_to_ids("<|im_end|>")
    t0 = time.time()
    losses: list[float] = []
    queue: list = []
    for step in range(cfg["meta_steps"]):
        if not queue:  # episodes of similar length share a batch (less padding)
            pool = sorted((renderer.render(sampler.episode()) for _ in range(8 * cfg["meta_batch"])),
                          key=lambda b: len(b[0]))
            queue = [pool[i: i + cfg["meta_batch"]] for i in range(0, len(pool), cfg["meta_batch"])]
            sampler.rng.shuffle(queue)
        batch = queue.pop()
        ids, mask = collate(batch, pad)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = lm_hidden(model, ids, mask, [b[1] for b in batch], feats, renderer.image_id)
            rows = torch.cat([torch.full((len(b[2]),), i) for i, b in enumerate(batch)])
            cols = torch.cat([torch.tensor(b[2]) for b in batch])
            logits = model.lm_head(h[rows, cols]).float()
        target = torch.cat([torch.tensor(b[3]) for b in batch])
        loss = F.cross_entropy(logits, target)
        descend(opt, loss, params, step, cfg["meta_steps"])
        losses.append(loss.item())
        if step % 10 == 0:
            log(f"meta step {step} loss {np.mean(losses[-10:]):.3f} tokens {ids.numel()} {time.time() - t0:.0f}s")
        if (step + 1) % 100 == 0 or step == cfg["meta_steps"] - 1:
            rec = {"stage": "meta", "step": step + 1, "loss": round(float(np.mean(losses[-20:])), 4),
                   "s": round(time.time() - t0, 1)}
            rec.update(eval_icl_fast(model, renderer, feats, ["colour_nonce", "shape_nonce"], shots=(16,), n=48,
                                     seed=99))
            curve.append(rec)
            log(str(rec))
            save_lora(work / LORA_FILE, lora_state(lora))
    return lora
