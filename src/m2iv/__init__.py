"""m2iv: vectorized multimodal in-context learning (M²IV and its baselines) for Hugging Face LVLMs."""

from m2iv.constants import __version__
from m2iv.errors import M2IVError
from m2iv.library.resolve import load_spec as load_vectors  # a vector directory, library:<id-or-name> or hf://org/name
from m2iv.models import LoadedModel, ModelAdapter, discover, load_model
from m2iv.vectors import InContextVectors, SiteSpec, apply, inject, save_vectors

__all__ = ["InContextVectors", "LoadedModel", "M2IVError", "ModelAdapter", "SiteSpec", "__version__", "apply",
           "discover", "inject", "load_model", "load_vectors", "save_vectors"]
