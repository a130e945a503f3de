"""Score and "label in demos" (share of queries whose class occurs among their demonstrations) of each run here.

    PYTHONPATH=src python benchmarks/suite_v2/label_in_demos.py
"""

import json
from pathlib import Path

from m2iv.sandbox.labels import image_labels

TRAIN, TEST = image_labels("train"), image_labels("test")
KEYS = {"sandbox-pair-nonce": lambda cs: cs, "sandbox-colour-caps": lambda cs: cs[0]}


def image(sample_id: str) -> int:
    return int(sample_id.split("-")[1])


for run in sorted(p for p in Path(__file__).parent.iterdir() if (p / "summary.json").is_file()):
    summary = json.loads((run / "summary.json").read_text())
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    line = f"{run.name:36s} n={summary['n']} score={summary['score']:.3f} tokens={summary['mean_prompt_tokens']:.0f}"
    key = KEYS.get(summary["task"])
    if key is not None and summary["shots"]:
        hits = [key(TEST[image(r["id"])]) in {key(TRAIN[image(d)]) for d in r["demos"]} for r in rows]
        line += f" label-in-demos={sum(hits) / len(hits):.2f}"
    print(line)
