"""Answering a batch of test queries: demonstrations chosen, images checked (a bad one is skipped or stops the
run), prompts built, the model generating greedily until its end-of-turn tokens; one predictions row per query
(prediction, raw text, the prompt text, its tokens and the generated ones, latency)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from m2iv.data.images import ImageError, open_image
from m2iv.data.prompts import PromptBuilder
from m2iv.data.sample import Sample
from m2iv.data.selection import Selector
from m2iv.data.tasks import Task, postprocess
from m2iv.models.families import end_of_turn_tokens
from m2iv.progress import Bar

if TYPE_CHECKING:
    from m2iv.evaluate.runner import EvalConfig


class ImageCheck:
    """Opens each image once; remembers the good ones."""

    def __init__(self) -> None:
        self.good: set[str] = set()

    def first_bad(self, paths: list[str]) -> ImageError | None:
        for p in paths:
            if p in self.good:
                continue
            try:
                open_image(p)
            except ImageError as e:
                return e
            self.good.add(p)
        return None


def eos_ids(lm) -> list[int]:
    """The tokenizer's EOS plus the family's end-of-turn tokens (the adapter table) that its vocabulary has."""
    tok = lm.tokenizer
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    for t in end_of_turn_tokens(lm.family):
        i = tok.convert_tokens_to_ids(t)
        if isinstance(i, int) and i != tok.unk_token_id and i >= 0:
            ids.add(i)
    return sorted(ids)


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Answerer:
    lm: Any
    task: Task
    cfg: EvalConfig
    builder: PromptBuilder
    selector: Selector | None
    n_demos: int
    method: Any  # m2iv.methods.Method: it encodes the prompts and decodes (ICL, a parallel product of experts)
    checker: ImageCheck = field(default_factory=ImageCheck)
    eos: list[int] = field(default_factory=list)
    quiet: bool = False
    bar: Bar | None = None  # warnings are written above the progress line

    def prompts(self, chunk: list[Sample]) -> tuple[list[dict], list[tuple], ImageError | None]:
        """Skipped rows, (query, demos) to answer, and the bad image that stops the run (if any)."""
        rows: list[dict] = []
        prompts: list[tuple] = []
        for q in chunk:
            demos = self.selector.select(q, self.n_demos) if self.selector else []
            bad = self.checker.first_bad([p for d in demos for p in d.images] + list(q.images))
            if bad is not None:
                if self.cfg.on_bad_image == "stop":
                    return rows, prompts, bad  # answer the queries before it, keep them, then stop
                if not self.quiet:
                    (self.bar.write if self.bar else _warn)(f"warning: skipping {q.id}: {bad}")
                rows.append({"id": q.id, "skipped": True, "error": str(bad)})
                continue
            prompts.append((q, demos))
        return rows, prompts, None

    def answer(self, pairs: list[tuple], handle, key) -> list[dict]:
        """Generate the answers of one batch of (query, demos): one row per query (the method's own decoding)."""
        lm, task = self.lm, self.task
        batch = self.method.encode(lm, self.builder, pairs)
        prompt_texts = batch.pop("prompt_text", None) or [None] * len(pairs)
        t0 = time.perf_counter()
        new, n_tokens = self.method.generate(lm, batch, handle, max_new_tokens=task.max_new_tokens, do_sample=False,
                                             eos_token_id=self.eos, pad_token_id=lm.tokenizer.pad_token_id)
        ms = (time.perf_counter() - t0) * 1000 / len(pairs)
        texts = lm.tokenizer.batch_decode(new, skip_special_tokens=True)
        n_out = [_generated(row, self.eos) for row in new.tolist()]
        fired = getattr(handle, "fired", None) or [None] * len(pairs)  # per row: did the vectors' condition fire
        return [{"id": q.id, "prediction": postprocess(task, raw), "raw": raw, "answers": list(q.answers),
                 "demos": [d.id for d in demos], **({"prompt": text} if text is not None else {}),
                 "prompt_tokens": int(n), "output_tokens": k, "latency_ms": round(ms, 3),
                 **({"route": key} if key is not None else {}), **({"condition_fired": f} if f is not None else {})}
                for (q, demos), text, raw, n, k, f in zip(pairs, prompt_texts, texts, n_tokens, n_out, fired,
                                                          strict=True)]


def _generated(tokens: list[int], eos: list[int]) -> int:
    """Tokens generated for one row: up to and including its first end-of-sequence token (the rest is padding)."""
    return next((i + 1 for i, t in enumerate(tokens) if t in eos), len(tokens))
