"""Tasks (lm-evaluation-harness style): a dataset + prompt template + answer post-processing + metric,
addressed by name. Built-in: the seven benchmarks of the field (official local files under
--data-root / M2IV_DATA) and easy-vqa (shipped on PyPI). A user task is a JSON file with the same
fields (a relative data_path starts at the file's folder), or `jsonl:<spec>` for the generic JSONL format
(`m2iv.data.jsonl`; docs/your-own-data.md). Other packages add suites through `m2iv.tasks` entry points
(m2iv/plugins.py). Tasks live in `data/` because training, the methods and the library need them, not only
evaluation.

    task = get_task("vqav2");  splits = task.splits(data_root, seed=0)  # train / support / test
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from m2iv.data.datasets import DATASETS, load_dataset, make_splits
from m2iv.data.sample import Sample, content_hash
from m2iv.errors import M2IVError
from m2iv.files import read_json_object
from m2iv.plugins import TASK_GROUP, entry_points, load
from m2iv.registry import Registry

VQA_INSTRUCTION = "{question} Answer the question using a single word or phrase."
CAPTION_INSTRUCTION = "Describe the image in one short sentence."


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str  # a DATASETS name (see data/datasets.py)
    metric: str  # a METRICS name (see evaluate/metrics.py)
    test_split: str  # source split the test queries come from
    support_split: str  # source split demonstrations (and, without train_split, training queries) come from
    instruction: str = VQA_INSTRUCTION  # "{question}" is filled in
    answer_template: str = "{answer}"  # how a demonstration's answer is written
    postprocess: str = "short_answer"  # see POSTPROCESS
    max_new_tokens: int = 10
    n_support: int = 256  # demonstration pool size
    n_train: int | None = 1000  # training queries for vector methods (None: all remaining)
    n_test: int | None = None  # None: the whole test split
    data_path: str = ""  # jsonl tasks: the file, folder or split map (m2iv.data.jsonl)
    description: str = ""
    version: int = 1
    train_split: str = ""  # source split of the training queries when it is not support_split's remainder

    def load(self, split: str, root: str | Path | None) -> list[Sample]:
        return load_dataset(self.dataset, split, self.data_path or root)

    def splits(self, root: str | Path | None = None, seed: int = 0,
               parts: tuple[str, ...] | None = None) -> dict[str, list[Sample]]:
        """Disjoint train/support/test lists fixed by `seed` (demonstrations never come from test).

        Counts are capped to what the data holds: with one source split, support takes at most a quarter
        and train at most half of the rest, test the remainder (or n_test); with separate splits, support
        takes at most half of the support split and train the rest (up to n_train); with a train_split too,
        support takes up to n_support of the support split and train up to n_train of the train split. `parts`
        ("test" alone, for a method that needs no demonstrations and trains nothing) reads only the test split's files.
        """
        three = bool(self.train_split) and self.train_split not in (self.support_split, self.test_split)
        if parts is not None and set(parts) <= {"test"} and self.test_split != self.support_split:
            return {"test": self._drawn(self.test_split, self.n_test, root, seed) if three else self._test(root, seed)}
        if three:
            return self._three_splits(root, seed)
        if self.test_split == self.support_split:
            pool = self.load(self.test_split, root)
            n_support = max(1, min(self.n_support, len(pool) // 4))
            n_train = min(self.n_train or len(pool), (len(pool) - n_support) // 2)
            n_test = None if self.n_test is None else min(self.n_test, len(pool) - n_support - n_train)
            return make_splits(pool, seed=seed, n_support=n_support, n_test=n_test, n_train=n_train)
        pool = self.load(self.support_split, root)
        n_support = max(1, min(self.n_support, len(pool) // 2))
        n_train = min(self.n_train or len(pool), len(pool) - n_support)
        pools = make_splits(pool, seed=seed, n_support=n_support, n_test=0, n_train=None)
        return {"train": pools["train"][:n_train], "support": pools["support"], "test": self._test(root, seed)}

    def _test(self, root: str | Path | None, seed: int) -> list[Sample]:
        """The test queries of a task with its own test split (all, or n_test of them fixed by `seed`)."""
        test = self.load(self.test_split, root)
        if self.n_test is not None:
            import random

            test = sorted(test, key=lambda s: s.id)
            random.Random(seed).shuffle(test)
            test = test[: self.n_test]
        return test

    def _drawn(self, split: str, n: int | None, root: str | Path | None, seed: int) -> list[Sample]:
        """A source split in a seeded order, capped at n."""
        import random

        rows = sorted(self.load(split, root), key=lambda s: s.id)
        random.Random(seed).shuffle(rows)
        return rows if n is None else rows[:n]

    def _three_splits(self, root: str | Path | None, seed: int) -> dict[str, list[Sample]]:
        """Each part from its own source split, in a seeded order, capped at its count."""
        return {"train": self._drawn(self.train_split, self.n_train, root, seed),
                "support": self._drawn(self.support_split, self.n_support, root, seed),
                "test": self._drawn(self.test_split, self.n_test, root, seed)}

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_samples(cls, name: str, samples=None, *, train=None, test=None, **settings) -> Task:
        """A task over data in memory: one list (split into train / support / test by seed, as a jsonl task), or
        `train` (demonstrations and training queries) and `test` lists. Items are `Sample`s or dicts with image(s)
        (paths or PIL images), question, answer(s) and optionally id (`m2iv.data.memory`). `settings` are Task
        fields: metric (default vqa_accuracy), instruction, postprocess, max_new_tokens, n_support, n_test, ..."""
        from m2iv.data.memory import samples_from_records

        if (samples is None) == (train is None or test is None):
            raise M2IVError("Task.from_samples: give one list of samples, or both train= and test=")
        pools = {"all": tuple(samples_from_records(samples))} if samples is not None else \
            {"train": tuple(samples_from_records(train, "train")), "test": tuple(samples_from_records(test, "test"))}
        one = samples is not None
        fields_ = {"metric": "vqa_accuracy", "n_support": 64, "n_train": None,
                   "description": f"{name}: {sum(map(len, pools.values()))} samples given in Python", **settings}
        return InMemoryTask(name, "memory", test_split="all" if one else "test",
                            support_split="all" if one else "train", pools=pools, **fields_)

    @classmethod
    def from_dataset(cls, name: str, dataset, test=None, *, image_column: str | None = None,
                     question_column: str | None = None, answers_column: str | None = None,
                     id_column: str | None = None, **settings) -> Task:
        """A task over a `datasets.Dataset` (split by seed), a Dataset for training plus one for `test`, or a
        DatasetDict with "train" and "test" (or "validation") splits. Columns are found by name (image, question,
        answers, id; or name them); decoded images are cached as PNG files under $M2IV_HOME/cache/images."""
        from m2iv.data.datasets import hf_samples
        from m2iv.data.memory import image_cache

        columns = {"image_column": image_column, "question_column": question_column,
                   "answers_column": answers_column, "id_column": id_column}
        if test is None and hasattr(dataset, "keys"):  # a DatasetDict
            held = next((k for k in ("test", "validation") if k in dataset), None)
            if "train" not in dataset or held is None:
                raise M2IVError(f"Task.from_dataset: the DatasetDict has splits {list(dataset)}; it needs train and "
                                "test (or validation), or pass one Dataset")
            dataset, test = dataset["train"], dataset[held]

        def rows(ds, split: str) -> list[Sample]:
            return hf_samples(ds, split, Path.cwd(), image_cache() / "datasets", **columns)

        if test is None:
            return cls.from_samples(name, rows(dataset, "all"), **settings)
        return cls.from_samples(name, train=rows(dataset, "train"), test=rows(test, "test"), **settings)


@dataclass(frozen=True)
class InMemoryTask(Task):
    """A task whose samples were given in Python (`Task.from_samples`, `Task.from_dataset`); `pools` maps each
    source split name to its samples."""

    pools: dict = field(default_factory=dict, compare=False, repr=False)

    def load(self, split: str, root: str | Path | None) -> list[Sample]:
        if split not in self.pools:
            raise M2IVError(f"task {self.name} has no split {split!r}; it has {', '.join(self.pools)}")
        return list(self.pools[split])

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(Task)}
        return {**out, "data_hash": {k: content_hash(list(v)) for k, v in self.pools.items()}}


def _short_answer(text: str) -> str:
    text = text.strip().split("\n")[0].strip()
    text = re.sub(r"^(answer|a)\s*:\s*", "", text, flags=re.I)
    return text.rstrip(".").strip().lower()  # the official VQA eval compares case-sensitively


def _sentence(text: str) -> str:
    return text.strip().split("\n")[0].strip()


POSTPROCESS = {"short_answer": _short_answer, "sentence": _sentence, "none": lambda t: t}

TASKS: Registry[Task] = Registry("task")
for _t in [
    Task("vqav2", "vqav2", "vqa_accuracy", "val", "train", description="VQAv2 open-ended, val questions"),
    Task("okvqa", "okvqa", "vqa_accuracy", "val", "train", description="OK-VQA, val questions"),
    Task("vizwiz", "vizwiz", "vqa_accuracy", "val", "train",
         instruction="{question} Answer the question using a single word or phrase. If it cannot be answered, "
                     "answer unanswerable.", description="VizWiz VQA, val"),
    Task("gqa", "gqa", "gqa_accuracy", "testdev", "train", description="GQA balanced, test-dev"),
    Task("textvqa", "textvqa", "vqa_accuracy", "val", "train", description="TextVQA 0.5.1, val"),
    Task("coco_captions", "coco_captions", "cider_d", "test", "train", instruction=CAPTION_INSTRUCTION,
         postprocess="sentence", max_new_tokens=30, description="COCO captions, Karpathy test split"),
    Task("flickr30k", "flickr30k", "cider_d", "test", "train", instruction=CAPTION_INSTRUCTION,
         postprocess="sentence", max_new_tokens=30, description="Flickr30k, Karpathy test split"),
    Task("easy-vqa", "easy_vqa", "exact_match", "test", "train", n_test=500,
         description="easy-vqa (PyPI): coloured shapes, 13 answers; no download"),
]:
    TASKS.register(_t.name, _t)


def get_task(name: str) -> Task:
    """A registered name, `jsonl:<spec>` (its files are checked row by row now), or a path to a task JSON file."""
    if name.startswith("jsonl:"):
        from m2iv.data.jsonl import jsonl_layout

        layout = jsonl_layout(name.split(":", 1)[1])
        return Task(layout.name, "jsonl", "vqa_accuracy", layout.test_split, layout.support_split,
                    data_path=layout.data_path, train_split=layout.train_split, n_support=64, n_train=None,
                    description=f"your JSONL data at {layout.data_path}")
    if name.endswith(".json") and Path(name).is_file():
        return _task_file(Path(name))
    return TASKS.get(name)


def _task_file(path: Path) -> Task:
    spec = read_json_object(path, f"task file {path} is not valid JSON", "fix the file",
                            f"task file {path} must hold a JSON object of Task fields; see docs/your-own-data.md")
    known = {f.name for f in fields(Task)}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise M2IVError(f"task file {path} has unknown field(s) {unknown}; fields are {sorted(known)}")
    data_path = spec.get("data_path")
    if isinstance(data_path, str) and data_path:  # relative paths start at the task file's folder
        from m2iv.data.jsonl import split_map

        base = path.parent
        spec["data_path"] = (",".join(f"{k}={v}" for k, v in split_map(data_path, base).items())
                             if "=" in data_path and not (base / data_path).exists()
                             else str((base / Path(data_path).expanduser()).resolve()))
    try:
        return Task(**spec)
    except TypeError as e:
        raise M2IVError(f"task file {path} is incomplete ({e}); it needs name, dataset, metric, "
                        "test_split, support_split") from None


def postprocess(task: Task, text: str) -> str:
    return POSTPROCESS[task.postprocess](text)


__all__ = ["TASKS", "Task", "get_task", "postprocess"]


# Task suites of other rooms and packages (m2iv's sandbox suites among them) are `m2iv.tasks` entry points
# (m2iv/plugins.py), imported only when a task or dataset is first looked up or listed: importing this module
# loads no suite. Each names `register(datasets, tasks, task_cls)`.
_registered: set[tuple[int, str]] = set()


def register_plugin_suites(datasets: Registry = DATASETS, tasks: Registry[Task] = TASKS) -> None:
    """Register every `m2iv.tasks` suite in the registries, once per suite, whichever registry asked first."""
    for name in sorted(entry_points(TASK_GROUP)):
        if (id(tasks), name) not in _registered:
            _registered.add((id(tasks), name))
            load(TASK_GROUP, name)(datasets, tasks, Task)


TASKS.add_provider(register_plugin_suites)
DATASETS.add_provider(register_plugin_suites)
