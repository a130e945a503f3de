"""Stage 1 of the sandbox recipe: the Idefics3 ViT pretrained as a colour (8) / shape (3) classifier on easy-vqa
train images; partially labelled images train the head they have. (A ViT trained from scratch through the
frozen LM on captions learns colour but not shape: sandbox notes §2.)"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from m2iv.sandbox.labels import COLOURS, SHAPES
from m2iv.sandbox.recipe.data import N_TRAIN, augment, vision_forward
from m2iv.sandbox.recipe.optim import descend, log


def make_heads(model) -> torch.nn.ModuleDict:
    """The classifier heads on the mean-pooled ViT features: colour ("c") and shape ("s")."""
    H = model.config.vision_config.hidden_size
    return torch.nn.ModuleDict({"c": torch.nn.Linear(H, len(COLOURS)), "s": torch.nn.Linear(H, len(SHAPES))})


def stage_vision(model, px, col, shp, cfg, curve) -> torch.nn.ModuleDict:
    torch.manual_seed(cfg["seed"] + 1)
    heads = make_heads(model)
    vis = model.model.vision_model
    params = list(vis.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW([{"params": params, "lr": cfg["vision_lr"], "base": cfg["vision_lr"]}], weight_decay=0.01)
    train_idx = torch.tensor([i for i in range(N_TRAIN) if col[i] >= 0 or shp[i] >= 0])
    g = torch.Generator().manual_seed(cfg["seed"] + 2)
    vis.train()
    t0 = time.time()
    for step in range(cfg["vision_steps"]):
        b = train_idx[torch.randint(len(train_idx), (cfg["vision_batch"],), generator=g)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = vision_forward(model, augment(px[b], g)).mean(1)
            lc, ls = heads["c"](h).float(), heads["s"](h).float()
        loss = F.cross_entropy(lc, col[b], ignore_index=-1) + F.cross_entropy(ls, shp[b], ignore_index=-1)
        descend(opt, loss, params, step, cfg["vision_steps"])
        if step % 50 == 0 or step == cfg["vision_steps"] - 1:
            rec = {"stage": "vision", "step": step, "loss": round(loss.item(), 4), "s": round(time.time() - t0, 1)}
            if step % 200 == 0 or step == cfg["vision_steps"] - 1:
                rec.update(eval_classifier(model, heads, px, col, shp))
            curve.append(rec)
            log(str(rec))
    vis.eval()
    return heads


@torch.no_grad()
def eval_classifier(model, heads, px, col, shp) -> dict:
    """Colour and shape accuracy of the classifier heads on the 1000 held-out test images."""
    idx = torch.arange(N_TRAIN, N_TRAIN + 1000)
    pcs, pss = [], []
    for b in idx.split(250):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = vision_forward(model, px[b]).mean(1)
        pcs.append(heads["c"](h.float()).argmax(-1))
        pss.append(heads["s"](h.float()).argmax(-1))
    pc, ps = torch.cat(pcs), torch.cat(pss)
    c, s = col[idx], shp[idx]
    return {"test_colour_acc": round(((pc == c) & (c >= 0)).sum().item() / (c >= 0).sum().item(), 4),
            "test_shape_acc": round(((ps == s) & (s >= 0)).sum().item() / (s >= 0).sum().item(), 4)}
