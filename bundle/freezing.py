"""Which parts of a pretrained network fine-tuning may change.

Frozen parts get no gradient at all (`requires_grad` off), so a step skips their backward pass
as well as their update: with the encoder frozen, a 2-slice fine-tune fits more steps into the
same minutes and keeps the generalist's features. Part names are `ModularUNet`'s attributes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

__all__ = ["FREEZABLE", "trainable_parameters"]

logger = logging.getLogger(__name__)

FREEZABLE = {"encoder": ("encoder", "downs"), "bottom": ("bottom",), "decoder": ("ups", "decoder"), "head": ("head",)}


def trainable_parameters(network: torch.nn.Module, frozen: Sequence[str] | None = None) -> list[torch.nn.Parameter]:
    """The parameters the optimizer updates; those of the `frozen` parts (keys of FREEZABLE) stop requiring grad."""
    frozen = list(frozen or [])
    unknown = [part for part in frozen if part not in FREEZABLE]
    if unknown:
        raise ValueError(f"frozen: {unknown} are not parts of the network; choose from {sorted(FREEZABLE)}")
    prefixes = tuple(f"{attribute}." for part in frozen for attribute in FREEZABLE[part])
    trainable = []
    for name, parameter in network.named_parameters():
        parameter.requires_grad_(not name.startswith(prefixes))
        if parameter.requires_grad:
            trainable.append(parameter)
    if not trainable:
        raise ValueError(f"frozen: {frozen} leaves no parameter to train")
    if frozen:
        total = sum(p.numel() for p in network.parameters())
        logger.info("frozen %s: %d of %d parameters train", frozen, sum(p.numel() for p in trainable), total)
    return trainable
