"""LoRA as a plug-in: trained by the vector trainer on the comparison's data and budget, saved as a PEFT directory.

Mechanism: every targeted `nn.Linear` W of the language model's decoder layers answers W x + (alpha / r) B A x
(m2iv.adapters.lora, forward hooks; PEFT's LoraLayer arithmetic, checked against `PeftModel.from_pretrained` on the
saved directory in tests/test_method_lora.py). A is PEFT's Kaiming-uniform init, B = 0.

Origin of the defaults: LoRAConfig's docstring (MimIC's and HiFICL's LoRA baseline: r 16, alpha 32, dropout 0.05,
q/k/v/o projections, lr 5e-4, wd 1e-3, 10% warmup, clip 1, LM loss only).

Deviations from the originals, and why:
- Targets are matched inside the language model's decoder layers only. The originals pass bare names to PEFT, which
  also adapts every vision-tower and perceiver projection of the same name; the comparison asks what adapting the
  language model buys, as the vector methods do, so the vision side stays frozen. `modules` adds the MLP's
  projections (gate_proj, up_proj, down_proj).
- The loss is CE on the answer tokens and the end-of-turn (the harness's, as for HiFICL); the originals' LM loss
  covers their whole label span. `--w-mimicry` adds KL to the same cached N-shot teacher the vector methods use.
- Budget (steps, batch, validation-based best step) is the harness's, not 10 epochs of 2 x 8.
"""

from __future__ import annotations

from m2iv.methods.adapted import TrainedAdapter
from m2iv.methods.lora.config import LoRAConfig


class LoRA(TrainedAdapter):
    name = "lora"
    config_cls = LoRAConfig
    from_recipe = {k: k for k in ("weight_decay", "warmup", "clip", "w_ce")}

    lr_fields = ("method_config", ("lr",))
    lr_grid = (5e-5, 5e-4, 5e-3)

    @classmethod
    def recipe_defaults(cls, settings) -> dict:
        cfg: LoRAConfig = settings
        return {"lr_vectors": cfg.lr, "lr_scales": cfg.lr, "weight_decay": cfg.weight_decay, "warmup": cfg.warmup,
                "clip": cfg.clip, "w_ce": cfg.w_ce, "w_mimicry": 0.0, "w_synergy": 0.0, "w_align": 0.0,
                "synergy": "none"}

    def make_adapter(self, lm, task, splits: dict, seed: int):
        from m2iv.adapters.lora import LoRAWeights, find_targets

        cfg: LoRAConfig = self.method_config()
        targets = find_targets(lm.adapter, cfg.modules, cfg.layers)
        return LoRAWeights(layers_path=lm.adapter.layers_path, targets=targets, rank=cfg.rank, alpha=cfg.alpha,
                           dropout=cfg.dropout, method=self.name).init_peft(seed).to(lm.device)
