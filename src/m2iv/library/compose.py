"""Composition of library entries: `0.5*a + 1.0*b - c`, optionally restricted to layers and sites.

The operator (vectors/composition.py) says how the entries' maps are put together per branch and layer:
`sum` injects the weighted sum of their effective vectors (sum_i w_i * alpha_i * v_i, the first entry's scale
on h); `stack` applies each entry in turn, exactly; `partition` stacks entries that each act only on their
own layer band, written `name@LAYERS` (`caps@20-29 + french@0-19`). A layer mask (`--layers 0-5,7`) or site
mask (`--sites attn,mlp`) drops everything outside it from the new entry. Entries of different models
(fingerprint or sizes), different layouts (sites, layers, operators, token policy) or different conditions
are refused with the reason. The new entry's provenance records the operator, the expression, every source
entry (id, name, sha256, weight, negation, band) and the masks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import torch

from m2iv.errors import M2IVError
from m2iv.models.adapter import ModelAdapter
from m2iv.vectors.compat import compat_reason
from m2iv.vectors.composition import compose_vectors
from m2iv.vectors.format import save_vectors
from m2iv.vectors.vector import SITES, InContextVectors

_EXAMPLE = "write it like '0.5*a + 1.0*b - c' (spaces around + and -; 'a@0-9' keeps a to layers 0-9)"
DEFAULT_OPERATOR = "sum"
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class Term:
    weight: float
    ref: str
    band: str | None = None  # `name@0-9,12`: the layers this term acts on (partition operator)


def parse_expression(expression: str | list[str] | tuple[str, ...]) -> list[Term]:
    """'0.5*a + 1.0*b - c' -> [Term(0.5, 'a'), Term(1.0, 'b'), Term(-1.0, 'c')]. Binary + and - need spaces
    around them, so names may contain '-'; a leading '-' negates the first term."""
    if isinstance(expression, (list, tuple)):
        if expression and all(isinstance(t, Term) for t in expression):
            return [t for t in expression if isinstance(t, Term)]
        expression = " ".join(str(t) for t in expression)
    text = str(expression).strip()
    if not text:
        raise M2IVError(f"empty composition; {_EXAMPLE}")
    sign = 1.0
    m = re.match(r"^([+-])\s+", text)
    if m:
        sign, text = (-1.0 if m.group(1) == "-" else 1.0), text[m.end():]
    pieces = re.split(r"\s+([+-])\s+", text)
    terms = []
    for i, piece in enumerate(pieces):
        if i % 2:
            sign = -1.0 if piece == "-" else 1.0
            continue
        terms.append(_term(piece.strip(), sign, expression))
    return terms


def _term(piece: str, sign: float, expression) -> Term:
    bad = M2IVError(f"cannot parse {piece!r} in the composition {str(expression)!r}; {_EXAMPLE}")
    if not piece:
        raise bad
    if piece[0] in "+-" and not _NUMBER.match(piece.split("*", 1)[0].strip()):
        sign, piece = (-sign if piece[0] == "-" else sign), piece[1:].strip()
    parts = [p.strip() for p in piece.split("*")]
    if len(parts) == 1:
        weight, ref = 1.0, parts[0]
    elif len(parts) == 2:
        if _NUMBER.match(parts[0]):
            weight, ref = float(parts[0]), parts[1]
        elif _NUMBER.match(parts[1]):
            weight, ref = float(parts[1]), parts[0]
        else:
            raise bad
    else:
        raise bad
    ref, at, band = ref.partition("@")
    if not ref or _NUMBER.match(ref) or re.search(r"\s", ref) or (at and not band):
        raise bad
    return Term(sign * weight, ref, band or None)


def parse_layers(spec: str | list[int] | None, num_layers: int) -> list[int] | None:
    """'0-5,7' -> [0, 1, 2, 3, 4, 5, 7] (checked against the model's layer count)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        out: set[int] = set()
        for part in (p.strip() for p in spec.split(",")):
            m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
            if not m:
                raise M2IVError(f"cannot read layer mask {spec!r} at {part!r}; write it like '0-5,7'")
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if hi < lo:
                raise M2IVError(f"layer range {part!r} runs backwards; write it like '0-5'")
            out.update(range(lo, hi + 1))
        layers = sorted(out)
    else:
        layers = sorted({int(i) for i in spec})
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad or not layers:
        raise M2IVError(f"layer mask {spec!r} must name layers in [0, {num_layers}) (this model has {num_layers} "
                        "decoder layers)")
    return layers


def parse_sites(spec: str | list[str] | None) -> list[str] | None:
    if spec is None:
        return None

    sites = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s) for s in spec]
    unknown = [s for s in sites if s not in SITES]
    if unknown or not sites:
        raise M2IVError(f"unknown site(s) {unknown} in the site mask; sites are {', '.join(SITES)}")
    return sites


def _check_same_model(a, b) -> None:
    why = compat_reason(b.config, adapter_from_config(a.config), strict=True, raise_error=False,
                        what=f"the vectors of {b.name}")
    if why:
        raise M2IVError(f"cannot compose {a.name} ({a.base_model}) with {b.name} ({b.base_model}): {why}")


def _check_same_layout(a, va, b, vb) -> None:
    sa, sb = va.spec(), vb.spec()
    if sa["token_policy"] != sb["token_policy"]:
        raise M2IVError(f"cannot compose {a.name} with {b.name}: token policies differ ({sa['token_policy']} vs "
                        f"{sb['token_policy']})")
    if set(sa["sites"]) != set(sb["sites"]):
        raise M2IVError(f"cannot compose {a.name} with {b.name}: sites differ ({sorted(sa['sites'])} vs "
                        f"{sorted(sb['sites'])}); use --sites on entries with the same sites")
    for site in sa["sites"]:
        x, y = sa["sites"][site], sb["sites"][site]
        for key in ("layers", "operator"):
            if x[key] != y[key]:
                raise M2IVError(f"cannot compose {a.name} with {b.name}: site {site} {key} differ ({x[key]} vs "
                                f"{y[key]})")


def mask(vectors, layers: list[int] | None = None, sites: list[str] | None = None):
    """A copy of `vectors` keeping only `sites` and `layers` (None: all)."""


    if layers is None and sites is None:
        return vectors
    missing = [s for s in (sites or []) if s not in vectors.sites]
    if missing:
        raise M2IVError(f"site mask names {missing}, which these vectors do not use (they use "
                        f"{', '.join(vectors.sites)})")
    keep = {}
    for site, sp in vectors.sites.items():
        if sites is not None and site not in sites:
            continue
        lay = [i for i in sp.layers if layers is None or i in layers]
        if lay:
            keep[site] = replace(sp, layers=lay)
    if not keep:
        raise M2IVError(f"the masks (layers {layers}, sites {sites}) leave nothing of the vectors (sites "
                        f"{ {s: sp.layers for s, sp in vectors.sites.items()} })")
    out = InContextVectors(num_layers=vectors.num_layers, hidden_size=vectors.hidden_size,
                           num_heads=vectors.num_heads, head_dim=vectors.head_dim, sites=keep,
                           token_policy=vectors.token_policy, method=vectors.method,
                           dtype=next(vectors.parameters()).dtype, condition=vectors.condition)
    with torch.no_grad():
        for key, p in out.params.items():
            site = key.split("__")[0]
            rows = [vectors.sites[site].layers.index(i) for i in out.sites[site].layers]
            p.copy_(vectors.params[key][rows])
    return out


def adapter_from_config(config: dict):
    """A ModelAdapter describing the model of a vector config (enough for save_vectors' checks)."""

    return ModelAdapter(family=config["model_type"], layers_path=config.get("layers_path", ""),
                        num_layers=config["num_layers"], hidden_size=config["hidden_size"],
                        num_heads=config["num_heads"], num_kv_heads=config.get("num_kv_heads", config["num_heads"]),
                        head_dim=config["head_dim"], attn_name="", mlp_name="", o_proj_name="",
                        fingerprint=config["fingerprint"])


def combine(lib, expression, layers=None, sites=None, operator: str = DEFAULT_OPERATOR
            ) -> tuple[InContextVectors, dict, list]:
    """(the composed vectors, their provenance, the source entries), in memory: nothing is written. `lib` needs
    `get(ref)` and `load(ref)`; `compose` stores the result, `m2iv library serve` answers with it unsaved."""

    terms = parse_expression(expression)
    entries = [lib.get(t.ref) for t in terms]
    first = entries[0]
    for e in entries[1:]:
        _check_same_model(first, e)
    vecs = [lib.load(e.id)[0] for e in entries]
    for e, v in zip(entries, vecs, strict=True):
        ops = [sp.operator for sp in v.sites.values()]
        if any(op in ("gated", "replace", "virtual_kv") for op in ops):
            raise M2IVError(f"cannot compose {e.name}: its operator ({', '.join(ops)}) is not a weighted shift, so a "
                            "weighted sum of its vectors has no meaning")
    for e, v in zip(entries[1:], vecs[1:], strict=True):
        _check_same_layout(first, vecs[0], e, v)
    layer_mask = parse_layers(layers, first.num_layers)
    site_mask = parse_sites(sites)
    bands = [parse_layers(t.band, first.num_layers) for t in terms]
    combined = mask(compose_vectors(vecs, [t.weight for t in terms], operator, bands), layer_mask, site_mask)
    parts = []
    for i, (t, e) in enumerate(zip(terms, entries, strict=True)):
        sign = ("-" if t.weight < 0 else "") if i == 0 else ("- " if t.weight < 0 else "+ ")
        parts.append(f"{sign}{abs(t.weight)!r}*{e.name}" + (f"@{t.band}" if t.band else ""))
    expr = " ".join(parts)
    provenance = {"kind": "composed", "operator": operator, "expression": expr,
                  "terms": [{"id": e.id, "name": e.name, "sha256": e.sha256, "weight": t.weight,
                             "negated": t.weight < 0, "band": b}
                            for t, e, b in zip(terms, entries, bands, strict=True)],
                  "layers": layer_mask, "sites": site_mask}
    return combined, provenance, entries


def compose(lib, name: str, expression, layers=None, sites=None, tags=(), description: str | None = None,
            operator: str = DEFAULT_OPERATOR):
    """Add the composition `expression` (a string or a list of Terms) to `lib` as the entry `name`."""

    combined, provenance, entries = combine(lib, expression, layers, sites, operator)
    first, expr = entries[0], provenance["expression"]
    tasks = {e.task for e in entries}
    with lib.scratch() as tmp:
        d = save_vectors(combined, tmp / "composed", adapter=adapter_from_config(first.config),
                         base_model=first.base_model, method_config={"composed": expr, "operator": operator,
                                                                      "task": next(iter(tasks))
                                                                      if len(tasks) == 1 else None},
                         extra={"provenance": provenance})
        return lib.add(d, name=name, tags=tags, description=expr if description is None else description,
                       task=next(iter(tasks)) if len(tasks) == 1 else None, method="composed", shots=None,
                       metrics={}, provenance=provenance)
