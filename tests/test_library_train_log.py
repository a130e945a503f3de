"""`library add` keeps the trainer's per-step log beside the entry's blob (issue 24: the app plots it), export and
import carry it, `remove` deletes it, and a log of another run of the same folder is not kept."""

import json

from conftest import fixture_task, method_splits, random_vectors, tiny, train_saved
from m2iv.library.store import Library
from m2iv.methods import M2IV
from m2iv.train.config import TeacherConfig, TrainConfig
from m2iv.vectors import save_vectors


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_add_keeps_the_trainers_log_and_export_import_carry_it(tmp_path, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    lm = tiny("idefics3")
    splits = method_splits(tmp_path / "data", 10, 4)
    cfg = TrainConfig(steps=6, batch_size=4, lr_vectors=0.05, lr_scales=0.05, val_every=3, val_size=2,
                      checkpoint_every=6, teacher=TeacherConfig(shots=2, topk=8), warmup=0.0)
    train_saved(lm, fixture_task(), splits, M2IV().make_vectors(lm), cfg, tmp_path / "v", show_progress=False)
    written = _records(tmp_path / "v.train" / "train_log.jsonl")
    assert [r["step"] for r in written] == [1, 2, 3, 4, 5, 6] and "val_acc" in written[2]

    with Library(tmp_path / "lib") as lib:
        entry = lib.add(tmp_path / "v", name="trained")
        assert lib.train_log("trained") == written
        kept = lib.blobs.train_log(entry.sha256, entry.id)
        assert kept.is_file()
        out = lib.export("trained", tmp_path / "exported")
        assert _records(out / "train_log.jsonl") == written
        lib.remove("trained")
        assert not kept.exists()
    with Library(tmp_path / "lib2") as other:
        other.import_path(tmp_path / "exported")
        assert other.train_log("trained") == written


def test_a_log_of_another_run_is_not_kept_and_a_torn_line_is_dropped(tmp_path):
    lm = tiny("idefics3")
    d = save_vectors(random_vectors(lm), tmp_path / "v", adapter=lm.adapter, base_model="tiny:idefics3",
                     extra={"training": {"steps_done": 3}})
    log = tmp_path / "v.train" / "train_log.jsonl"
    log.parent.mkdir()
    log.write_text("".join(json.dumps({"step": i, "loss": 1.0 / i}) + "\n" for i in (1, 2)))  # an older, shorter run
    with Library(tmp_path / "lib") as lib:
        stale = lib.add(d, name="stale")
        assert lib.train_log(stale.id) == []
        log.write_text("".join(json.dumps({"step": i, "loss": 1.0 / i}) + "\n" for i in (1, 2, 3)) + '{"step": 4, "lo')
        lib.remove("stale")
        fresh = lib.add(d, name="fresh")
        assert [r["step"] for r in lib.train_log(fresh.id)] == [1, 2, 3]
