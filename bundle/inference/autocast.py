"""Reduced-precision forward passes on any device (MONAI's `amp` flag covers CUDA fp16 only)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.inferers import Inferer

from ..runtime import autocast_dtype

__all__ = ["AutocastInferer"]


class AutocastInferer(Inferer):
    """Runs `inner` (or the network directly) under `torch.autocast` in the resolved precision.

    The precision comes from `bundle.runtime` (bf16 only where the hardware has it natively);
    the output is returned in fp32 so losses and softmax are computed in full precision.

    Args:
        precision: "bf16", "fp16" or "fp32" (fp32 runs without autocast).
        inner: an inferer to wrap; None calls the network on the whole input.
    """

    def __init__(self, precision: str = "fp32", inner: Inferer | None = None) -> None:
        super().__init__()
        self.precision = precision
        self.dtype = autocast_dtype(precision)
        self.inner = inner

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        enabled = self.dtype is not None
        with torch.autocast(device_type=inputs.device.type, dtype=self.dtype or torch.bfloat16, enabled=enabled):
            out = self.inner(inputs, network, *args, **kwargs) if self.inner is not None else network(inputs, *args, **kwargs)
        return out.float()
