"""Composition that composes: two style entries (capitals, French) put together so the answer is French words in
capitals, measured for every composition operator next to 16-shot ICL with French-capitals demonstrations.

Choices (weights, bands) are made on held-out *training* images of the composed task (never used to train a style
vector), then each choice is scored once on the test images:
- sum: the shifts added (1 + 1, 0.5 + 0.5, and the weights that do best on the held-out images);
- partition: each entry on its layer band; the bands come from a per-band ablation (each style applied on one
  band of layers at a time: where does its effect live?), and, as a check, from the best single split point;
- stack: the entries' maps applied in turn;
- sequential: the French vector retrained with the capitals vector injected under it, then stacked;
- distilled: one vector distilled from both teachers at once (a product of a capitals-ICL and a French-ICL
  teacher, teacher-forced on the composed answer; no supervised loss).
"""

from __future__ import annotations

import itertools
import re

from m2iv.evaluate.steering.common import Runner, row, styled_checks

STYLES = {"caps": "sandbox-style-caps", "french": "sandbox-style-french"}
STYLE_TEST = "sandbox-style-caps-french"
TUNE = 48  # held-out training images of the composed task for the choices
SUM_GRID = {"caps": [0.25, 0.5, 0.75, 1.0], "french": [0.5, 1.0, 1.5, 2.0]}
N_BANDS = 6


def bands(num_layers: int, n: int = N_BANDS) -> list[list[int]]:
    n = min(n, num_layers)
    edges = [round(i * num_layers / n) for i in range(n + 1)]
    return [list(range(edges[i], edges[i + 1])) for i in range(n)]


class Styles:
    def __init__(self, r: Runner, lib, tune: int = TUNE, sum_grid: dict | None = None) -> None:
        from m2iv.data.tasks import get_task

        self.r, self.lib, self.tune_n, self.sum_grid = r, lib, tune, sum_grid or SUM_GRID
        splits = get_task(STYLE_TEST).splits(None, seed=r.seed)
        self.test = {s.id: s for s in splits["test"]}
        self.tune = splits["train"][-tune:]
        self.samples = {**self.test, **{s.id: s for s in self.tune}}
        self.vectors: dict = {}
        n_train = (r.task_overrides or {}).get("n_train")
        trained_on = {p for t in STYLES.values() for s in get_task(t).splits(None, seed=r.seed)["train"][:n_train]
                      for p in s.images}
        assert not trained_on & {p for s in self.tune for p in s.images}, "tuning images overlap training images"

    def load(self, path: str):
        from m2iv.vectors.format import load_vectors

        return load_vectors(path, adapter=self.r.lm.adapter, device=self.r.lm.device)[0]

    def score(self, label: str, vec_dir: str | None, on_tune: bool = False, method: str = "zero-shot",
              shots: int = 0) -> tuple[dict, dict, str]:
        queries = self.tune if on_tune else None
        summary, preds, cmd = self.r.run(STYLE_TEST, ("tune-" if on_tune else "") + label, vec_dir, method=method,
                                         shots=shots, queries=queries, limit=self.tune_n if on_tune else None)
        return summary, styled_checks(preds, self.samples), cmd

    def compose(self, label: str, weights: list[float], operator: str, bands_=None, items=None) -> str:
        from m2iv.vectors.composition import compose_vectors

        items = items or [self.vectors["caps"], self.vectors["french"]]
        return self.r.save(compose_vectors(items, weights, operator, bands_), label)

    def best_sum(self) -> tuple[float, float, list[dict]]:
        """The sum's weights with the most French-capitals answers on the held-out images."""
        trials = []
        for wc, wf in itertools.product(self.sum_grid["caps"], self.sum_grid["french"]):
            _, checks, _ = self.score(f"sum-{wc}-{wf}", self.compose(f"sum-{wc}-{wf}", [wc, wf], "sum"), on_tune=True)
            trials.append({"caps": wc, "french": wf, **checks})
        best = max(trials, key=lambda t: (t["caps_and_french"], t["french_content"] + t["capitals"]))
        return best["caps"], best["french"], trials

    def ablation(self) -> list[dict]:
        """Each style applied on one band of layers at a time, on the held-out images."""
        from m2iv.library.compose import mask

        out = []
        for style in STYLES:
            for band in bands(self.r.lm.adapter.num_layers):
                label = f"band-{style}-{band[0]}-{band[-1]}"
                d = self.r.save(mask(self.vectors[style], layers=band), label)
                _, checks, _ = self.score(label, d, on_tune=True)
                out.append({"style": style, "layers": f"{band[0]}-{band[-1]}", **checks})
        return out

    def partition_from_ablation(self, ablation: list[dict]) -> list[list[int]]:
        """Each band to the style whose effect there is the larger share of its strongest band's effect."""
        key = {"caps": "capitals", "french": "french_content"}
        own: dict[str, list[int]] = {"caps": [], "french": []}
        for band in bands(self.r.lm.adapter.num_layers):
            tag = f"{band[0]}-{band[-1]}"
            share = {}
            for style in STYLES:
                top = max(a[key[style]] for a in ablation if a["style"] == style) or 1.0
                share[style] = next(a[key[style]] for a in ablation if a["style"] == style and a["layers"] == tag) / top
            own[max(share, key=lambda s: share[s])] += band
        return [own["caps"], own["french"]]

    def best_split(self) -> tuple[list[list[int]], list[dict]]:
        """The single split point (one style below, the other above) with the most French capitals, held out."""
        n = self.r.lm.adapter.num_layers
        trials = []
        for k in [b[0] for b in bands(n)[1:]]:
            for caps_low in (True, False):
                low, high = list(range(k)), list(range(k, n))
                parts = [low, high] if caps_low else [high, low]
                label = f"split-{k}-{'caps-low' if caps_low else 'caps-high'}"
                _, checks, _ = self.score(label, self.compose(label, [1.0, 1.0], "partition", parts), on_tune=True)
                trials.append({"split": k, "caps_below": caps_low, "parts": parts, **checks})
        best = max(trials, key=lambda t: (t["caps_and_french"], t["french_content"] + t["capitals"]))
        return best["parts"], [{k: v for k, v in t.items() if k != "parts"} for t in trials]


def _add(lib, name: str, vec_dir: str, task: str, tags: tuple[str, ...]) -> str:
    existing = [e for e in lib.entries() if e.name == name]
    return (existing[0] if existing else lib.add(vec_dir, name=name, tags=tags, task=task)).id


def style_rows(r: Runner, lib, shots: int, tune: int = TUNE, sum_grid: dict | None = None
               ) -> tuple[list[dict], dict]:
    from m2iv.evaluate.steering.common import standard_error

    st = Styles(r, lib, tune, sum_grid)
    dirs = {style: r.trained(task)[1] for style, task in STYLES.items()}
    for style, task in STYLES.items():
        _add(lib, f"style-{style}", dirs[style], task, ("style", "sandbox"))
        st.vectors[style] = st.load(dirs[style])
    wc, wf, sum_trials = st.best_sum()
    ablation = st.ablation()
    parts = st.partition_from_ablation(ablation)
    split, split_trials = st.best_split()
    seq_dir = r.trained(STYLES["french"], "after-caps", options={"with_vectors": dirs["caps"]})[1]
    experts = [STYLES["caps"], STYLES["french"]]
    distilled = r.trained(STYLE_TEST, "two-teachers", {"w_ce": 0.0, "teacher": {"experts": experts}},
                          {"teacher_experts": experts})[1]
    seq_vec = st.load(seq_dir)
    configs = [("zero-shot", None, "", "zero-shot", 0), (f"icl-{shots}shot (French-capitals demos)", None, "", "icl",
                                                         shots),
               ("caps", dirs["caps"], "", "", 0), ("french", dirs["french"], "", "", 0),
               ("sum caps + french", st.compose("sum-1-1", [1.0, 1.0], "sum"), "sum", "", 0),
               ("sum 0.5 caps + 0.5 french", st.compose("sum-half", [0.5, 0.5], "sum"), "sum", "", 0),
               (f"sum {wc} caps + {wf} french (held-out choice)", st.compose("sum-best", [wc, wf], "sum"), "sum",
                "", 0),
               ("partition (ablation bands)", st.compose("partition-ablation", [1.0, 1.0], "partition", parts),
                "partition", "", 0),
               ("partition (best split, held-out)", st.compose("partition-split", [1.0, 1.0], "partition", split),
                "partition", "", 0),
               ("stack caps, french", st.compose("stack", [1.0, 1.0], "stack"), "stack", "", 0),
               ("french trained after caps (alone)", seq_dir, "", "", 0),
               ("sequential: stack caps, french-after-caps",
                st.compose("sequential", [1.0, 1.0], "stack", items=[st.vectors["caps"], seq_vec]), "stack", "", 0),
               ("distilled from both teachers", distilled, "", "", 0)]
    rows = []
    for config, vec, operator, method, k in configs:
        label = re.sub(r"[^a-z0-9.]+", "-", config.lower()).strip("-")  # one run folder per configuration
        summary, checks, cmd = st.score(label, vec, method=method or "zero-shot", shots=k)
        n = summary["n"]
        rows.append(row("style", STYLE_TEST, config, summary, cmd, operator=operator or None, checks=checks,
                        checks_se={k2: standard_error(v, n) for k2, v in checks.items()}))
    record = {"sum_grid": sum_trials, "ablation": ablation, "partition_bands": {"caps": parts[0], "french": parts[1]},
              "split_trials": split_trials, "split_bands": {"caps": split[0], "french": split[1]},
              "tune": {"task": STYLE_TEST, "split": "train", "n": tune, "note": "the last training images, never "
                       "used to train a style vector"}}
    return rows, record


__all__ = ["STYLES", "STYLE_TEST", "Styles", "bands", "style_rows"]
