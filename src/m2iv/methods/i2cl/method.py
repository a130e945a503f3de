"""I2CL as a plug-in (Li et al. 2024, "Implicit In-context Learning"; LzVv123456/I2CL@c2c6dd9).

Mechanism (wrapper.py `extract_latent` / `get_context_vector` / `inject_latent` / `calibrate_strength`):

1. Extraction: each of `n_demos` support demonstrations is run ALONE (not in an ICL prompt) and the
   outputs of the attention branch (site `attn`, after o_proj) and of the MLP (site `mlp`) are read at
   its LAST token, at every layer; the context vector of a (layer, site) is their plain mean over the
   demonstrations (`post_fuse_method='mean'`, `tok_pos='last'`, no normalisation).
2. Injection: every layer, both sites, every position (generated tokens included), operator `linear`:
   o' = b*o + a*cv with (a, b) initialised to (0.1, 1.0).
3. Calibration: ONLY the two scalars per (layer, site) train (the vectors have requires_grad=False, so
   the shared trainer keeps them fixed), by cross-entropy on the demonstrations themselves used as
   zero-shot queries, AdamW lr 0.01, wd 1e-3, batch 2, 100 epochs, 5% warmup then cosine. While
   training, Gaussian noise of scale 0.001 x the token's norm is added to every injected output
   (`add_noise`); it is off at inference.

The noise needs no change to the shared trainer: a plain forward hook registered BEFORE the trainer's
injection hook on the same module adds k/b to the branch output o, where k = noise * |b*o + a*cv| *
0.001 is detached; the injection then gives b*(o + k/b) + a*cv = (b*o + a*cv) + k, the original's
value, and since b*(k/b) = k the gradients of a and b are the original's too. It is active only while
gradients are enabled, i.e. in training steps, not in validation or inference.

Deviations from the original code, and why:
- Demonstrations: a seeded random draw of `n_demos` (default: --shots) from the support split rather
  than `shot_per_class` per class (VQA tasks have no label set). Each is rendered through the model's
  chat template exactly as it appears inside an ICL prompt (user turn with its images and question,
  assistant turn with its answer), so its last token is the end-of-turn/newline after the answer, the
  counterpart of the original's trailing separator '\\n'.
- Calibration loss: the trainer's cross-entropy on every answer token of the target (answer plus the
  end-of-turn marker) instead of the first token of the label word only (`ce_span="first"` is the
  original's); batches are consecutive slices of seeded per-epoch permutations instead of independent
  random batches.
- Schedule: the trainer's linear warmup then cosine over the remaining steps (the original multiplies
  its warmup ramp into a cosine over all steps); no gradient clipping (clip=1e6), as the original.
- One run per call; the original repeats 5 runs with different demonstrations and averages results.
- Recipe precedence: a TrainConfig field the user left at its shared default takes I2CL's value above
  (steps = epochs * (n_demos // batch_size), val_every = 0, w_ce = 1, w_mimicry = w_synergy = 0, ...);
  a field set to anything else (e.g. --steps 50) overrides it.
- If |b| drops below 1e-4 the noise is skipped at that (layer, site) (k/b would be unbounded).
- Kept as the original (checked by tests/test_method_oracles.py): the context vectors (mean last-token attn/mlp
  outputs of demonstrations run alone), the linear injection at every position, and the calibration noise,
  draw for draw.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import replace

import torch

from m2iv.errors import M2IVError
from m2iv.methods.base import LoadedVectors
from m2iv.methods.i2cl.config import I2CLConfig


def demo_prompt(builder, demo):
    """One demonstration alone, rendered exactly as inside an ICL prompt (its answer included)."""
    from m2iv.data.prompts import Prompt

    p = builder.build([demo], demo)
    return Prompt(text=p.prefix_text, image_paths=list(p.prefix_image_paths), prefix_text="")


@torch.no_grad()
def extract_context_vectors(lm, builder, demos: list, sites: list[str], layers: list[int]) -> dict[str, torch.Tensor]:
    """Mean over `demos` (each run alone, batch of one) of the last-token output of each site: (n_layers, D)."""
    from m2iv.vectors.record import record

    if not demos:
        raise M2IVError("I2CL needs at least one demonstration to build its context vectors")
    with record(lm.model, lm.adapter, sites=tuple(sites), layers=layers, positions="last") as rec:
        for d in demos:
            batch = builder.encode([demo_prompt(builder, d)])
            batch.pop("query_start")
            lm.model(**{k: v.to(lm.device) for k, v in batch.items()})
        return {s: rec.stacked(s).mean(0) for s in sites}  # (N, L, D) -> (L, D)


def _noise_hook(vectors, site: str, row: int, scale: float):
    """Pre-injection hook: makes the injected output equal (b*o + a*cv) + noise*|b*o + a*cv|*scale (see above)."""

    def hook(_module, _args, out):
        if not torch.is_grad_enabled():
            return None  # validation and inference: no noise
        h = out[0] if isinstance(out, tuple) else out  # (B, T, D)
        a = vectors.scale(site, "alpha")[row].to(h.dtype)
        b = vectors.scale(site, "beta")[row].to(h.dtype)
        if float(b.detach().abs()) < 1e-4:
            return None
        with torch.no_grad():
            injected = b * h + a * vectors.vector(site)[row].to(h.dtype)  # (B, T, D)
            k = torch.randn_like(injected) * injected.norm(dim=-1, keepdim=True) * scale
        h = h + k / b  # the injection's b*(.) turns this into +k, with no gradient through k
        return (h, *out[1:]) if isinstance(out, tuple) else h

    return hook


@contextmanager
def training_noise(lm, vectors, scale: float):
    """Register the noise hooks (before the trainer's injection hooks, so they run first); removed on exit."""
    handles = []
    try:
        if scale > 0:
            for site, spec in vectors.sites.items():
                for row, layer in enumerate(spec.layers):
                    mod = lm.adapter.module(layer, site)
                    handles.append(mod.register_forward_hook(_noise_hook(vectors, site, row, scale)))
        yield
    finally:
        for h in handles:
            h.remove()


class I2CL(LoadedVectors):
    name = "i2cl"
    config_cls = I2CLConfig
    cpu_budget = {"epochs": 20}
    tiny_budget = {"epochs": 1}
    lr_fields = ("method_config", ("lr",))
    lr_grid = (1e-3, 1e-2, 1e-1)

    @classmethod
    def recipe_defaults(cls, settings: I2CLConfig) -> dict:
        cfg = settings
        return {"batch_size": cfg.batch_size, "lr_scales": cfg.lr, "weight_decay": cfg.weight_decay,
                "warmup": cfg.warmup, "clip": 1e6, "val_every": 0, "w_mimicry": 0.0, "w_synergy": 0.0, "w_ce": 1.0,
                "synergy": "none", "ce_span": cfg.ce_span}

    def _demos(self, splits: dict, cfg: I2CLConfig) -> list:
        n = cfg.n_demos
        support = list(splits.get("support") or [])
        if n < 2:
            raise M2IVError(f"I2CL needs at least 2 demonstrations (got {n}); pass --shots N (N >= 2)")
        if n > len(support):
            raise M2IVError(f"I2CL asked for {n} demonstrations but the support split has {len(support)}; "
                            "lower --shots")
        return random.Random(self.spec.seed).sample(support, n)

    def make_vectors(self, lm, context: dict[str, torch.Tensor], layers: list[int], cfg: I2CLConfig):
        from m2iv.vectors.vector import InContextVectors, SiteSpec

        a = lm.adapter
        vec = InContextVectors(num_layers=a.num_layers, hidden_size=a.hidden_size, num_heads=a.num_heads,
                               head_dim=a.head_dim, sites={s: SiteSpec("linear", layers) for s in cfg.sites},
                               token_policy="all", method=self.name)
        with torch.no_grad():
            for s in cfg.sites:
                vec.params[f"{s}__vector"].copy_(context[s])
                vec.params[f"{s}__alpha"].fill_(cfg.init_alpha)
                vec.params[f"{s}__beta"].fill_(cfg.init_beta)
        vec = vec.to(lm.device)
        for s in cfg.sites:
            vec.params[f"{s}__vector"].requires_grad_(False)  # only the scalars are calibrated
        return vec

    def fit(self, lm, task, splits: dict):
        from m2iv.data.prompts import PromptBuilder
        from m2iv.train.run import train_vectors

        cfg: I2CLConfig = self.method_config()
        out = self.require_out()
        layers = list(range(lm.adapter.num_layers)) if cfg.layers is None else sorted(cfg.layers)
        builder = PromptBuilder(lm, task.instruction, task.answer_template)
        demos = self._demos(splits, cfg)
        context = extract_context_vectors(lm, builder, demos, cfg.sites, layers)
        vectors = self.make_vectors(lm, context, layers, cfg)
        recipe = self.recipe()
        if "steps" not in self.spec.recipe_set:  # the original's epochs over the demonstrations
            recipe = replace(recipe, steps=max(1, cfg.epochs * (len(demos) // recipe.batch_size)))
        with training_noise(lm, vectors, cfg.noise_scale):
            best, info = train_vectors(lm, task, {"train": demos, "support": splits.get("support", [])}, vectors,
                                       recipe, out, method_config=self.spec.settings_json(), **self.train_options())
        return best.to(lm.device), {**info, "demo_ids": [d.id for d in demos]}
