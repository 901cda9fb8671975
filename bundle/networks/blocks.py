"""Building blocks of the Modular U-Net (Bertoldo et al., Fig. 3), one code path for 2D and 3D.

Defaults follow the paper's Keras code (tomo2seg) on TensorFlow 2.2: BatchNorm momentum 0.5
and epsilon 1e-3, Glorot-uniform kernels, zero biases, "same" padding, plain (not spatial)
dropout.
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv, Norm, Pool
from torch import nn

__all__ = ["ChannelLayerNorm", "ConvBlock", "DownBlock", "GaussianNoise", "UpBlock", "make_conv", "make_norm"]

KERAS_BN_EPS = 1e-3
KERAS_BN_MOMENTUM = 0.5
KERAS_LN_EPS = 1e-3
NORMS = ("batch", "layer", "none")
CONVS = ("standard", "separable")
SAMPLINGS = ("learnable", "rigid")


class ChannelLayerNorm(nn.Module):
    """Layer norm over the channel axis only, as Keras `LayerNormalization(axis=-1)`.

    MONAI's `Norm["layer"]` normalises the trailing (spatial) axes, which is not what the
    paper's layer-norm ablation did.

    Args:
        num_channels: number of channels C of a [B, C, *spatial] input.
        eps: added to the variance for stability (Keras default 1e-3).
    """

    def __init__(self, num_channels: int, eps: float = KERAS_LN_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, unbiased=False)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(shape)


class GaussianNoise(nn.Module):
    """Additive zero-mean Gaussian noise, active only in training mode (Keras `GaussianNoise`).

    Args:
        std: standard deviation of the noise; 0 disables it.
    """

    def __init__(self, std: float) -> None:
        super().__init__()
        if std < 0:
            raise ValueError(f"noise_std must be >= 0, got {std}.")
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.std > 0:
            return x + torch.randn_like(x) * self.std
        return x


def make_norm(norm: str, spatial_dims: int, channels: int) -> nn.Module:
    """The normalisation layer named by `norm` ("batch", "layer" or "none")."""
    if norm == "batch":
        return Norm[Norm.BATCH, spatial_dims](channels, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM)
    if norm == "layer":
        return ChannelLayerNorm(channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}.")


def make_conv(conv: str, spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
    """A kernel-3 "same" convolution: standard, or separable (depthwise without bias + pointwise)."""
    conv_type = Conv[Conv.CONV, spatial_dims]
    if conv == "standard":
        return conv_type(in_channels, out_channels, kernel_size=3, padding=1)
    if conv == "separable":
        return nn.Sequential(
            conv_type(in_channels, in_channels, kernel_size=3, padding=1, groups=in_channels, bias=False),
            conv_type(in_channels, out_channels, kernel_size=1),
        )
    raise ValueError(f"conv must be one of {CONVS}, got {conv!r}.")


class ConvBlock(nn.Module):
    """conv3 -> norm -> ReLU -> dropout -> conv3 -> norm (+ residual conv3 -> norm), ReLU -> dropout.

    Keeps the spatial size; the residual branch is a kernel-3 convolution (not 1x1) as in the
    paper's code, so that it can change the channel count.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the input.
        mid_channels: channels after the first convolution.
        out_channels: channels of the output.
        conv: "standard" or "separable".
        norm: "batch", "layer" or "none".
        residual: add the residual branch.
        dropout: plain dropout rate after each activation.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        conv: str = "standard",
        norm: str = "batch",
        residual: bool = True,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.conv1 = make_conv(conv, spatial_dims, in_channels, mid_channels)
        self.norm1 = make_norm(norm, spatial_dims, mid_channels)
        self.drop1 = nn.Dropout(dropout)
        self.conv2 = make_conv(conv, spatial_dims, mid_channels, out_channels)
        self.norm2 = make_norm(norm, spatial_dims, out_channels)
        self.residual = (
            nn.Sequential(make_conv(conv, spatial_dims, in_channels, out_channels), make_norm(norm, spatial_dims, out_channels))
            if residual
            else None
        )
        self.act = nn.ReLU()
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop1(self.act(self.norm1(self.conv1(x))))
        y = self.norm2(self.conv2(y))
        if self.residual is not None:
            y = y + self.residual(x)
        return self.drop2(self.act(y))


class DownBlock(nn.Module):
    """Halves every spatial size, keeping channels.

    Args:
        spatial_dims: 2 or 3.
        channels: input and output channels.
        mode: "learnable" (conv3 stride 2 -> norm -> ReLU) or "rigid" (max-pool 2).
        norm: normalisation of the learnable variant.
    """

    def __init__(self, spatial_dims: int, channels: int, mode: str = "learnable", norm: str = "batch") -> None:
        super().__init__()
        if mode == "learnable":
            self.op: nn.Module = nn.Sequential(
                Conv[Conv.CONV, spatial_dims](channels, channels, kernel_size=3, stride=2, padding=1),
                make_norm(norm, spatial_dims, channels),
                nn.ReLU(),
            )
        elif mode == "rigid":
            self.op = Pool[Pool.MAX, spatial_dims](kernel_size=2)
        else:
            raise ValueError(f"down must be one of {SAMPLINGS}, got {mode!r}.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class UpBlock(nn.Module):
    """Doubles every spatial size, keeping channels.

    Args:
        spatial_dims: 2 or 3.
        channels: input and output channels.
        mode: "learnable" (transposed conv3 stride 2 -> norm -> ReLU) or "rigid" (nearest x2).
        norm: normalisation of the learnable variant.
    """

    def __init__(self, spatial_dims: int, channels: int, mode: str = "learnable", norm: str = "batch") -> None:
        super().__init__()
        if mode == "learnable":
            self.op: nn.Module = nn.Sequential(
                Conv[Conv.CONVTRANS, spatial_dims](
                    channels, channels, kernel_size=3, stride=2, padding=1, output_padding=1
                ),
                make_norm(norm, spatial_dims, channels),
                nn.ReLU(),
            )
        elif mode == "rigid":
            self.op = nn.Upsample(scale_factor=2, mode="nearest")
        else:
            raise ValueError(f"up must be one of {SAMPLINGS}, got {mode!r}.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)
