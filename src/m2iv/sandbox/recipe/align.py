"""Stage 2 of the sandbox recipe: ViT + connector trained so the 4 image tokens land on the embeddings of the
words describing the image (" a red circle." -> [" a", " red", " circle", "."]): MSE + cosine on centred
embeddings, a nearest-word CE, plus the classifier loss. Only the LM's embedding matrix is needed."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from m2iv.sandbox import assemble as A
from m2iv.sandbox import episodes as E
from m2iv.sandbox.labels import COLOURS, SHAPES
from m2iv.sandbox.recipe.data import N_TRAIN, augment, vision_forward
from m2iv.sandbox.recipe.optim import descend, log


def align_targets(tok, col, shp) -> torch.Tensor:
    """(5000, 4) token ids the image tokens are aligned to (-1 rows: unknown)."""
    out = torch.full((len(col), A.IMAGE_SEQ_LEN), -1, dtype=torch.long)
    for i in range(len(col)):
        if col[i] >= 0 and shp[i] >= 0:
            ids = tok.encode(E.target_words(COLOURS[col[i]], SHAPES[shp[i]]), add_special_tokens=False)
            assert len(ids) == A.IMAGE_SEQ_LEN, ids
            out[i] = torch.tensor(ids)
    return out


def stage_align(model, heads, px, col, shp, tgt, cfg, curve) -> None:
    torch.manual_seed(cfg["seed"] + 3)
    Emb = model.model.text_model.embed_tokens.weight.detach()[: tgt.max() + 1].float()
    mu = model.model.text_model.embed_tokens.weight.detach().float().mean(0)
    var = (Emb - mu).pow(2).mean()
    # nearest-word CE over the target words + a fixed random sample of the vocabulary (the full vocabulary
    # costs more than the vision tower itself)
    n_vocab = model.config.text_config.vocab_size - len(A.ADDED_TOKENS)
    g0 = torch.Generator().manual_seed(cfg["seed"] + 7)
    cand = torch.unique(torch.cat([tgt[tgt >= 0], torch.randperm(n_vocab, generator=g0)[:2048]]))
    remap = torch.full((n_vocab,), -1, dtype=torch.long)
    remap[cand] = torch.arange(len(cand))
    Wn = F.normalize(model.model.text_model.embed_tokens.weight.detach().float()[cand] - mu, dim=-1)
    vis, conn = model.model.vision_model, model.model.connector
    groups = [{"params": list(vis.parameters()) + list(heads.parameters()), "base": cfg["align_lr"]},
              {"params": list(conn.parameters()), "base": cfg["align_lr"]}]
    opt = torch.optim.AdamW([dict(g, lr=g["base"]) for g in groups], weight_decay=0.0)
    train_idx = torch.tensor([i for i in range(N_TRAIN) if tgt[i, 0] >= 0])
    g = torch.Generator().manual_seed(cfg["seed"] + 4)
    vis.train()
    t0 = time.time()
    for step in range(cfg["align_steps"]):
        b = train_idx[torch.randint(len(train_idx), (cfg["align_batch"],), generator=g)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = vision_forward(model, augment(px[b], g))
            lc, ls = heads["c"](h.mean(1)).float(), heads["s"](h.mean(1)).float()
        out = conn(h.float())  # connector in fp32: its output is what the LM reads
        y = Emb[tgt[b]]
        mse = (out - y).pow(2).mean() / var
        cos = 1 - F.cosine_similarity(out - mu, y - mu, dim=-1).mean()
        cls = F.cross_entropy(lc, col[b]) + F.cross_entropy(ls, shp[b])
        # nearest-word objective: centred cosine to every vocabulary embedding, CE on the target word
        sim = F.normalize(out - mu, dim=-1).reshape(-1, out.shape[-1]) @ Wn.T
        word = F.cross_entropy(sim / 0.05, remap[tgt[b].reshape(-1)])
        loss = mse + cos + 0.3 * cls + 0.5 * word
        descend(opt, loss, [p for gr in groups for p in gr["params"]], step, cfg["align_steps"])
        if step % 50 == 0 or step == cfg["align_steps"] - 1:
            rec = {"stage": "align", "step": step, "loss": round(loss.item(), 4), "mse": round(mse.item(), 4),
                   "word_ce": round(word.item(), 4),
                   "cos": round(cos.item(), 4), "s": round(time.time() - t0, 1)}
            if step % 250 == 0 or step == cfg["align_steps"] - 1:
                rec.update(eval_align(model, px, tgt))
            curve.append(rec)
            log(str(rec))
    vis.eval()


@torch.no_grad()
def image_features(model, px) -> torch.Tensor:
    """(N, 4, H) connector outputs in fp32 (what the LM reads for each image)."""
    out = []
    for b in torch.arange(len(px)).split(250):
        out.append(model.model.connector(vision_forward(model, px[b].to(model.dtype)).float()))
    return torch.cat(out)


@torch.no_grad()
def eval_align(model, px, tgt) -> dict:
    """Nearest-token (cosine, centred, whole vocabulary) accuracy of each image-token slot on test images."""
    idx = torch.tensor([i for i in range(N_TRAIN, N_TRAIN + 1000) if tgt[i, 0] >= 0])
    feats = image_features(model, px[idx])
    W = model.model.text_model.embed_tokens.weight.detach().float()[: -len(A.ADDED_TOKENS)]
    mu = W.mean(0)
    Wn = F.normalize(W - mu, dim=-1)
    near = (F.normalize(feats - mu, dim=-1) @ Wn.T).argmax(-1)
    ok = near == tgt[idx]
    return {"test_slot_acc": [round(v, 3) for v in ok.float().mean(0).tolist()],
            "test_all_slots_acc": round(ok.all(-1).float().mean().item(), 4)}
