"""Your own data: JSONL files, one JSON object per line (docs/your-own-data.md).

    {"image": "img/1.jpg", "question": "What color?", "answer": "red"}
    {"images": ["a.jpg", "b.jpg"], "question": "Same shape?", "answers": ["no", "nope"], "id": "q7"}

A task names the files with `--task jsonl:...` (`jsonl_layout` reads the spec):

    jsonl:data.jsonl                      one file: m2iv draws test, demonstrations (support) and training queries
                                          from it by --seed; or, when its rows carry "split": "train" / "support" /
                                          "test", it uses those
    jsonl:FOLDER                          FOLDER/test.jsonl, with FOLDER/train.jsonl and/or FOLDER/support.jsonl
    jsonl:train=a.jsonl,test=b.jsonl      separate files anywhere (support=c.jsonl adds a demonstration pool)

Training queries come from train, demonstrations from support (else from train), test queries from test. A layout
without test data is refused when the task is named, before a model loads. Every row is read strictly: UTF-8,
valid JSON, its sizes within `m2iv.data.limits`; a bad row is one line naming the file, the line and the fix.
Relative image paths resolve against the file's folder.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m2iv.data.limits import MAX_LINE_BYTES, check_sizes
from m2iv.data.sample import Sample
from m2iv.errors import M2IVError

SPLITS = ("train", "support", "test")
JSONL_ROW = '{"image": "img/1.jpg", "question": "What color?", "answers": ["red"]}'
SPECS = "jsonl:FILE.jsonl, jsonl:FOLDER (holding train.jsonl and test.jsonl) or jsonl:train=A.jsonl,test=B.jsonl"
_KEYS = {"id", "image", "images", "question", "answer", "answers", "split"}


def _bad(path: Path, lineno: int, msg: str) -> M2IVError:
    return M2IVError(f"{path} line {lineno}: {msg}; each line needs a JSON object like {JSONL_ROW}")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line, decoded strictly: a byte that is not UTF-8 is an error naming
    the line, never a silent replacement character in a question."""
    with open(path, "rb") as f:
        lineno = 0
        while raw := f.readline(MAX_LINE_BYTES + 1):
            lineno += 1
            if len(raw) > MAX_LINE_BYTES:
                raise M2IVError(f"{path} line {lineno}: longer than {MAX_LINE_BYTES} bytes, the most a row may "
                                "take; shorten or remove the row")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise M2IVError(f"{path} line {lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at byte "
                                f"{e.start + 1} of the line); save the file as UTF-8") from None
            text = text.removeprefix("\ufeff") if lineno == 1 else text
            if text.strip():
                yield lineno, text


def _row(row: Any, path: Path, lineno: int) -> tuple[list[str], str, tuple[str, ...]]:
    """(images, question, answers) of one row, or one line naming the file, the line and the fix."""
    if not isinstance(row, dict):
        raise _bad(path, lineno, f"expected a JSON object, got {type(row).__name__}")
    if ("image" in row) == ("images" in row):
        raise _bad(path, lineno, "give exactly one of the fields 'image' (a path) or 'images' (a list of paths)")
    images = [row["image"]] if "image" in row else row["images"]
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise _bad(path, lineno, "'image' must be a non-empty string and 'images' a list of non-empty strings")
    if not isinstance(row.get("question"), str):
        raise _bad(path, lineno, "missing field 'question'" if "question" not in row
                   else "field 'question' must be a string")
    if ("answer" in row) == ("answers" in row):
        raise _bad(path, lineno, "give exactly one of the fields 'answer' (a string) or 'answers' (a list of strings)")
    answers = [row["answer"]] if "answer" in row else row["answers"]
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise _bad(path, lineno, "'answer' must be a string and 'answers' a non-empty list of strings")
    if "id" in row and not isinstance(row["id"], (str, int)) or isinstance(row.get("id"), bool):
        raise _bad(path, lineno, "field 'id' must be a string or an integer")
    if "split" in row and not isinstance(row["split"], str):
        raise _bad(path, lineno, "field 'split' must be a string")
    check_sizes(row["question"], answers, len(images), f"{path} line {lineno}")
    return images, row["question"], tuple(answers)


def read_rows(path: Path) -> Iterator[tuple[int, dict, list[str], str, tuple[str, ...]]]:
    """(line number, row, images, question, answers) of every row, each checked (see the module docstring)."""
    for lineno, line in _lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise M2IVError(f"{path} line {lineno}: invalid JSON ({e.msg} at column {e.colno}); each line needs "
                            f"a JSON object like {JSONL_ROW}") from None
        yield (lineno, row, *_row(row, path, lineno))


def _data_file(path: Path, what: str) -> Path:
    """`path` if it is a regular file; otherwise one line with the real cause (missing, a folder, a FIFO...)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise M2IVError(f"{what} {path} does not exist; check the path (relative paths start at "
                        f"{Path.cwd()})") from None
    except OSError as e:
        raise M2IVError(f"{what} {path} cannot be read ({e.strerror}); check the path") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, socket or device)"
        raise M2IVError(f"{what} {path} is {kind}; give a .jsonl file")
    return path


def split_map(text: str, base: Path | None = None) -> dict[str, Path]:
    """`train=a.jsonl,test=b.jsonl[,support=c.jsonl]` -> {split: absolute path} (relative to `base`, else the
    working folder)."""
    files: dict[str, Path] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in SPLITS or not value.strip():
            raise M2IVError(f"jsonl:{text}: {item!r} is not SPLIT=FILE with SPLIT one of {', '.join(SPLITS)}; "
                            f"write e.g. jsonl:train=a.jsonl,test=b.jsonl")
        if key in files:
            raise M2IVError(f"jsonl:{text}: {key} is given twice; give each of {', '.join(SPLITS)} at most once")
        files[key] = ((base or Path.cwd()) / Path(value.strip()).expanduser()).resolve()
    return files


def _source(root: str | Path | None, split: str) -> Path:
    """The file split `split` is read from: `root` is a .jsonl file, a folder holding <split>.jsonl, or a split
    map (see `split_map`); without one, $M2IV_DATA."""
    root = root if root not in (None, "") else os.environ.get("M2IV_DATA", "")
    if not root:
        raise M2IVError(f"jsonl: no data given; use {SPECS} (or --data-root FILE)")
    if "=" in str(root) and not Path(root).exists():
        files = split_map(str(root))
        if split not in files:
            raise M2IVError(f"jsonl:{root} has no {split} file; add {split}=FILE.jsonl")
        return _data_file(files[split], f"the {split} file")
    path = Path(root).expanduser().resolve()
    if path.is_dir():
        return _data_file(path / f"{split}.jsonl", f"the {split} file")
    return _data_file(path, "the data file")


def load_jsonl(root: str | Path | None, split: str) -> list[Sample]:
    """Split `split` of the user data at `root` (see `_source`): the rows without a 'split' field and those whose
    'split' is `split` (split 'all' keeps every row)."""
    path = _source(root, split)
    base, samples, other_splits = path.parent, [], set()
    first_line: dict[str, int] = {}
    for lineno, row, images, question, answers in read_rows(path):
        row_split = row.get("split", split)
        if split != "all" and row_split != split:
            other_splits.add(row_split)
            continue
        sid = str(row.get("id", f"{path.stem}-{lineno}"))
        if sid in first_line:
            raise M2IVError(f"{path} line {lineno}: duplicate id {sid!r} (first on line {first_line[sid]}); "
                            "give every row a unique 'id'")
        first_line[sid] = lineno
        paths = tuple(os.path.normpath(base / os.path.expanduser(p)) for p in images)
        meta = {k: v for k, v in row.items() if k not in _KEYS}
        samples.append(Sample(id=sid, images=paths, question=question.strip(),
                              answers=tuple(a.strip() for a in answers), split=row_split, meta=meta))
    if not samples and other_splits:
        raise M2IVError(f"{path}: no rows with split {split!r} (it has {', '.join(sorted(other_splits))}); pass "
                        "one of those as the split, or 'all'")
    return samples


load_jsonl.raw_root = True  # type: ignore[attr-defined]  # takes a map or missing path itself, naming the cause


@dataclass(frozen=True)
class Layout:
    """Where a jsonl task's splits come from (the Task fields of the same names)."""

    name: str
    data_path: str
    test_split: str
    support_split: str
    train_split: str = ""


def _labels(path: Path, own: str | None) -> dict[str, int]:
    """{'split' value: first line} over the rows of `path`, every row checked; in a file of one split (`own`)
    a row labelled with another split is an error (it would be dropped without a word)."""
    labels: dict[str, int] = {}
    unlabelled = None
    for lineno, row, *_ in read_rows(path):
        label = row.get("split")
        if label is None:
            unlabelled = unlabelled or lineno
            continue
        if label not in SPLITS or own is not None and label != own:
            allowed = f"{own!r} or no 'split'" if own else f"one of {', '.join(SPLITS)}"
            raise M2IVError(f"{path} line {lineno}: 'split' is {label!r}; in this file it must be {allowed}")
        labels.setdefault(label, lineno)
    if labels and unlabelled and own is None:  # unlabelled rows would belong to every split: test in train
        raise M2IVError(f"{path} line {unlabelled} has no 'split' but line {min(labels.values())} has one; give "
                        "every row a 'split' or none")
    return labels


def _from_splits(name: str, data_path: str, present: set[str], where: str) -> Layout:
    if "test" not in present:
        have = " and ".join(s for s in SPLITS if s in present)
        raise M2IVError(f"{where} has {have} data but no test data; add test rows (a test.jsonl, test=FILE.jsonl or "
                        "rows with \"split\": \"test\") so there is something to evaluate on")
    if present == {"test"}:
        return Layout(name, data_path, "test", "test")
    support = "support" if "support" in present else "train"
    return Layout(name, data_path, "test", support, "train" if {"train", "support"} <= present else "")


def jsonl_layout(spec: str, base: Path | None = None) -> Layout:
    """The layout of `--task jsonl:<spec>` (see the module docstring), every file checked row by row now, so bad
    data costs no model load. Relative paths start at `base` (else the working folder)."""
    if not spec.strip():
        raise M2IVError(f"--task jsonl: needs your data after the colon: {SPECS}; see docs/your-own-data.md")
    base = base or Path.cwd()
    if "=" in spec and not (base / spec).exists():
        files = split_map(spec, base)
        if len(set(files.values())) < len(files):
            raise M2IVError(f"jsonl:{spec} names one file for two splits; give each split its own file")
        for split, path in files.items():
            _labels(_data_file(path, f"the {split} file"), split)
        name = "jsonl:" + ",".join(f"{k}={p.name}" for k, p in files.items())
        return _from_splits(name, ",".join(f"{k}={p}" for k, p in files.items()), set(files), f"jsonl:{spec}")
    path = (base / Path(spec).expanduser()).resolve()
    if path.is_dir():
        present = {s for s in SPLITS if (path / f"{s}.jsonl").exists()}
        if not present:
            raise M2IVError(f"{path} holds none of train.jsonl, support.jsonl, test.jsonl; put your rows there, or "
                            f"use {SPECS}")
        for split in present:
            _labels(_data_file(path / f"{split}.jsonl", f"the {split} file"), split)
        return _from_splits(f"jsonl:{path.name}", str(path), present, str(path))
    labels = _labels(_data_file(path, "the data file"), None)
    if not labels:  # one pool, split by seed
        return Layout(f"jsonl:{path.name}", str(path), "test", "test")
    return _from_splits(f"jsonl:{path.name}", str(path), set(labels), str(path))
