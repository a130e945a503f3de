"""M²IV as a plug-in: trains (or loads) per-layer MHA + MLP vectors by self-distillation from N-shot ICL."""

from __future__ import annotations

from typing import Any

from m2iv.methods.base import LoadedVectors
from m2iv.methods.m2iv.config import M2IVConfig


class M2IV(LoadedVectors):
    name = "m2iv"
    config_cls = M2IVConfig

    def make_vectors(self, lm):
        from m2iv.vectors.vector import InContextVectors

        cfg: M2IVConfig = self.options.get("method_config") or M2IVConfig()
        return InContextVectors.for_model(lm.adapter, sites=tuple(cfg.sites), operator=cfg.operator,
                                          layers=cfg.layers, token_policy=cfg.token_policy, method=self.name)

    def prepare(self, lm, task, splits: dict, options: dict[str, Any] | None = None) -> None:
        if self.options.get("vectors"):
            return super().prepare(lm, task, splits, options)
        from m2iv.errors import M2IVError
        from m2iv.train.run import train_vectors

        out = self.options.get("out")
        if not out:
            raise M2IVError(f"--method {self.name} needs --vectors DIR (trained vectors) or training with "
                            "`m2iv train ... --out DIR`")
        cfg = self.options["train_config"]
        mcfg = self.options.get("method_config") or M2IVConfig()
        self.vectors, self.info = train_vectors(lm, task, splits, self.make_vectors(lm), cfg, out,
                                                method_config=mcfg.to_json(),
                                                show_progress=self.options.get("progress", True))
