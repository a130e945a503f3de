"""Finding entries: by fields, by text, by compatibility with a model, and by example.

A task prototype is the mean of the L2-normalised embeddings of up to N of the task's training
queries, each embedded by the model itself (`model_embedder`: mean hidden state of a middle decoder
layer over the zero-shot prompt, image features and question together). Every prompt is built with
the plain "{question}" instruction, so prototypes of different tasks and a user's example live in
one space. Search by example embeds the (image, question) sample the same way and ranks the
compatible entries by cosine similarity to their prototypes; `route` does that for a batch.

    hits = lib.search(lm=lm, example=Sample("q", ("cat.png",), "What colour is it?", ()))
    ids = lib.route(lm, test_samples)         # per sample, the entry whose prototype is nearest
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from m2iv.data.sample import Sample, content_hash
from m2iv.errors import M2IVError
from m2iv.library.entry import Entry
from m2iv.vectors.compat import compat_reason

DEFAULT_PROTOTYPE_N = 32


@dataclass
class SearchHit:
    entry: Entry
    score: float | None  # cosine to the prototype (by example) or the share of text words matched
    note: str = ""

    def to_json(self) -> dict:
        return {"score": self.score, "note": self.note, **self.entry.to_json()}


def example_sample(image: str | Path | None, question: str) -> Sample:
    images: tuple[str, ...] = ()
    if image is not None:
        path = Path(image).expanduser()
        if not path.is_file():
            raise M2IVError(f"no image at {path}; give the path of an image file")
        images = (str(path.resolve()),)
    return Sample(id="example", images=images, question=question or "", answers=())


def embedder(lm, embed=None):
    """The library's embedding function for `lm` (plain '{question}' prompts, middle layer)."""
    if embed is not None:
        return embed
    from m2iv.data.prompts import PromptBuilder
    from m2iv.data.selection import model_embedder

    return model_embedder(lm, PromptBuilder(lm))


def embedder_info(lm, custom: bool = False) -> dict:

    return {"embedder": "custom" if custom else "model_embedder", "layer": lm.adapter.num_layers // 2,
            "model": lm.spec, "weights_fingerprint": lm.fingerprint}


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _embed(lm, samples: list[Sample], embed=None) -> np.ndarray:
    emb = embedder(lm, embed)(list(samples))
    emb = emb.detach().float().cpu().numpy() if hasattr(emb, "detach") else np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(samples):
        raise M2IVError(f"the embedder returned shape {emb.shape} for {len(samples)} samples; expected (N, E)")
    return _normalise(emb)


def compute_prototype(lm, samples: list[Sample], n: int = DEFAULT_PROTOTYPE_N, embed=None) -> tuple[np.ndarray, dict]:
    """Mean normalised embedding of the first `n` samples under `lm`, and how it was made."""
    samples = list(samples)[:n]
    if not samples:
        raise M2IVError("a task prototype needs at least one query; the task has none to embed")
    proto = _embed(lm, samples, embed).mean(axis=0).astype(np.float32)
    return proto, {**embedder_info(lm, custom=embed is not None), "n": len(samples),
                   "samples": content_hash(samples)}


class TaskLike(Protocol):
    """What a prototype needs of a task (m2iv.data.tasks.Task is one); the caller resolves names, so the
    library does not import the evaluation room."""

    name: str

    def splits(self, root=None, seed: int = 0) -> dict[str, list[Sample]]: ...


def task_prototype(lm, task: TaskLike, data_root=None, n: int = DEFAULT_PROTOTYPE_N, seed: int = 0, embed=None
                   ) -> tuple[np.ndarray, dict]:
    """Prototype of a task (a Task: `m2iv.data.tasks.get_task(name)`) from its train queries."""
    if not hasattr(task, "splits"):
        raise M2IVError(f"a task prototype needs a Task, not {task!r}; pass m2iv.data.tasks.get_task({task!r})")
    splits = task.splits(data_root, seed=seed)
    pool = splits.get("train") or splits.get("support") or splits.get("test") or []
    proto, info = compute_prototype(lm, pool, n=n, embed=embed)
    return proto, {**info, "task": task.name, "split": next(k for k in ("train", "support", "test") if splits.get(k))}


def _text_score(entry: Entry, words: list[str]) -> float:
    hay = " ".join([entry.name, entry.description, entry.task or "", entry.method, entry.base_model,
                    *entry.tags]).lower()
    return sum(w in hay for w in words) / len(words)


def _candidates(lib, lm, entries: list[Entry], strict: bool, dim: int | None, custom: bool
                ) -> tuple[list[Entry], str]:
    """Compatible entries with a prototype of dimension `dim`, preferring those embedded by the same weights."""
    with_proto = [e for e in entries if e.prototype is not None and (dim is None or e.prototype.shape[0] == dim)]
    if custom or not with_proto:
        return with_proto, ""

    wf = lm.fingerprint
    same = [e for e in with_proto if (e.prototype_info or {}).get("weights_fingerprint") == wf]
    if same:
        return same, ""
    return with_proto, "prototype embedded by other weights of this architecture"


def search(lib, *, lm=None, task: str | None = None, method: str | None = None, tag: str | list[str] | None = None,
           text: str | None = None, example: Sample | None = None, embed=None, strict: bool = True,
           limit: int | None = None) -> list[SearchHit]:
    """Entries matching the filters; with `lm` only those applicable to it; ranked by `example`
    (cosine to prototypes, needs `lm`) or by `text` (share of words found), else oldest first."""
    entries = lib.entries(task=task, method=method, tag=tag)
    if lm is not None:
        entries = [e for e in entries if compat_reason(e.config, lm.adapter, strict, raise_error=False) is None]
    hits = [SearchHit(e, None) for e in entries]
    if text:
        words = [w for w in text.lower().split() if w]
        hits = [SearchHit(h.entry, _text_score(h.entry, words)) for h in hits]
        hits = sorted((h for h in hits if h.score), key=lambda h: -(h.score or 0.0))
    if example is not None:
        if lm is None:
            raise M2IVError("search by example needs the model that embeds it; pass --model MODEL")
        q = _embed(lm, [example], embed)[0]
        pool, note = _candidates(lib, lm, [h.entry for h in hits], strict, q.shape[0], embed is not None)
        if not pool:
            raise M2IVError("no compatible library entry has a task prototype to compare the example with; add "
                            "entries with --prototype-from TASK")
        sims = _normalise(np.stack([e.prototype for e in pool if e.prototype is not None])) @ q
        text_scores = {h.entry.id: h.score for h in hits}
        hits = [SearchHit(e, float(s), note if not text else f"text {text_scores[e.id]:.2f}; {note}".strip("; "))
                for e, s in zip(pool, sims, strict=True)]
        hits.sort(key=lambda h: -(h.score or 0.0))
    return hits[:limit] if limit else hits


def route(lib, lm, samples: list[Sample], embed=None, strict: bool = True) -> list[str]:
    """Per sample, the id of the compatible entry whose prototype is most similar (batched search by example)."""
    samples = list(samples)
    if not samples:
        return []
    entries = [e for e in lib.entries() if compat_reason(e.config, lm.adapter, strict, raise_error=False) is None]
    emb = _embed(lm, samples, embed)
    pool, _ = _candidates(lib, lm, entries, strict, emb.shape[1], embed is not None)
    if not pool:
        raise M2IVError(f"no library entry in {lib.root} is compatible with {lm.spec} and has a task prototype; "
                        "add entries with `m2iv library add DIR --prototype-from TASK`")
    sims = emb @ _normalise(np.stack([e.prototype for e in pool if e.prototype is not None])).T  # (N, M)
    return [pool[i].id for i in sims.argmax(axis=1).tolist()]
