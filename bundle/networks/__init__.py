"""Modular U-Net and its blocks."""

from .blocks import ChannelLayerNorm, ConvBlock, DownBlock, GaussianNoise, UpBlock
from .modular_unet import ModularUNet

__all__ = ["ChannelLayerNorm", "ConvBlock", "DownBlock", "GaussianNoise", "ModularUNet", "UpBlock"]
