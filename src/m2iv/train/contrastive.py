"""Contrastive training data: the queries vectors must leave alone are trained towards the plain model's answer.

With `teacher.negatives = "zero-shot"`, a training query labelled meta["condition"] = False (an ordinary request
beside harmful ones) keeps what the model without vectors says: its answer becomes the plain model's greedy
zero-shot answer, and the teacher reads it with no demonstrations (train/teacher.py), so the mimicry and the
supervised loss both ask the vectors not to change it. The other queries keep their references.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from m2iv.data.prompts import PromptBuilder
from m2iv.data.sample import Sample
from m2iv.errors import M2IVError


def is_negative(sample: Sample) -> bool:
    return (sample.meta or {}).get("condition") is False


@torch.no_grad()
def own_answers(lm, builder: PromptBuilder, samples: list[Sample], max_new_tokens: int, batch_size: int = 8
                ) -> list[Sample]:
    """`samples` with every negative's answer replaced by the plain model's greedy answer (the rest unchanged)."""
    negatives = [s for s in samples if is_negative(s)]
    if not negatives:
        raise M2IVError("contrastive training (teacher negatives = zero-shot) needs training queries labelled "
                        "meta['condition'] = false (the ones the vectors must leave alone); the task has none")
    answers: dict[str, str] = {}
    for i in range(0, len(negatives), batch_size):
        chunk = negatives[i:i + batch_size]
        batch = builder.encode([builder.build([], q) for q in chunk])
        batch.pop("query_start", None)
        batch = {k: v.to(lm.device) for k, v in batch.items()}
        gen = lm.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=lm.tokenizer.pad_token_id)
        texts = lm.tokenizer.batch_decode(gen[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        answers.update({q.id: t.strip() for q, t in zip(chunk, texts, strict=True)})
    empty = [q.id for q in negatives if not answers[q.id]]
    if empty:
        raise M2IVError(f"the plain model answers nothing to training query {empty[0]}; contrastive training needs "
                        "an answer to keep (raise the task's max_new_tokens)")
    return [replace(s, answers=(answers[s.id],)) if s.id in answers else s for s in samples]


__all__ = ["is_negative", "own_answers"]
