"""Readers for the official on-disk formats of the VQA / captioning benchmarks (your own JSONL data: jsonl.py).

Every reader takes the data root (`--data-root` or `$M2IV_DATA`) and a split and returns `Sample`s with absolute
image paths. Layout under the data root (a reader also accepts the root pointing straight at its own folder):

    vqav2/          v2_OpenEnded_mscoco_{train,val}2014_questions.json, v2_mscoco_{train,val}2014_annotations.json
    okvqa/          OpenEnded_mscoco_{train,val}2014_questions.json, mscoco_{train,val}2014_annotations.json
    coco/           train2014/, val2014/   COCO images shared by vqav2, okvqa and coco_captions
                    (each may instead keep its own copy: vqav2/val2014/, okvqa/val2014/, coco_captions/val2014/)
    vizwiz/         annotations/{train,val}.json, train/, val/
    gqa/            questions/{train,val,testdev}_balanced_questions.json, images/
    textvqa/        TextVQA_0.5.1_{train,val}.json, train_images/   (val images live in train_images/ too)
    coco_captions/  dataset_coco.json        (Karpathy splits; images in coco/{filepath}/)
    flickr30k/      dataset_flickr30k.json, flickr30k-images/

Image files are not opened here (that would stat every file); `m2iv.data.images.open_image` reports a bad one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from m2iv.data.jsonl import load_jsonl
from m2iv.data.sample import Sample
from m2iv.errors import M2IVError

Loader = Callable[..., list[Sample]]
COCO_FIX = "download {s}.zip from cocodataset.org and unzip it into --data-root/coco"


def dataset_dir(root: Path, name: str, probe: str) -> Path:
    """root/<name>, unless root itself holds `probe` (the user pointed --data-root at the benchmark folder)."""
    root = Path(root).expanduser().resolve()
    sub = root / name
    return root if not (sub / probe).exists() and (root / probe).exists() else sub


def require_file(path: Path, name: str, what: str, fix: str) -> Path:
    if not path.is_file():
        raise M2IVError(f"{name}: expected {path} ({what}); {fix}")
    return path


def first_dir(name: str, candidates: list[Path], what: str, fix: str) -> Path:
    for c in candidates:
        if c.is_dir():
            return c
    raise M2IVError(f"{name}: no image folder {' or '.join(map(str, candidates))} ({what}); {fix}")


def check_split(name: str, split: str, allowed: tuple[str, ...], note: str = "") -> None:
    if split not in allowed:
        raise M2IVError(f"{name}: unknown split {split!r}; use one of {', '.join(allowed)}{note}")


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise M2IVError(f"{path} line {e.lineno}: invalid JSON ({e.msg}); the file is truncated or not the "
                        "official one, download it again") from None
    except UnicodeDecodeError:
        raise M2IVError(f"{path}: not UTF-8 text; the file is not the official one, download it again") from None


def field(row: Any, key: str, path: Path, where: str, kind: type | tuple[type, ...] = object) -> Any:
    """row[key], or one line naming the file and the entry when the file is not in the official format."""
    if not isinstance(row, dict) or key not in row:
        raise M2IVError(f"{path}: {where} has no field {key!r}; this is not the official file, download it again")
    value = row[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise M2IVError(f"{path}: {where} field {key!r} is {type(value).__name__}; this is not the official file, "
                        "download it again")
    return value


def add_unique(seen: set, key: Any, path: Path, label: str) -> None:
    """Record `key`; a repeat means a corrupt or hand-edited file."""
    if key in seen:
        raise M2IVError(f"{path}: duplicate {label} {key}; the file is corrupt, download it again")
    seen.add(key)


def _answer_texts(answers: list, path: Path, where: str) -> tuple[str, ...]:
    out = tuple(str(field(a, "answer", path, f"{where} answer #{j}")).strip() for j, a in enumerate(answers))
    if not out:
        raise M2IVError(f"{path}: {where} has no answers; use a split with public answers (train or val)")
    return out


def _vqa_loader(name: str, title: str, qfile: str, afile: str, site: str) -> Loader:
    """VQAv2 and OK-VQA share one format: a questions file, an annotations file with 10 answers, COCO images."""

    def load(root: Path, split: str) -> list[Sample]:
        check_split(name, split, ("train", "val"), " (test answers are not public)")
        s = f"{split}2014"
        d = dataset_dir(root, name, qfile.format(s=s))
        fix = f"download it from {site} into --data-root/{name}"
        qpath = require_file(d / qfile.format(s=s), name, f"official {title} questions file", fix)
        apath = require_file(d / afile.format(s=s), name, f"official {title} annotations file", fix)
        img_dir = first_dir(name, [d / s, d.parent / "coco" / s], f"COCO {s} images", COCO_FIX.format(s=s))
        questions = field(read_json(qpath), "questions", qpath, "the top-level object", list)
        annotations = field(read_json(apath), "annotations", apath, "the top-level object", list)
        by_qid: dict[Any, dict] = {}
        seen: set = set()
        for i, a in enumerate(annotations):
            qid = field(a, "question_id", apath, f"annotation #{i}", (int, str))
            add_unique(seen, qid, apath, "question_id")
            by_qid[qid] = a
        samples, seen = [], set()
        for i, q in enumerate(questions):
            qid = field(q, "question_id", qpath, f"question #{i}", (int, str))
            add_unique(seen, qid, qpath, "question_id")
            a = by_qid.get(qid)
            if a is None:
                raise M2IVError(f"{qpath}: question_id {qid} has no annotation in {apath}; use the questions and "
                                "annotations files of the same release and split")
            where = f"question_id {qid}"
            image_id = field(q, "image_id", qpath, where, int)
            meta = {k: a[k] for k in ("question_type", "answer_type", "multiple_choice_answer") if k in a}
            meta["image_id"] = image_id
            samples.append(Sample(
                id=str(qid), images=(str(img_dir / f"COCO_{s}_{image_id:012d}.jpg"),),
                question=field(q, "question", qpath, where, str).strip(),
                answers=_answer_texts(field(a, "answers", apath, where, list), apath, where), split=split, meta=meta))
        return samples

    load.__doc__ = f"{title}: {qfile} + {afile} under --data-root/{name}, COCO images."
    return load


load_vqav2 = _vqa_loader("vqav2", "VQAv2", "v2_OpenEnded_mscoco_{s}_questions.json",
                         "v2_mscoco_{s}_annotations.json", "visualqa.org")
load_okvqa = _vqa_loader("okvqa", "OK-VQA", "OpenEnded_mscoco_{s}_questions.json",
                         "mscoco_{s}_annotations.json", "okvqa.allenai.org")


def load_vizwiz(root: Path, split: str) -> list[Sample]:
    """VizWiz-VQA: annotations/{split}.json (one question per image, so the image name is the id) + {split}/."""
    check_split("vizwiz", split, ("train", "val"), " (test answers are not public)")
    d = dataset_dir(root, "vizwiz", "annotations")
    path = require_file(d / "annotations" / f"{split}.json", "vizwiz", "official VizWiz-VQA annotations",
                        "download Annotations.zip from vizwiz.org and unzip it into --data-root/vizwiz")
    img_dir = first_dir("vizwiz", [d / split], f"VizWiz {split} images",
                        f"download {split}.zip from vizwiz.org and unzip it into --data-root/vizwiz")
    rows = read_json(path)
    if not isinstance(rows, list):
        raise M2IVError(f"{path}: expected a JSON list of questions; this is not the official file, download it again")
    samples: list[Sample] = []
    seen: set[Any] = set()
    for i, r in enumerate(rows):
        image = field(r, "image", path, f"entry #{i}", str)
        add_unique(seen, image, path, "image")
        where = f"image {image}"
        meta = {k: r[k] for k in ("answer_type", "answerable") if k in r}
        samples.append(Sample(id=Path(image).stem, images=(str(img_dir / image),),
                              question=field(r, "question", path, where, str).strip(),
                              answers=_answer_texts(field(r, "answers", path, where, list), path, where),
                              split=split, meta=meta))
    return samples


def load_gqa(root: Path, split: str) -> list[Sample]:
    """GQA balanced questions: questions/{split}_balanced_questions.json (qid -> question) + images/{imageId}.jpg."""
    check_split("gqa", split, ("train", "val", "testdev"), " (challenge and test answers are not public)")
    d = dataset_dir(root, "gqa", "questions")
    path = require_file(d / "questions" / f"{split}_balanced_questions.json", "gqa", "official GQA balanced questions",
                        "download questions1.2.zip from cs.stanford.edu/people/dorarad/gqa and unzip it into "
                        "--data-root/gqa/questions")
    img_dir = first_dir("gqa", [d / "images"], "GQA images", "download images.zip from "
                        "cs.stanford.edu/people/dorarad/gqa and unzip it into --data-root/gqa")
    data = read_json(path)
    if not isinstance(data, dict):
        raise M2IVError(f"{path}: expected a JSON object of question id -> question; download it again")
    samples = []
    for qid, q in data.items():
        where = f"question {qid}"
        image_id = field(q, "imageId", path, where, str)
        types = q.get("types") if isinstance(q.get("types"), dict) else {}
        meta = {"image_id": image_id, "full_answer": q.get("fullAnswer", ""), **{k: str(v) for k, v in types.items()}}
        samples.append(Sample(id=str(qid), images=(str(img_dir / f"{image_id}.jpg"),),
                              question=field(q, "question", path, where, str).strip(),
                              answers=(field(q, "answer", path, where, str).strip(),), split=split, meta=meta))
    return samples


def load_textvqa(root: Path, split: str) -> list[Sample]:
    """TextVQA 0.5.1: TextVQA_0.5.1_{split}.json ({"data": [...]}) + train_images/{image_id}.jpg (train and val)."""
    check_split("textvqa", split, ("train", "val"), " (test answers are not public)")
    name = f"TextVQA_0.5.1_{split}.json"
    d = dataset_dir(root, "textvqa", name)
    path = require_file(d / name, "textvqa", "official TextVQA 0.5.1 annotations",
                        "download it from textvqa.org/dataset into --data-root/textvqa")
    img_dir = first_dir("textvqa", [d / "train_images", d / "train_val_images" / "train_images"],
                        "TextVQA train+val images", "download train_val_images.zip from textvqa.org/dataset and "
                        "unzip it into --data-root/textvqa")
    samples: list[Sample] = []
    seen: set[Any] = set()
    for i, r in enumerate(field(read_json(path), "data", path, "the top-level object", list)):
        qid = field(r, "question_id", path, f"entry #{i}", (int, str))
        add_unique(seen, qid, path, "question_id")
        where = f"question_id {qid}"
        image_id = field(r, "image_id", path, where, str)
        answers = tuple(str(a).strip() for a in field(r, "answers", path, where, list))
        if not answers:
            raise M2IVError(f"{path}: {where} has no answers; use split train or val")
        meta = {"image_id": image_id, "image_classes": list(r.get("image_classes") or [])}
        samples.append(Sample(id=str(qid), images=(str(img_dir / f"{image_id}.jpg"),),
                              question=field(r, "question", path, where, str).strip(), answers=answers,
                              split=split, meta=meta))
    return samples


KARPATHY_SPLITS = {"train": ("train", "restval"), "restval": ("restval",), "val": ("val",), "test": ("test",)}


def _karpathy_loader(name: str, fname: str, title: str, folder: Callable[[dict, Path, str], str],
                     image_dir: Callable[[Path, str], Path]) -> Loader:
    """Karpathy-split captioning JSON; `train` includes `restval`, as in the usual 113k/5k/5k COCO setup."""

    def load(root: Path, split: str) -> list[Sample]:
        check_split(name, split, tuple(KARPATHY_SPLITS))
        d = dataset_dir(root, name, fname)
        path = require_file(d / fname, name, f"Karpathy-split {title} captions",
                            f"download caption_datasets.zip (Karpathy splits) and put {fname} into --data-root/{name}")
        wanted, samples, dirs = KARPATHY_SPLITS[split], [], {}
        seen: set[Any] = set()
        for i, img in enumerate(field(read_json(path), "images", path, "the top-level object", list)):
            if field(img, "split", path, f"image #{i}", str) not in wanted:
                continue
            filename = field(img, "filename", path, f"image #{i}", str)
            sid = str(img["cocoid"]) if "cocoid" in img else Path(filename).stem
            add_unique(seen, sid, path, "image")
            where = f"image {filename}"
            refs = tuple(str(field(s, "raw", path, f"{where} sentence #{j}")).strip()
                         for j, s in enumerate(field(img, "sentences", path, where, list)))
            if not refs:
                raise M2IVError(f"{path}: {where} has no sentences; download the Karpathy split file again")
            sub = folder(img, path, where)
            if sub not in dirs:
                dirs[sub] = image_dir(d, sub)
            samples.append(Sample(id=sid, images=(str(dirs[sub] / filename),), question="", answers=refs,
                                  split=split, meta={"image_id": sid, "karpathy_split": img["split"]}))
        return samples

    load.__doc__ = f"{title} captions, Karpathy splits: --data-root/{name}/{fname}; answers are the raw references."
    return load


def _coco_image_dir(d: Path, sub: str) -> Path:
    return first_dir("coco_captions", [d / sub, d.parent / "coco" / sub], f"COCO {sub} images", COCO_FIX.format(s=sub))


def _flickr_image_dir(d: Path, sub: str) -> Path:
    return first_dir("flickr30k", [d / sub], "Flickr30k images", "request flickr30k-images.tar.gz from "
                     "shannon.cs.illinois.edu/DenotationGraph and unpack it into --data-root/flickr30k")


load_coco_captions = _karpathy_loader("coco_captions", "dataset_coco.json", "COCO",
                                      lambda img, path, where: field(img, "filepath", path, where, str),
                                      _coco_image_dir)
load_flickr30k = _karpathy_loader("flickr30k", "dataset_flickr30k.json", "Flickr30k",
                                  lambda img, path, where: "flickr30k-images", _flickr_image_dir)

OFFICIAL: dict[str, Loader] = {
    "vqav2": load_vqav2, "okvqa": load_okvqa, "vizwiz": load_vizwiz, "gqa": load_gqa, "textvqa": load_textvqa,
    "coco_captions": load_coco_captions, "flickr30k": load_flickr30k, "jsonl": load_jsonl,
}
