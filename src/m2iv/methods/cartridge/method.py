"""Cartridge as a plug-in: a trainable KV prefix, trained by the vector trainer, saved as PEFT's CARTRIDGE adapter.

Mechanism (m2iv.adapters.cartridge): p virtual tokens' keys and values in every decoder layer sit in the cache ahead
of the prompt; every query attends to them. PEFT's layout and PeftModelForCausalLM's forward arithmetic (the
prefix in the cache, P ones prepended to the mask, the real tokens at positions P..) are reproduced by one forward
pre-hook; tests/test_method_cartridge.py checks the logits against `PeftModel.from_pretrained` on the saved
directory, and that cached generation agrees with a full forward.

Deviations, and why:
- The corpus the cartridge stands for is the task's demonstrations, so the initial KV is read from a fixed draw of
  `--shots` support demonstrations (rendered through the chat template, images included) rather than from a
  document; `init=random` is PEFT's plain init.
- Self-study's synthetic conversations are replaced by the task's training queries and the cached N-shot teacher
  (the same distillation targets the vector methods get), top-k 64 instead of 20.
- Budget is the harness's (steps, batch, best validation step), not one epoch of batch 32. Families with M-RoPE
  (qwen2_vl, qwen2_5_vl) are refused: their positions are computed from the mask and the ids together.
"""

from __future__ import annotations

from m2iv.methods.adapted import TrainedAdapter
from m2iv.methods.cartridge.config import CartridgeConfig


class Cartridge(TrainedAdapter):
    name = "cartridge"
    config_cls = CartridgeConfig
    from_recipe = {k: k for k in ("weight_decay", "warmup", "clip", "w_ce", "w_mimicry")}

    lr_fields = ("method_config", ("lr",))
    lr_grid = (2e-3, 2e-2, 2e-1)

    @classmethod
    def recipe_defaults(cls, settings) -> dict:
        cfg: CartridgeConfig = settings
        return {"lr_vectors": cfg.lr, "lr_scales": cfg.lr, "weight_decay": cfg.weight_decay, "warmup": cfg.warmup,
                "clip": cfg.clip, "w_ce": cfg.w_ce, "w_mimicry": cfg.w_mimicry, "w_synergy": 0.0, "w_align": 0.0,
                "synergy": "none"}

    def make_adapter(self, lm, task, splits: dict, seed: int):
        import torch

        from m2iv.adapters.cartridge import KVPrefix

        cfg: CartridgeConfig = self.method_config()
        prefix = KVPrefix.for_model(lm.adapter, cfg.num_virtual_tokens, cfg.num_frozen_tokens)
        if cfg.init == "random":  # PEFT's CartridgeEncoder.reset_parameters: N(0, 1)
            g = torch.Generator().manual_seed(seed)
            prefix.load_embeddings(torch.randn(prefix.embeddings().shape, generator=g))
        else:
            prefix.load_embeddings(self._demo_kv(lm, task, splits, seed, cfg.num_virtual_tokens))
        return prefix.to(lm.device)

    def _demo_kv(self, lm, task, splits: dict, seed: int, p: int):
        """The KV of the first p tokens of a fixed `shots`-demonstration context (the corpus the cartridge holds)."""
        from m2iv.adapters.cartridge import prefix_from_text
        from m2iv.data.prompts import Prompt, PromptBuilder
        from m2iv.data.selection import FixedSelector

        builder = PromptBuilder(lm, task.instruction, task.answer_template)
        query = list(splits["train"])[0]
        demos = FixedSelector(splits["support"], seed=seed).select(query, self.recipe().teacher.shots)
        full = builder.build(demos, query)
        batch = builder.encode([Prompt(text=full.prefix_text, image_paths=full.prefix_image_paths, prefix_text="")])
        batch.pop("query_start")
        return prefix_from_text(lm, batch, p)
