"""A small library for the app's tests, built in seconds on tiny:idefics3 (`python tests/_app_library.py ROOT`).

Entries: `colour-m2iv`, M²IV trained 8 steps on a slice of easy-vqa (so it has a real training log), and
`shape-random`, random vectors; both for easy-vqa, with task prototypes for search by example; `mix`, a
composition of the two; and `other-model`, random vectors of tiny:llava (an entry for another model).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from conftest import random_vectors, tiny, train_saved  # noqa: E402
from m2iv.data.tasks import get_task  # noqa: E402
from m2iv.library.store import Library  # noqa: E402
from m2iv.methods import M2IV  # noqa: E402
from m2iv.train.config import TeacherConfig, TrainConfig  # noqa: E402
from m2iv.vectors import save_vectors  # noqa: E402

MODEL = "tiny:idefics3"


def build(root: Path, work: Path) -> Path:
    """Build the library at `root` (scratch files under `work`); returns `root`."""
    lm = tiny("idefics3")
    task = get_task("easy-vqa")
    splits = task.splits(seed=0)
    small = {"train": splits["train"][:20], "support": splits["support"][:8], "test": []}
    task = replace(task, max_new_tokens=3)
    cfg = TrainConfig(steps=8, batch_size=4, lr_vectors=0.05, lr_scales=0.05, val_every=4, val_size=4,
                      checkpoint_every=8, teacher=TeacherConfig(shots=2, topk=16), warmup=0.0)
    trained = work / "colour-m2iv"
    train_saved(lm, task, small, M2IV().make_vectors(lm), cfg, trained, method_config={"shots": 2},
                  show_progress=False)
    shape = save_vectors(random_vectors(lm, seed=3, scale=0.3), work / "shape-random", adapter=lm.adapter,
                         base_model=MODEL, method_config={"task": "easy-vqa"}, metrics={"acc": 0.25})
    other = tiny("llava")
    elsewhere = save_vectors(random_vectors(other, seed=4), work / "other-model", adapter=other.adapter,
                             base_model="tiny:llava", method_config={"task": "easy-vqa"})
    with Library(root) as lib:
        a = lib.add(trained, name="colour-m2iv", tags=["colour", "trained"], description="M²IV on easy-vqa, 8 steps")
        b = lib.add(shape, name="shape-random", tags=["random"], description="random vectors (a control)")
        for entry in (a, b):
            lib.add_prototype_from_task(entry.id, lm, get_task("easy-vqa"), n=6)
        lib.compose("mix", "0.5*colour-m2iv + 0.5*shape-random", tags=["composed"])
        lib.add(elsewhere, name="other-model", tags=["random"])
    return root


if __name__ == "__main__":
    out = Path(sys.argv[1])
    build(out, out.parent / f"{out.name}-work")
    print(out)
