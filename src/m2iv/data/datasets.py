"""Dataset registry and entry point, plus the seeded, image-disjoint train / support / test splits.

`load_dataset(name, split, root)` returns `Sample`s for a registered loader `load(root: Path, split: str)`; see
`m2iv.data.formats` for the official file layouts under `--data-root` (or `$M2IV_DATA`). Built in here:
`hf_datasets` (a folder written by `datasets.Dataset.save_to_disk`) and `easy_vqa` (the PyPI package; no root).
"""

from __future__ import annotations

import importlib
import inspect
import io
import os
import random
from collections import deque
from pathlib import Path
from typing import Any

from m2iv.data.formats import OFFICIAL, Loader, check_split
from m2iv.data.limits import check_sizes
from m2iv.data.sample import Sample, content_hash
from m2iv.errors import M2IVError
from m2iv.files import write_file_atomic
from m2iv.registry import Registry

DATASETS: Registry[Loader] = Registry("dataset")
for _name, _loader in OFFICIAL.items():
    DATASETS.register(_name, _loader)


def resolve_root(root: str | Path | None) -> Path:
    """The data root as an absolute path: `root` if given, else `$M2IV_DATA`; it must exist."""
    origin = "--data-root"
    if root is None or str(root) == "":
        root, origin = os.environ.get("M2IV_DATA", ""), "M2IV_DATA"
        if not root:
            raise M2IVError("missing data root: M2IV_DATA is not set and --data-root was not given; point either at "
                            "the folder holding vqav2/, okvqa/, vizwiz/, gqa/, textvqa/, coco/, ... "
                            "(layout in m2iv.data.formats)")
    path = Path(root).expanduser().resolve()
    if not path.exists():
        raise M2IVError(f"data root {path} (from {origin}) does not exist; create it or point {origin} at the folder "
                        "holding the benchmark folders")
    return path


def load_dataset(name: str, split: str, root: str | Path | None = None, **options: Any) -> list[Sample]:
    """Load split `split` of dataset `name`; `options` go to loaders that take them (hf_datasets column names)."""
    loader = DATASETS.get(name)
    accepted = [p for p in inspect.signature(loader).parameters if p not in ("root", "split")]
    for key in options:
        if key not in accepted:
            raise M2IVError(f"dataset {name!r} has no option {key!r}; it accepts: {', '.join(accepted) or 'none'}")
    if getattr(loader, "raw_root", False):  # resolves (and names the problems of) its own path
        path = root
    else:
        path = resolve_root(root) if getattr(loader, "needs_root", True) else None
    samples = loader(path, split, **options)
    if not samples:
        raise M2IVError(f"{name}: split {split!r} under {path} has no samples; check the split name and the files")
    seen: set[str] = set()
    for s in samples:
        if s.id in seen:
            raise M2IVError(f"{name}: duplicate sample id {s.id!r} in split {split!r}; ids must be unique")
        seen.add(s.id)
        check_sizes(s.question, s.answers, len(s.images), f"{name} split {split} sample {s.id}")
    return samples


def load_easy_vqa(root: Path | None, split: str) -> list[Sample]:
    """The synthetic easy-VQA set from PyPI (shapes and colours; 38,575 train / 9,673 test questions); no root."""
    try:
        import easy_vqa
    except ImportError:
        raise M2IVError("easy_vqa is not installed; pip install easy-vqa (or pip install 'm2iv[sandbox]')") from None
    check_split("easy_vqa", split, ("train", "test"))
    if split == "train":
        (questions, answers, image_ids), paths = easy_vqa.get_train_questions(), easy_vqa.get_train_image_paths()
    else:
        (questions, answers, image_ids), paths = easy_vqa.get_test_questions(), easy_vqa.get_test_image_paths()
    samples = []
    for i, (q, a, image_id) in enumerate(zip(questions, answers, image_ids, strict=False)):
        if image_id not in paths:
            raise M2IVError(f"easy_vqa: {split} image {image_id} is missing from the package; pip install "
                            "--force-reinstall easy-vqa")
        samples.append(Sample(id=f"{split}-{i}", images=(os.path.abspath(paths[image_id]),), question=q,
                              answers=(a,), split=split, meta={"image_id": image_id}))
    return samples


load_easy_vqa.needs_root = False  # type: ignore[attr-defined]
DATASETS.register("easy_vqa", load_easy_vqa)

IMAGE_COLUMNS = ("image", "images", "img", "image_path", "image_file", "file_name")
QUESTION_COLUMNS = ("question", "query", "prompt", "instruction")
ANSWER_COLUMNS = ("answers", "answer", "multiple_choice_answer", "captions", "caption", "label")
ID_COLUMNS = ("question_id", "id", "qid", "sample_id")


def _column(kind: str, given: str | None, defaults: tuple[str, ...], columns: list[str], root: Path) -> str | None:
    if given is not None:
        if given and given not in columns:
            raise M2IVError(f"hf_datasets: {root} has no column {given!r} (columns: {', '.join(columns)}); "
                            f"fix {kind}_column")
        return given or None
    found = next((c for c in defaults if c in columns), None)
    if found is None and kind != "id":
        extra = ", or question_column='' for captioning" if kind == "question" else ""
        raise M2IVError(f"hf_datasets: no {kind} column in {root} (columns: {', '.join(columns)}); pass "
                        f"{kind}_column=NAME{extra}")
    return found


def _hf_answers(value: Any, names: list[str] | None, where: str) -> tuple[str, ...]:
    """str, list of str, list of {'answer': ...} (VQAv2 on the Hub), dict of lists, or a ClassLabel index."""
    if isinstance(value, dict):
        value = next((value[k] for k in ("answer", "text", "raw") if k in value), None)
    if isinstance(value, int) and not isinstance(value, bool) and names:
        value = names[value]
    items = value if isinstance(value, list) else [value]
    out = []
    for v in items:
        if isinstance(v, dict):
            v = next((v[k] for k in ("answer", "text", "raw") if k in v), None)
        if v is not None:
            out.append(str(v).strip())
    if not out:
        raise M2IVError(f"hf_datasets: {where} has no answers; pass answers_column=NAME naming the reference column")
    return tuple(out)


def _hf_image(value: Any, target: Path, base: Path, where: str) -> str:
    """A path for one image cell: a path string, or Image-feature bytes written once (atomically) to `target`."""
    if isinstance(value, str) and value:
        return os.path.normpath(base / os.path.expanduser(value))
    if isinstance(value, dict) and value.get("bytes"):
        if not target.is_file():
            from PIL import Image

            from m2iv.data.images import pixel_limit

            try:
                with pixel_limit(), Image.open(io.BytesIO(value["bytes"])) as opened:
                    keep = opened.mode in ("1", "L", "LA", "I", "P", "RGB", "RGBA")
                    im: Image.Image = opened if keep else opened.convert("RGB")
                    # atomic: a concurrent or killed run never leaves half a PNG
                    write_file_atomic(target, lambda tmp: im.save(tmp, format="PNG"))
            except (OSError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
                raise M2IVError(f"hf_datasets: cannot cache the image of {where} as {target} ({e}); make "
                                f"{target.parent} writable or fix the image bytes") from None
        return str(target)
    if isinstance(value, dict) and value.get("path"):
        return os.path.normpath(base / value["path"])
    raise M2IVError(f"hf_datasets: {where} has no image (got {type(value).__name__}); pass image_column=NAME")


def load_hf_datasets(root: Path, split: str, *, image_column: str | None = None, question_column: str | None = None,
                     answers_column: str | None = None, id_column: str | None = None) -> list[Sample]:
    """A `save_to_disk` folder (Dataset or DatasetDict); decoded image columns are cached as PNG files in
    <root>/.m2iv_images/<split>-<fingerprint>/ so `Sample.images` stays a list of paths."""
    try:
        datasets = importlib.import_module("datasets")  # optional dependency
    except ImportError:
        raise M2IVError("hf_datasets needs the optional `datasets` package; pip install datasets") from None
    root = Path(root).expanduser().resolve()
    if not (root / "dataset_dict.json").is_file() and not (root / "state.json").is_file():
        raise M2IVError(f"hf_datasets: expected {root / 'dataset_dict.json'} or {root / 'state.json'} (a folder "
                        "written by save_to_disk); pass that folder as --data-root")
    obj = datasets.load_from_disk(str(root))
    if isinstance(obj, datasets.DatasetDict):
        if split not in obj:
            raise M2IVError(f"hf_datasets: {root} has no split {split!r}; use one of {', '.join(obj)}")
        obj = obj[split]
    cols = obj.column_names
    img_c = _column("image", image_column, IMAGE_COLUMNS, cols, root)
    q_c = _column("question", question_column, QUESTION_COLUMNS, cols, root)
    a_c = _column("answers", answers_column, ANSWER_COLUMNS, cols, root)
    id_c = _column("id", id_column, ID_COLUMNS, cols, root)
    feature = obj.features[a_c]
    names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    cache = root / ".m2iv_images" / f"{split}-{str(getattr(obj, '_fingerprint', 'data'))[:16]}"
    used = {img_c, q_c, a_c, id_c}
    samples, row = [], 0
    for table in obj.with_format("arrow").iter(batch_size=256):  # raw cells: images stay undecoded bytes
        for r in table.to_pylist():
            where = f"{root} split {split} row {row}"
            many = isinstance(r[img_c], list)
            cells = r[img_c] if many else [r[img_c]]
            images = tuple(_hf_image(v, cache / (f"{row}-{k}.png" if many else f"{row}.png"), root, where)
                           for k, v in enumerate(cells))
            meta = {k: v for k, v in r.items()
                    if k not in used and (v is None or isinstance(v, (str, int, float, bool)))}
            samples.append(Sample(id=str(r[id_c]) if id_c else str(row), images=images,
                                  question=str(r[q_c] or "").strip() if q_c else "",
                                  answers=_hf_answers(r[a_c], names, where), split=split, meta=meta))
            row += 1
    return samples


DATASETS.register("hf_datasets", load_hf_datasets)


def _image_groups(samples: list[Sample]) -> list[list[Sample]]:
    """Connected groups of samples that share any image path (union-find), in order of their first member."""
    parent = list(range(len(samples)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, s in enumerate(samples):
        for p in s.images:
            a, b = find(owner.setdefault(p, i)), find(i)
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[Sample]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(find(i), []).append(s)
    return list(groups.values())


def make_splits(samples: list[Sample], seed: int, n_support: int, n_test: int | None,
                n_train: int | None = None) -> dict[str, list[Sample]]:
    """Disjoint train / support / test lists, fixed by `seed`: ICL demonstrations come from support, training
    queries from train, evaluation from test.

    Samples are sorted by id, grouped so that samples sharing an image stay together, and the groups are permuted
    by random.Random(seed). Test is drawn first (so it does not change with n_support / n_train), then support,
    then train. When a group straddles a size limit its unused samples are dropped, so no image appears in two
    splits. n_test=None gives test everything left after support and n_train (train is empty if n_train is None
    too); n_train=None with an explicit n_test gives train everything left.
    """
    for label, n in (("n_support", n_support), ("n_test", n_test), ("n_train", n_train)):
        if n is not None and n < 0:
            raise M2IVError(f"make_splits: {label}={n} is negative; pass a count >= 0")
    ordered = sorted(samples, key=lambda s: s.id)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a.id == b.id:
            raise M2IVError(f"make_splits: duplicate sample id {a.id!r}; ids must be unique")
    groups = _image_groups(ordered)
    random.Random(seed).shuffle(groups)
    queue = deque(groups)

    def take(n: int | None, label: str) -> list[Sample]:
        out: list[Sample] = []
        while queue and (n is None or len(out) < n):
            group = queue.popleft()
            out.extend(group if n is None else group[: n - len(out)])
        if n is not None and len(out) < n:
            raise M2IVError(f"make_splits: ran out of samples for the {label} split ({len(samples)} samples in "
                            f"{len(groups)} image groups; asked n_test={n_test}, n_support={n_support}, "
                            f"n_train={n_train}); lower the counts or load a larger split")
        return out

    if n_test is not None:
        test = take(n_test, "test")
        support = take(n_support, "support")
        train = take(n_train, "train")
    else:
        support = take(n_support, "support")
        train = take(n_train or 0, "train")
        test = take(None, "test")
    return {"train": train, "support": support, "test": test}


def split_manifest(splits: dict[str, list[Sample]]) -> dict[str, dict[str, Any]]:
    """Per split: size and content_hash, to record with results and to check that a rerun used the same data."""
    return {name: {"size": len(rows), "content_hash": content_hash(rows)} for name, rows in splits.items()}
