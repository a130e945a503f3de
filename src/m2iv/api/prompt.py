"""Model inputs for questions about images, built as a task builds its zero-shot prompts (chat template, image
markup, left padding), so what you generate from is what `m2iv eval` and the trainer see.

    inputs = m2iv.prompt(lm, "What colour is the shape?", images=["shape.png"])
    query_start = inputs.pop("query_start")           # where each row's query begins (the `query` token policy)
    out = lm.model.generate(**inputs, max_new_tokens=10)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from m2iv.data.memory import samples_from_records
from m2iv.data.prompts import PromptBuilder
from m2iv.errors import M2IVError
from m2iv.models.loading import LoadedModel


def prompt(lm: LoadedModel, questions: str | Sequence[str], images: Sequence[Any] | None = None,
           task=None) -> dict:
    """Encoded zero-shot prompts (input_ids, attention_mask, pixel values, ..., and query_start) for `questions`;
    `images` holds one image (path or PIL image) or one list of images per question."""
    qs = [questions] if isinstance(questions, str) else list(questions)
    per = [[] for _ in qs] if images is None else list(images) if not isinstance(questions, str) else [images]
    if len(per) != len(qs):
        raise M2IVError(f"{len(qs)} question(s) but {len(per)} image entr(ies); give one image or list per question")
    rows = [{"question": q, "images": im if isinstance(im, (list, tuple)) else [im], "answer": "-"}
            for q, im in zip(qs, per, strict=True)]
    samples = samples_from_records(rows)
    instruction = task.instruction if task is not None else "{question}"
    builder = PromptBuilder(lm, instruction, task.answer_template if task is not None else "{answer}")
    batch = builder.encode([builder.build([], s) for s in samples])
    return {k: v.to(lm.device) if hasattr(v, "to") and k != "query_start" else v for k, v in batch.items()}
