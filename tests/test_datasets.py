"""Dataset loaders on tiny fixtures in each official layout, the JSONL / root errors, and the seeded splits."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from m2iv.data.datasets import DATASETS, load_dataset, make_splits, resolve_root, split_manifest
from m2iv.data.sample import Sample
from m2iv.errors import M2IVError


def _img(path: Path, color: tuple[int, int, int] = (200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), color).save(path)
    return path


def _json(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def _one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(M2IVError) as e:
        fn(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def _vqa(root: Path, name: str, qfile: str, afile: str, image_home: str) -> None:
    qs = [{"image_id": 42, "question": "What color is the bus?", "question_id": 420},
          {"image_id": 7, "question": "How many dogs?", "question_id": 70}]
    anns = [{"question_id": 70, "image_id": 7, "question_type": "how many", "answer_type": "number",
             "multiple_choice_answer": "2", "answers": [{"answer": "2", "answer_confidence": "yes", "answer_id": j}
                                                        for j in range(1, 11)]},
            {"question_id": 420, "image_id": 42, "question_type": "what color", "answer_type": "other",
             "multiple_choice_answer": "red", "answers": [{"answer": a, "answer_id": j} for j, a in
                                                          enumerate(["red"] * 9 + ["orange"], 1)]}]
    _json(root / name / qfile, {"questions": qs})
    _json(root / name / afile, {"annotations": anns})
    for i in (42, 7):
        _img(root / image_home / "val2014" / f"COCO_val2014_{i:012d}.jpg")


@pytest.mark.parametrize("name,qfile,afile", [
    ("vqav2", "v2_OpenEnded_mscoco_val2014_questions.json", "v2_mscoco_val2014_annotations.json"),
    ("okvqa", "OpenEnded_mscoco_val2014_questions.json", "mscoco_val2014_annotations.json")])
@pytest.mark.parametrize("shared_coco", [True, False])
def test_vqa_formats(tmp_path, name, qfile, afile, shared_coco):
    _vqa(tmp_path, name, qfile, afile, "coco" if shared_coco else name)
    samples = {s.id: s for s in load_dataset(name, "val", tmp_path)}
    assert list(samples) == ["420", "70"]
    s = samples["420"]
    assert s.question == "What color is the bus?" and s.split == "val"
    assert s.answers == ("red",) * 9 + ("orange",)
    root = tmp_path / ("coco" if shared_coco else name)
    assert s.images == (str(root / "val2014" / "COCO_val2014_000000000042.jpg"),)
    assert Path(s.images[0]).is_file() and Path(s.images[0]).is_absolute()
    assert s.meta == {"question_type": "what color", "answer_type": "other", "multiple_choice_answer": "red",
                      "image_id": 42}
    assert len(samples["70"].answers) == 10
    # --data-root may also point straight at the benchmark folder
    assert [x.id for x in load_dataset(name, "val", tmp_path / name)] == ["420", "70"]


def test_vqa_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("M2IV_DATA", raising=False)
    msg = _one_line_error(load_dataset, "vqav2", "val")
    assert "M2IV_DATA" in msg and "--data-root" in msg
    expected = tmp_path / "vqav2" / "v2_OpenEnded_mscoco_val2014_questions.json"
    msg = _one_line_error(load_dataset, "vqav2", "val", tmp_path)
    assert str(expected) in msg and "visualqa.org" in msg
    monkeypatch.setenv("M2IV_DATA", str(tmp_path))  # the env var is the fallback root
    assert str(expected) in _one_line_error(load_dataset, "vqav2", "val")
    assert "does not exist" in _one_line_error(resolve_root, tmp_path / "nope")
    assert "unknown split 'test'; use one of train, val" in _one_line_error(load_dataset, "vqav2", "test", tmp_path)

    _vqa(tmp_path, "vqav2", expected.name, "v2_mscoco_val2014_annotations.json", "coco")
    assert len(load_dataset("vqav2", "val")) == 2
    qpath = tmp_path / "vqav2" / expected.name
    qs = json.loads(qpath.read_text())
    _json(qpath, {"questions": qs["questions"] + [{"image_id": 1, "question": "?", "question_id": 999}]})
    msg = _one_line_error(load_dataset, "vqav2", "val", tmp_path)
    assert str(qpath) in msg and "999" in msg and "no annotation" in msg
    _json(qpath, {"questions": qs["questions"] + qs["questions"][:1]})
    msg = _one_line_error(load_dataset, "vqav2", "val", tmp_path)
    assert str(qpath) in msg and "duplicate question_id 420" in msg
    qpath.write_text('{"questions": [')
    assert str(qpath) in _one_line_error(load_dataset, "vqav2", "val", tmp_path)
    assert "did you mean 'vqav2'" in _one_line_error(load_dataset, "vqa2", "val", tmp_path)


def test_vizwiz(tmp_path):
    rows = [{"image": f"VizWiz_val_0000000{i}.jpg", "question": f"What is this {i}?", "answer_type": "other",
             "answerable": 1, "answers": [{"answer": "soup", "answer_confidence": "yes"}] * 10} for i in range(3)]
    _json(tmp_path / "vizwiz" / "annotations" / "val.json", rows)
    for r in rows:
        _img(tmp_path / "vizwiz" / "val" / r["image"])
    samples = load_dataset("vizwiz", "val", tmp_path)
    assert [s.id for s in samples] == ["VizWiz_val_00000000", "VizWiz_val_00000001", "VizWiz_val_00000002"]
    assert samples[1].question == "What is this 1?" and samples[1].answers == ("soup",) * 10
    assert samples[1].images == (str(tmp_path / "vizwiz" / "val" / "VizWiz_val_00000001.jpg"),)
    assert samples[1].meta == {"answer_type": "other", "answerable": 1}


def test_gqa(tmp_path):
    qs = {"201307251": {"imageId": "n161313", "question": "Is it overcast?", "answer": "no",
                        "fullAnswer": "No, it is clear.", "types": {"structural": "verify", "semantic": "attr",
                                                                     "detailed": "weatherVerify"}},
          "201640614": {"imageId": "n3337", "question": "Who is wearing the shirt?", "answer": "girl",
                        "fullAnswer": "The girl is wearing a shirt.", "types": {"structural": "query"}}}
    _json(tmp_path / "gqa" / "questions" / "testdev_balanced_questions.json", qs)
    for q in qs.values():
        _img(tmp_path / "gqa" / "images" / f"{q['imageId']}.jpg")
    samples = load_dataset("gqa", "testdev", tmp_path)
    assert [(s.id, s.answers) for s in samples] == [("201307251", ("no",)), ("201640614", ("girl",))]
    assert samples[0].images == (str(tmp_path / "gqa" / "images" / "n161313.jpg"),)
    assert samples[0].meta["structural"] == "verify" and samples[0].meta["full_answer"] == "No, it is clear."
    assert "gqa/questions/val_balanced_questions.json" in _one_line_error(load_dataset, "gqa", "val", tmp_path)


def test_textvqa(tmp_path):
    data = [{"question_id": 34602 + i, "question": f"what brand {i}?", "image_id": f"abc{i}",
             "answers": ["nokia"] * 8 + ["toshiba"] * 2, "image_classes": ["Mobile phone"], "set_name": "val"}
            for i in range(2)]
    _json(tmp_path / "textvqa" / "TextVQA_0.5.1_val.json", {"dataset_name": "textvqa", "data": data})
    for d in data:
        _img(tmp_path / "textvqa" / "train_images" / f"{d['image_id']}.jpg")
    samples = load_dataset("textvqa", "val", tmp_path)
    assert [s.id for s in samples] == ["34602", "34603"]
    assert samples[1].answers == ("nokia",) * 8 + ("toshiba",) * 2
    assert samples[1].images == (str(tmp_path / "textvqa" / "train_images" / "abc1.jpg"),)
    assert samples[1].meta["image_classes"] == ["Mobile phone"]


def _karpathy_images(split_of: dict[int, str], coco: bool) -> list[dict]:
    out = []
    for i, split in split_of.items():
        img = {"filename": f"COCO_val2014_{i:012d}.jpg" if coco else f"{1000 + i}.jpg", "imgid": i, "split": split,
               "sentences": [{"raw": f"A caption {k} of {i}. ", "tokens": ["a"]} for k in range(5)]}
        if coco:
            img.update(filepath="val2014", cocoid=i)
        out.append(img)
    return out


def test_coco_captions_and_flickr30k(tmp_path):
    split_of = {1: "train", 2: "restval", 3: "val", 4: "test"}
    _json(tmp_path / "coco_captions" / "dataset_coco.json", {"images": _karpathy_images(split_of, True)})
    _json(tmp_path / "flickr30k" / "dataset_flickr30k.json", {"images": _karpathy_images(split_of, False)})
    for i in split_of:
        _img(tmp_path / "coco" / "val2014" / f"COCO_val2014_{i:012d}.jpg")
        _img(tmp_path / "flickr30k" / "flickr30k-images" / f"{1000 + i}.jpg")
    train = load_dataset("coco_captions", "train", tmp_path)  # Karpathy train includes restval
    assert [s.id for s in train] == ["1", "2"] and train[0].question == ""
    assert train[0].answers == tuple(f"A caption {k} of 1." for k in range(5))
    assert train[1].images == (str(tmp_path / "coco" / "val2014" / "COCO_val2014_000000000002.jpg"),)
    test = load_dataset("flickr30k", "test", tmp_path)
    assert [s.id for s in test] == ["1004"] and len(test[0].answers) == 5
    assert test[0].images == (str(tmp_path / "flickr30k" / "flickr30k-images" / "1004.jpg"),)


def test_jsonl(tmp_path):
    _img(tmp_path / "d" / "img" / "a.png")
    rows = [{"id": "q1", "image": "img/a.png", "question": "Color?", "answer": "red", "note": "x"},
            {"images": ["img/a.png", str(tmp_path / "b.png")], "question": "Same?", "answers": ["no", "nope"]},
            {"id": 3, "image": "img/a.png", "question": "Shape?", "answer": "square", "split": "train"}]
    f = tmp_path / "d" / "data.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    samples = load_dataset("jsonl", "val", f)
    assert [s.id for s in samples] == ["q1", "data-2"]
    assert samples[0].images == (str(tmp_path / "d" / "img" / "a.png"),) and samples[0].answers == ("red",)
    assert samples[0].meta == {"note": "x"}
    assert samples[1].images[1] == str(tmp_path / "b.png") and samples[1].answers == ("no", "nope")
    assert [s.id for s in load_dataset("jsonl", "train", f)] == ["q1", "data-2", "3"]  # rows without split: all
    assert len(load_dataset("jsonl", "all", f)) == 3
    (tmp_path / "d" / "test.jsonl").write_text(json.dumps(rows[0]) + "\n")
    assert [s.id for s in load_dataset("jsonl", "test", tmp_path / "d")] == ["q1"]
    assert str(tmp_path / "d" / "val.jsonl") in _one_line_error(load_dataset, "jsonl", "val", tmp_path / "d")


@pytest.mark.parametrize("bad,needle", [
    ("{not json", "invalid JSON"),
    ('{"image": "a.png", "question": "q?"}', "'answer'"),
    ('{"image": "a.png", "answer": "x"}', "missing field 'question'"),
    ('{"image": "a.png", "question": 5, "answer": "x"}', "'question' must be a string"),
    ('{"images": "a.png", "question": "q", "answer": "x"}', "'images' a list"),
    ('{"image": "a.png", "question": "q", "answers": []}', "non-empty list"),
    ('["a.png", "q", "x"]', "expected a JSON object"),
    ('{"id": "a", "image": "a.png", "question": "q", "answer": "x"}', "duplicate id 'a' (first on line 1)"),
])
def test_jsonl_malformed_row(tmp_path, bad, needle):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"id": "a", "image": "a.png", "question": "q", "answer": "x"}\n\n' + bad + "\n")
    msg = _one_line_error(load_dataset, "jsonl", "val", f)
    assert f"{f} line 3:" in msg and needle in msg


def test_hf_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    imgs = [Image.new("RGB", (8, 6), (i * 60, 0, 0)) for i in range(3)]
    ds = datasets.Dataset.from_dict({
        "question_id": [11, 12, 13], "image": imgs, "question": ["A?", "B?", "C?"],
        "answers": [[{"answer": "yes", "answer_confidence": "yes"}] * 3, [{"answer": "no"}], [{"answer": "2"}]],
        "answer_type": ["yes/no", "yes/no", "number"]}).cast_column("image", datasets.Image())
    root = tmp_path / "hf"
    datasets.DatasetDict({"validation": ds, "train": ds.select([0])}).save_to_disk(str(root))
    samples = load_dataset("hf_datasets", "validation", root)
    assert [(s.id, s.question, s.answers) for s in samples] == [
        ("11", "A?", ("yes",) * 3), ("12", "B?", ("no",)), ("13", "C?", ("2",))]
    assert samples[2].meta == {"answer_type": "number"}
    path = Path(samples[2].images[0])
    assert path.is_file() and path.suffix == ".png" and ".m2iv_images" in path.parts
    with Image.open(path) as im:
        assert im.size == (8, 6) and im.convert("RGB").getpixel((0, 0)) == (120, 0, 0)
    mtime = path.stat().st_mtime_ns
    assert load_dataset("hf_datasets", "validation", root)[2].images == samples[2].images
    assert path.stat().st_mtime_ns == mtime  # written once
    assert "validation" in _one_line_error(load_dataset, "hf_datasets", "test", root)
    assert "question_column" in _one_line_error(load_dataset, "hf_datasets", "train", root, question_column="q")
    assert "no option 'colour'" in _one_line_error(load_dataset, "hf_datasets", "train", root, colour="x")
    assert "state.json" in _one_line_error(load_dataset, "hf_datasets", "train", tmp_path)
    # a plain Dataset with an image-list column, a path column and renamed columns
    _img(tmp_path / "flat" / "pics" / "p.png")
    flat = datasets.Dataset.from_dict({"imgs": [imgs[:2]], "path": ["pics/p.png"], "prompt": ["Two?"],
                                       "label": ["yes"]}).cast_column("imgs", datasets.List(datasets.Image()))
    flat.save_to_disk(str(tmp_path / "flat"))
    (s,) = load_dataset("hf_datasets", "train", tmp_path / "flat", image_column="imgs")
    assert [Path(p).name for p in s.images] == ["0-0.png", "0-1.png"] and s.question == "Two?" and s.answers == ("yes",)
    (s,) = load_dataset("hf_datasets", "train", tmp_path / "flat", image_column="path")
    assert s.images == (str(tmp_path / "flat" / "pics" / "p.png"),)


def test_easy_vqa():
    easy_vqa = pytest.importorskip("easy_vqa")
    train, test = load_dataset("easy_vqa", "train"), load_dataset("easy_vqa", "test")
    assert len(train) == len(easy_vqa.get_train_questions()[0]) == 38575
    assert len(test) == len(easy_vqa.get_test_questions()[0]) == 9673
    s = train[0]
    assert s.question and len(s.answers) == 1 and Path(s.images[0]).is_absolute() and Path(s.images[0]).is_file()
    assert {"easy_vqa", "vqav2", "okvqa", "vizwiz", "gqa", "textvqa", "coco_captions", "flickr30k", "jsonl",
            "hf_datasets"} <= set(DATASETS.names())


def _samples(n: int, per_image: int = 1) -> list[Sample]:
    return [Sample(id=f"q{i:03d}", images=(f"/imgs/{i // per_image}.png",), question=f"q{i}?", answers=(str(i),))
            for i in range(n)]


def test_splits_disjoint_deterministic():
    data = _samples(60)
    a = make_splits(data, seed=0, n_support=10, n_test=20, n_train=15)
    assert [len(a[k]) for k in ("train", "support", "test")] == [15, 10, 20]
    ids = [{s.id for s in a[k]} for k in ("train", "support", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert make_splits(list(reversed(data)), seed=0, n_support=10, n_test=20, n_train=15) == a  # order-free
    assert make_splits(data, seed=1, n_support=10, n_test=20, n_train=15)["test"] != a["test"]
    assert make_splits(data, seed=0, n_support=3, n_test=20)["test"] == a["test"]  # test fixed by seed and n_test
    rest = make_splits(data, seed=0, n_support=10, n_test=None)
    assert len(rest["test"]) == 50 and rest["train"] == []
    assert len(make_splits(data, seed=0, n_support=10, n_test=20)["train"]) == 30
    assert "ran out" in _one_line_error(make_splits, data, 0, 50, 20)
    assert "duplicate" in _one_line_error(make_splits, data + data[:1], 0, 1, 1)


def test_splits_group_shared_images():
    data = _samples(40, per_image=4) + [Sample(id="z", images=("/imgs/0.png", "/imgs/9.png"), question="?",
                                               answers=("a",))]  # links images 0 and 9 into one group
    for seed in range(5):
        s = make_splits(data, seed=seed, n_support=6, n_test=10, n_train=8)
        assert [len(s[k]) for k in ("train", "support", "test")] == [8, 6, 10]
        images = [{p for x in s[k] for p in x.images} for k in ("train", "support", "test")]
        assert not (images[2] & (images[0] | images[1])) and not (images[0] & images[1])


def test_manifest_stable():
    data = _samples(30)
    m1 = split_manifest(make_splits(data, seed=3, n_support=4, n_test=10))
    m2 = split_manifest(make_splits([replace(s, meta={"x": 1}) for s in data[::-1]], seed=3, n_support=4, n_test=10))
    assert m1 == m2 and list(m1) == ["train", "support", "test"]
    assert m1["test"]["size"] == 10 and len(m1["test"]["content_hash"]) == 16
    assert split_manifest(make_splits(data, seed=4, n_support=4, n_test=10))["test"] != m1["test"]
