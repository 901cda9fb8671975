"""The Jaccard2 loss of the paper's Appendix C (eq. C.2), one global score over batch, voxels and classes."""

from __future__ import annotations

import torch
from torch.nn.modules.loss import _Loss

__all__ = ["Jaccard2Loss", "jaccard2_loss"]


def jaccard2_loss(
    probabilities: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = 255,
    smooth: float = 1.0,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """1 - (I + s) / (U + s) with I = sum y*p, U = sum y^2 + sum p^2 - I over batch, voxels and classes.

    Args:
        probabilities: [B, C, *spatial] per-voxel class probabilities.
        target: [B, 1, *spatial] or [B, *spatial] integer labels; `ignore_index` voxels are left out.
        ignore_index: label value of voxels that are not annotated.
        smooth: the paper's code's smoothing term s.
        class_weights: optional [C] weights on each class's terms (class-balanced variant).
    """
    if target.ndim == probabilities.ndim:
        target = target[:, 0]
    target = target.long()
    valid = (target != ignore_index).unsqueeze(1).to(probabilities.dtype)
    one_hot = torch.zeros_like(probabilities).scatter_(1, torch.where(target == ignore_index, 0, target).unsqueeze(1), 1.0)
    one_hot = one_hot * valid
    p = probabilities * valid
    reduce_dims = [0] + list(range(2, probabilities.ndim))
    intersection = (one_hot * p).sum(reduce_dims)
    union = (one_hot * one_hot).sum(reduce_dims) + (p * p).sum(reduce_dims) - intersection
    if class_weights is not None:
        weights = torch.as_tensor(class_weights, dtype=probabilities.dtype, device=probabilities.device)
        intersection, union = intersection * weights, union * weights
    return 1.0 - (intersection.sum() + smooth) / (union.sum() + smooth)


class Jaccard2Loss(_Loss):
    """Jaccard2 on logits: softmax over the class axis, then `jaccard2_loss`.

    Args:
        ignore_index: label value of voxels that are not annotated (255).
        smooth: smoothing term of `1 - (I + s) / (U + s)`.
        class_weights: optional per-class weights (None is the paper's plain loss).
    """

    def __init__(self, ignore_index: int = 255, smooth: float = 1.0, class_weights: list[float] | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.smooth = smooth
        self.class_weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probabilities = torch.softmax(logits.float(), dim=1)
        return jaccard2_loss(probabilities, target, self.ignore_index, self.smooth, self.class_weights)
