"""Why the issue-26 rows order as they do, read from their predictions; output: predictions_26.md.

    .venv/bin/python benchmarks/compare/predictions_26.py runs/bench/shared runs/bench/v26 --swept runs/bench/v14 \
        > benchmarks/compare/predictions_26.md

Reads every `<root>/<task>/<method>-16shot/eval*/predictions.jsonl` that `bench compare` (and `m2iv demo`, for
M²IV as `m2iv-all-losses`) wrote, and prints per task: each method's score recomputed from its predictions (a
check against the table), how many distinct answers it gives and the share of its most common one (a collapse
onto one label shows here), its accuracy per gold answer with its most common confusions, which test queries
M²IV and LoRA split, and, for Parallel-ICL, how many of its 4 chunks hold a demonstration of the query's own
answer (a product of experts multiplies in every chunk's vote, so a chunk that never saw the answer vetoes it).
The chunks are recomputed as the method made them (seeded per query; the clusters from the support embeddings
that `bench compare` cached under $M2IV_HOME); nothing is generated.
"""
import collections
import json
import sys
from pathlib import Path

METHODS = {  # row name -> run folder names, first found wins
    "16-shot ICL": ["icl-16shot"], "M²IV": ["m2iv-16shot", "m2iv-all-losses-16shot"], "LoRA": ["lora-16shot"],
    "Cartridge": ["cartridge-16shot"], "P-ICL cluster": ["parallel-icl-cluster-16shot"],
    "P-ICL random": ["parallel-icl-random-16shot"]}
SWEPT = {"LoRA, per-task rate": "lora-16shot", "Cartridge, per-task rate": "cartridge-16shot"}  # `--lr-sweep` runs
TASKS = ["sandbox-colour-nonce", "sandbox-shape-nonce", "sandbox-colour-french", "sandbox-shape-adjective",
         "sandbox-colour-number", "sandbox-vqa", "sandbox-colour-caps", "sandbox-pair-nonce"]


def load(roots: list[Path], task: str, folders: list[str]) -> list[dict] | None:
    """The newest complete (100-query) predictions file of the first run folder found under any root."""
    for root in roots:
        for folder in folders:
            files = sorted((root / task / folder).glob("eval*/predictions.jsonl"), key=lambda p: p.stat().st_mtime)
            for f in reversed(files):
                rows = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
                if len(rows) >= 100:
                    return rows[:100]
    return None


class Chunker:
    """Parallel-ICL's own chunking of each query's demonstrations (method.chunks), for one task."""

    def __init__(self, lm, task: str, chunking: str) -> None:
        from m2iv.data.tasks import get_task
        from m2iv.methods import METHODS

        t = get_task(task)
        splits = t.splits(None, seed=0)
        self.method = METHODS.get("parallel-icl")({"method_config": {"chunking": chunking}, "shots": 16, "seed": 0})
        self.method.prepare(lm, t, splits)
        self.samples = {s.id: s for part in splits.values() for s in part}

    def answers(self, row: dict) -> list[list[str]]:
        parts, _ = self.method.chunks(self.samples[row["id"]], [self.samples[d] for d in row["demos"]])
        return [[a for d in part for a in d.answers] for part in parts]


def describe(name: str, rows: list[dict]) -> list[str]:
    score = sum(r["score"] for r in rows) / len(rows)
    preds = collections.Counter(r["prediction"] for r in rows)
    top, top_n = preds.most_common(1)[0]
    gold = {a for r in rows for a in r["answers"]}
    outside = sum(n for p, n in preds.items() if p not in gold) / len(rows)
    return [f"| {name} | {score:.2f} | {len(preds)} | {top!r} {top_n / len(rows):.2f} | {outside:.2f} |"]


def per_gold(found: dict[str, list[dict]]) -> list[str]:
    golds = sorted({r["answers"][0] for rows in found.values() for r in rows})
    if len(golds) > 10:
        return []
    head = " | ".join(f"{g} (n)" for g in golds)
    out = [f"| method | {head} | most common confusions (gold -> answer: count) |", "|---" * (len(golds) + 2) + "|"]
    for name, rows in found.items():
        by = collections.defaultdict(list)
        confusions = collections.Counter()
        for r in rows:
            by[r["answers"][0]].append(r["score"])
            if not r["score"]:
                confusions[(r["answers"][0], r["prediction"])] += 1
        cells = [f"{sum(by[g]) / len(by[g]):.2f} ({len(by[g])})" if by[g] else "-" for g in golds]
        worst = ", ".join(f"{g}->{p}: {n}" for (g, p), n in confusions.most_common(3))
        out.append(f"| {name} | " + " | ".join(cells) + f" | {worst} |")
    return out


def split(found: dict[str, list[dict]], a: str, b: str) -> list[str]:
    if a not in found or b not in found:
        return []
    sa = {r["id"]: r["score"] for r in found[a]}
    sb = {r["id"]: r["score"] for r in found[b]}
    both = [i for i in sa if i in sb]
    only_a = sum(1 for i in both if sa[i] and not sb[i])
    only_b = sum(1 for i in both if sb[i] and not sa[i])
    right = sum(1 for i in both if sa[i] and sb[i])
    return [f"{a} and {b} on the same {len(both)} queries: both right {right}, only {a} {only_a}, only {b} {only_b}."]


def coverage(name: str, rows: list[dict], chunker: Chunker) -> list[str]:
    """Accuracy by the number of chunks holding a demonstration of the query's gold answer."""
    by = collections.defaultdict(list)
    for r in rows:
        by[sum(1 for c in chunker.answers(r) if set(r["answers"]) & set(c))].append(r["score"])
    cells = ", ".join(f"{k} chunks: {len(v)} queries, acc {sum(v) / len(v):.2f}" for k, v in sorted(by.items()))
    return [f"- {name}: chunks (of 4) that hold the gold answer -> {cells}"]


def report(roots: list[Path], swept: Path | None = None) -> str:
    from m2iv.models.loading import load_model

    lm = load_model("sandbox")
    lines = [__doc__.split("\n\n")[0].strip(), ""]
    for task in TASKS:
        found = {n: rows for n, folders in METHODS.items() if (rows := load(roots, task, folders)) is not None}
        if swept is not None:
            found |= {n: rows for n, f in SWEPT.items() if (rows := load([swept], task, [f])) is not None}
        if not found:
            continue
        lines += [f"## {task}", "", "| method | score | distinct answers | most common answer, share | answers outside "
                  "the gold set |", "|---|---|---|---|---|"]
        for name, rows in found.items():
            lines += describe(name, rows)
        table = per_gold(found)
        lines += ["", *table] if table else []
        lines += ["", *split(found, "M²IV", "LoRA"), *split(found, "LoRA", "Cartridge")]
        for name in ("P-ICL cluster", "P-ICL random"):
            if name in found:
                lines += coverage(name, found[name], Chunker(lm, task, name.split()[-1]))
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    args = sys.argv[1:]
    at = args.index("--swept") if "--swept" in args else None
    swept_root = Path(args[at + 1]) if at is not None else None
    roots = [Path(a) for i, a in enumerate(args) if at is None or i not in (at, at + 1)]
    print(report(roots or [Path("runs/bench/shared"), Path("runs/bench/v26")], swept_root))
