"""A trainable KV-cache prefix (PEFT's Cartridge; Eyuboglu et al. 2025, arXiv 2506.06266), applied by one hook.

The prefix is P virtual tokens' keys and values in every decoder layer, stored as PEFT stores it: one tensor
`prompt_embeddings` (P, L * 2 * Hkv * Dh), the first `num_frozen_tokens` rows fixed (the paper's attention sink).
`peft.PeftModel.get_prompt` reads it as (P, 2L, Hkv, Dh): layer l's keys are row-block 2l, its values 2l + 1.

Applying it (PeftModelForCausalLM.forward's arithmetic, without wrapping the model): a forward pre-hook on the
top-level model puts the prefix into an empty cache (creating one if the call has none), prepends P ones to the
2-D attention mask on every call, and shifts explicit position ids by P. The real tokens then sit at positions
P.., as in PEFT's forward; generation stays consistent because every later step sees the same prefix in the cache.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from m2iv.adapters.handle import HookHandle
from m2iv.errors import M2IVError

# Families whose rope positions are computed from the attention mask and input ids together (M-RoPE): a longer
# mask than the input ids breaks them, so the prefix cannot be prepended there.
UNSUPPORTED = ("qwen2_vl", "qwen2_5_vl")


class KVPrefix(nn.Module):
    kind = "cartridge"

    def __init__(self, *, num_layers: int, num_kv_heads: int, head_dim: int, num_virtual_tokens: int,
                 num_frozen_tokens: int = 1, method: str = "cartridge") -> None:
        super().__init__()
        if num_virtual_tokens <= 0 or not 0 <= num_frozen_tokens < num_virtual_tokens:
            raise M2IVError(f"a cartridge needs num_virtual_tokens > 0 and 0 <= num_frozen_tokens < it (got "
                            f"{num_virtual_tokens}, {num_frozen_tokens})")
        self.num_layers, self.num_kv_heads, self.head_dim = num_layers, num_kv_heads, head_dim
        self.num_virtual_tokens, self.num_frozen_tokens, self.method = num_virtual_tokens, num_frozen_tokens, method
        self.sites: dict = {}
        width = num_layers * 2 * num_kv_heads * head_dim
        self.params = nn.ParameterDict()
        if num_frozen_tokens:  # not trained: the trainer's optimizer takes only parameters that require grad
            self.params["prefix__frozen"] = nn.Parameter(torch.zeros(num_frozen_tokens, width), requires_grad=False)
        self.params["prefix__trainable"] = nn.Parameter(torch.zeros(num_virtual_tokens - num_frozen_tokens, width))

    @classmethod
    def for_model(cls, adapter, num_virtual_tokens: int, num_frozen_tokens: int = 1) -> KVPrefix:
        if adapter.family in UNSUPPORTED:
            raise M2IVError(f"a KV prefix cannot be prepended on {adapter.family} (its M-RoPE positions come from the "
                            f"mask and the input ids together); use another family or --method lora")
        return cls(num_layers=adapter.num_layers, num_kv_heads=adapter.num_kv_heads, head_dim=adapter.head_dim,
                   num_virtual_tokens=num_virtual_tokens, num_frozen_tokens=num_frozen_tokens)

    # -- PEFT's layout ---------------------------------------------------------------------------------------
    def embeddings(self) -> torch.Tensor:
        """PEFT's `prompt_embeddings`: (P, L * 2 * Hkv * Dh), frozen rows first."""
        parts = [self.params[k] for k in ("prefix__frozen", "prefix__trainable") if k in self.params]
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def load_embeddings(self, emb: torch.Tensor) -> None:
        want = (self.num_virtual_tokens, self.num_layers * 2 * self.num_kv_heads * self.head_dim)
        if tuple(emb.shape) != want:
            raise M2IVError(f"prompt_embeddings has shape {tuple(emb.shape)}; this cartridge needs {want}")
        f = self.num_frozen_tokens
        with torch.no_grad():
            if f:
                self.params["prefix__frozen"].copy_(emb[:f])
            self.params["prefix__trainable"].copy_(emb[f:])

    def kv(self, batch: int, dtype: torch.dtype, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (keys, values), each (B, Hkv, P, Dh), as `PeftModel.get_prompt` lays them out."""
        P, L, H, D = self.num_virtual_tokens, self.num_layers, self.num_kv_heads, self.head_dim
        x = self.embeddings().to(device=device, dtype=dtype).view(P, 2 * L, H, D).permute(1, 2, 0, 3)  # (2L, H, P, D)
        return [(x[2 * i].expand(batch, H, P, D), x[2 * i + 1].expand(batch, H, P, D)) for i in range(L)]

    def spec(self) -> dict:
        return {"method": self.method, "kind": self.kind, "num_layers": self.num_layers,
                "num_kv_heads": self.num_kv_heads, "head_dim": self.head_dim,
                "num_virtual_tokens": self.num_virtual_tokens, "num_frozen_tokens": self.num_frozen_tokens}

    @classmethod
    def from_spec(cls, spec: dict) -> KVPrefix:
        try:
            return cls(num_layers=spec["num_layers"], num_kv_heads=spec["num_kv_heads"], head_dim=spec["head_dim"],
                       num_virtual_tokens=spec["num_virtual_tokens"], num_frozen_tokens=spec["num_frozen_tokens"],
                       method=spec.get("method", "cartridge"))
        except (KeyError, TypeError) as e:
            raise M2IVError(f"cartridge spec is missing or has a malformed field ({e})") from None

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"prompt_embeddings": self.embeddings().detach().contiguous().cpu()}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if set(tensors) != {"prompt_embeddings"}:
            raise M2IVError(f"a cartridge file holds one tensor, prompt_embeddings; found {sorted(tensors)[:3]}")
        self.load_embeddings(tensors["prompt_embeddings"])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.params.values())

    def peft_config(self, base_model: str):
        from peft import CartridgeConfig

        return CartridgeConfig(task_type="CAUSAL_LM", num_virtual_tokens=self.num_virtual_tokens,
                               num_frozen_tokens=self.num_frozen_tokens, num_layers=self.num_layers,
                               num_attention_heads=self.num_kv_heads, token_dim=self.num_kv_heads * self.head_dim,
                               num_transformer_submodules=1, base_model_name_or_path=base_model)

    # -- applying ------------------------------------------------------------------------------------------
    def attach(self, lm, freeze_base: bool = True) -> HookHandle:
        handle = HookHandle()
        if lm.adapter.family in UNSUPPORTED:
            raise M2IVError(f"a KV prefix cannot be prepended on {lm.adapter.family}; use --method lora")
        if freeze_base:
            handle.freeze(lm.model, {id(p) for p in self.parameters()})
        handle.hooks.append(lm.model.register_forward_pre_hook(self._pre_hook(lm.model), with_kwargs=True))
        return handle

    def _pre_hook(self, model):
        from transformers import DynamicCache

        names = inspect.signature(model.forward).parameters
        key = "cache" if "cache" in names else "past_key_values"
        text_config = model.config.get_text_config()
        P = self.num_virtual_tokens

        def hook(_module, args, kwargs):
            if args:
                raise M2IVError("a model with a KV prefix attached takes keyword arguments only (input_ids=...)")
            ref = kwargs.get("input_ids")
            ref = kwargs.get("inputs_embeds") if ref is None else ref
            batch = ref.shape[0]
            cache = kwargs.get(key, kwargs.get("past_key_values"))
            if cache is None or cache.get_seq_length() == 0:  # the prefill: the prefix goes in first
                cache = DynamicCache(config=text_config) if cache is None else cache
                dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
                for layer, (k, v) in enumerate(self.kv(batch, dtype, ref.device)):
                    cache.update(k, v, layer)
                kwargs.pop("past_key_values", None)
                kwargs[key], kwargs["use_cache"] = cache, True
            mask = kwargs.get("attention_mask")
            if mask is not None:
                if mask.dim() != 2:
                    raise M2IVError("a KV prefix needs a 2-D attention mask (batch, tokens)")
                kwargs["attention_mask"] = torch.cat([mask.new_ones(batch, P), mask], dim=1)
            if kwargs.get("position_ids") is not None:
                kwargs["position_ids"] = kwargs["position_ids"] + P
            return args, kwargs

        return hook


@torch.no_grad()
def prefix_from_text(lm, batch: dict, num_virtual_tokens: int) -> torch.Tensor:
    """PEFT's `prompt_embeddings` from the first P tokens the model caches while reading `batch` (one sequence):
    the Cartridges paper's initialisation from the corpus' own tokens (PEFT: initialize_kv_prefix_from_text)."""
    from peft.tuners.cartridge.utils import prompt_embeddings_from_past_key_values

    n = int(batch["input_ids"].shape[1])
    if n < num_virtual_tokens:
        raise M2IVError(f"the demonstrations hold {n} tokens, fewer than the cartridge's {num_virtual_tokens}; lower "
                        "num_virtual_tokens or raise --shots")
    out = lm.model(**{k: v.to(lm.device) for k, v in batch.items()}, use_cache=True)
    cache = out.past_key_values
    legacy = [(layer.keys, layer.values) for layer in cache.layers]
    return prompt_embeddings_from_past_key_values(legacy, num_virtual_tokens=num_virtual_tokens).float().cpu()
