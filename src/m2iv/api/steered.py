"""A model with in-context vectors attached, with PEFT's habits: call it or `generate` with it as with the model,
switch the vectors off for a block with `disable_vectors()`, swap them by assigning `.vectors`.

    steered = SteeredModel(lm, vectors)
    print(steered.answer("What colour is the shape?", images=["shape.png"]))
    out = steered.generate(**inputs, max_new_tokens=10)      # the model's own generate, vectors on
    with steered.disable_vectors():
        plain = steered.generate(**inputs, max_new_tokens=10)
    steered.vectors = m2iv.load_vectors("out/other", adapter=lm.adapter)[0]

The vectors' hooks are attached for each call and removed after it (also after an error), so the wrapped model
is never left altered. Answering leaves the base weights' `requires_grad` as it is (`freeze_base=False`): freezing
is for training, and for answering it changes which matmul kernels PyTorch picks (see `m2iv.vectors.inject`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from m2iv.models.loading import LoadedModel
from m2iv.vectors.inject import apply
from m2iv.vectors.vector import InContextVectors


class SteeredModel:
    def __init__(self, lm: LoadedModel, vectors: InContextVectors | str | Path | None = None,
                 token_policy: str | None = None) -> None:
        self.lm = lm
        self.token_policy = token_policy
        self._vectors: InContextVectors | None = None
        self._enabled = True
        self.vectors = vectors  # the setter also loads a path

    # -- the vectors ------------------------------------------------------------------------------------------
    @property
    def vectors(self) -> InContextVectors | None:
        return self._vectors

    @vectors.setter
    def vectors(self, value: InContextVectors | str | Path | None) -> None:
        """Swap the vectors: an InContextVectors, a vector directory or `library:NAME` (checked against the
        model), or None for the plain model."""
        if value is not None and not isinstance(value, InContextVectors):
            from m2iv.library.resolve import load_spec

            value = load_spec(value, adapter=self.lm.adapter, device=self.lm.device)[0]
        self._vectors = None if value is None else value.to(self.lm.device)

    @contextmanager
    def disable_vectors(self) -> Iterator[None]:
        """The plain model inside the block (as PEFT's `disable_adapter()`)."""
        before, self._enabled = self._enabled, False
        try:
            yield
        finally:
            self._enabled = before

    def _steer(self, query_start=None):
        if self._vectors is None or not self._enabled:
            return nullcontext()
        return _with_positions(apply(self.lm.model, self._vectors, self.lm.adapter,
                                     token_policy=self.token_policy, freeze_base=False), query_start)

    # -- the model's own calls --------------------------------------------------------------------------------
    def __call__(self, *args: Any, query_start=None, **kwargs: Any):
        """The model's forward with the vectors on. `query_start` (column where each row's query begins) is needed
        only by vectors with the `query` token policy; `m2iv.prompt` returns it with the inputs."""
        with self._steer(query_start):
            return self.lm.model(*args, **kwargs)

    def generate(self, *args: Any, query_start=None, **kwargs: Any):
        """The model's `generate` with the vectors on (every argument passes through)."""
        with self._steer(query_start):
            return self.lm.model.generate(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # config, device, ... of the wrapped model
        if name in ("lm", "_vectors", "_enabled", "token_policy"):
            raise AttributeError(name)
        return getattr(self.lm.model, name)

    # -- convenience ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def answer(self, questions: str | Sequence[str], images: Sequence[Any] | None = None, task=None,
               max_new_tokens: int | None = None) -> str | list[str]:
        """Greedy answers to zero-shot prompts built as `task` builds them (default: the question as written); `images`
        are each question's images (paths or PIL images; one per question, or a list per question)."""
        from m2iv.api.prompt import prompt
        from m2iv.data.tasks import postprocess
        from m2iv.evaluate.runner import eos_ids

        single = isinstance(questions, str)
        inputs = prompt(self.lm, questions, images=images, task=task)
        query_start = inputs.pop("query_start")
        limit = max_new_tokens or (task.max_new_tokens if task is not None else 10)
        out = self.generate(**inputs, query_start=query_start, max_new_tokens=limit, do_sample=False,
                            eos_token_id=eos_ids(self.lm), pad_token_id=self.lm.tokenizer.pad_token_id)
        texts = self.lm.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        texts = [postprocess(task, t) if task is not None else t.strip() for t in texts]
        return texts[0] if single else texts


@contextmanager
def _with_positions(steer, query_start) -> Iterator[None]:
    with steer as handle:
        if query_start is not None:
            handle.set_query_start(query_start)
        yield
