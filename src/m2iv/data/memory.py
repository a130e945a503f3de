"""Samples from Python objects: a list of dicts (or `Sample`s) or a `datasets.Dataset`, for tasks built in code.

    samples = samples_from_records([{"image": "cat.png", "question": "What is it?", "answer": "a cat"}])
    samples = samples_from_records([{"image": pil_image, "question": "...", "answers": ["red", "crimson"]}])

A record has `image` or `images` (paths, or PIL images, which are written once as PNG files named by their
content under `$M2IV_HOME/cache/images`, since every prompt builder reads images from paths), `question` (or "" for
captioning), `answer` or `answers`, and optionally `id` (default: its position) and `meta`.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

from m2iv.data.sample import Sample
from m2iv.errors import M2IVError


def image_cache() -> Path:
    from m2iv.constants import m2iv_home

    return m2iv_home() / "cache" / "images"


def _image_path(value: Any, where: str) -> str:
    """A path for one image: a path as given (made absolute), or a PIL image written under `image_cache()`."""
    if isinstance(value, (str, os.PathLike)):
        return os.path.abspath(os.path.expanduser(os.fspath(value)))
    if hasattr(value, "save") and hasattr(value, "mode"):  # a PIL image
        from m2iv.files import write_bytes_atomic

        buf = io.BytesIO()
        value.save(buf, format="PNG")
        data = buf.getvalue()
        path = image_cache() / f"{hashlib.sha256(data).hexdigest()[:24]}.png"
        if not path.is_file():
            write_bytes_atomic(path, data)
        return str(path)
    raise M2IVError(f"{where}: an image must be a file path or a PIL image, not {type(value).__name__}")


def _answers(record: dict, where: str) -> tuple[str, ...]:
    value = record.get("answers", record.get("answer"))
    items = value if isinstance(value, (list, tuple)) else [value]
    out = tuple(str(v).strip() for v in items if v is not None and str(v).strip())
    if not out:
        raise M2IVError(f"{where} has no answer; give 'answer' (a string) or 'answers' (a list of references)")
    return out


def sample_from_record(record: Any, index: int, split: str = "") -> Sample:
    """One record (a dict or a Sample) as a Sample."""
    if isinstance(record, Sample):
        return record
    where = f"record {index}"
    if not isinstance(record, dict):
        raise M2IVError(f"{where} is a {type(record).__name__}; give dicts with image, question and answer keys")
    unknown = sorted(set(record) - {"id", "image", "images", "question", "answer", "answers", "meta"})
    if unknown:
        raise M2IVError(f"{where} has unknown key(s) {unknown}; keys are id, image(s), question, answer(s), meta")
    images = record.get("images", record.get("image"))
    images = [] if images is None else images if isinstance(images, (list, tuple)) else [images]
    default_id = f"{split}-{index}" if split else str(index)
    return Sample(id=str(record.get("id", default_id)), images=tuple(_image_path(v, where) for v in images),
                  question=str(record.get("question") or ""), answers=_answers(record, where), split=split,
                  meta=dict(record.get("meta") or {}))


def samples_from_records(records, split: str = "") -> list[Sample]:
    samples = [sample_from_record(r, i, split) for i, r in enumerate(records)]
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise M2IVError(f"duplicate sample id {dup!r}; ids must be unique (leave 'id' out to number the records)")
    if not samples:
        raise M2IVError("no records; give at least one sample")
    return samples
