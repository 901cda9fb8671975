"""The paper's learning-rate schedule, as one component the training config names."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import ConstantLR, LinearLR, SequentialLR

__all__ = ["constant_then_linear_decay"]


def constant_then_linear_decay(optimizer: torch.optim.Optimizer, max_epochs: int, end_factor: float = 0.1) -> SequentialLR:
    """Stepped once per epoch: the base rate for the first half of `max_epochs`, then a linear decay to `end_factor`
    of it at the end (the paper: 1e-3 for 100 epochs, then down to 1e-4 over 100 more). Shorter runs keep its shape."""
    half = int(max_epochs) // 2
    return SequentialLR(
        optimizer,
        [ConstantLR(optimizer, factor=1.0, total_iters=half), LinearLR(optimizer, 1.0, float(end_factor), max(int(max_epochs) - half, 1))],
        milestones=[half],
    )
