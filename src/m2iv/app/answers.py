"""The model behind the page: one query answered zero-shot, with N demonstrations (ICL), steered by an entry's
vectors and steered by a composition of entries made in memory; and search by example.

Answers are made the way `m2iv eval` makes them (the task's prompt, greedy decoding, the task's answer
post-processing, the runner's end-of-turn tokens), one query at a time, timed around `generate`. The model is
loaded on first use and serves one request at a time (hooks on a shared model must not interleave).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from m2iv.app.catalog import Catalog
from m2iv.data.images import ImageError, open_image
from m2iv.data.prompts import PromptBuilder, shots_that_fit
from m2iv.data.sample import Sample
from m2iv.data.selection import RandomSelector
from m2iv.data.tasks import Task, get_task, postprocess
from m2iv.errors import M2IVError
from m2iv.evaluate.runner import eos_ids
from m2iv.library.compose import Term, combine
from m2iv.library.entry import Entry
from m2iv.library.search import SearchHit, search
from m2iv.vectors.compat import compat_reason
from m2iv.vectors.inject import apply

DEFAULT_SHOTS = 4  # ICL shots for an entry that does not record its teacher's


@dataclass
class Answer:
    way: str  # "zero-shot", "4-shot ICL", "steered by NAME", "composed: EXPR"
    text: str
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    note: str = ""


def check_image(path: str | Path | None) -> str | None:
    """The path of a readable image (decoded in full now), None for no image; a non-image is a one-line error."""
    if not path:
        return None
    try:
        open_image(path)
    except ImageError as e:
        name = Path(path).name
        cause = str(e).split(" (", 1)[-1].rsplit("); ", 1)[0].replace(str(path), name)  # the upload's temp path
        raise M2IVError(f"{name} is not an image m2iv can read ({cause}); upload a PNG, JPEG, GIF, BMP or WebP "
                        "file") from None
    return str(path)


def _plain_task(name: str | None) -> Task:
    """A stand-in for an entry whose task is unknown here: the VQA prompt, exact match, short answers."""
    return Task(name=name or "(no task)", dataset="", metric="exact_match", test_split="", support_split="")


class Session:
    """The model the page answers with (`spec`, else the base model most entries were made for)."""

    def __init__(self, catalog: Catalog, spec: str | None = None, dtype: str = "float32", device: str = "cpu",
                 data_root: str | None = None, seed: int = 0, loader=None) -> None:
        self.catalog, self.requested = catalog, spec
        self.dtype, self.device, self.data_root, self.seed = dtype, device, data_root, seed
        self.loader = loader
        self.lock = threading.RLock()
        self._lm: Any = None
        self._tasks: dict[str, tuple[Task, dict | None, str]] = {}

    @property
    def spec(self) -> str:
        if self.requested:
            return self.requested
        models = Counter(e.base_model for e in self.catalog.entries() if e.base_model)
        if not models:
            raise M2IVError("no model to answer with: the library names none; start the app with "
                            "`m2iv library serve MODEL`")
        return models.most_common(1)[0][0]

    def lm(self):
        """The loaded model (loaded now on first use)."""
        with self.lock:
            if self._lm is None:
                spec = self.spec
                if self.loader is not None:
                    self._lm = self.loader(spec)
                else:
                    from m2iv.models.loading import load_model

                    self._lm = load_model(spec, dtype=self.dtype, device=self.device)
            return self._lm

    @property
    def loaded(self) -> bool:
        return self._lm is not None

    def check(self, entry: Entry) -> None:
        """Refuse an entry made for another model, naming both and how to serve the entry's."""
        lm = self.lm()
        why = compat_reason(entry.config, lm.adapter, strict=True, raise_error=False,
                            what=f"the vectors of {entry.name}")
        if why:
            raise M2IVError(f"entry {entry.name} is for {entry.base_model or entry.model_type}, not for {lm.spec}, "
                            f"the model this page answers with ({why.split(';')[0]}); start the app with "
                            f"`m2iv library serve {entry.base_model or 'MODEL'}` to try it")

    def task(self, name: str | None) -> tuple[Task, dict | None, str]:
        """(the task, its splits or None, why there are none) — looked up once per task."""
        key = name or ""
        if key not in self._tasks:
            task, splits, note = _plain_task(name), None, ""
            if not name:
                note = "the entry names no task: the plain VQA prompt is used and there are no demonstrations"
            else:
                try:
                    task = get_task(name)
                    splits = task.splits(self.data_root, seed=self.seed)
                except M2IVError as e:
                    note = f"no data for task {name}: {e}"
            self._tasks[key] = (task, splits, note)
        return self._tasks[key]

    def examples(self, task_name: str | None, n: int = 12) -> list[Sample]:
        """Up to n held-out queries of the task (its test split) to pick an image and question from."""
        _, splits, _ = self.task(task_name)
        if not splits:
            return []
        pool = splits.get("test") or splits.get("support") or []
        return [s for s in pool if s.images][:n]


def _query(image: str | None, question: str) -> Sample:
    if not image and not (question or "").strip():
        raise M2IVError("give an image or a question (or both) to answer")
    return Sample(id="app-query", images=(image,) if image else (), question=(question or "").strip(), answers=())


def answer_one(lm, task: Task, query: Sample, demos: list[Sample] | None = None, vectors=None, way: str = "",
               note: str = "") -> Answer:
    """One greedy answer as `m2iv eval` makes it, with its latency (generate only) and prompt tokens."""
    builder = PromptBuilder(lm, task.instruction, task.answer_template)
    batch = builder.encode([builder.build(list(demos or []), query)])
    query_start = batch.pop("query_start")
    batch = {k: v.to(lm.model.device) for k, v in batch.items()}
    steer = apply(lm.model, vectors, lm.adapter, freeze_base=False) if vectors is not None else nullcontext()
    with torch.no_grad(), steer as handle:
        if handle is not None and hasattr(handle, "set_query_start"):
            handle.set_query_start(query_start)
        t0 = time.perf_counter()
        out = lm.model.generate(**batch, max_new_tokens=task.max_new_tokens, do_sample=False, eos_token_id=eos_ids(lm),
                                pad_token_id=lm.tokenizer.pad_token_id)
        ms = (time.perf_counter() - t0) * 1000
    raw = lm.tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return Answer(way=way, text=postprocess(task, raw), latency_ms=round(ms, 1),
                  prompt_tokens=int(batch["attention_mask"].sum()), note=note)


def _icl(session: Session, lm, task: Task, splits: dict | None, note: str, query: Sample, shots: int) -> Answer:
    if shots <= 0:
        return Answer(way="ICL", text="", note="0 shots asked for: ICL is zero-shot")
    support = (splits or {}).get("support") or []
    if not support:
        return Answer(way="ICL", text="", note=note or f"task {task.name} has no support data for demonstrations")
    selector = RandomSelector(support, seed=session.seed)
    eligible = [s for s in support if s.id != query.id and not set(s.images) & set(query.images)]
    demos = selector.select(query, min(shots, len(eligible)))
    fit = shots_that_fit(PromptBuilder(lm, task.instruction, task.answer_template), demos, query)
    why = "" if fit == shots else f"{shots} asked for, {fit} fit (support set or context window)"
    return answer_one(lm, task, query, demos[:fit], way=f"{fit}-shot ICL", note=why)


def try_entry(session: Session, ref: str, image: str | None, question: str, shots: int) -> list[Answer]:
    """The same query answered zero-shot, with `shots` demonstrations of the entry's task, and steered."""
    entry = session.catalog.get(ref)
    session.check(entry)
    query = _query(image, question)
    with session.lock:
        lm = session.lm()
        vectors, _ = session.catalog.load(entry.id, adapter=lm.adapter, device=lm.model.device)
        task, splits, note = session.task(entry.task)
        return [answer_one(lm, task, query, way="zero-shot", note=note if not splits else ""),
                _icl(session, lm, task, splits, note, query, shots),
                answer_one(lm, task, query, vectors=vectors, way=f"steered by {entry.name}")]


def compose_answer(session: Session, terms: list[tuple[str, float]], image: str | None, question: str
                   ) -> tuple[Answer, dict]:
    """The answer steered by the weighted sum of entries (made in memory, nothing saved), and its recipe."""
    if not terms:
        raise M2IVError("pick at least one entry to compose")
    query = _query(image, question)
    with session.lock:
        lm = session.lm()
        for ref, _ in terms:
            session.check(session.catalog.get(ref))
        vectors, provenance, entries = combine(session.catalog, [Term(float(w), ref) for ref, w in terms])
        task, _, _ = session.task(entries[0].task)  # the first entry's prompt, so its zero-shot answer compares
        others = sorted({e.task or "no task" for e in entries[1:]} - {entries[0].task or "no task"})
        note = f"asked with the prompt of {entries[0].name}'s task ({task.name})" if others else ""
        answer = answer_one(lm, task, query, vectors=vectors.to(lm.model.device),
                            way=f"composed: {provenance['expression']}", note=note)
    return answer, provenance


def search_example(session: Session, image: str | None, question: str, top: int = 5) -> list[SearchHit]:
    """The entries nearest to the example (cosine to their task prototypes), compatible with the model."""
    query = _query(image, question)
    with session.lock:
        return search(session.catalog, lm=session.lm(), example=query, limit=max(1, int(top)))


__all__ = ["Answer", "Session", "answer_one", "check_image", "compose_answer", "search_example", "try_entry"]
