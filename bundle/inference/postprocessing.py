"""Per-voxel outputs from class probabilities that MONAI has no transform for."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping

import torch
from monai.transforms import MapTransform

__all__ = ["NormalisedEntropyd"]


class NormalisedEntropyd(MapTransform):
    """Entropy of channel-first class probabilities divided by log C, under `output_key`.

    0 where one class has all the probability, 1 where every class is equally likely: the paper's
    map of ill-defined regions, comparable across class counts.

    Args:
        keys: the probabilities ([C, ...], summing to 1 over C).
        output_key: where the map ([...]) goes.
    """

    def __init__(self, keys: str = "pred", output_key: str = "uncertainty", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            p = d[key]
            d[self.output_key] = -(p * torch.log(p.clamp_min(1e-12))).sum(0) / math.log(p.shape[0])
        return d
