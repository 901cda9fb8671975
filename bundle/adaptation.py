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

__all__ = ["ADAPTATIONS", "adapt_batch_norm", "pseudo_labels"]

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


def pseudo_labels(probabilities: np.ndarray, threshold: float, ignore_index: int = 255) -> np.ndarray:
    """Self-training targets from the network's own class probabilities ([C, *spatial], any scale whose maximum is 1 or
    255): its label where the top probability reaches `threshold` (a fraction), `ignore_index` elsewhere, so doubtful
    voxels stay out of the loss."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold {threshold}: expected a fraction in (0, 1]")
    scale = 255 if probabilities.dtype == np.uint8 else 1
    labels = probabilities.argmax(0).astype(np.uint8)
    labels[probabilities.max(0) < threshold * scale] = ignore_index
    return labels
