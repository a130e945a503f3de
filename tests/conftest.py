"""Tiny random models of every family (built in code, cached per session) and input builders."""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from m2iv.models.families import FAMILIES  # noqa: E402
from m2iv.models.loading import LoadedModel, load_model  # noqa: E402

ALL_FAMILIES = list(FAMILIES)
VLM_FAMILIES = [f for f, fam in FAMILIES.items() if fam.kind == "vlm"]


@functools.cache
def tiny(family: str) -> LoadedModel:
    return load_model(f"tiny:{family}")


def image(seed: int, size: tuple[int, int] = (40, 30)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def prompt_text(lm: LoadedModel, question: str, n_images: int) -> str:
    content = [{"type": "image"}] * n_images + [{"type": "text", "text": question}]
    msgs = [{"role": "user", "content": content if lm.is_vlm else question}]
    return lm.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True,
                                            chat_template=getattr(lm.processor, "chat_template", None))


def make_inputs(lm: LoadedModel, questions: list[str], n_images: list[int] | None = None, seed: int = 0) -> dict:
    """A (left-padded) batch; sample i carries n_images[i] images (default 1 for VLMs)."""
    if not lm.is_vlm:
        texts = [prompt_text(lm, q, 0) for q in questions]
        return dict(lm.tokenizer(texts, return_tensors="pt", padding=True))
    n_images = n_images or [1] * len(questions)
    texts = [prompt_text(lm, q, n) for q, n in zip(questions, n_images, strict=False)]
    imgs = [[image(seed + 10 * i + j) for j in range(n)] for i, n in enumerate(n_images)]
    lm.tokenizer.padding_side = "left"
    return dict(lm.processor(text=texts, images=imgs, return_tensors="pt", padding=True))


@pytest.fixture(params=ALL_FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture(params=VLM_FAMILIES)
def vlm_family(request) -> str:
    return request.param


def random_vectors(lm: LoadedModel, sites=("attn", "mlp"), operator="linear", scale=0.5, seed=0, **kw):
    from m2iv.vectors import InContextVectors

    vec = InContextVectors.for_model(lm.adapter, sites=sites, operator=operator, **kw)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for site in vec.sites:
            v = vec.vector(site)
            v.copy_(torch.randn(v.shape, generator=g) * scale)
    return vec


def write_samples(root, n: int, n_images: int = 1, prefix: str = "s") -> list:
    """n samples with real PNG files under root; answers cycle through a few colour words."""
    from m2iv.data.sample import Sample

    root.mkdir(parents=True, exist_ok=True)
    colours = ["red", "blue", "green", "yellow"]
    out = []
    for i in range(n):
        paths = []
        for j in range(n_images):
            p = root / f"{prefix}{i}_{j}.png"
            image(1000 + 7 * i + j).save(p)
            paths.append(str(p))
        out.append(Sample(id=f"{prefix}{i}", images=tuple(paths), question=f"What colour is object {i}?",
                          answers=(colours[i % 4],) * 3, split="test"))
    return out


def logits_with(lm: LoadedModel, inputs: dict, steer=None) -> torch.Tensor:
    """Logits of one no-grad forward with `steer` on: vectors to inject, a method's inference context, or None."""
    import contextlib

    from m2iv.vectors import InContextVectors, apply

    if isinstance(steer, InContextVectors):
        steer = apply(lm.model, steer, lm.adapter)
    with torch.no_grad(), steer or contextlib.nullcontext():
        return lm.model(**inputs).logits


def fixture_task():
    """The jsonl task the method tests fit on: short colour answers scored by VQA accuracy."""
    from m2iv.data.tasks import Task

    return Task("fixture", "jsonl", "vqa_accuracy", "test", "test", max_new_tokens=3)


def method_splits(root, n_train: int, n_support: int = 6) -> dict:
    """Train queries and a support pool of demonstrations, with images on disk; no test split needed."""
    return {"train": write_samples(root, n_train, prefix="q"), "support": write_samples(root, n_support, prefix="s"),
            "test": []}


def for_model(lm: LoadedModel, splits: dict) -> dict:
    """Text-only models get the same samples without their images."""
    from dataclasses import replace

    return splits if lm.is_vlm else {k: [replace(s, images=()) for s in v] for k, v in splits.items()}


def write_vqav2(root, n_train: int = 10, n_val: int = 6):
    """A VQAv2 fixture in the official layout (questions + annotations JSON, COCO images), 10 answers each."""
    import json

    colours = ["red", "blue", "green", "yellow"]
    for split, n in (("train", n_train), ("val", n_val)):
        qs, anns = [], []
        img_dir = root / "vqav2" / f"{split}2014"
        img_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image_id = 1000 * (split == "val") + i
            image(image_id).save(img_dir / f"COCO_{split}2014_{image_id:012d}.jpg")
            qid = image_id * 10
            ans = colours[i % 4]
            qs.append({"image_id": image_id, "question": "What colour is it?", "question_id": qid})
            anns.append({"question_id": qid, "image_id": image_id, "question_type": "what color",
                         "answer_type": "other", "multiple_choice_answer": ans,
                         "answers": [{"answer": ans, "answer_confidence": "yes", "answer_id": j}
                                     for j in range(1, 11)]})
        (root / "vqav2" / f"v2_OpenEnded_mscoco_{split}2014_questions.json").write_text(json.dumps({"questions": qs}))
        (root / "vqav2" / f"v2_mscoco_{split}2014_annotations.json").write_text(json.dumps({"annotations": anns}))
    return root


def write_colour_jsonl(root, n: int = 24):
    """A JSONL task file (generic user format) of n images answered red / blue alternately."""
    import json

    rows = []
    for i in range(n):
        p = root / f"img{i}.png"
        image(i).save(p)
        rows.append({"image": str(p), "question": f"What colour is thing {i}?", "answer": ["red", "blue"][i % 2]})
    data = root / "task.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return data


def train_saved(lm: LoadedModel, task, splits: dict, vectors, cfg, out, **kw):
    """`train_vectors`, then the vector directory an M²IV run writes (`LoadedVectors.save`, the one place vectors
    are saved) when the run completed."""
    from m2iv.methods import M2IV
    from m2iv.train.run import train_vectors

    best, info = train_vectors(lm, task, splits, vectors, cfg, out, **kw)
    if info["complete"]:
        M2IV().save(lm, task, best, info, str(out))
    return best, info
