"""M²IV as a plug-in: trains (or loads) per-layer MHA + MLP vectors by self-distillation from N-shot ICL."""

from __future__ import annotations

from m2iv.methods.base import LoadedVectors
from m2iv.methods.m2iv.config import M2IVConfig


class M2IV(LoadedVectors):
    name = "m2iv"
    config_cls = M2IVConfig

    def make_vectors(self, lm):
        from m2iv.vectors.vector import InContextVectors

        cfg: M2IVConfig = self.method_config()
        return InContextVectors.for_model(lm.adapter, sites=tuple(cfg.sites), operator=cfg.operator,
                                          layers=cfg.layers, token_policy=cfg.token_policy, method=self.name)

    def fit(self, lm, task, splits: dict):
        from m2iv.train.run import train_vectors

        out = self.require_out()
        vectors, info = train_vectors(lm, task, splits, self.make_vectors(lm), self.recipe(), out,
                                      method_config=self.method_config().to_json(),
                                      show_progress=self.options.get("progress", True))
        return vectors, {**info, "saved": True}
