"""M²IV as a plug-in: trains (or loads) per-layer MHA + MLP vectors by self-distillation from N-shot ICL."""

from __future__ import annotations

from m2iv.methods.base import LoadedVectors
from m2iv.methods.m2iv.config import M2IVConfig


class M2IV(LoadedVectors):
    name = "m2iv"
    config_cls = M2IVConfig
    lr_fields = ("train", ("lr_vectors", "lr_scales"))
    lr_grid = (1e-3, 1e-2, 1e-1)

    def make_vectors(self, lm):
        from m2iv.vectors.vector import InContextVectors

        cfg: M2IVConfig = self.method_config()
        return InContextVectors.for_model(lm.adapter, sites=tuple(cfg.sites), operator=cfg.operator,
                                          layers=cfg.layers, token_policy=cfg.token_policy, method=self.name)

    def _expert_pools(self):
        """The teacher's expert demonstration pools: given as sample lists, or as task names (their support)."""
        pools = self.options.get("teacher_experts")
        if not pools or not isinstance(pools[0], str):
            return pools
        from m2iv.data.tasks import get_task

        return [get_task(name).splits(self.options.get("data_root"), seed=self.spec.seed)["support"]
                for name in pools]

    def fit(self, lm, task, splits: dict):
        from m2iv.train.run import train_vectors

        out = self.require_out()
        base = self.options.get("with_vectors")  # sequential training: frozen vectors under the student
        if base is not None and not hasattr(base, "spec"):
            from m2iv.library.resolve import load_spec

            base = load_spec(base, adapter=lm.adapter, device=lm.device)[0]
        return train_vectors(lm, task, splits, self.make_vectors(lm), self.recipe(), out,
                             method_config=self.spec.settings_json(), **self.train_options(),
                             experts=self._expert_pools(), base_vectors=base)
