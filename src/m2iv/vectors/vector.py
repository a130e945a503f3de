"""In-context vectors: per-layer vectors and weight factors on the MHA and MLP branches.

One `InContextVectors` holds, for each site it uses, a vector per selected layer and the scalars its
operator needs (see `operators.py`):

    site       tensor shapes (n = number of selected layers)     hooks (see models/adapter.py)
    attn       vector (n, D)      alpha/beta (n,)                MHA branch output, after o_proj
    attn_head  vector (n, H, Dh)  alpha/beta (n, H)              o_proj input, one shift per head
               or, operator virtual_kv (HiFICL), no vector but low-rank virtual keys/values per head:
               key_a/value_a (n, H, V, r)  key_b/value_b (n, H, r, Dh)
    mlp        vector (n, D)      alpha/beta (n,)                MLP branch output
    layer      vector (n, D)      alpha/beta (n,)                decoder-layer output (residual stream)

M²IV uses `attn` + `mlp` with the `linear` operator; baselines use the other combinations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
from torch import nn

from m2iv.errors import M2IVError
from m2iv.vectors.condition import Condition
from m2iv.vectors.names import ACTIVATIONS, LOW_RANK, NORMALISERS, SITES, TOKEN_POLICIES
from m2iv.vectors.operators import OPERATOR_SCALES, OPERATORS, SCALE_INIT

__all__ = ["SITES", "TOKEN_POLICIES", "ACTIVATIONS", "NORMALISERS", "LOW_RANK", "InContextVectors", "SiteSpec"]



@dataclass
class SiteSpec:
    operator: str = "linear"
    layers: list[int] = field(default_factory=list)
    scale_activation: str = "identity"  # "sigmoid" keeps a learned alpha in (0, 1), as LIVE does
    # virtual_kv only (HiFICL): virtual key/value pairs per head and the rank of their factors.
    virtual_tokens: int = 0
    rank: int = 0
    # gated / virtual_kv: the real keys' attention normaliser over the keys a query may see ("masked") or over
    # every key of the sequence, future and padding ones included ("all_keys", what the originals compute).
    normaliser: str = "masked"

    def to_json(self) -> dict:
        """The fields that matter: the virtual_kv / normaliser ones only when set, so other configs keep their form."""
        d = asdict(self)
        for f in fields(self):
            if f.name in ("virtual_tokens", "rank", "normaliser") and d[f.name] == f.default:
                del d[f.name]
        return d

    def validate(self, site: str, num_layers: int) -> None:
        if site not in SITES:
            raise M2IVError(f"unknown site {site!r}; sites are {', '.join(SITES)}")
        if self.operator not in OPERATORS:
            raise M2IVError(f"unknown operator {self.operator!r} at site {site}; operators are {', '.join(OPERATORS)}")
        if self.scale_activation not in ACTIVATIONS:
            raise M2IVError(f"unknown scale_activation {self.scale_activation!r}; use {' or '.join(ACTIVATIONS)}")
        if self.operator in ("gated", "virtual_kv") and site != "attn_head":
            raise M2IVError(f"the {self.operator} operator works per head: use it at site attn_head")
        if self.operator == "virtual_kv" and (self.virtual_tokens <= 0 or self.rank <= 0):
            raise M2IVError(f"the virtual_kv operator needs virtual_tokens > 0 and rank > 0 (got "
                            f"{self.virtual_tokens}, {self.rank}); set both")
        if self.normaliser not in NORMALISERS:
            raise M2IVError(f"unknown normaliser {self.normaliser!r}; use {' or '.join(NORMALISERS)}")
        if not self.layers or any(not 0 <= i < num_layers for i in self.layers) or len(set(self.layers)) != len(
                self.layers):
            raise M2IVError(f"site {site} layers {self.layers} must be distinct indices in [0, {num_layers})")


class InContextVectors(nn.Module):
    """Trainable vectors + weight factors; `vector(site)` and `scale(site, name)` are what hooks read."""

    def __init__(self, *, num_layers: int, hidden_size: int, num_heads: int, head_dim: int,
                 sites: dict[str, SiteSpec], token_policy: str = "all", method: str = "m2iv",
                 dtype: torch.dtype = torch.float32, condition: Condition | None = None) -> None:
        super().__init__()
        # When set, the vectors act only on prompts that fire it (vectors/condition.py); not a trained parameter.
        self.condition = condition
        if token_policy not in TOKEN_POLICIES:
            raise M2IVError(f"unknown token policy {token_policy!r}; policies are {', '.join(TOKEN_POLICIES)}")
        if not sites:
            raise M2IVError("in-context vectors need at least one site")
        self.num_layers, self.hidden_size, self.num_heads, self.head_dim = num_layers, hidden_size, num_heads, head_dim
        self.token_policy, self.method = token_policy, method
        self.config: dict | None = None  # the m2iv_config.json these vectors were loaded with, if any
        self.sites: dict[str, SiteSpec] = {}
        self.params = nn.ParameterDict()
        for site, spec in sites.items():
            spec = replace(spec, layers=sorted(spec.layers))
            spec.validate(site, num_layers)
            self.sites[site] = spec
            n = len(spec.layers)
            vshape = (n, num_heads, head_dim) if site == "attn_head" else (n, hidden_size)
            sshape = (n, num_heads) if site == "attn_head" else (n,)
            if spec.operator != "virtual_kv":  # virtual keys/values replace the shift vector
                self.params[f"{site}__vector"] = nn.Parameter(torch.zeros(vshape, dtype=dtype))
            for name in OPERATOR_SCALES[spec.operator]:
                if name == "gate_w":  # a per-head linear map of the query: (n, H, Dh)
                    self.params[f"{site}__{name}"] = nn.Parameter(torch.zeros(vshape, dtype=dtype))
                    continue
                if name in LOW_RANK:  # (n, H, V, r) for the *_a factors, (n, H, r, Dh) for the *_b ones
                    shape = (n, num_heads, *((spec.virtual_tokens, spec.rank) if name.endswith("_a") else
                                             (spec.rank, head_dim)))
                    self.params[f"{site}__{name}"] = nn.Parameter(torch.zeros(shape, dtype=dtype))
                    continue
                init = SCALE_INIT[name]
                if spec.scale_activation == "sigmoid":
                    init = 0.0  # sigmoid(0) = 0.5, LIVE's initial weight
                self.params[f"{site}__{name}"] = nn.Parameter(torch.full(sshape, init, dtype=dtype))

    @classmethod
    def for_model(cls, adapter, sites: tuple[str, ...] | list[str] = ("attn", "mlp"), operator: str = "linear",
                  layers: list[int] | None = None, **kw) -> InContextVectors:
        """Zero vectors with identity weight factors for every decoder layer of `adapter`'s model."""
        lay = list(range(adapter.num_layers)) if layers is None else list(layers)
        return cls(num_layers=adapter.num_layers, hidden_size=adapter.hidden_size, num_heads=adapter.num_heads,
                   head_dim=adapter.head_dim, sites={s: SiteSpec(operator, lay) for s in sites}, **kw)

    # -- what hooks read -------------------------------------------------------------------------
    def vector(self, site: str) -> torch.Tensor:
        return self.params[f"{site}__vector"]

    def scale(self, site: str, name: str) -> torch.Tensor | None:
        key = f"{site}__{name}"
        if key not in self.params:
            return None
        p = self.params[key]
        return torch.sigmoid(p) if self.sites[site].scale_activation == "sigmoid" else p

    # -- description and (de)serialisation --------------------------------------------------------
    def spec(self) -> dict:
        out = {"method": self.method, "token_policy": self.token_policy, "num_layers": self.num_layers,
               "hidden_size": self.hidden_size, "num_heads": self.num_heads, "head_dim": self.head_dim,
               "sites": {s: sp.to_json() for s, sp in self.sites.items()}}
        if self.condition is not None:
            out["condition"] = self.condition.to_json()
        return out

    @classmethod
    def from_spec(cls, spec: dict, dtype: torch.dtype = torch.float32) -> InContextVectors:
        try:
            sites = {s: SiteSpec(**sp) for s, sp in spec["sites"].items()}
            cond = spec.get("condition")
            condition = None if cond is None else Condition.from_json(cond, spec["hidden_size"])
            return cls(num_layers=spec["num_layers"], hidden_size=spec["hidden_size"], num_heads=spec["num_heads"],
                       head_dim=spec["head_dim"], sites=sites, token_policy=spec.get("token_policy", "all"),
                       method=spec.get("method", "m2iv"), dtype=dtype, condition=condition)
        except (KeyError, TypeError) as e:
            raise M2IVError(f"vector spec is missing or has a malformed field ({e})") from None

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: dict, where: str) -> InContextVectors:
        """The vectors a (validated) config describes, filled with `tensors`; the config is checked, and its
        declared size against the tensors given, before anything is allocated, so a hostile config cannot make
        this allocate more than the file holds. The result keeps `config` as `.config`."""
        from m2iv.vectors.validate import check_tensor_bytes, validate_config

        validate_config(config, where)
        check_tensor_bytes(config, sum(t.numel() * t.element_size() for t in tensors.values()), where)
        dtype = getattr(torch, str(config["dtype"]), None)
        if not isinstance(dtype, torch.dtype):
            raise M2IVError(f"{where}: unknown dtype {config['dtype']!r} in its config")
        vectors = cls.from_spec(config, dtype=dtype)
        vectors.load_tensors(tensors)
        vectors.config = config
        return vectors

    # -- Hugging Face habits (pretrained.py): the directory is the vector directory plus a model card -----------
    def save_pretrained(self, save_directory: str | Path, *, adapter=None, base_model: str | None = None,
                        **meta) -> Path:
        """Write a vector directory with a model card (README.md). Vectors loaded from a directory know their
        model; new ones need `adapter=` (lm.adapter) and `base_model=` (the model spec). `meta` are
        save_vectors' recipe / metrics / method_config / extra."""
        from m2iv.vectors.pretrained import save

        return save(self, save_directory, adapter=adapter, base_model=base_model, **meta)

    @classmethod
    def from_pretrained(cls, spec: str | Path, *, adapter=None, strict: bool = True,
                        device: str | torch.device = "cpu", revision: str | None = None,
                        local_files_only: bool | None = None) -> InContextVectors:
        """Vectors from a directory, `org/name` or `hf://org/name[@rev]` (the Hugging Face cache first; the hub
        only for `org/name` when online and not local_files_only), verified, refused for another model."""
        from m2iv.vectors.pretrained import load

        return load(cls, spec, adapter=adapter, strict=strict, device=device, revision=revision,
                    local_files_only=local_files_only)

    def push_to_hub(self, repo_id: str, *, adapter=None, base_model: str | None = None, token: str | None = None,
                    private: bool | None = None, revision: str | None = None, commit_message: str | None = None,
                    **meta) -> str:
        """save_pretrained into a scratch folder, then one commit to `repo_id` (created if missing); returns the
        commit URL. HF_ENDPOINT and HF_TOKEN are honoured as huggingface_hub reads them."""
        from m2iv.vectors.pretrained import push

        return push(self, repo_id, adapter=adapter, base_model=base_model, token=token, private=private,
                    revision=revision, commit_message=commit_message, **meta)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Portable tensor names `layers.{i}.{site}.{param}` (i = model layer index), plus `condition.*` (float32)."""
        out: dict[str, torch.Tensor] = {}
        for key, p in self.params.items():
            site, name = key.split("__")
            for row, layer in enumerate(self.sites[site].layers):
                out[f"layers.{layer}.{site}.{name}"] = p.detach()[row].contiguous().cpu()
        if self.condition is not None:
            out.update(self.condition.tensors())
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        expected = self.to_tensors()
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        if missing or extra:
            raise M2IVError(f"vector tensors do not match the config: missing {missing[:3]}, unexpected {extra[:3]}")
        for name, ref in expected.items():
            if tuple(tensors[name].shape) != tuple(ref.shape):
                raise M2IVError(f"tensor {name} has shape {tuple(tensors[name].shape)}, config implies "
                                f"{tuple(ref.shape)}")
        with torch.no_grad():
            for key, p in self.params.items():
                site, name = key.split("__")
                for row, layer in enumerate(self.sites[site].layers):
                    p[row].copy_(tensors[f"layers.{layer}.{site}.{name}"])
        if self.condition is not None:
            self.condition.vector = tensors["condition.vector"].detach().float().cpu()
            self.condition.center = tensors["condition.center"].detach().float().cpu()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def with_condition(self, condition: Condition | None) -> InContextVectors:
        """These vectors (the same parameters) under another condition, or none."""
        self.condition = condition
        return self

    # -- composition (the library builds on these) -----------------------------------------------
    def _check_same_layout(self, other: InContextVectors) -> None:
        def layout(v: InContextVectors) -> dict:
            return {k: x for k, x in v.spec().items() if k not in ("method", "condition")}

        if layout(self) != layout(other):
            raise M2IVError("cannot combine vectors with different sites, layers, operators or model sizes")

    def combine(self, weights: list[float], others: list[InContextVectors]) -> InContextVectors:
        """Weighted sum of effective vectors (alpha * v) per branch, over `self` and `others` (same layout).

        The result carries alpha = 1 (identity activation), so it injects exactly sum_i w_i * alpha_i * v_i;
        scales on h (beta) are taken from `self`.
        """
        items = [self, *others]
        if len(weights) != len(items):
            raise M2IVError(f"got {len(weights)} weights for {len(items)} vector sets")
        for o in others:
            self._check_same_layout(o)
        if any(sp.operator == "virtual_kv" for sp in self.sites.values()):
            raise M2IVError("virtual key/value pairs (HiFICL) are not a shift: a weighted sum of them has no meaning")
        sites = {s: replace(sp, scale_activation="identity") for s, sp in self.sites.items()}
        out = InContextVectors(num_layers=self.num_layers, hidden_size=self.hidden_size, num_heads=self.num_heads,
                               head_dim=self.head_dim, sites=sites, token_policy=self.token_policy,
                               method="composed", condition=shared_condition(items))
        with torch.no_grad():
            for site in self.sites:
                eff = torch.zeros_like(self.vector(site))
                for w, item in zip(weights, items, strict=True):
                    a = item.scale(site, "alpha")
                    v = item.vector(site)
                    a = torch.ones(v.shape[: v.dim() - 1]) if a is None else a
                    eff = eff + w * a.unsqueeze(-1) * v
                out.params[f"{site}__vector"].copy_(eff)
                if f"{site}__alpha" in out.params:
                    out.params[f"{site}__alpha"].fill_(1.0)
                if f"{site}__beta" in out.params:
                    out.params[f"{site}__beta"].copy_(self.scale(site, "beta"))
        return out

    def __add__(self, other: InContextVectors) -> InContextVectors:
        return self.combine([1.0, 1.0], [other])

    def __mul__(self, w: float) -> InContextVectors:
        return self.combine([float(w)], [])

    __rmul__ = __mul__

    def __neg__(self) -> InContextVectors:
        return self * -1.0


def shared_condition(items: list[InContextVectors]) -> Condition | None:
    """The condition a sum of `items` keeps: none if none has one, theirs if all share one; a sum under
    different conditions (or of conditioned and unconditioned vectors) is refused, since one decision gates it."""
    conds = [v.condition for v in items]
    if all(c is None for c in conds):
        return None
    first = conds[0]
    if first is not None and all(first.same_as(c) for c in conds[1:]):
        return first
    kinds = ", ".join("none" if c is None else f"layer {c.layer} {c.kind}" for c in conds)
    raise M2IVError(f"cannot sum vectors under different conditions ({kinds}): a sum is gated by one decision; "
                    "compose entries that share a condition, or drop the conditions (`library compose --no-condition`)")
