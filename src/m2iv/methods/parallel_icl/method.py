"""Parallel-ICL as a plug-in: the query's N demonstrations in k chunks, each its own context with the query, answered
in one batch; at every generated token the k next-token distributions are merged by a weighted product of experts
and every context takes the merged greedy token.

What the paper fixes (arXiv 2603.16092v1, Yamaguchi et al., CVPR 2026; abstract and published summaries, no code was
released): chunks processed in parallel, predictions integrated "at the logit level, using a weighted
Product-of-Experts", chunking by clustering "to maximize inter-chunk diversity", "similarity-based context
compilation to weight predictions by query relevance". The formulas m2iv uses, each a setting:
- merged log-score s(y) = sum_k w_k log p_k(y | chunk_k, query, answer so far); greedy y = argmax s. The merge is
  the many-shot teacher's own product of experts (m2iv.train.teacher.combine) with weights.
- w = softmax_k(cos(e_q, c_k) / temperature): e_q the query's embedding, c_k the normalised mean of the chunk's
  demonstration embeddings, both the model's own (mean of the middle layer over the zero-shot prompt, RICES's; the
  support's are cached with RICES's). `weighting=uniform` is w_k = 1/k.
- chunking "cluster": spherical k-means (k-means++ seeded per query) on the demonstrations' embeddings, the clusters
  being the chunks (sizes may differ); "random": a seeded split into near-equal parts.

The demonstrations are the ones N-shot ICL gets (the runner's selector), so the two differ only in how they are read.
A query's prompt tokens are summed over its k contexts (what is computed); the longest context is what must fit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from m2iv.errors import M2IVError
from m2iv.methods.base import Method
from m2iv.methods.parallel_icl.chunking import kmeans_chunks, random_chunks
from m2iv.methods.parallel_icl.config import ParallelICLConfig
from m2iv.train.teacher import combine


class MergeExperts:
    """A logits processor for `generate`: rows come in groups of k (one query's contexts); every row of a group gets
    the group's merged log-scores, log_softmax(sum_k w_k log_softmax(logits_k)), so greedy decoding picks one token
    per query for all its contexts. Runs after generate's own processors (min_new_tokens' EOS mask included)."""

    def __init__(self, k: int, weights: torch.Tensor) -> None:
        self.k, self.weights = k, weights  # (B, k)
        self.history: list[torch.Tensor] = []  # merged log-probabilities per step (B, V), for inspection

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        b = scores.shape[0] // self.k
        lp = F.log_softmax(scores.float(), dim=-1).view(b, self.k, -1)  # (B, k, V)
        merged = F.log_softmax(combine([lp[:, i] for i in range(self.k)], "product", self.weights.to(lp.device)), -1)
        self.history.append(merged)
        return merged.repeat_interleave(self.k, dim=0).to(scores.dtype)


class ParallelICL(Method):
    name = "parallel-icl"
    config_cls = ParallelICLConfig
    tiny_budget = {"chunks": 2}
    # The comparison's question: chunking by clustering (its paper's) against random chunking.
    variants = (("cluster", {"chunking": "cluster"}), ("random", {"chunking": "random"}))

    def prompt_shots(self, shots: int) -> int:
        return shots

    def prepare(self, lm, task, splits: dict) -> None:
        """The support's embeddings, once (cached on disk with RICES's, same model, layer and support)."""
        from m2iv.constants import m2iv_home
        from m2iv.data.prompts import PromptBuilder
        from m2iv.data.selection import RicesSelector, model_embedder

        cfg = self.method_config()
        self.embed = model_embedder(lm, PromptBuilder(lm, task.instruction, task.answer_template), cfg.embed_layer)
        key = lm.fingerprint + ("" if cfg.embed_layer is None else f"-l{cfg.embed_layer}")
        index = RicesSelector(splits["support"], self.embed, seed=self.spec.seed,
                              cache_dir=m2iv_home() / "cache" / "rices", cache_key=key)
        self.support_emb = index.support_emb  # (N, E), unit rows
        self.rows = {s.id: i for i, s in enumerate(index.support)}

    def _demo_emb(self, demos: list) -> torch.Tensor:
        missing = [d for d in demos if d.id not in self.rows]
        extra = F.normalize(self.embed(missing).float(), dim=-1) if missing else None
        out, j = [], 0
        for d in demos:
            if d.id in self.rows:
                out.append(self.support_emb[self.rows[d.id]])
            else:
                assert extra is not None
                out.append(extra[j])
                j += 1
        return torch.stack(out)  # (n, E)

    def chunks(self, query, demos: list) -> tuple[list[list], torch.Tensor]:
        """The query's demonstrations in chunks, and each chunk's unit centroid (k, E)."""
        if not hasattr(self, "support_emb"):
            raise M2IVError("--method parallel-icl: prepare() computes the support's embeddings first")
        cfg, seed = self.method_config(), self.spec.seed
        if not demos:
            raise M2IVError("parallel-icl needs demonstrations: pass --shots N (N >= 1)")
        emb = self._demo_emb(demos)
        k = min(cfg.chunks, len(demos))
        parts = (kmeans_chunks(emb, k, seed, query.id, cfg.kmeans_iters) if cfg.chunking == "cluster"
                 else random_chunks(len(demos), k, seed, query.id))
        while len(parts) < k:  # k-means can leave fewer clusters than asked: split the largest chunk
            big = max(range(len(parts)), key=lambda i: len(parts[i]))
            half = len(parts[big]) // 2
            parts[big:big + 1] = [parts[big][:half], parts[big][half:]]
        centroids = F.normalize(torch.stack([emb[p].mean(0) for p in parts]), dim=-1)
        return [[demos[i] for i in p] for p in parts], centroids

    def encode(self, lm, builder, pairs: list) -> dict:
        prompts, centroids, queries, texts = [], [], [], []
        for q, demos in pairs:
            parts, cents = self.chunks(q, demos)
            built = [builder.build(p, q) for p in parts]
            prompts += built
            texts.append("\n\n".join(f"[context {i}]\n{b.text}" for i, b in enumerate(built)))
            centroids.append(cents)
            queries.append(q)
        batch = builder.encode(prompts)
        batch.pop("query_start")
        return {"inputs": batch, "queries": queries, "centroids": torch.stack(centroids),  # (B, k, E)
                "prompt_text": texts}

    def weights(self, query_emb: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
        """(B, k) chunk weights from the unit query embeddings (B, E) and chunk centroids (B, k, E)."""
        cfg = self.method_config()
        if cfg.weighting == "uniform":
            return torch.full(centroids.shape[:2], 1.0 / centroids.shape[1])
        sims = torch.einsum("be,bke->bk", query_emb, centroids)
        return torch.softmax(sims / cfg.temperature, dim=-1)

    def generate(self, lm, batch: dict, handle, **kwargs) -> tuple[torch.Tensor, list[int]]:
        from transformers import LogitsProcessorList

        centroids = batch["centroids"]
        b, k = centroids.shape[:2]
        q_emb = F.normalize(self.embed(batch["queries"]).float(), dim=-1)  # one zero-shot forward: part of the cost
        self.merger = MergeExperts(k, self.weights(q_emb, centroids))
        inputs = {key: v.to(lm.device) for key, v in batch["inputs"].items()}
        procs = LogitsProcessorList([*kwargs.pop("logits_processor", []), self.merger])
        gen = lm.model.generate(**inputs, logits_processor=procs, **kwargs)
        n = inputs["input_ids"].shape[1]
        tokens = inputs["attention_mask"].sum(dim=1).view(b, k).sum(dim=1).tolist()
        return gen[::k, n:], tokens
