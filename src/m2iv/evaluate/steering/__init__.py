"""The VLibrary applications, measured (`m2iv bench library`): steering a model with stored, conditioned, composed
and negated vectors.

    m2iv bench library sandbox --work runs/bench/shared --out benchmarks/library/sandbox.json

1. Alignment (alignment.py): the easy-vqa yes/no grounding task, and a POPE-style object-hallucination probe with
   zero-shot, 16-shot ICL, M²IV and a VTI-style baseline.
2. Customized generation (styles.py): capitals and French style entries and every composition operator, against
   16-shot ICL with French-capitals demonstrations.
3. Safety (safety.py): a refusal vector gated by a condition fitted on the task's own training queries, next to
   longer and contrastive training, on harmful, ordinary and near-miss held-out requests.
4. Search by example and routing (routing.py).

Every row carries its n, its standard error and the command of the `m2iv eval` folder it comes from (all under
`work/`, resumable); the choices (weights, bands, thresholds) are made on held-out training queries.
"""

from __future__ import annotations

import time
from pathlib import Path

from m2iv.evaluate.steering.common import Runner
from m2iv.evaluate.steering.report import markdown

SECTIONS = ("alignment", "styles", "safety", "routing")


def library_applications(lm, work: str | Path, library_root: str | Path | None = None, shots: int = 16,
                         n_test: int = 100, seed: int = 0, batch_size: int = 8, train_defaults: dict | None = None,
                         task_overrides: dict | None = None, search_n: int = 50, log=print, model: str = "sandbox",
                         sections: tuple[str, ...] = SECTIONS, tune: int = 48, sum_grid: dict | None = None) -> dict:
    """Every application's rows (see the module docstring); `tune` held-out training images and `sum_grid` (weights
    per style) size the composition's choices."""
    from m2iv.evaluate.steering.alignment import grounding_rows, pope_rows
    from m2iv.evaluate.steering.routing import search_and_routing
    from m2iv.evaluate.steering.safety import SAFETY, safety_rows
    from m2iv.evaluate.steering.styles import style_rows
    from m2iv.library.store import Library

    work = Path(work)
    t0 = time.time()
    r = Runner(lm, work, model, shots, n_test, seed, batch_size, train_defaults or {}, task_overrides, log)
    out: dict = {"rows": []}
    with Library(library_root or work / "library-apps" / "library") as lib:
        if "alignment" in sections:
            rows, _ = grounding_rows(r)
            out["rows"] += rows + pope_rows(r, shots)
        if "styles" in sections:
            rows, out["composition"] = style_rows(r, lib, shots, tune, sum_grid)
            out["rows"] += rows
        if "safety" in sections:
            rows, out["safety_condition"] = safety_rows(r, lib, shots)
            out["rows"] += rows
        if "routing" in sections:
            dirs = {t: r.trained(t)[1] for t in ("sandbox-grounding", "sandbox-colour-nonce", "sandbox-style-caps",
                                                 SAFETY)}
            out["search_by_example"], out["routing"] = search_and_routing(r, lib, dirs, search_n)
        out["library"] = [{"name": e.name, "task": e.task, "method": e.method, "tags": list(e.tags)}
                          for e in lib.entries()]
    out["wall_seconds"] = round(time.time() - t0, 1)
    return out


__all__ = ["SECTIONS", "library_applications", "markdown"]
