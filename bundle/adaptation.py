"""Label-free adaptation of a trained network to one scan: its batch-norm statistics re-estimated on the scan.

Batch norm normalises each feature by the mean and variance it saw in training. A scan from
another instrument shifts those statistics; re-estimating them on slices of the scan itself
(no labels, no gradient) lets the network see the scan's features as it saw its training
data's. Only the batch-norm layers run in training mode (dropout and the training noise stay
off), with a cumulative average over every sample, before the layers are folded for inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["ADAPTATIONS", "adapt_batch_norm"]

ADAPTATIONS = ("none", "bn")


@torch.no_grad()
def adapt_batch_norm(network: nn.Module, batches: Sequence[np.ndarray]) -> nn.Module:
    """Replace every batch-norm layer's running statistics by those of `batches` (network inputs); returns `network`
    in eval mode. A network without batch norm is returned unchanged."""
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return network.eval()
    device = next(network.parameters()).device
    saved = [m.momentum for m in norms]
    network.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over every batch, not an exponential one
        norm.train()
    try:
        for batch in batches:
            network(torch.as_tensor(batch, dtype=torch.float32, device=device))
    finally:
        for norm, momentum in zip(norms, saved):
            norm.momentum = momentum
        network.eval()
    return network
