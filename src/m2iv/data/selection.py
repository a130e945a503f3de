"""Choosing the demonstrations of each query: random (seeded per query), fixed, or RICES retrieval.

Every selector excludes the query itself (same id or same image), so a demonstration never leaks
the answer. RICES (Yang et al. 2022, as in OpenFlamingo) ranks support examples by cosine
similarity of embeddings and puts the most similar demonstration last, nearest the query.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from pathlib import Path

import torch

from m2iv.data.sample import Sample, content_hash
from m2iv.errors import M2IVError

EmbedFn = Callable[[list[Sample]], torch.Tensor]  # (N,) samples -> (N, E) embeddings


def _query_seed(seed: int, query: Sample) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{query.id}".encode()).digest()[:8], "big")


def _eligible(support: list[Sample], query: Sample) -> list[int]:
    imgs = set(query.images)
    return [i for i, s in enumerate(support) if s.id != query.id and not (imgs & set(s.images))]


class Selector:
    name = "base"

    def __init__(self, support: list[Sample], seed: int = 0) -> None:
        if not support:
            raise M2IVError("the support set is empty; demonstrations need at least one support example")
        self.support, self.seed = support, seed

    def select(self, query: Sample, k: int) -> list[Sample]:
        raise NotImplementedError

    def _check(self, k: int, n: int) -> None:
        if k > n:
            raise M2IVError(f"asked for {k} demonstrations but only {n} support examples are eligible; "
                            "lower --shots or enlarge the support set")


class RandomSelector(Selector):
    name = "random"

    def select(self, query: Sample, k: int) -> list[Sample]:
        idx = _eligible(self.support, query)
        self._check(k, len(idx))
        return [self.support[i] for i in random.Random(_query_seed(self.seed, query)).sample(idx, k)]


class FixedSelector(Selector):
    """One seeded draw of demonstrations shared by every query (the query itself swapped out if drawn)."""

    name = "fixed"

    def select(self, query: Sample, k: int) -> list[Sample]:
        order = list(range(len(self.support)))
        random.Random(self.seed).shuffle(order)
        ok = set(_eligible(self.support, query))
        chosen = [self.support[i] for i in order if i in ok][:k]
        self._check(k, len(chosen))
        return chosen


class RicesSelector(Selector):
    name = "rices"

    def __init__(self, support: list[Sample], embed: EmbedFn, seed: int = 0, cache_dir: str | Path | None = None,
                 cache_key: str = "") -> None:
        super().__init__(support, seed)
        self.embed = embed
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.cache_key = cache_key
        self.support_emb = torch.nn.functional.normalize(self._embed_cached(support).float(), dim=-1)  # (N, E)

    def _embed_cached(self, samples: list[Sample]) -> torch.Tensor:
        if self.cache_dir is None:
            return self.embed(samples)
        from safetensors.torch import load_file, save_file

        path = self.cache_dir / f"rices-{self.cache_key}-{content_hash(samples)}.safetensors"
        if path.is_file():
            try:
                return load_file(str(path))["embeddings"]
            except Exception:  # noqa: BLE001 - a broken cache entry is recomputed, never trusted
                path.unlink(missing_ok=True)
        emb = self.embed(samples)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{random.randrange(1 << 30)}")
        save_file({"embeddings": emb.contiguous().cpu()}, str(tmp))
        tmp.replace(path)
        return emb

    def select(self, query: Sample, k: int) -> list[Sample]:
        idx = _eligible(self.support, query)
        self._check(k, len(idx))
        q = torch.nn.functional.normalize(self.embed([query]).float(), dim=-1)[0]  # (E,)
        sims = self.support_emb[idx] @ q  # (len(idx),)
        top = torch.topk(sims, k).indices.tolist()  # most similar first
        return [self.support[idx[i]] for i in reversed(top)]  # most similar last, next to the query


def model_embedder(lm, builder, layer: int | None = None, batch_size: int = 8) -> EmbedFn:
    """Embed a sample with the model itself: mean of a middle decoder layer's hidden states over its
    zero-shot prompt (image features and question together); works for every family alike."""
    layer = lm.adapter.num_layers // 2 if layer is None else layer

    @torch.no_grad()
    def embed(samples: list[Sample]) -> torch.Tensor:
        outs = []
        for i in range(0, len(samples), batch_size):
            chunk = samples[i:i + batch_size]
            batch = builder.encode([builder.build([], s) for s in chunk])
            batch.pop("query_start")
            batch = {k: v.to(lm.device) for k, v in batch.items()}
            hs = lm.model(**batch, output_hidden_states=True).hidden_states[layer + 1]  # (B, T, D)
            m = batch["attention_mask"].unsqueeze(-1).to(hs.dtype)  # (B, T, 1)
            outs.append(((hs * m).sum(1) / m.sum(1)).float().cpu())
        return torch.cat(outs)

    return embed


SELECTORS = {"random": RandomSelector, "fixed": FixedSelector, "rices": RicesSelector}
