"""m2iv: vectorized multimodal in-context learning (M²IV and its baselines) for Hugging Face LVLMs."""

__version__ = "0.1.0"

from m2iv.errors import M2IVError  # noqa: E402
from m2iv.models import LoadedModel, ModelAdapter, discover, load_model  # noqa: E402
from m2iv.vectors import InContextVectors, SiteSpec, apply, inject, load_vectors, save_vectors  # noqa: E402

__all__ = ["InContextVectors", "LoadedModel", "M2IVError", "ModelAdapter", "SiteSpec", "__version__", "apply",
           "discover", "inject", "load_model", "load_vectors", "save_vectors"]
