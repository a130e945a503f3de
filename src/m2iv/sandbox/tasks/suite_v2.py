"""Suite v2 on the sandbox: four tasks that stress what suite v1 (suite.py) does not.

- sandbox-vqa: easy-vqa's own open-ended questions and answers (yes/no, colour, shape), scored with the
  official VQA accuracy. easy-vqa gives one answer per question, so each reference list holds that one
  answer and the metric reduces to exact match after the official answer normalisation.
- sandbox-caption: a fixed caption style built from the image's labels ("a simple drawing of a red
  triangle on a white background"), three reference phrasings, scored with CIDEr-D (a corpus metric).
- sandbox-colour-caps: a function the language model already knows (writing a word in capitals) applied
  to the image's colour ("RED"); the instruction does not say so, the demonstrations reveal it.
- sandbox-pair-nonce: 24 colour x shape classes, each mapped to an invented word: 16 demonstrations show
  about half of the classes, so in-context learning stays far below its ceiling until many shots.

Demonstrations and training queries come from easy-vqa's train images, test queries from its test images.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

from m2iv.data.sample import Sample
from m2iv.sandbox.labels import COLOURS, SHAPES, image_labels, image_paths, questions
from m2iv.sandbox.tasks.registration import register_table

CAPTION_INSTRUCTION = "Write a caption for this picture."
CAPTION_TEMPLATES = ("a simple drawing of a {c} {s} on a white background",
                     "a {c} {s} drawn on a plain white background",
                     "the picture shows one {c} {s} on a white background")
# 24 invented words, disjoint from the sandbox's training words and every suite v1 word (tests check it).
PAIR_WORDS = ("bim", "dof", "gax", "hup", "jev", "kos", "nib", "rud", "sek", "tib", "zef", "wem",
              "yot", "zun", "gim", "hes", "jol", "kib", "mub", "nox", "pel", "ruk", "sav", "tog")
PAIRS: dict[tuple[str, str], str] = dict(zip(product(COLOURS, SHAPES), PAIR_WORDS, strict=True))


def vqa(split: str) -> list[Sample]:
    """Every easy-vqa question of the split, with its single answer as the reference list."""
    paths = image_paths(split)
    return [Sample(id=f"{split}-q{i}", images=(paths[img],), question=q, answers=(a,), split=split,
                   meta={"image": img}) for i, (q, a, img) in enumerate(questions(split))]


def _labelled(split: str, answers: Callable[[str, str], tuple[str, ...]], question: str) -> list[Sample]:
    labels, paths = image_labels(split), image_paths(split)
    return [Sample(id=f"{split}-{i}", images=(paths[i],), question=question, answers=answers(c, s), split=split,
                   meta={"colour": c, "shape": s}) for i, (c, s) in sorted(labels.items())]


def caption(split: str) -> list[Sample]:
    return _labelled(split, lambda c, s: tuple(t.format(c=c, s=s) for t in CAPTION_TEMPLATES), CAPTION_INSTRUCTION)


def _eval_instruction() -> str:
    from m2iv.sandbox.episodes import EVAL_INSTRUCTION  # episodes imports torch; registering tasks must not

    return EVAL_INSTRUCTION


def colour_caps(split: str) -> list[Sample]:
    return _labelled(split, lambda c, s: (c.upper(),), _eval_instruction())


def pair_nonce(split: str) -> list[Sample]:
    return _labelled(split, lambda c, s: (PAIRS[c, s],), _eval_instruction())


# name -> (loader(split), metric, postprocess, max_new_tokens, description)
SUITE_V2: dict[str, tuple[Callable[[str], list[Sample]], str, str, int, str]] = {
    "sandbox-vqa": (vqa, "vqa_accuracy", "short_answer", 6,
                    "easy-vqa open-ended questions; one answer each, so VQA accuracy = normalised exact match"),
    "sandbox-caption": (caption, "cider_d", "sentence", 16,
                        "caption in a fixed style ('a simple drawing of a red triangle ...'), 3 references"),
    "sandbox-colour-caps": (colour_caps, "words_match_cased", "sentence", 6,
                            "the colour in capitals ('RED'), instruction silent about it (known function)"),
    "sandbox-pair-nonce": (pair_nonce, "exact_match", "short_answer", 6,
                           "24 colour x shape classes -> invented words (many-shot hungry)"),
}


def register(datasets, tasks, task_cls) -> None:
    """Register the suite v2 tasks (and their dataset loaders) in the given registries."""
    register_table(datasets, tasks, task_cls, SUITE_V2, n_support=256)
