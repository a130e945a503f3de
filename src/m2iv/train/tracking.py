"""Experiment tracking, as `report_to` in transformers: every training step's record (loss and its parts, the
learning-rate scale, gradient norm, step time, validation accuracy) goes to TensorBoard, Weights & Biases or
Trackio through those libraries, with the run's recipe as its config.

    m2iv train sandbox --task sandbox-colour-nonce --out out/colour --report-to tensorboard,trackio
    tensorboard --logdir out/colour.train/tensorboard          # or: trackio show --project m2iv

Where each writes: TensorBoard event files under `<out>.train/tensorboard/`; wandb under `<out>.train/wandb/`
(offline, to be uploaded with `wandb sync`, unless WANDB_API_KEY or WANDB_MODE says otherwise; project from
WANDB_PROJECT, default m2iv); Trackio in its local database (`$TRACKIO_DIR`, default under the Hugging Face
cache; project from TRACKIO_PROJECT, default m2iv). The libraries are optional: `pip install 'm2iv[tracking]'`.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Protocol

from m2iv.errors import M2IVError

REPORT_TO = ("tensorboard", "wandb", "trackio")
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}


class Sink(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def check_report_to(names: list[str]) -> None:
    """Every name is a known tracker whose library is installed (checked before a model loads)."""
    for name in names:
        if name not in REPORT_TO:
            raise M2IVError(f"--report-to {name!r} is not a tracker; use {', '.join(REPORT_TO)} (comma-separated)")
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise M2IVError(f"--report-to {name} needs the {PACKAGES[name]} package; pip install {PACKAGES[name]} "
                            "(or pip install 'm2iv[tracking]')")


def metrics_of(rec: dict[str, Any]) -> dict[str, float]:
    """A step record as tracker scalars: train/<name>, and eval/val_acc for the validation accuracy."""
    out = {}
    for k, v in rec.items():
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
            out[("eval/" if k.startswith("val_") else "train/") + k] = float(v)
    return out


class _TensorBoard:
    def __init__(self, logdir: Path, config: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(logdir / "tensorboard"))
        self.writer.add_text("config", "```json\n" + json.dumps(config, indent=1, default=str) + "\n```")

    def log(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.writer.close()


class _Wandb:
    def __init__(self, logdir: Path, config: dict, name: str) -> None:
        import wandb

        mode: Any = os.environ.get("WANDB_MODE") or (None if os.environ.get("WANDB_API_KEY") else "offline")
        (logdir / "wandb").mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "m2iv"), name=name, config=config,
                              dir=str(logdir), mode=mode, reinit="finish_previous")

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class _Trackio:
    def __init__(self, config: dict, name: str) -> None:
        import trackio

        self.trackio = trackio
        trackio.init(project=os.environ.get("TRACKIO_PROJECT", "m2iv"), name=name, config=config, embed=False)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.trackio.log(metrics, step=step)

    def close(self) -> None:
        self.trackio.finish()


class Tracker:
    """Every chosen sink, logged to together."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def log(self, rec: dict[str, Any], step: int) -> None:
        metrics = metrics_of(rec)
        for sink in self.sinks:
            sink.log(metrics, step)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def open_tracker(names: list[str], workdir: str | Path, config: dict, name: str) -> Tracker | None:
    """A tracker logging to each of `names` (None for none); `workdir` is the run's `<out>.train` folder."""
    if not names:
        return None
    check_report_to(names)
    workdir = Path(workdir)
    sinks: list[Sink] = []
    for n in dict.fromkeys(names):
        sinks.append(_TensorBoard(workdir, config) if n == "tensorboard" else
                     _Wandb(workdir, config, name) if n == "wandb" else _Trackio(config, name))
    return Tracker(sinks)
