"""One colour per method, the same in every plot m2iv draws (reports, bench curves, `m2iv library serve`).

A method keeps its colour whatever else a plot holds, so a reader learns it once: zero-shot grey, ICL blue,
M²IV red. Variants of a method ("m2iv (kl-only)", "live (lr=0.1)") share its colour and differ by marker or
line style. A method not in the table gets a colour from its name's hash, so it too is stable across plots
and runs.

    colour = method_colour("m2iv (kl-only)")      # '#d62728'
"""

from __future__ import annotations

import hashlib

# Tableau-like colours, chosen so the methods drawn together most often (zero-shot, ICL, M²IV, the trained
# baselines) are far apart.
METHOD_COLOURS: dict[str, str] = {
    "zero-shot": "#7f7f7f",  # grey: the floor
    "icl": "#1f77b4",  # blue: the reference every vector method is measured against
    "icl-teacher": "#aec7e8",
    "m2iv": "#d62728",  # red
    "tv": "#ff7f0e",
    "fv": "#bcbd22",
    "icv": "#8c564b",
    "i2cl": "#e377c2",
    "mtv": "#17becf",
    "live": "#2ca02c",
    "mimic": "#9467bd",
    "hificl": "#393b79",
    "composed": "#000000",
    "vectors": "#c49c94",
    "library-auto": "#637939",
}
# For methods outside the table: distinct from the colours above.
_SPARE = ("#843c39", "#7b4173", "#e7ba52", "#5254a3", "#6b6ecf", "#ad494a", "#8ca252", "#ce6dbd", "#3182bd",
          "#e6550d")

# The branches vectors are injected into (per-layer norm plots).
SITE_COLOURS: dict[str, str] = {"attn": "#1f77b4", "mlp": "#ff7f0e", "attn_head": "#2ca02c", "layer": "#9467bd"}

MARKERS = "osD^v<>Pp*hX"


def base_method(label: str) -> str:
    """'m2iv (kl-only)' -> 'm2iv': the method a table label names."""
    return label.split(" (", 1)[0].strip().lower()


def method_colour(label: str) -> str:
    """The colour of a method (or of a label naming a variant of it)."""
    method = base_method(label)
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    digest = int.from_bytes(hashlib.sha256(method.encode()).digest()[:4], "big")
    return _SPARE[digest % len(_SPARE)]


def site_colour(site: str) -> str:
    return SITE_COLOURS.get(site, method_colour(site))


def marker(i: int) -> str:
    return MARKERS[i % len(MARKERS)]


__all__ = ["METHOD_COLOURS", "SITE_COLOURS", "base_method", "marker", "method_colour", "site_colour"]
