"""The `m2iv` model for lmms-eval, registered through lmms-eval's `lmms_eval.models` entry point (pyproject.toml):

    lmms-eval --model m2iv --model_args pretrained=sandbox,vectors=out/colour --tasks TASK --log_samples ...
    lmms-eval --model m2iv --model_args pretrained=sandbox,shots=16 --tasks TASK ...   # multimodal ICL

Model arguments: `pretrained` (any m2iv model spec: sandbox, tiny:<family>, a directory, org/name), `vectors`
(a vector directory, library:NAME or hf://org/name[@rev], injected by m2iv's hooks), `shots` (N demonstrations
with their images per query, from the task's fewshot/training split or `support_split`), `selection`
(random|fixed), `seed`, `strict`, `dtype`, `device`, `device_map`, `max_new_tokens` (when the task sets none),
`batch_size`. lmms-eval's own CLI writes `{date}_results.json` and `{date}_samples_{task}.jsonl`.
"""

from __future__ import annotations

from typing import Any

from lmms_eval.api.model import lmms
from tqdm.auto import tqdm

from m2iv.data.sample import Sample
from m2iv.integrations.harness import HarnessModel
from m2iv.integrations.lmms_docs import Demonstrations, ImageStore
from m2iv.models.loading import load_model

MODEL_ID = "m2iv"
CLASS_PATH = "m2iv.integrations.lmms_eval_model.M2IVModel"


def manifest():
    """The entry point's payload: lmms-eval imports the class only when `--model m2iv` asks for it."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH)


class M2IVModel(lmms):
    is_simple = True

    def __init__(self, pretrained: str = "sandbox", vectors: str | None = None, shots: int = 0,
                 selection: str = "random", support_split: str | None = None, seed: int = 0, strict: bool = True,
                 dtype: str = "float32", device: str | None = None, device_map: str | None = None,
                 max_new_tokens: int = 32, batch_size: int | str = 1, **_ignored: Any) -> None:
        super().__init__()
        lm = load_model(str(pretrained), dtype=dtype, device=device or "cpu", device_map=device_map)
        self.harness = HarnessModel(lm, vectors=str(vectors) if vectors else None, strict=bool(strict))
        self.images = ImageStore()
        self.demos = Demonstrations(int(shots), str(selection), support_split, int(seed), self.images)
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = max(1, int(batch_size)) if str(batch_size).isdigit() else 1

    def _query(self, args: tuple) -> tuple[Sample, list[Sample]]:
        """(query, demonstrations) of a request whose args are (context, _, doc_to_visual, doc_id, task, split)."""
        context, _, doc_to_visual, doc_id, task, split = args[:6]
        data = self.task_dict[task]
        query = Sample(id=f"{split}:{doc_id}", images=self.images.paths(doc_to_visual(data[split][doc_id])),
                       question=str(context), answers=(), split=str(split))
        return query, self.demos.select(query, task, doc_to_visual, data)

    def generate_until(self, requests) -> list[str]:
        out: list[str] = []
        for i in tqdm(range(0, len(requests), self.batch_size), desc="m2iv generate", disable=len(requests) < 2):
            chunk = [r.args for r in requests[i:i + self.batch_size]]
            by_kwargs: dict[str, list[int]] = {}  # one generate() per distinct generation setting
            for j, args in enumerate(chunk):
                by_kwargs.setdefault(repr(sorted((args[1] or {}).items())), []).append(j)
            texts: dict[int, str] = {}
            for rows in by_kwargs.values():
                kw = dict(chunk[rows[0]][1] or {})
                until = kw.get("until") or []
                answers = self.harness.generate([self._query(chunk[j]) for j in rows],
                                              max_new_tokens=int(kw.get("max_new_tokens") or self.max_new_tokens),
                                              until=[until] if isinstance(until, str) else list(until),
                                              temperature=float(kw.get("temperature") or 0.0))
                texts.update(zip(rows, answers, strict=True))
            out += [texts[j] for j in range(len(chunk))]
        return out

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        out: list[tuple[float, bool]] = []
        for i in range(0, len(requests), self.batch_size):
            items = []
            for r in requests[i:i + self.batch_size]:
                query, demos = self._query(r.args)
                cont = r.args[1]
                if not isinstance(cont, str):  # a doc_to_target callable
                    _, _, _, doc_id, task, split = r.args[:6]
                    cont = str(cont(self.task_dict[task][split][doc_id]))
                items.append((query, demos, cont))
            out += self.harness.loglikelihood(items)
        return out

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("the m2iv model answers single-round tasks (generate_until, loglikelihood)")
