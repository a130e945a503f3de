"""LoRA on the language model's linear projections, applied by forward hooks, stored in PEFT's layout.

For every targeted `nn.Linear` W (in -> out) of a decoder layer: y = W x + (alpha / r) * B A dropout(x), with
A (r, in) initialised as PEFT does (Kaiming-uniform, a = sqrt(5)) and B (out, r) at zero, so the untrained
adapter is the base model. Dropout acts only while gradients are computed (training), as PEFT's does in
train mode. Tensor names follow `peft.get_peft_model_state_dict`:
`base_model.model.<module path>.lora_A.weight`, so a saved directory loads with `PeftModel.from_pretrained`.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from m2iv.adapters.handle import HookHandle
from m2iv.errors import M2IVError

PEFT_PREFIX = "base_model.model."


def _key(layer: int, path: str) -> str:
    """A ParameterDict key (no dots allowed) for one target; the trainer reads the part after `__` as the name."""
    return f"layers_{layer}_{path.replace('.', '_')}"


def find_targets(adapter, modules: list[str], layers: list[int] | None = None) -> list[dict]:
    """The `nn.Linear` submodules of the decoder layers whose own name is in `modules` (e.g. q_proj, down_proj):
    the language model only, never a vision tower or connector (those are not under the decoder layers)."""
    chosen = list(range(adapter.num_layers)) if layers is None else sorted(set(layers))
    out = []
    for i in chosen:
        if not 0 <= i < adapter.num_layers:
            raise M2IVError(f"LoRA layer {i} is outside [0, {adapter.num_layers}); fix --method-config layers")
        for path, mod in adapter.layers[i].named_modules():
            if isinstance(mod, nn.Linear) and path.rpartition(".")[2] in modules:
                out.append({"layer": i, "path": path, "in_features": mod.in_features,
                            "out_features": mod.out_features})
    found = {t["path"].rpartition(".")[2] for t in out}
    missing = sorted(set(modules) - found)
    if missing:
        raise M2IVError(f"LoRA targets {', '.join(missing)} are not linear layers of this model's decoder; "
                        f"choose among {', '.join(sorted(_linear_names(adapter)))}")
    return out


def _linear_names(adapter) -> set[str]:
    return {p.rpartition(".")[2] for p, m in adapter.layers[0].named_modules() if isinstance(m, nn.Linear)}


class LoRAWeights(nn.Module):
    """The A and B factors of every target; `attach(lm)` hooks them onto the model."""

    kind = "lora"

    def __init__(self, *, layers_path: str, targets: list[dict], rank: int, alpha: float, dropout: float = 0.0,
                 method: str = "lora") -> None:
        super().__init__()
        if rank <= 0 or not targets:
            raise M2IVError(f"LoRA needs rank > 0 and at least one target (got rank {rank}, {len(targets)} targets)")
        self.layers_path, self.targets, self.method = layers_path, [dict(t) for t in targets], method
        self.rank, self.alpha, self.dropout = int(rank), float(alpha), float(dropout)
        self.sites: dict = {}  # no vector sites: the trainer's synergy loss has nothing to act on
        self.params = nn.ParameterDict()
        for t in self.targets:
            k = _key(t["layer"], t["path"])
            self.params[f"{k}__lora_A"] = nn.Parameter(torch.zeros(self.rank, t["in_features"]))
            self.params[f"{k}__lora_B"] = nn.Parameter(torch.zeros(t["out_features"], self.rank))

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def init_peft(self, seed: int = 0) -> LoRAWeights:
        """PEFT's default init (`init_lora_weights=True`): A Kaiming-uniform (a = sqrt(5)), B = 0."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.params.items():
                if name.endswith("__lora_A"):
                    bound = 1 / math.sqrt(p.shape[1])  # kaiming_uniform_(a=sqrt(5)) on a (r, in) weight
                    p.copy_(torch.rand(p.shape, generator=g) * 2 * bound - bound)
                else:
                    p.zero_()
        return self

    # -- description and PEFT's tensor layout -----------------------------------------------------------
    def spec(self) -> dict:
        return {"method": self.method, "kind": self.kind, "layers_path": self.layers_path, "targets": self.targets,
                "rank": self.rank, "alpha": self.alpha, "dropout": self.dropout}

    @classmethod
    def from_spec(cls, spec: dict) -> LoRAWeights:
        try:
            return cls(layers_path=spec["layers_path"], targets=spec["targets"], rank=spec["rank"],
                       alpha=spec["alpha"], dropout=spec.get("dropout", 0.0), method=spec.get("method", "lora"))
        except (KeyError, TypeError) as e:
            raise M2IVError(f"LoRA spec is missing or has a malformed field ({e})") from None

    def module_path(self, t: dict) -> str:
        return f"{self.layers_path}.{t['layer']}.{t['path']}"

    def to_tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for t in self.targets:
            k, name = _key(t["layer"], t["path"]), PEFT_PREFIX + self.module_path(t)
            out[f"{name}.lora_A.weight"] = self.params[f"{k}__lora_A"].detach().contiguous().cpu()
            out[f"{name}.lora_B.weight"] = self.params[f"{k}__lora_B"].detach().contiguous().cpu()
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        expected = self.to_tensors()
        if set(expected) != set(tensors):
            missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
            raise M2IVError(f"LoRA tensors do not match the config: missing {missing[:2]}, unexpected {extra[:2]}")
        with torch.no_grad():
            for t in self.targets:
                k, name = _key(t["layer"], t["path"]), PEFT_PREFIX + self.module_path(t)
                for part in ("A", "B"):
                    src, dst = tensors[f"{name}.lora_{part}.weight"], self.params[f"{k}__lora_{part}"]
                    if src.shape != dst.shape:
                        raise M2IVError(f"{name}.lora_{part} has shape {tuple(src.shape)}, the config implies "
                                        f"{tuple(dst.shape)}")
                    dst.copy_(src)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.params.values())

    def peft_config(self, base_model: str):
        """PEFT's LoraConfig for these weights: the exact module paths as one regex (PEFT full-matches it), so a
        vision tower's projections of the same name are never adapted."""
        from peft import LoraConfig

        paths = "|".join(re.escape(self.module_path(t)) for t in self.targets)
        alpha = int(self.alpha) if self.alpha.is_integer() else self.alpha  # PEFT types lora_alpha as an int
        return LoraConfig(r=self.rank, lora_alpha=alpha, lora_dropout=self.dropout, target_modules=f"({paths})",
                          bias="none", task_type="CAUSAL_LM", base_model_name_or_path=base_model)

    # -- applying ------------------------------------------------------------------------------------------
    def _hook(self, key: str):
        a, b = self.params[f"{key}__lora_A"], self.params[f"{key}__lora_B"]

        def hook(_module, args, out):
            x = args[0]
            if torch.is_grad_enabled() and self.dropout:
                x = F.dropout(x, self.dropout, training=True)
            return out + F.linear(F.linear(x, a.to(x.dtype)), b.to(x.dtype)) * self.scaling

        return hook

    def attach(self, lm, freeze_base: bool = True) -> HookHandle:
        """Hook every target of `lm`'s decoder; base weights frozen unless `freeze_base=False` (answering)."""
        handle = HookHandle()
        try:
            if freeze_base:
                handle.freeze(lm.model, {id(p) for p in self.parameters()})
            for t in self.targets:
                module = lm.adapter.layers[t["layer"]].get_submodule(t["path"])
                if (module.in_features, module.out_features) != (t["in_features"], t["out_features"]):
                    raise M2IVError(f"{self.module_path(t)} is {module.in_features}->{module.out_features} here, "
                                    f"the adapter was made for {t['in_features']}->{t['out_features']}")
                handle.hooks.append(module.register_forward_hook(self._hook(_key(t["layer"], t["path"]))))
        except BaseException:
            handle.remove()
            raise
        return handle
