"""Inference-only rewrites of a trained Modular U-Net: batch norm folded into the convolutions before it.

In eval mode a BatchNorm is an affine map per channel, so it can be merged into the weights
and bias of the preceding (transposed) convolution; the network then does the same
arithmetic in one pass over memory instead of two.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..flags import as_flag
from .blocks import ConvBlock, DownBlock, UpBlock

__all__ = ["fold_batch_norm", "inference_ready"]


def _last_conv(module: nn.Module) -> nn.Module:
    return module[-1] if isinstance(module, nn.Sequential) else module


@torch.no_grad()
def _fold(conv: nn.Module, norm: nn.Module) -> bool:
    """Merge `norm` (eval-mode BatchNorm) into `conv`; False when `norm` is not a BatchNorm."""
    if not isinstance(norm, nn.modules.batchnorm._BatchNorm):
        return False
    conv = _last_conv(conv)
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    shift = norm.bias - norm.running_mean * scale
    if isinstance(conv, nn.modules.conv._ConvTransposeNd):
        conv.weight.mul_(scale.view(1, -1, *([1] * (conv.weight.ndim - 2))))
    else:
        conv.weight.mul_(scale.view(-1, *([1] * (conv.weight.ndim - 1))))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    conv.bias = nn.Parameter(bias * scale + shift)
    return True


def fold_batch_norm(network: nn.Module) -> nn.Module:
    """A copy of `network` in eval mode with every conv -> BatchNorm pair merged; the original is untouched."""
    network = copy.deepcopy(network).eval()
    for module in network.modules():
        if isinstance(module, ConvBlock):
            if _fold(module.conv1, module.norm1):
                module.norm1 = nn.Identity()
            if _fold(module.conv2, module.norm2):
                module.norm2 = nn.Identity()
            if module.residual is not None and _fold(module.residual[0], module.residual[1]):
                module.residual[1] = nn.Identity()
        elif isinstance(module, (DownBlock, UpBlock)) and isinstance(module.op, nn.Sequential):
            if _fold(module.op[0], module.op[1]):
                module.op[1] = nn.Identity()
    return network


def inference_ready(network: nn.Module, fold_bn: bool = True, channels_last: bool = False) -> nn.Module:
    """The network as inference runs it: eval mode, optionally batch norm folded and channels-last memory."""
    network = fold_batch_norm(network) if as_flag(fold_bn) else network.eval()
    if as_flag(channels_last):
        network = network.to(memory_format=torch.channels_last if network.spatial_dims == 2 else torch.channels_last_3d)
    return network
