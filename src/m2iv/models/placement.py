"""Where a model's weights live when it does not fit one device: accelerate's big-model placement.

    load_model("org/big-vlm", device_map="auto")                        # GPU 0, 1, ..., then CPU, then disk
    load_model(spec, device_map="auto", max_memory="0=20GiB,cpu=60GiB")  # cap what each device holds
    load_model(spec, device_map={"model.text_model.layers.1": "disk", "": "cpu"}, offload_folder="offload")

A checkpoint on disk (a directory or a hub id) is loaded by transformers straight into its places, so it is
never whole on one device. A model m2iv builds in code (`tiny:`, the sandbox, a GGUF) is built first and then
dispatched with the same placement. Vectors need nothing from this: every hook casts its operands to the
device of the activation it edits (vectors/inject.py `_operands`), and autograd carries the gradient back.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from m2iv.errors import M2IVError

# accelerate's named strategies; anything else must be a dict {module name: device}.
STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
_MEMORY = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?B)?$", re.IGNORECASE)


def parse_max_memory(text: str | dict | None) -> dict | None:
    """`0=20GiB,cpu=60GiB` -> {0: "20GiB", "cpu": "60GiB"} (what accelerate's max_memory takes)."""
    if text is None or isinstance(text, dict):
        return text
    out: dict[Any, str] = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        device, _, size = part.partition("=")
        device, size = device.strip(), size.strip()
        if not size or not _MEMORY.match(size):
            raise M2IVError(f"--max-memory part {part!r} is not DEVICE=SIZE; write e.g. 0=20GiB,cpu=60GiB")
        out[int(device) if device.isdigit() else device] = size
    if not out:
        raise M2IVError("--max-memory is empty; write e.g. 0=20GiB,cpu=60GiB")
    return out


def check_device_map(device_map: str | dict | None) -> None:
    """A named strategy or a {module: device} dict whose devices torch or accelerate know."""
    if device_map is None or (isinstance(device_map, str) and device_map in STRATEGIES):
        return
    if not isinstance(device_map, dict) or not device_map:
        raise M2IVError(f"device map {device_map!r} is neither one of {', '.join(STRATEGIES)} nor a "
                        "{module: device} dict; use --device-map auto")
    for name, dev in device_map.items():
        if dev in ("disk", "cpu", "meta") or isinstance(dev, int):
            continue
        try:
            torch.device(dev)
        except (RuntimeError, TypeError):
            raise M2IVError(f"device map entry {name!r}: {dev!r} is not a device; use an index, cuda:N, cpu or "
                            "disk") from None


def pretrained_kwargs(device_map, max_memory, offload_folder) -> dict:
    """from_pretrained keywords that make transformers load a checkpoint straight into its places."""
    if device_map is None:
        return {}
    kw: dict[str, Any] = {"device_map": device_map}
    if max_memory is not None:
        kw["max_memory"] = parse_max_memory(max_memory)
    if offload_folder is not None:
        kw["offload_folder"] = str(offload_folder)
    return kw


def dispatch(model, device_map, max_memory=None, offload_folder: str | Path | None = None):
    """Place a model built in memory the way `device_map` says (a strategy is solved against `max_memory`)."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = list(getattr(model, "_no_split_modules", None) or [])
    if isinstance(device_map, str):
        memory = parse_max_memory(max_memory)
        if device_map in ("balanced", "balanced_low_0") or (device_map == "auto" and memory is None):
            memory = get_balanced_memory(model, max_memory=memory, no_split_module_classes=no_split,
                                         low_zero=device_map == "balanced_low_0")
        device_map = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split)
    if "disk" in device_map.values() and offload_folder is None:
        raise M2IVError("the device map sends weights to disk but no offload folder is set; pass --offload-folder "
                        "DIR (offload_folder=) or give the devices more --max-memory")
    return dispatch_model(model, device_map=device_map, offload_dir=None if offload_folder is None else
                          str(offload_folder))


def placement(model) -> dict[str, str]:
    """{module: device} of a dispatched model (what accelerate chose); {} for a model on one device."""
    return {k: str(v) for k, v in (getattr(model, "hf_device_map", None) or {}).items()}


def input_device(model) -> torch.device:
    """Where a model's inputs go: the device of its first parameter, or, for a dispatched model, accelerate's main
    device (the first place in the map that is neither CPU-offload nor disk, else the CPU)."""
    devices = list((getattr(model, "hf_device_map", None) or {}).values())
    if not devices:
        return next(model.parameters()).device
    return torch.device(next((d for d in devices if d not in ("cpu", "disk")), "cpu"))


def parameter_values(model) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, values) of every parameter, those accelerate offloaded (kept on `meta`, the values on CPU or disk)
    read in one offloaded block at a time, so hashing a sharded model never holds it whole in memory."""
    from accelerate.utils import align_module_device, has_offloaded_params

    blocks = [(n, m) for n, m in model.named_modules() if n and has_offloaded_params(m)]
    inside = tuple(n + "." for n, _ in blocks)
    for name, p in model.named_parameters():
        if not name.startswith(inside) and p.device.type != "meta":
            yield name, p
    for prefix, module in blocks:
        with align_module_device(module):
            for name, p in module.named_parameters():
                yield f"{prefix}.{name}", p
