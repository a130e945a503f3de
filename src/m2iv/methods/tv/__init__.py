"""Task Vectors (Hendel et al. 2023): the last-token ICL state of one layer, patched into the zero-shot run."""

from m2iv.methods.base import register_method
from m2iv.methods.tv.config import TVConfig
from m2iv.methods.tv.method import TaskVectors

register_method("tv", TaskVectors)

__all__ = ["TVConfig", "TaskVectors"]
