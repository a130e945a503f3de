"""Parallel-ICL (Yamaguchi et al., CVPR 2026, arXiv 2603.16092): demonstrations in k parallel contexts, merged per
token by a similarity-weighted product of experts. Training-free: an inference method."""

from m2iv.methods.base import register_method
from m2iv.methods.parallel_icl.config import ParallelICLConfig
from m2iv.methods.parallel_icl.method import ParallelICL

register_method("parallel-icl", ParallelICL)

__all__ = ["ParallelICL", "ParallelICLConfig"]
