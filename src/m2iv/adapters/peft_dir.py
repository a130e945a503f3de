"""An adapter directory: PEFT's own files plus m2iv's sidecar, written atomically, verified on load.

    save_adapter(lora, "out/lora", lm=lm, recipe=cfg.to_json())      # adapter_config.json, adapter_model.safetensors,
    adapter, config = load_adapter("out/lora", lm)                    # m2iv_config.json; refuses another model

`peft.PeftModel.from_pretrained(model, "out/lora")` loads the same directory (PEFT ignores the sidecar), which is
what the oracle tests compare against. The sidecar holds what PEFT's files do not: the method, the base model and
its architecture fingerprint, the recipe, metrics and the sha256 of the tensor file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from m2iv.adapters.cartridge import KVPrefix
from m2iv.adapters.lora import LoRAWeights
from m2iv.constants import CONFIG_NAME, __version__
from m2iv.errors import M2IVError
from m2iv.files import sha256_file, write_dir_atomic

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
KINDS: dict[str, Any] = {"lora": LoRAWeights, "cartridge": KVPrefix}
MAX_SIDECAR_BYTES = 4 << 20


def save_adapter(adapter, directory: str | Path, *, lm, recipe: dict | None = None, metrics: dict | None = None,
                 method_config: dict | None = None, extra: dict | None = None) -> Path:
    """Write `adapter` (LoRAWeights or KVPrefix) as a PEFT directory with m2iv's sidecar, all or nothing."""
    directory = Path(directory)
    tensors = adapter.to_tensors()
    peft_cfg = adapter.peft_config(lm.spec).to_dict()
    staging: dict[str, str] = {}

    def write_tensors(path: Path) -> None:
        save_file(tensors, str(path), metadata={"format": "pt"})  # PEFT's own metadata
        staging["sha256"] = sha256_file(path)

    def write_peft(path: Path) -> None:
        path.write_text(json.dumps(peft_cfg, indent=2, sort_keys=True, default=str) + "\n")

    def write_sidecar(path: Path) -> None:
        sidecar = {"format": "peft", "m2iv_version": __version__, **adapter.spec(), "base_model": lm.spec,
                   "model_type": lm.adapter.family, "fingerprint": lm.adapter.fingerprint,
                   "num_parameters": adapter.num_parameters(), "recipe": recipe or {}, "metrics": metrics or {},
                   "method_config": method_config or {}, "sha256": staging["sha256"], **(extra or {})}
        path.write_text(json.dumps(sidecar, indent=2, sort_keys=True, default=str) + "\n")

    write_dir_atomic(directory, {PEFT_WEIGHTS: write_tensors, PEFT_CONFIG: write_peft, CONFIG_NAME: write_sidecar})
    return directory


def is_adapter_dir(directory: str | Path) -> bool:
    return (Path(directory) / PEFT_CONFIG).is_file()


def read_sidecar(directory: str | Path) -> dict:
    """The sidecar of an adapter directory, checked for the fields everything else relies on."""
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not (directory / PEFT_CONFIG).is_file() or not path.is_file():
        raise M2IVError(f"{directory} is not an m2iv adapter directory (needs {PEFT_CONFIG} and {CONFIG_NAME}); "
                        "give a directory written by `m2iv train --method lora|cartridge`")
    if path.stat().st_size > MAX_SIDECAR_BYTES:
        raise M2IVError(f"{path} is {path.stat().st_size} bytes, far more than an adapter config; it is damaged")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise M2IVError(f"{path} is not valid JSON ({e}); the file is corrupt") from None
    if not isinstance(cfg, dict) or cfg.get("format") != "peft" or cfg.get("kind") not in KINDS:
        raise M2IVError(f"{path} does not describe a PEFT adapter m2iv wrote (format 'peft', kind lora|cartridge)")
    for key in ("sha256", "fingerprint", "model_type"):
        if not isinstance(cfg.get(key), str):
            raise M2IVError(f"{path} lacks the field {key!r}; the directory was not written by this m2iv")
    return cfg


def load_adapter(directory: str | Path, lm, strict: bool = True):
    """(adapter, sidecar) of a saved directory, checked against its hash and against `lm`'s architecture."""
    directory = Path(directory)
    cfg = read_sidecar(directory)
    weights = directory / PEFT_WEIGHTS
    if not weights.is_file() or sha256_file(weights) != cfg["sha256"]:
        raise M2IVError(f"{weights} is missing or does not match the sha256 in {CONFIG_NAME} (truncated or "
                        "modified); retrain or re-save the adapter")
    if strict and cfg["fingerprint"] != lm.adapter.fingerprint:
        raise M2IVError(f"{directory} was trained on another architecture ({cfg['model_type']}, fingerprint "
                        f"{cfg['fingerprint']}), not {lm.spec} ({lm.adapter.fingerprint}); use its own base model")
    adapter = KINDS[cfg["kind"]].from_spec(cfg)
    expected = sum(t.numel() * 4 for t in adapter.to_tensors().values())  # fp32, as saved
    if weights.stat().st_size > expected + (1 << 20):
        raise M2IVError(f"{weights} is {weights.stat().st_size} bytes, more than the {expected} its config implies")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise M2IVError(f"{weights} is not a readable safetensors file ({e})") from None
    adapter.load_tensors({k: v.float() for k, v in tensors.items()})
    return adapter.to(lm.device), cfg

