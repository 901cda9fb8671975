"""Ignite pieces MONAI lacks: a global confusion-matrix IoU and the paper's learning-rate schedule."""

from __future__ import annotations

import numpy as np
import torch
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

from .metrics import confusion_matrix, iou_per_class

__all__ = ["GlobalIoU", "PaperLRSchedule"]


class GlobalIoU(Metric):
    """IoU from one confusion matrix over the whole evaluation (not a mean of per-batch IoUs).

    Voxels labelled `ignore_index` are left out. Returns the mean IoU over classes, or the IoU
    of `class_index` when given. Synchronised across processes under DDP.

    Args:
        num_classes: number of classes.
        class_index: report this class's IoU instead of the mean.
        ignore_index: label value of voxels that are not annotated.
        output_transform: maps the engine output to (logits [B, C, ...], labels [B, 1, ...]).
    """

    def __init__(self, num_classes: int = 3, class_index: int | None = None, ignore_index: int = 255, output_transform=lambda x: x):
        self.num_classes = num_classes
        self.class_index = class_index
        self.ignore_index = ignore_index
        super().__init__(output_transform=output_transform)

    @reinit__is_reduced
    def reset(self) -> None:
        self._confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    @reinit__is_reduced
    def update(self, output) -> None:
        prediction, label = output
        prediction = torch.stack(list(prediction)) if isinstance(prediction, (list, tuple)) else prediction
        label = torch.stack(list(label)) if isinstance(label, (list, tuple)) else label
        classes = prediction.argmax(1) if prediction.shape[1] > 1 else prediction[:, 0]
        counts = confusion_matrix(classes.detach().cpu().numpy(), label[:, 0].detach().cpu().numpy(), self.num_classes, self.ignore_index)
        self._confusion += torch.from_numpy(counts)

    @sync_all_reduce("_confusion")
    def compute(self) -> float:
        iou = iou_per_class(self._confusion.numpy())
        value = iou[self.class_index] if self.class_index is not None else np.nanmean(iou)
        return float(np.nan_to_num(value))


class PaperLRSchedule:
    """LR factor per epoch: 1 for the first half of `max_epochs`, then linear down to `final_factor`.

    With max_epochs 200 this is the paper's 1e-3 for 100 epochs then decay to 1e-4 over 100
    more; other lengths keep the shape. A callable object, so LambdaLR checkpoints it.
    """

    def __init__(self, max_epochs: int, final_factor: float = 0.1) -> None:
        self.max_epochs = int(max_epochs)
        self.final_factor = float(final_factor)

    def __call__(self, epoch: int) -> float:
        half = self.max_epochs // 2
        decay_epochs = max(self.max_epochs - half, 1)
        if epoch < half:
            return 1.0
        return 1.0 - (1.0 - self.final_factor) * min(epoch - half, decay_epochs) / decay_epochs
