"""Parallel-ICL settings. The paper (arXiv 2603.16092v1, abstract and summaries; no code released) fixes the scheme:
chunks processed in parallel, logits merged by a weighted product of experts, chunking by clustering (diverse
chunks) or at random, weights from query-chunk similarity. The constants below are m2iv's (see method.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from m2iv.errors import M2IVError


@dataclass
class ParallelICLConfig:
    chunks: int = 4  # k contexts per query (16 shots -> 4 chunks of about 4 demonstrations)
    chunking: str = "cluster"  # "cluster": k-means on the demonstrations' embeddings; "random": a seeded split
    weighting: str = "similarity"  # "similarity": softmax over chunks of cos(query, chunk centroid) / temperature
    temperature: float = 0.1  # of the similarity softmax ("uniform" weighting ignores it)
    embed_layer: int | None = None  # layer of the model's own embeddings (RICES'); None: the middle one
    kmeans_iters: int = 50

    def __post_init__(self) -> None:
        if self.chunks < 1:
            raise M2IVError(f"parallel-icl needs chunks >= 1; got {self.chunks}")
        if self.chunking not in ("cluster", "random"):
            raise M2IVError(f"parallel-icl chunking must be 'cluster' or 'random'; got {self.chunking!r}")
        if self.weighting not in ("similarity", "uniform"):
            raise M2IVError(f"parallel-icl weighting must be 'similarity' or 'uniform'; got {self.weighting!r}")
        if self.temperature <= 0:
            raise M2IVError(f"parallel-icl temperature must be > 0; got {self.temperature}")

    def to_json(self) -> dict:
        return asdict(self)
