"""Cartridge (Eyuboglu et al. 2025): a trainable KV-cache prefix in PEFT's format (peft.tuners.cartridge)."""

from m2iv.methods.base import register_method
from m2iv.methods.cartridge.config import CartridgeConfig
from m2iv.methods.cartridge.method import Cartridge

register_method("cartridge", Cartridge)

__all__ = ["Cartridge", "CartridgeConfig"]
