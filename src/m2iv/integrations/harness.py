"""What an evaluation harness asks of a model, answered by m2iv: greedy generation and continuation
log-likelihoods for (demonstrations, query) prompts, with vectors injected when given.

    model = HarnessModel(load_model("sandbox"), vectors="out/colour")
    texts = model.generate([(query, demos)], max_new_tokens=8, until=["\\n"])
    scores = model.loglikelihood([(query, demos, " red")])        # [(log p, is_greedy)]

Prompts are m2iv's own (data/prompts.py: the model's chat template, images inline, demonstrations as earlier
turns), so a harness result equals `m2iv eval` on the same data; the vectors go in through the same method
(`LoadedVectors`) and hooks as there.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from m2iv.data.prompts import PromptBuilder
from m2iv.data.sample import Sample
from m2iv.evaluate.runner import eos_ids
from m2iv.methods.base import LoadedVectors


class HarnessModel:
    def __init__(self, lm, vectors: str | None = None, strict: bool = True) -> None:
        self.lm = lm
        self.builder = PromptBuilder(lm)
        self.eos = eos_ids(lm)
        self.method: LoadedVectors | None = None
        if vectors:
            self.method = LoadedVectors({"vectors": str(vectors), "strict": strict})
            self.method.prepare(lm, None, {})

    def _steered(self):
        return self.method.inference(self.lm) if self.method is not None else nullcontext(None)

    def _encode(self, prompts, handle) -> dict:
        batch = self.builder.encode(prompts)
        query_start = batch.pop("query_start")
        if handle is not None:
            handle.set_query_start(query_start)
        return {k: v.to(self.lm.device) for k, v in batch.items()}

    @torch.no_grad()
    def generate(self, items: list[tuple[Sample, list[Sample]]], max_new_tokens: int = 32,
                 until: list[str] | None = None, temperature: float = 0.0) -> list[str]:
        """One batch: the answer of each (query, demonstrations), cut at the first `until` string."""
        prompts = [self.builder.build(demos, q) for q, demos in items]
        tok = self.lm.tokenizer
        with self._steered() as handle:
            batch = self._encode(prompts, handle)
            sample = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
            out = self.lm.model.generate(**batch, max_new_tokens=max_new_tokens, eos_token_id=self.eos,
                                         pad_token_id=tok.pad_token_id, **sample)
        texts = tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        return [_cut(t, until or []) for t in texts]

    @torch.no_grad()
    def loglikelihood(self, items: list[tuple[Sample, list[Sample], str]]) -> list[tuple[float, bool]]:
        """One batch: log p(continuation | prompt) summed over its tokens, and whether greedy decoding gives it."""
        prompts = [self.builder.build(demos, q, answer=cont) for q, demos, cont in items]
        with self._steered() as handle:
            batch = self._encode(prompts, handle)
            labels = batch.pop("labels")
            logits = self.lm.model(**batch).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        target = labels[:, 1:]
        mask = target != -100
        picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        greedy = (logp.argmax(-1) == target) | ~mask
        return [(float((picked[i] * mask[i]).sum()), bool(greedy[i].all())) for i in range(len(items))]


def _cut(text: str, until: list[str]) -> str:
    """`text` up to the first stop string (lmms-eval's and lm-eval's `until`)."""
    cut = min((text.index(s) for s in until if s and s in text), default=len(text))
    return text[:cut]
