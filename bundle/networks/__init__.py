"""Modular U-Net, its blocks, and the inference-only rewrite that folds batch norm."""

from .blocks import ChannelLayerNorm, ConvBlock, DownBlock, GaussianNoise, UpBlock
from .inference_ready import fold_batch_norm, inference_ready
from .modular_unet import ModularUNet
from .widening import widened

__all__ = ["ChannelLayerNorm", "ConvBlock", "DownBlock", "GaussianNoise", "ModularUNet", "UpBlock", "fold_batch_norm", "inference_ready", "widened"]
