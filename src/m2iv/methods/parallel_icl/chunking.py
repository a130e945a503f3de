"""Splitting one query's demonstrations into k chunks: by k-means on their embeddings (Parallel-ICL's clustering,
which makes the chunks differ from each other) or by a seeded random split into near-equal parts."""

from __future__ import annotations

import hashlib
import random

import torch


def _rng(seed: int, key: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big"))


def random_chunks(n: int, k: int, seed: int, key: str) -> list[list[int]]:
    """Indices 0..n-1 shuffled (seeded by `key`) and cut into k parts whose sizes differ by at most one; each part in
    the original order."""
    order = list(range(n))
    _rng(seed, key).shuffle(order)
    size, extra = divmod(n, k)
    out, pos = [], 0
    for i in range(k):
        take = size + (i < extra)
        out.append(sorted(order[pos:pos + take]))
        pos += take
    return [c for c in out if c]


def kmeans_chunks(emb: torch.Tensor, k: int, seed: int, key: str, iters: int = 50) -> list[list[int]]:
    """Spherical k-means on unit rows `emb` (n, E) with k-means++ seeding (seeded by `key`); an emptied cluster is
    re-seeded with the point farthest from its centroid. Returns the non-empty clusters' indices, each in order."""
    n = emb.shape[0]
    k = min(k, n)
    rng = _rng(seed, key)
    centres = [rng.randrange(n)]
    while len(centres) < k:  # k-means++: the next centre drawn with probability ~ squared distance to the nearest
        d = (1 - emb @ emb[centres].T).clamp_min(0).min(dim=1).values ** 2  # (n,)
        total = float(d.sum())
        if total <= 0:
            centres.append(next(i for i in range(n) if i not in centres))
            continue
        r, acc = rng.random() * total, 0.0
        for i, di in enumerate(d.tolist()):
            acc += di
            if acc >= r and i not in centres:
                centres.append(i)
                break
        else:
            centres.append(next(i for i in range(n) if i not in centres))
    c = emb[centres].clone()  # (k, E)
    labels = torch.full((n,), -1)
    for _ in range(iters):
        new = (emb @ c.T).argmax(dim=1)  # (n,) nearest centre by cosine
        for j in range(k):
            if not (new == j).any():  # empty: take the point worst served by its own centre
                worst = int((emb * c[new]).sum(1).argmin())
                new[worst] = j
        if torch.equal(new, labels):
            break
        labels = new
        c = torch.nn.functional.normalize(torch.stack([emb[labels == j].mean(0) for j in range(k)]), dim=-1)
    return [torch.nonzero(labels == j).flatten().tolist() for j in range(k) if (labels == j).any()]
