"""Bounds on one sample, checked as it is read, before a tokenizer, a prompt or a model sees it.

A 10 MB question tokenizes to millions of tokens, and the attention over them asked for 56 TB before failing
after minutes. No benchmark comes near these bounds (VQA questions are under 300 characters, captions under
500); each can be raised with its environment variable for data that needs more:

    M2IV_MAX_QUESTION_CHARS   8192 characters in a question (about 2,000 tokens)
    M2IV_MAX_ANSWER_CHARS     2048 characters in one answer or reference caption
    M2IV_MAX_ANSWERS          100 answers (references) per sample
    M2IV_MAX_IMAGES           16 images per sample
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from m2iv.errors import M2IVError

DEFAULTS = {"M2IV_MAX_QUESTION_CHARS": 8192, "M2IV_MAX_ANSWER_CHARS": 2048, "M2IV_MAX_ANSWERS": 100,
            "M2IV_MAX_IMAGES": 16}
MAX_LINE_BYTES = 64 << 20  # a JSONL line longer than this is refused before it is parsed


def limit(name: str) -> int:
    """The bound `name` (a key of DEFAULTS): its environment variable if set, else the default."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return DEFAULTS[name]
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise M2IVError(f"{name}={raw!r} is not a positive integer; set it to a count such as {DEFAULTS[name]} or "
                        "unset it")
    return value


def check_sizes(question: str, answers: Sequence[str], n_images: int, where: str) -> None:
    """Refuse a sample over a bound, in one line naming `where` (file and line, or dataset and id) and the bound."""
    checks = [("M2IV_MAX_QUESTION_CHARS", len(question), "the question has {n} characters"),
              ("M2IV_MAX_ANSWERS", len(answers), "it has {n} answers"),
              ("M2IV_MAX_ANSWER_CHARS", max((len(a) for a in answers), default=0), "an answer has {n} characters"),
              ("M2IV_MAX_IMAGES", n_images, "it has {n} images")]
    for name, n, what in checks:
        bound = limit(name)
        if n > bound:
            raise M2IVError(f"{where}: {what.format(n=n)}, over the limit of {bound}; shorten or remove the row "
                            f"(or raise {name})")
