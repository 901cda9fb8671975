"""Reduced-precision forward passes on any device (MONAI's `amp` flag covers CUDA only)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.inferers import Inferer

from ..flags import as_flag

__all__ = ["AutocastInferer"]


class AutocastInferer(Inferer):
    """Runs `inner` (or the network directly) under `torch.autocast` on the input's device.

    bf16 autocast roughly halves the time of a training step on AVX-512-bf16 CPUs; the loss
    is computed in fp32 outside it.

    Args:
        dtype: "bfloat16" or "float16".
        enabled: False runs in full precision.
        inner: an inferer to wrap; None calls the network on the whole input.
    """

    def __init__(self, dtype: str = "bfloat16", enabled: bool = True, inner: Inferer | None = None) -> None:
        super().__init__()
        self.dtype = getattr(torch, dtype)
        self.enabled = as_flag(enabled)
        self.inner = inner

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        with torch.autocast(device_type=inputs.device.type, dtype=self.dtype, enabled=self.enabled):
            out = self.inner(inputs, network, *args, **kwargs) if self.inner is not None else network(inputs, *args, **kwargs)
        return out.float()
