"""LoRA (Hu et al. 2022) through PEFT's format, at the rank and targets MimIC and HiFICL report as their baseline."""

from m2iv.methods.base import register_method
from m2iv.methods.lora.config import LoRAConfig
from m2iv.methods.lora.method import LoRA

register_method("lora", LoRA)

__all__ = ["LoRA", "LoRAConfig"]
