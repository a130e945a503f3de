"""In-context vectors: parameters, injection, file format."""

from m2iv.vectors.format import load_vectors, save_vectors
from m2iv.vectors.inject import InjectionHandle, apply, inject
from m2iv.vectors.vector import SITES, TOKEN_POLICIES, InContextVectors, SiteSpec

__all__ = ["InContextVectors", "InjectionHandle", "SITES", "SiteSpec", "TOKEN_POLICIES", "apply", "inject",
           "load_vectors", "save_vectors"]
