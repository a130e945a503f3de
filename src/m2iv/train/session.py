"""What `m2iv train` does with an --out that already holds a run: exactly what the user asked for, never a guess.

    prev = previous_run("out/colour")            # the vector folder and its checkpoints in out/colour.train
    overrides = plan(prev, resume=False, overwrite=False, more_steps=10, steps=None)

- nothing there: a new run (`--resume` and `--more-steps` have nothing to act on: an error says so);
- an interrupted run: `--resume` continues it, `--overwrite` starts afresh; neither is an error naming both;
- a finished run: it says it is finished and where its vectors are; `--more-steps N` continues it for N more
  steps on a new warmup + cosine cycle (the recipe's `restarts`, which the checkpoint identity accepts as the same
  run), `--overwrite` trains afresh.
`--overwrite` deletes only what m2iv wrote there (a vector folder and its `.train` folder); anything else is refused.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from m2iv.constants import CONFIG_NAME, VECTORS_NAME
from m2iv.errors import M2IVError

CHECKPOINT_STATE = Path("checkpoint") / "trainer_state.json"
# What m2iv writes in a vector folder and in its `.train` folder (`--overwrite` deletes these and nothing else).
VECTOR_FILES = {CONFIG_NAME, VECTORS_NAME}
TRAIN_FILES = {"checkpoint", "train_log.jsonl", "tensorboard", "wandb"}


@dataclass
class Previous:
    out: Path
    workdir: Path
    vectors: bool = False  # out holds a vector folder
    step: int | None = None  # the checkpoint's step (None: no checkpoint)
    steps: int | None = None  # the steps its recipe plans
    restarts: list[int] = field(default_factory=list)

    @property
    def exists(self) -> bool:
        return self.vectors or self.step is not None

    @property
    def finished(self) -> bool:
        return self.vectors and (self.step is None or self.steps is None or self.step >= self.steps)

    def where(self) -> str:
        done = "" if self.step is None else f"{self.step} of {self.steps} steps; "
        return f"{done}vectors in {self.out}" + (f", checkpoints in {self.workdir}" if self.step is not None else "")


def previous_run(out: str | Path) -> Previous:
    out = Path(out)
    prev = Previous(out, out.parent / f"{out.name}.train", vectors=(out / CONFIG_NAME).is_file())
    state = prev.workdir / CHECKPOINT_STATE
    if state.is_file():
        try:
            meta = json.loads(state.read_text(encoding="utf-8"))
            prev.step, config = int(meta["step"]), meta.get("config") or {}
            prev.steps, prev.restarts = int(config["steps"]), list(config.get("restarts") or [])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise M2IVError(f"{state} is unreadable ({type(e).__name__}: {e}); add --overwrite to start afresh, or "
                            "choose another --out") from None
    return prev


def plan(prev: Previous, resume: bool = False, overwrite: bool = False, more_steps: int | None = None,
         steps: int | None = None) -> dict | None:
    """Recipe overrides for the run to do (empty: as given), or None when there is nothing to do (a finished run
    asked to resume). Raises M2IVError naming the flag that does what the user may want."""
    out = prev.out
    if overwrite:
        clear(prev)
        return {}
    if not prev.exists:
        if resume or more_steps:
            raise M2IVError(f"nothing to {'resume' if resume else 'continue'}: {out} holds no run; drop "
                            f"{'--resume' if resume else '--more-steps'} to train a new one")
        return {}
    if more_steps:
        if prev.step is None or prev.steps is None:
            raise M2IVError(f"{out} has no checkpoint to continue from ({prev.workdir / CHECKPOINT_STATE}); add "
                            "--overwrite to train afresh")
        if not prev.finished:
            raise M2IVError(f"{out} is not finished (checkpoint at step {prev.step} of {prev.steps}); add --resume "
                            "to finish it first")
        if steps is not None and steps != prev.steps:
            raise M2IVError(f"--steps {steps} but the finished run has {prev.steps}; repeat its command (its --steps) "
                            f"with --more-steps {more_steps}")
        return {"steps": prev.steps + more_steps, "restarts": [*prev.restarts, prev.steps]}
    if prev.finished:
        if resume:
            return None
        raise M2IVError(f"{out} holds a finished run ({prev.where()}); add --more-steps N to train it further, "
                        "--overwrite to train afresh, or choose another --out")
    if not resume:
        raise M2IVError(f"{out} holds an interrupted run (checkpoint at step {prev.step} of {prev.steps} in "
                        f"{prev.workdir}); add --resume to continue it or --overwrite to start afresh")
    return {}


def clear(prev: Previous) -> None:
    """Delete the vector folder and the `.train` folder, if m2iv wrote everything in them; else refuse."""
    for folder, known in ((prev.out, VECTOR_FILES), (prev.workdir, TRAIN_FILES)):
        if not folder.exists():
            continue
        if not folder.is_dir():
            raise M2IVError(f"--overwrite: {folder} is a file, not a folder m2iv wrote; move it away or choose another "
                            "--out")
        foreign = sorted(p.name for p in folder.iterdir() if p.name not in known)
        if foreign:
            raise M2IVError(f"--overwrite: {folder} holds files m2iv did not write ({', '.join(foreign[:3])}); move "
                            "them away or choose another --out")
    for folder in (prev.out, prev.workdir):
        if folder.is_dir():
            shutil.rmtree(folder)
