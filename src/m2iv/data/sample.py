"""The unit every dataset loader produces and every prompt builder, metric and method consumes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Sample:
    id: str  # unique within its dataset (e.g. the question id)
    images: tuple[str, ...]  # absolute image paths, in prompt order (may be empty for text tasks)
    question: str  # the question; "" for captioning (the task's prompt supplies the instruction)
    answers: tuple[str, ...]  # every reference: 10 human answers (VQA), 5 captions (COCO), or 1
    split: str = ""
    meta: dict = field(default_factory=dict, compare=False, hash=False)  # question_type, answer_type, ...

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Sample:
        return cls(id=str(d["id"]), images=tuple(d["images"]), question=d["question"], answers=tuple(d["answers"]),
                   split=d.get("split", ""), meta=dict(d.get("meta", {})))


def content_hash(samples: list[Sample]) -> str:
    """Hash of ids, image file names, questions and answers, in order: equal iff the split is the same data."""
    h = hashlib.sha256()
    for s in samples:
        row = [s.id, [p.rsplit("/", 1)[-1] for p in s.images], s.question, list(s.answers)]
        h.update(json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]
