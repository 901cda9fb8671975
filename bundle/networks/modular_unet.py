"""The Modular U-Net: a U structure that knows nothing of its blocks' insides."""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from .blocks import CONVS, NORMS, SAMPLINGS, ConvBlock, DownBlock, GaussianNoise, UpBlock

__all__ = ["ModularUNet"]


@torch.jit.interface
class TensorModule(nn.Module):
    """What every block is to the U's decoder loop: one tensor in, one out (a TorchScript interface)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pass


class ModularUNet(nn.Module):
    """Modular U-Net of Bertoldo et al. for 2D, 2.5D (2D with neighbour slices as channels) and 3D.

    Encoder level i runs a ConvBlock f0*2^i -> f0*2^(i+1) and a DownBlock; the bottom block goes
    to f0*2^(u_depth+1); decoder level i concatenates [skip, upsampled] and returns to
    f0*2^(i+1); Gaussian noise (training only) precedes the 1x1 output convolution.
    The output is per-voxel class logits.

    Args:
        spatial_dims: 2 (2D and 2.5D) or 3.
        in_channels: 1 for 2D/3D, 5 for the paper's 2.5D.
        out_channels: number of classes.
        f0: filters of the first convolution.
        u_depth: number of DownBlocks (and UpBlocks).
        down: "learnable" or "rigid".
        up: "learnable" or "rigid".
        conv: "standard" or "separable" convolutions inside ConvBlocks.
        norm: "batch", "layer" or "none".
        residual: residual branch in ConvBlocks.
        dropout: dropout rate in ConvBlocks.
        noise_std: std of the training-time Gaussian noise before the output convolution.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 3,
        f0: int = 16,
        u_depth: int = 3,
        down: str = "learnable",
        up: str = "learnable",
        conv: str = "standard",
        norm: str = "batch",
        residual: bool = True,
        dropout: float = 0.1,
        noise_std: float = 0.03,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("f0", f0), ("u_depth", u_depth)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if down not in SAMPLINGS or up not in SAMPLINGS:
            raise ValueError(f"down/up must be one of {SAMPLINGS}, got down={down!r}, up={up!r}.")
        if conv not in CONVS:
            raise ValueError(f"conv must be one of {CONVS}, got {conv!r}.")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}.")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
        self.hparams = dict(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, f0=f0, u_depth=u_depth,
            down=down, up=up, conv=conv, norm=norm, residual=residual, dropout=dropout, noise_std=noise_std,
        )
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.u_depth = u_depth
        block = dict(spatial_dims=spatial_dims, conv=conv, norm=norm, residual=residual, dropout=dropout)

        self.encoder = nn.ModuleList()
        self.downs = nn.ModuleList()
        c_in = in_channels
        for i in range(u_depth):
            c_out = f0 * 2 ** (i + 1)
            self.encoder.append(ConvBlock(in_channels=c_in, mid_channels=f0 * 2**i, out_channels=c_out, **block))
            self.downs.append(DownBlock(spatial_dims, c_out, mode=down, norm=norm))
            c_in = c_out
        self.bottom = ConvBlock(
            in_channels=c_in, mid_channels=f0 * 2**u_depth, out_channels=f0 * 2 ** (u_depth + 1), **block
        )
        self.ups = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in range(u_depth):
            below, here = f0 * 2 ** (i + 2), f0 * 2 ** (i + 1)
            self.ups.append(UpBlock(spatial_dims, below, mode=up, norm=norm))
            self.decoder.append(ConvBlock(in_channels=here + below, mid_channels=here, out_channels=here, **block))
        self.noise = GaussianNoise(noise_std)
        self.head = Conv[Conv.CONV, spatial_dims](2 * f0, out_channels, kernel_size=1)
        self.apply(_keras_init)

    @property
    def size_multiple(self) -> int:
        """Every spatial size of the input must be a multiple of this."""
        return 1 << self.u_depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.spatial_dims + 2:
            axes = "Z, Y, X" if self.spatial_dims == 3 else "Y, X"
            raise ValueError(f"ModularUNet(spatial_dims={self.spatial_dims}) expects a [B, C, {axes}] tensor, got shape {x.shape}.")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"ModularUNet expects {self.in_channels} input channel(s), got {x.shape[1]} (shape {x.shape});"
                " a 2.5D model takes 5 z-slices as channels, 2D and 3D models take 1."
            )
        for size in x.shape[2:]:
            if size % self.size_multiple != 0:
                raise ValueError(
                    f"ModularUNet with u_depth={self.u_depth} needs spatial sizes that are multiples of "
                    f"{self.size_multiple}, got {x.shape[2:]}; pad or crop the input (the bundle's inferers pad tiles)."
                )
        skips: list[torch.Tensor] = []
        for conv, down in zip(self.encoder, self.downs):
            x = conv(x)
            skips.append(x)
            x = down(x)
        x = self.bottom(x)
        for i in range(self.u_depth - 1, -1, -1):  # TorchScript indexes a ModuleList by a variable only through an interface
            up: TensorModule = self.ups[i]
            decoder: TensorModule = self.decoder[i]
            x = decoder.forward(torch.cat([skips[i], up.forward(x)], dim=1))
        return self.head(self.noise(x))


def _keras_init(module: nn.Module) -> None:
    """Glorot-uniform kernels and zero biases, TensorFlow 2.2's defaults."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
