"""The `m2iv` model in lmms-eval (issue 23 item 4), run through lmms-eval's own CLI on a tiny model and two local
task YAMLs (a JSON dataset with image paths: one generate_until task, one multiple_choice task).

Each run's files are lmms-eval's (`{date}_results.json`, `{date}_samples_{task}.jsonl`), and each logged answer is
checked against m2iv answering the same query directly: with the vectors injected, and with N demonstrations
(their images included) drawn by m2iv's seeded selector from the task's fewshot split.
"""

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import image, random_vectors, tiny
from m2iv.data.sample import Sample
from m2iv.data.selection import RandomSelector
from m2iv.integrations.harness import HarnessModel

ROOT = Path(__file__).resolve().parents[1]
COLOURS = ["red", "blue", "green", "yellow"]
QUESTION = "What colour is the shape?"
TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    train: {root}/train.jsonl
    test: {root}/test.jsonl
test_split: test
fewshot_split: train
doc_to_visual: image
doc_to_text: question
doc_to_target: answer
"""
GENERATE = """output_type: generate_until
generation_kwargs:
  max_new_tokens: 4
  until: ["\\n"]
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""
CHOICE = """output_type: multiple_choice
doc_to_choice: ["red", "blue", "green", "yellow"]
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def _entry_point_path(tmp: Path) -> str:
    """The plugin is found through the `lmms_eval.models` entry point that pyproject.toml declares. An m2iv
    installed from an older checkout lacks it, so the same declaration is then put on the path as metadata."""
    table = re.search(r'\[project\.entry-points\."lmms_eval\.models"\]\n((?:[^\[\n].*\n)+)',
                      (ROOT / "pyproject.toml").read_text())
    assert table, "pyproject.toml declares no lmms_eval.models entry point"
    declared = dict(re.findall(r'^(\S+) = "(.+)"$', table[1], re.M))
    assert declared == {"m2iv": "m2iv.integrations.lmms_eval_model:manifest"}
    installed = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="lmms_eval.models")}
    if installed.get("m2iv") == declared["m2iv"]:
        return ""
    info = tmp / "meta" / "m2iv_lmms_plugin-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: m2iv-lmms-plugin\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[lmms_eval.models]\nm2iv = {declared['m2iv']}\n")
    return str(info.parent)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmms")
    data: dict[str, list[dict]] = {}
    for split, n in (("train", 6), ("test", 3)):
        rows = []
        for i in range(n):
            path = root / f"{split}{i}.png"
            image(50 * (split == "test") + i).save(path)
            rows.append({"image": str(path), "question": QUESTION, "answer": COLOURS[i % 4]})
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        data[split] = rows
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "colour.yaml").write_text(TASK.format(name="m2iv_colour", root=root) + GENERATE)
    (tasks / "colour_mc.yaml").write_text(TASK.format(name="m2iv_colour_mc", root=root) + CHOICE)
    lm = tiny("idefics2")
    random_vectors(lm, scale=2.0).save_pretrained(root / "vectors", adapter=lm.adapter, base_model="tiny:idefics2")
    extra = _entry_point_path(root)
    env = {**os.environ, "HF_HOME": str(root / "hf"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "M2IV_HOME": str(root / "home"), "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), extra) if p)}
    return root, tasks, data, env, lm


def _run(setup, model_args: str, tasks: str, out: Path) -> dict[str, Path]:
    _, task_dir, _, env, _ = setup
    run = subprocess.run([sys.executable, "-m", "lmms_eval", "--model", "m2iv", "--model_args", model_args,
                          "--tasks", tasks, "--include_path", str(task_dir), "--output_path", str(out),
                          "--log_samples", "--batch_size", "2"], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert {p.parent for p in files} == {out / "tiny__idefics2"}  # lmms-eval's folder per model
    names = [p.name for p in files]
    date = re.match(r"^(\d{8}_\d{6})_results\.json$", names[0])
    assert date, names
    wanted = {f"{date[1]}_results.json"} | {f"{date[1]}_samples_{t}.jsonl" for t in tasks.split(",")}
    assert set(names) == wanted
    return {n.removeprefix(date[1] + "_"): out / "tiny__idefics2" / n for n in names}


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _query(row: dict, i: int) -> Sample:
    return Sample(id=f"test:{i}", images=(row["image"],), question=QUESTION, answers=(), split="test")


def _logps(harness: HarnessModel, query: Sample, demos: list[Sample]) -> list[float]:
    return [lp for lp, _ in harness.loglikelihood([(query, demos, f" {c}") for c in COLOURS])]


def test_vectors_through_lmms_eval_cli_match_m2iv(setup, tmp_path):
    root, _, data, _, lm = setup
    files = _run(setup, f"pretrained=tiny:idefics2,vectors={root / 'vectors'}", "m2iv_colour,m2iv_colour_mc",
                 tmp_path / "out")
    results = json.loads(files["results.json"].read_text())
    assert set(results["results"]) == {"m2iv_colour", "m2iv_colour_mc"}
    assert "exact_match,none" in results["results"]["m2iv_colour"]
    assert "acc,none" in results["results"]["m2iv_colour_mc"]
    steered, plain = HarnessModel(lm, vectors=str(root / "vectors")), HarnessModel(lm)
    generated = _rows(files["samples_m2iv_colour.jsonl"])
    for i, row in enumerate(data["test"]):
        want = steered.generate([(_query(row, i), [])], max_new_tokens=4, until=["\n"])[0]
        assert generated[i]["filtered_resps"] in (want, [want])
    chosen = _rows(files["samples_m2iv_colour_mc.jsonl"])
    moved = 0.0
    for i, row in enumerate(data["test"]):
        logged = [float(r[0][0]) for r in chosen[i]["resps"]]
        assert logged == pytest.approx(_logps(steered, _query(row, i), []), abs=1e-3)
        moved = max(moved, max(abs(a - b) for a, b in zip(logged, _logps(plain, _query(row, i), []), strict=True)))
    assert moved > 0.1  # the vectors were injected: the log-likelihoods are not the plain model's


def test_shots_give_multimodal_icl_from_the_fewshot_split(setup, tmp_path):
    _, _, data, _, lm = setup
    files = _run(setup, "pretrained=tiny:idefics2,shots=2,seed=0", "m2iv_colour_mc", tmp_path / "out")
    support = [Sample(id=f"train:{i}", images=(r["image"],), question=QUESTION, answers=(r["answer"],), split="train")
               for i, r in enumerate(data["train"])]
    selector = RandomSelector(support, seed=0)
    harness = HarnessModel(lm)
    chosen = _rows(files["samples_m2iv_colour_mc.jsonl"])
    for i, row in enumerate(data["test"]):
        query = _query(row, i)
        demos = selector.select(query, 2)
        assert len(demos) == 2 and all(d.images for d in demos)
        logged = [float(r[0][0]) for r in chosen[i]["resps"]]
        assert logged == pytest.approx(_logps(harness, query, demos), abs=1e-3)  # those two demos, images and all
        assert logged != pytest.approx(_logps(harness, query, []), abs=1e-3)  # not the zero-shot prompt
