"""Which token positions receive a vector, kept right under `generate()` with and without the KV cache.

A pre-hook on the top-level model sees every call (prefill, each decoding step) and records, in
*column* coordinates of the full left-padded sequence, which columns the call covers:

    columns of this call = [past, past + cur)   past = KV-cache length (0 without a cache)

The prompt length is fixed at the first call of a sequence; without a cache, a call whose input_ids
extend the previous call's input_ids is the next decoding step of the same sequence.

    all        every position
    text       positions whose token is not an image/video placeholder (image features untouched)
    query      columns >= query_start (per sample, set by the prompt builder), generated tokens included
    generated  columns >= prompt length: only tokens produced by generate()
    last       the last prompt column only (the position that predicts the first answer token)
    last_onward  the last prompt column and every generated token (MTV's replacement under generate)

A condition (vectors/gating.py) adds a per-row gate: `row_gate` (B,) is set once per sequence from its prompt,
and a row whose gate is off keeps every position untouched, whatever the policy.
"""

from __future__ import annotations

import torch

from m2iv.errors import M2IVError


def _cache_len(kwargs: dict) -> int:
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    if cache is None:
        return 0
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    if isinstance(cache, (tuple, list)) and cache and cache[0] is not None:  # legacy tuple cache
        return int(cache[0][0].shape[-2])
    return 0


class TokenTracker:
    def __init__(self, policy: str, image_token_ids: list[int]) -> None:
        self.policy = policy
        self.image_ids = torch.tensor(sorted(image_token_ids), dtype=torch.long)
        self.query_start: torch.Tensor | None = None
        self._active = False
        self._ids: torch.Tensor | None = None  # input_ids of the current call (B, cur)
        self._prev_ids: torch.Tensor | None = None
        self._past = 0
        self._prompt_cols: int | None = None
        self._masks: dict[tuple, torch.Tensor] = {}
        self.row_gate: torch.Tensor | None = None  # (B,) bool: rows a condition lets the vectors act on
        self.new_sequence = False  # the current call starts a sequence (a condition decides on it)
        self.probing = False  # a condition's probe forward is running: every hook leaves it alone

    @property
    def gated(self) -> bool:
        return self.row_gate is not None

    def set_query_start(self, query_start: torch.Tensor | list[int] | None) -> None:
        """Column index where each sample's query begins (left padding included); for the `query` policy."""
        self.query_start = None if query_start is None else torch.as_tensor(query_start, dtype=torch.long)

    # -- hooks on the top-level model ----------------------------------------------------------------
    def pre_hook(self, module, args, kwargs) -> None:
        if self.probing:
            return
        ids = kwargs.get("input_ids")
        if ids is None and args and torch.is_tensor(args[0]):
            ids = args[0]
        past = _cache_len(kwargs)
        cur = None if ids is None else ids.shape[1]
        if past == 0:
            prev = self._prev_ids
            continuing = (ids is not None and prev is not None and self._prompt_cols is not None
                          and ids.shape[0] == prev.shape[0] and ids.shape[1] > prev.shape[1]
                          and torch.equal(ids[:, : prev.shape[1]].to(prev.device), prev))
            if not continuing:
                self._prompt_cols = cur
            self.new_sequence = not continuing
        else:
            self.new_sequence = False
            if self._prompt_cols is None:
                self._prompt_cols = past  # called with a cache we never saw filled: all new tokens are generated
        self._ids, self._past, self._active = ids, past, True
        self._prev_ids = None if ids is None else ids.detach()
        self._masks = {}

    def post_hook(self, module, args, kwargs, output) -> None:
        if self.probing:
            return
        self._active = False
        self._masks = {}

    # -- what site hooks ask ---------------------------------------------------------------------------
    def mask(self, h: torch.Tensor) -> torch.Tensor | None:
        """(B, T) bool mask of positions to change in `h` (B, T, ...), or None for every position."""
        if self.policy == "all" and self.row_gate is None:
            return None
        if not self._active:
            raise M2IVError(f"token policy {self.policy!r} needs the model to be called through the model the "
                            "vectors were injected into (not a submodule)")
        key = (h.shape[0], h.shape[1], h.device)
        if key not in self._masks:
            mask = self._compute(h.shape[0], h.shape[1])
            if self.row_gate is not None:
                mask = mask & self._rows(h.shape[0]).unsqueeze(-1)
            self._masks[key] = mask.to(h.device)
        return self._masks[key]

    def _rows(self, batch: int) -> torch.Tensor:
        """The row gate for a batch of `batch` rows (beam search and sampling repeat each prompt's row)."""
        gate = self.row_gate.cpu() if self.row_gate is not None else torch.ones(batch, dtype=torch.bool)
        if gate.shape[0] == batch:
            return gate
        if batch % gate.shape[0] == 0:
            return gate.repeat_interleave(batch // gate.shape[0])
        raise M2IVError(f"a condition decided on {gate.shape[0]} prompts but the model is running {batch} rows")

    def _compute(self, batch: int, cur: int) -> torch.Tensor:
        cols = torch.arange(self._past, self._past + cur)  # (T,)
        prompt = self._prompt_cols if self._prompt_cols is not None else cur
        if self.policy == "all":
            return torch.ones(batch, cur, dtype=torch.bool)
        if self.policy == "text":
            if self._ids is None:
                raise M2IVError("token policy 'text' needs input_ids; the model was called with inputs_embeds")
            if self._ids.shape[1] != cur:
                raise M2IVError(f"token policy 'text': hidden states have {cur} positions, input_ids "
                                f"{self._ids.shape[1]}")
            return ~torch.isin(self._ids.cpu(), self.image_ids)
        if self.policy == "generated":
            return (cols >= prompt).expand(batch, cur)
        if self.policy == "last":
            return (cols == prompt - 1).expand(batch, cur)
        if self.policy == "last_onward":
            return (cols >= prompt - 1).expand(batch, cur)
        if self.policy == "query":
            if self.query_start is None:
                raise M2IVError("token policy 'query' needs the query start column: call "
                                "handle.set_query_start(...) (the prompt builder returns it)")
            qs = self.query_start.reshape(-1, 1)
            if qs.shape[0] not in (1, batch):
                raise M2IVError(f"query_start has {qs.shape[0]} entries for a batch of {batch}")
            return (cols.reshape(1, -1) >= qs).expand(batch, cur)
        raise M2IVError(f"unknown token policy {self.policy!r}")
