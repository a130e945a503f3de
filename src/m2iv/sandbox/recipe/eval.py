"""How the sandbox recipe measures its model: fast ICL accuracy on precomputed image features while training,
and the final describe / ICL accuracy of the assembled checkpoint through the normal HF path."""

from __future__ import annotations

import random
import re

import torch

from m2iv.sandbox import episodes as E
from m2iv.sandbox.labels import COLOURS, SHAPES, image_labels, image_paths
from m2iv.sandbox.recipe.data import N_TRAIN


def lm_hidden(model, ids, mask, images, feats, image_id):
    tm = model.model.text_model
    emb = E.embed(tm, ids, images, feats, image_id)
    # right padding: causal attention alone keeps real tokens from seeing the pads (and is faster than a mask)
    return tm(inputs_embeds=emb).last_hidden_state


def collate(batch, pad):
    return E.collate(batch, pad)


def icl_queries(task: str, n: int, seed: int, shots: int = 16):
    """Fixed held-out queries (test images) and their demonstrations (train images), seeded per task."""
    rng = random.Random(f"{task}-{seed}")
    test = sorted(image_labels("test").items())
    train = sorted(image_labels("train").items())
    qs = rng.sample(test, n)
    return [(q, [rng.choice(train) for _ in range(shots)]) for q in qs]


@torch.no_grad()
def eval_icl_fast(model, renderer, feats, tasks, shots=(0, 16), n=100, seed=0, batch=8):
    """First-token accuracy over each task's candidates at each shot count, plus the label-in-demos ceiling."""
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
                for j, ((_qi, qlab), _) in enumerate(qs[lo: lo + batch]):
                    correct += words[logits[j].argmax().item()] == mapping[qlab[key]]
            out[f"{task}@{k}"] = round(correct / n, 3)
            if k:
                out[f"{task}@{k}_label_in_demos"] = round(ceiling / n, 3)
    return out


def describe_correct(text: str, colour: str, shape: str) -> tuple[bool, bool]:
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
    examples: list[dict] = []
    for lo in range(0, len(lab), batch):
        chunk = lab[lo: lo + batch]
        ims = [[Image.open(paths[i]).convert("RGB")] for i, _ in chunk]
        enc = processor(text=[text] * len(chunk), images=ims, return_tensors="pt", padding=True)
        enc["pixel_values"] = enc["pixel_values"].to(model.dtype)
        gen = model.generate(**enc, max_new_tokens=12, do_sample=False)
        outs = tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for (i, (c, s)), o in zip(chunk, outs, strict=True):
            kc, ks = describe_correct(o, c, s)
            oc, os_, ob = oc + kc, os_ + ks, ob + (kc and ks)
            if len(examples) < 8:
                examples.append({"image": i, "truth": f"{c} {s}", "output": o})
    m = len(lab)
    return {"n": m, "colour": round(oc / m, 4), "shape": round(os_ / m, 4), "both": round(ob / m, 4),
            "instruction": instruction, "examples": examples}


@torch.no_grad()
def eval_icl_hf(lm, tasks, shots=(0, 16), n=100, seed=0, batch=8):
    """ICL accuracy (first-token argmax over the task's candidates) of a loaded model (`load_model` of the
    assembled checkpoint) through m2iv's PromptBuilder + processor."""
    from m2iv.data.prompts import PromptBuilder
    from m2iv.data.sample import Sample

    model, processor = lm.model, lm.processor
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
                correct += sum(words[j] == t for j, t in zip(logits.argmax(-1).tolist(), truth, strict=True))
            out[f"{task}@{k}"] = round(correct / n, 3)
    return out
