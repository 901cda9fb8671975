"""Inference-only rewrites of a trained Modular U-Net: batch norm folded into the convolutions before it.

In eval mode a BatchNorm is an affine map per channel, so it can be merged into the weights
and bias of the preceding (transposed) convolution; the network then does the same
arithmetic in one pass over memory instead of two. The merge itself is PyTorch's
`fuse_conv_bn_eval`; this module only knows which pairs the Modular U-Net's blocks hold.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..flags import as_flag
from .blocks import ConvBlock, DownBlock, UpBlock

__all__ = ["fold_batch_norm", "inference_ready"]


def _pairs(module: nn.Module):
    """(owner, conv name, norm name) of each conv -> norm pair in a block."""
    if isinstance(module, ConvBlock):
        yield module, "conv1", "norm1"
        yield module, "conv2", "norm2"
        if module.residual is not None:
            yield module.residual, "0", "1"
    elif isinstance(module, (DownBlock, UpBlock)) and isinstance(module.op, nn.Sequential):
        yield module.op, "0", "1"


def _fused(conv: nn.Module, norm: nn.BatchNorm2d | nn.BatchNorm3d) -> nn.Module:
    """`conv` (the last of a separable pair) with `norm` merged by PyTorch's `fuse_conv_bn_eval`."""
    last = conv[-1] if isinstance(conv, nn.Sequential) else conv
    fused = fuse_conv_bn_eval(last, norm, transpose=isinstance(last, nn.modules.conv._ConvTransposeNd))
    return nn.Sequential(*conv[:-1], fused) if isinstance(conv, nn.Sequential) else fused


def fold_batch_norm(network: nn.Module) -> nn.Module:
    """A copy of `network` in eval mode with every conv -> BatchNorm pair merged; the original is untouched."""
    network = copy.deepcopy(network).eval()
    for module in list(network.modules()):
        for owner, conv_name, norm_name in _pairs(module):
            norm = getattr(owner, norm_name)
            if isinstance(norm, nn.modules.batchnorm._BatchNorm):
                setattr(owner, conv_name, _fused(getattr(owner, conv_name), norm))
                setattr(owner, norm_name, nn.Identity())
    return network


def inference_ready(network: nn.Module, fold_bn: bool = True, channels_last: bool = False) -> nn.Module:
    """The network as inference runs it: eval mode, optionally batch norm folded and channels-last memory."""
    network = fold_batch_norm(network) if as_flag(fold_bn) else network.eval()
    if as_flag(channels_last):
        network = network.to(memory_format=torch.channels_last if network.spatial_dims == 2 else torch.channels_last_3d)
    return network
