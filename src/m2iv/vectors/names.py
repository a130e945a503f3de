"""The vocabulary of a vector layout (sites, token policies, scale activations, normalisers): its own module so
that config validation (validate.py) needs no import of the class that builds vectors (vector.py)."""

from __future__ import annotations

SITES = ("attn", "attn_head", "mlp", "layer")
TOKEN_POLICIES = ("all", "text", "query", "generated", "last", "last_onward")
ACTIVATIONS = ("identity", "sigmoid")
NORMALISERS = ("masked", "all_keys")
LOW_RANK = ("key_a", "key_b", "value_a", "value_b")  # virtual_kv's factors: K = key_a @ key_b, V = value_a @ value_b
