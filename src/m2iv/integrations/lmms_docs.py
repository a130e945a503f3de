"""lmms-eval documents as m2iv samples: the query of a request, and demonstrations drawn from a support split.

A request carries the context string, `doc_to_visual` (a bound method of the task), the document id, the task
name and the split; the model holds `task_dict[task][split]` (the task's dataset). lmms-eval gives a model no
images for few-shot examples (its few-shot contexts are text only), so demonstrations are built here: each
support document becomes a sample with the task's own `doc_to_visual`, `doc_to_text` and `doc_to_target`, and a
seeded selector (data/selection.py) draws N per query, never the query itself.

Images reach m2iv's prompt builder as files: a PIL image from a dataset is written once, named by its content
hash, into a scratch folder the model owns; a path (a JSON dataset's image column) is used as it is.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from pathlib import Path
from typing import Any

from m2iv.data.sample import Sample
from m2iv.data.selection import SELECTORS, Selector
from m2iv.errors import M2IVError


class ImageStore:
    """PIL images as PNG files in a scratch folder (one per distinct image); paths pass through."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="m2iv-lmms-")
        self.root = Path(self._dir.name)

    def paths(self, visuals: Any) -> tuple[str, ...]:
        if visuals is None:
            return ()
        items = visuals if isinstance(visuals, (list, tuple)) else [visuals]
        return tuple(self._path(v) for v in items if v is not None)

    def _path(self, visual: Any) -> str:
        if isinstance(visual, (str, Path)):
            if not Path(visual).is_file():
                raise M2IVError(f"the task's visual {visual} is not a file; m2iv reads images (no video or audio)")
            return str(visual)
        if not hasattr(visual, "save"):
            raise M2IVError(f"the task gives a {type(visual).__name__} as a visual; m2iv reads images only")
        buf = io.BytesIO()
        visual.convert("RGB").save(buf, format="PNG")
        data = buf.getvalue()
        path = self.root / f"{hashlib.sha256(data).hexdigest()[:32]}.png"
        if not path.is_file():
            path.write_bytes(data)
        return str(path)


def target_text(task: Any, doc: dict) -> str:
    """A support document's answer as text: the target, a choice named by index, or the first of several."""
    target = task.doc_to_target(doc)
    if isinstance(target, int) and getattr(task.config, "doc_to_choice", None) is not None:
        target = task.doc_to_choice(doc)[target]
    if isinstance(target, (list, tuple)):
        target = target[0] if target else ""
    return str(target)


class Demonstrations:
    """Per task, the support samples and the selector that draws each query's demonstrations."""

    def __init__(self, shots: int, selection: str = "random", support_split: str | None = None, seed: int = 0,
                 images: ImageStore | None = None) -> None:
        if selection not in ("random", "fixed"):
            raise M2IVError(f"selection={selection} is not random or fixed (rices needs m2iv's own runner)")
        self.shots, self.selection, self.support_split, self.seed = shots, selection, support_split, seed
        self.images = images or ImageStore()
        self._selectors: dict[str, Selector] = {}

    def select(self, query: Sample, task_name: str, doc_to_visual: Any, task_data: dict) -> list[Sample]:
        if self.shots <= 0:
            return []
        if task_name not in self._selectors:
            self._selectors[task_name] = self._selector(task_name, doc_to_visual, task_data)
        return self._selectors[task_name].select(query, self.shots)

    def _selector(self, task_name: str, doc_to_visual: Any, task_data: dict) -> Selector:
        task = getattr(doc_to_visual, "__self__", None)  # the bound method's task: doc_to_text / doc_to_target
        if task is None or not hasattr(task, "doc_to_text"):
            raise M2IVError(f"task {task_name} passes no task with its requests; shots=N needs a ConfigurableTask")
        split = self.support_split
        docs = task_data[split] if split else _support_docs(task, task_name)
        split = split or getattr(task.config, "fewshot_split", None) or getattr(task.config, "training_split", "")
        support = [Sample(id=f"{split}:{i}", images=self.images.paths(task.doc_to_visual(doc)),
                          question=str(task.doc_to_text(doc)), answers=(target_text(task, doc),), split=str(split))
                   for i, doc in enumerate(docs)]
        return SELECTORS[self.selection](support, seed=self.seed)


def _support_docs(task: Any, task_name: str):
    try:
        docs = task.fewshot_docs()
    except Exception as e:  # noqa: BLE001 - lmms-eval raises various errors for a task without such a split
        raise M2IVError(f"task {task_name} has no split to draw demonstrations from ({type(e).__name__}); set "
                        "fewshot_split (or training_split) in its YAML, or pass support_split=NAME") from None
    if docs is None or len(docs) == 0:
        raise M2IVError(f"task {task_name} has no support documents; set fewshot_split in its YAML or pass "
                        "support_split=NAME")
    return docs
