"""Cartridge settings and their origin.

Cartridges (arXiv 2506.06266; HazyResearch/cartridges@1528162 README): a KV cache of p trainable tokens, initialised
from the KV of real text ("KVFromRandomText is usually the best choice"; PEFT: initialize_kv_prefix_from_text), the
first token frozen as an attention sink (PEFT's num_frozen_tokens = 1, "the paper recommends freezing the first
token"), trained by context distillation (KL to the model reading the corpus, top-20 logits) with lr 2e-2.
Here the corpus is the task's demonstrations: the cartridge starts as the KV of the first p tokens of a fixed
`shots`-demonstration context and is distilled from the same cached N-shot teacher as M²IV.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from m2iv.errors import M2IVError


@dataclass
class CartridgeConfig:
    num_virtual_tokens: int = 64  # p: about two and a half sandbox demonstrations (16 fill ~430 tokens)
    num_frozen_tokens: int = 1  # the attention sink
    init: str = "demos"  # "demos": KV of the first p tokens of a fixed demonstration context; "random": N(0, 1)
    lr: float = 2e-2
    weight_decay: float = 0.0
    warmup: float = 0.1
    clip: float = 1.0
    w_mimicry: float = 1.0  # context distillation: KL to the N-shot teacher
    w_ce: float = 0.0

    def __post_init__(self) -> None:
        if self.num_virtual_tokens <= 0 or not 0 <= self.num_frozen_tokens < self.num_virtual_tokens:
            raise M2IVError(f"cartridge needs num_virtual_tokens > 0 and 0 <= num_frozen_tokens < it (got "
                            f"{self.num_virtual_tokens}, {self.num_frozen_tokens})")
        if self.init not in ("demos", "random"):
            raise M2IVError(f"cartridge init must be 'demos' or 'random'; got {self.init!r}")

    def to_json(self) -> dict:
        return asdict(self)
