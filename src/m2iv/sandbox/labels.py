"""Colour and shape labels of easy-vqa images, derived from the dataset's own question/answer pairs.

easy-vqa states an image's colour or shape directly for only about half the images, so three kinds of
evidence are combined: direct answers ("what color is the shape?" -> blue), presuppositions in questions
("what is the blue shape?" -> the shape is blue), yes/no questions with and without negation ("is there not
a red shape?" no -> red), and elimination (every colour but one ruled out -> the remaining one). Images whose
colour or shape stays unknown are left out of `image_labels`.

    labels = image_labels("test")      # {image_id: ("red", "circle"), ...}
    paths = image_paths("test")        # {image_id: "/.../easy_vqa/data/test/images/0.png", ...}
"""

from __future__ import annotations

import functools
import re

from m2iv.errors import M2IVError

COLOURS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
SHAPES = ("circle", "rectangle", "triangle")
SPLITS = ("train", "test")

_NEGATION = re.compile(r"\b(not|no)\b")


def _easy_vqa():
    try:
        import easy_vqa  # noqa: PLC0415 - optional dependency (the `sandbox` extra)
    except ImportError:
        raise M2IVError("the sandbox needs the easy-vqa dataset; run `pip install easy-vqa`") from None
    return easy_vqa


def _check(split: str) -> None:
    if split not in SPLITS:
        raise M2IVError(f"unknown easy-vqa split {split!r}; use 'train' or 'test'")


@functools.lru_cache(maxsize=2)
def questions(split: str) -> tuple[tuple[str, str, int], ...]:
    """All (question, answer, image_id) triples of a split."""
    _check(split)
    ev = _easy_vqa()
    q, a, ids = ev.get_train_questions() if split == "train" else ev.get_test_questions()
    return tuple(zip(q, a, (int(i) for i in ids), strict=False))


@functools.lru_cache(maxsize=2)
def image_paths(split: str) -> dict[int, str]:
    """{image_id: absolute path of the 64x64 PNG} for every image of the split."""
    _check(split)
    ev = _easy_vqa()
    paths = ev.get_train_image_paths() if split == "train" else ev.get_test_image_paths()
    return {int(k): str(v) for k, v in dict(paths).items()}


def _words(text: str, vocab: tuple[str, ...]) -> list[str]:
    return [w for w in vocab if re.search(rf"\b{w}\b", text)]


def _resolve(pos: set[str], neg: set[str], vocab: tuple[str, ...]) -> str | None:
    if len(pos) == 1:
        return next(iter(pos))
    if len(pos) > 1:  # contradictory evidence: leave the image unlabelled
        return None
    left = [w for w in vocab if w not in neg]
    return left[0] if len(left) == 1 else None


@functools.lru_cache(maxsize=2)
def _all_labels(split: str) -> dict[int, tuple[str | None, str | None]]:
    pos: dict[int, dict[str, set[str]]] = {}
    neg: dict[int, dict[str, set[str]]] = {}
    for q, a, i in questions(split):
        p = pos.setdefault(i, {"c": set(), "s": set()})
        n = neg.setdefault(i, {"c": set(), "s": set()})
        cs, ss = _words(q, COLOURS), _words(q, SHAPES)
        if a in COLOURS:
            p["c"].add(a)
        elif a in SHAPES:
            p["s"].add(a)
        if a in ("yes", "no"):
            present = (a == "yes") != bool(_NEGATION.search(q))
            if len(cs) + len(ss) == 1:  # one attribute asked about: its truth value is known
                for key, words in (("c", cs), ("s", ss)):
                    (p if present else n)[key].update(words)
        else:  # a wh-question presupposes the attributes it names ("what is the blue shape?")
            p["c"].update(cs)
            p["s"].update(ss)
    return {i: (_resolve(pos[i]["c"], neg[i]["c"], COLOURS), _resolve(pos[i]["s"], neg[i]["s"], SHAPES))
            for i in sorted(pos)}


def partial_labels(split: str) -> dict[int, tuple[str | None, str | None]]:
    """{image_id: (colour or None, shape or None)} for every image that has a question."""
    return dict(_all_labels(split))


def image_labels(split: str) -> dict[int, tuple[str, str]]:
    """{image_id: (colour, shape)} for the images whose colour and shape both follow from the QA pairs."""
    return {i: (c, s) for i, (c, s) in _all_labels(split).items() if c is not None and s is not None}
