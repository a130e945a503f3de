"""Model loading, layer discovery and the adapter table."""

from m2iv.models.adapter import ModelAdapter, architecture_fingerprint, discover
from m2iv.models.families import FAMILIES
from m2iv.models.loading import LoadedModel, load_model, torch_dtype
from m2iv.models.tiny import build_tiny

__all__ = ["FAMILIES", "LoadedModel", "ModelAdapter", "architecture_fingerprint", "build_tiny", "discover",
           "load_model", "torch_dtype"]
