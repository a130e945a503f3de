"""VTI-style steering as a plug-in: a shift from grounded towards the plain model's correct runs, at one layer.

VTI (Liu et al., "Reducing hallucinations in vision-language models via latent space steering", ICLR 2025)
steers with the principal direction of the difference between the states of grounded and hallucinated runs
(visual directions in the vision encoder from perturbed images, textual ones in the LM from hallucinated vs
clean captions), added at every layer with one strength. The simplified baseline here, as an extraction method:

- runs: the plain model answers the training queries (zero-shot); a run is grounded when its first answer token is
  the reference's, hallucinating when it is not (on a yes/no probe: mostly a "yes" to an absent object);
- direction per layer: mean last-prompt-token decoder-layer state of grounded runs minus that of hallucinating
  runs (a mean difference, not VTI's PCA over paired perturbations: there are no image perturbations here);
- injection: `alpha * direction` added to one layer's output at every position (site `layer`, additive);
- layer and alpha: the best first-token accuracy on `dev_size` held-out training queries.
"""

from __future__ import annotations

import time

import torch

from m2iv.data.prompts import PromptBuilder
from m2iv.errors import M2IVError
from m2iv.methods.base import LoadedVectors
from m2iv.methods.extraction import (
    answer_first_ids,
    check_layers,
    first_token_scores,
    model_batches,
    record_last,
    split_dev,
)
from m2iv.methods.vti.config import VTIConfig


class VTI(LoadedVectors):
    name = "vti"
    config_cls = VTIConfig
    tiny_budget = {"dev_size": 2, "alphas": [1.0], "layers": [0]}

    def make_vectors(self, lm, layer: int, direction: torch.Tensor, alpha: float):
        from m2iv.vectors.vector import InContextVectors

        vec = InContextVectors.for_model(lm.adapter, sites=("layer",), operator="additive", layers=[layer],
                                         method=self.name)
        with torch.no_grad():
            vec.vector("layer")[0].copy_(direction)
            vec.params["layer__alpha"].fill_(alpha)
        return vec.to(lm.device).requires_grad_(False)

    @torch.no_grad()
    def directions(self, lm, builder: PromptBuilder, pool, batch_size: int) -> tuple[torch.Tensor, dict]:
        """(L, D) grounded-minus-hallucinating means over `pool`, and the counts of each kind of run."""
        prompts = [builder.build([], q) for q in pool]
        targets = answer_first_ids(builder, [[] for _ in pool], pool)
        preds = torch.cat([lm.model(**b).logits[:, -1].argmax(-1).cpu()
                           for b in model_batches(lm, builder, prompts, batch_size)])
        grounded = preds == targets
        if grounded.all() or not grounded.any():
            raise M2IVError(f"vti: the plain model answers {int(grounded.sum())} of {len(pool)} training queries "
                            "right; a direction needs both grounded and hallucinating runs")
        states = record_last(lm, builder, prompts, "layer", batch_size)  # (N, L, D)
        d = states[grounded].mean(0) - states[~grounded].mean(0)
        return d, {"grounded": int(grounded.sum()), "hallucinating": int((~grounded).sum())}

    def fit(self, lm, task, splits: dict):
        t0 = time.perf_counter()
        cfg: VTIConfig = self.method_config()
        seed = self.spec.seed
        builder = PromptBuilder(lm, task.instruction, task.answer_template)
        dev, pool = split_dev(splits["train"], cfg.dev_size, seed, "vti")
        direction, runs = self.directions(lm, builder, pool, cfg.batch_size)
        layers = check_layers(cfg.layers if cfg.layers is not None else list(range(lm.adapter.num_layers)),
                              lm.adapter.num_layers, "vti")
        targets = answer_first_ids(builder, [[] for _ in dev], dev)
        plain = first_token_scores(lm, builder, dev, None, cfg.batch_size, targets)
        scores = {(layer, a): first_token_scores(lm, builder, dev, self.make_vectors(lm, layer, direction[layer], a),
                                                 cfg.batch_size, targets)
                  for layer in layers for a in cfg.alphas}
        layer, alpha = max(scores, key=lambda k: scores[k])
        info = {"layer": layer, "alpha": alpha, "runs": runs, "n_dev": len(dev),
                "dev_plain": {"accuracy": plain[0], "logprob": plain[1]},
                "dev": {f"{k[0]}@{k[1]}": {"accuracy": v[0], "logprob": v[1]} for k, v in scores.items()},
                "metrics": {"dev_first_token_accuracy": scores[(layer, alpha)][0]},
                "train_seconds": round(time.perf_counter() - t0, 3)}
        return self.make_vectors(lm, layer, direction[layer], alpha), info
