"""What every subcommand shares: the model arguments, the argparse value checks, and the up-front checks
that refuse a bad command line before minutes are spent loading a model."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from m2iv.errors import M2IVError


# -- argparse `type=` checks: a bad value is refused at parse time in one line (exit 2) -------------------------
def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def positive_int(text: str) -> int:
    """A count that must be at least 1 (queries, steps, batch sizes)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; give a whole number of 1 or more")
    return value


def non_negative_int(text: str) -> int:
    """A count where 0 means something (0 shots is zero-shot, 0 top-k keeps every logit)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give a whole number of 0 or more")
    return value


def non_negative_float(text: str) -> float:
    """A rate, weight or fraction (0 switches a loss off)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not allowed; give a finite number of 0 or more")
    return value


def positive_float(text: str) -> float:
    """A value something is divided by (the distillation temperature)."""
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text} is not allowed; give a number above 0")
    return value


def name_list(text: str) -> list[str]:
    """One name or a comma-separated list (--task, --method); empty items are an error, not skipped."""
    names = [t.strip() for t in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty name; give NAME or NAME,NAME,...")
    return list(dict.fromkeys(names))


def shots_list(text: str) -> list[int]:
    """Comma-separated shot counts, each 0 or more (0: zero-shot)."""
    return [non_negative_int(t.strip()) for t in text.split(",")]


# -- model arguments --------------------------------------------------------------------------------------------
def add_model_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """MODEL is positional on every command that loads one; with a `default` it may be left out."""
    spec = "tiny:<family>, sandbox, a local model directory, a .gguf file or a hub id"
    if default is None:
        p.add_argument("model", metavar="MODEL", help=spec)
    else:
        p.add_argument("model", metavar="MODEL", nargs="?", default=default, help=f"{spec} (default {default})")
    p.add_argument("--dtype", default="float32", help="float32 (default), bfloat16 or float16")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    p.add_argument("--device-map", default=None, type=device_map_arg, metavar="MAP",
                   help="shard a model that does not fit one device (accelerate): auto, balanced, sequential, or a "
                        "JSON object / .json file {module: device} (devices: 0, cuda:1, cpu, disk)")
    p.add_argument("--max-memory", default=None, metavar="DEV=SIZE,...", type=max_memory_arg,
                   help="with --device-map: what each device may hold, e.g. 0=20GiB,1=20GiB,cpu=60GiB")
    p.add_argument("--offload-folder", default=None, metavar="DIR",
                   help="with --device-map: where weights sent to `disk` are kept")
    p.add_argument("--layers", default=None,
                   help="override layer discovery: dotted path of the decoder layer list or a regex over "
                        "module names (for models m2iv does not know)")


def load_from_args(args: argparse.Namespace):
    from m2iv.constants import m2iv_home
    from m2iv.models.loading import load_model

    m2iv_home()  # a bad $M2IV_HOME is refused before the model loads, not when the first cache is written
    return load_model(args.model, dtype=args.dtype, device=args.device, layers=args.layers,
                      device_map=getattr(args, "device_map", None), max_memory=getattr(args, "max_memory", None),
                      offload_folder=getattr(args, "offload_folder", None))


def max_memory_arg(text: str) -> dict:
    """--max-memory DEV=SIZE,...: checked at parse time."""
    from m2iv.models.placement import parse_max_memory

    try:
        return parse_max_memory(text) or {}
    except M2IVError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def device_map_arg(text: str) -> str | dict:
    """--device-map: a strategy name, a JSON object, or a .json file holding one; checked before a model loads."""
    from m2iv.models.placement import STRATEGIES, check_device_map

    if text in STRATEGIES:
        return text
    raw = text
    if text.endswith(".json"):
        try:
            raw = Path(text).expanduser().read_text()
        except OSError as e:
            raise argparse.ArgumentTypeError(f"cannot read {text} ({e.strerror or e})") from None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither one of {', '.join(STRATEGIES)} nor a JSON object "
                                         "{module: device}") from None
    try:
        check_device_map(value)
    except M2IVError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


# -- up-front checks (before a model loads) ---------------------------------------------------------------------
def check_tasks(names: list[str]) -> None:
    """Every task name resolves (registered, jsonl:<file> or a task .json), so a typo costs no model load."""
    from m2iv.data.tasks import get_task

    for name in names:
        get_task(name)


def check_methods(names: list[str]) -> None:
    """Every method name is registered."""
    from m2iv.methods import METHODS

    for name in names:
        METHODS.get(name)


def check_out(path: str | Path, folder: bool, flag: str = "--out") -> None:
    """Refuse an output path that cannot be written now rather than after the model has loaded and run:
    a file where a folder is expected (or the reverse), a path through a file, or a folder we may not write in.
    Writability is probed with an unnamed temporary file (deleted on close) because os.access answers yes to
    root on read-only places such as /sys."""
    p = Path(path).expanduser()
    if folder and p.exists() and not p.is_dir():
        raise M2IVError(f"{flag} {path} is a file, not a folder; give a folder path (or move the file away)")
    if not folder and p.is_dir():
        raise M2IVError(f"{flag} {path} is a folder, not a file; give a file path such as {p / 'results.json'}")
    ancestor = p if folder else p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise M2IVError(f"{flag} {path} goes through {ancestor}, which is a file; choose another {flag}")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as e:
        raise M2IVError(f"{flag} {path}: cannot write in {ancestor} ({e.strerror or e}); choose a writable "
                        f"{flag}") from None
